"""The versions of the software that produced a result, recorded in every metadata, report and results file."""

from __future__ import annotations

import numpy as np
import torch

from ._version import __version__

__all__ = ["versions"]


def versions() -> dict[str, str]:
    """``{"neuralcleanse": ..., "torch": ..., "numpy": ...}``: the versions of this run's software."""
    return {"neuralcleanse": __version__, "torch": torch.__version__, "numpy": np.__version__}
