"""The ``neuralcleanse`` command line: the only package that prints or exits.

Each verb is a thin shell over one job of :mod:`neuralcleanse.jobs`. Errors end in one funnel: a one-line
message on stderr and exit status 1 (2 for usage errors, 130 for Ctrl-C); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from ..errors import one_line
from ..store.out_dir import check_out_dir
from .errors import CLIError
from .parser import build_parser, check_values

__all__ = ["CLIError", "build_parser", "main"]


def _glue_dash_values(argv: Sequence[str]) -> list[str]:
    """``--value-range -1-1`` -> ``--value-range=-1-1``: argparse would read ``-1-1`` as an unknown option."""
    out: list[str] = []
    rest = iter(argv)
    for arg in rest:
        if arg == "--value-range":
            value = next(rest, None)
            if value is not None and value.startswith("-") and not value.startswith("--"):
                out.append(f"{arg}={value}")
                continue
            out += [arg] if value is None else [arg, value]
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_glue_dash_values(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        # Flag values and the output folder are checked before torch loads: a bad --out costs a moment, not a run.
        check_values(args)
        if getattr(args, "out", None) is not None:
            check_out_dir(args.out, name="--out")
        from .verbs import VERBS  # after parsing: --help and usage errors never load torch

        return int(VERBS[args.verb](args))
    except KeyboardInterrupt as exc:
        if args.debug:
            raise
        # An interrupt that kept whole work says where it is; any other left nothing partial behind.
        print(f"neuralcleanse: {str(exc) or 'interrupted; nothing partial was written'}", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug or not _reported(exc):
            raise
        print(f"neuralcleanse: error: {one_line(exc)}", file=sys.stderr)
        return 1


def _reported(exc: Exception) -> bool:
    """Whether ``exc`` is an error of the input (a file, a flag, a model, the data), reported as one line; any
    other exception is a bug and keeps its traceback. A TorchScript model's own ``raise`` reaches here as
    ``torch.jit.Error``, which is no RuntimeError (its class is matched by name: torch may not be loaded)."""
    if isinstance(exc, CLIError | ValueError | TypeError | OSError | RuntimeError):
        return True
    return type(exc).__module__ == "torch.jit" and type(exc).__name__ == "Error"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
