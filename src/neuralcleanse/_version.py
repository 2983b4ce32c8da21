"""The package's version string, in a module of its own so that any module can read it without importing the
package root (``__init__`` re-exports it; ``pyproject.toml`` reads it for the distribution's version)."""

__version__ = "0.1.0"
