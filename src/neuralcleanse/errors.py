"""The one-line form of an error, as the CLI prints it and a zoo summary records it."""

from __future__ import annotations

__all__ = ["one_line"]

#: The first line of every error TorchScript's interpreter re-raises; the error the scripted code raised is on the
#: message's last line (``builtins.ValueError: ...``), after the scripted traceback.
_TORCHSCRIPT = "The following operation failed in the TorchScript interpreter."


def one_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (for an error re-raised by TorchScript, the last: the scripted code's
    own), or its type's name when it has none."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    return lines[-1] if lines[0] == _TORCHSCRIPT else lines[0]
