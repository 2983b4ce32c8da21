"""The error the CLI reports as one line."""


class CLIError(Exception):
    """An error the CLI reports as one line (exit 1)."""
