"""neuralcleanse: find and remove backdoors in image classifiers (Neural Cleanse, Wang et al., S&P 2019).

The public API, re-exported here; docs/how-it-works.md states the conventions (images are (N, C, H, W) floats
in [0, 1], triggers stamp as ``(1 - m) * x + m * p``, rates are fractions).

The re-exports are lazy (PEP 562): ``import neuralcleanse`` loads no torch, so that ``neuralcleanse --help``
and the argument checks of the command line answer at once; ``from neuralcleanse import X`` imports X's module
on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:  # what the lazy names are, for type checkers
    from .attacks import PoisonedData, TrojanAttack, TrojanConfig, poison, trojan
    from .config import FAST, REFERENCE, ScanConfig
    from .conventions import rank_conventions
    from .data import DataError, ImageData, clean_sample, load_dataset
    from .loading import LoadedModel, load_model
    from .metrics import accuracy, attack_success_rate, predict
    from .models import ARCHITECTURES, build_model
    from .outliers import anomaly_index
    from .preprocess import Preprocessing
    from .probe import ModelOutputs, probe_outputs
    from .profiles import LabelProfile, builtin_profile, load_profile, profile_from_reports
    from .reverse import ReverseConfig, reverse_engineer
    from .scan import NeuralCleanse, SanityCheckError, ScanReport
    from .second_scan import join_scans, wants_second_scan
    from .store.model_dir import ModelFileError, load_saved_model, save_model
    from .triggers import Trigger, parse_trigger

#: Each public name and the module (relative to this package) that defines it.
_EXPORTS = {
    **dict.fromkeys(["PoisonedData", "TrojanAttack", "TrojanConfig", "poison", "trojan"], ".attacks"),
    **dict.fromkeys(["FAST", "REFERENCE", "ScanConfig"], ".config"),
    "rank_conventions": ".conventions",
    **dict.fromkeys(["DataError", "ImageData", "clean_sample", "load_dataset"], ".data"),
    **dict.fromkeys(["LoadedModel", "load_model"], ".loading"),
    **dict.fromkeys(["accuracy", "attack_success_rate", "predict"], ".metrics"),
    **dict.fromkeys(["ARCHITECTURES", "build_model"], ".models"),
    "anomaly_index": ".outliers",
    "Preprocessing": ".preprocess",
    **dict.fromkeys(["ModelOutputs", "probe_outputs"], ".probe"),
    **dict.fromkeys(["LabelProfile", "builtin_profile", "load_profile", "profile_from_reports"], ".profiles"),
    **dict.fromkeys(["ReverseConfig", "reverse_engineer"], ".reverse"),
    **dict.fromkeys(["NeuralCleanse", "SanityCheckError", "ScanReport"], ".scan"),
    **dict.fromkeys(["join_scans", "wants_second_scan"], ".second_scan"),
    **dict.fromkeys(["ModelFileError", "load_saved_model", "save_model"], ".store.model_dir"),
    **dict.fromkeys(["Trigger", "parse_trigger"], ".triggers"),
}

__all__ = [
    "ARCHITECTURES",
    "FAST",
    "REFERENCE",
    "DataError",
    "ImageData",
    "LabelProfile",
    "LoadedModel",
    "ModelFileError",
    "ModelOutputs",
    "NeuralCleanse",
    "PoisonedData",
    "Preprocessing",
    "ReverseConfig",
    "SanityCheckError",
    "ScanConfig",
    "ScanReport",
    "Trigger",
    "TrojanAttack",
    "TrojanConfig",
    "__version__",
    "accuracy",
    "anomaly_index",
    "attack_success_rate",
    "build_model",
    "builtin_profile",
    "clean_sample",
    "join_scans",
    "load_dataset",
    "load_model",
    "load_profile",
    "load_saved_model",
    "parse_trigger",
    "poison",
    "predict",
    "probe_outputs",
    "profile_from_reports",
    "rank_conventions",
    "reverse_engineer",
    "save_model",
    "trojan",
    "wants_second_scan",
]


def __getattr__(name: str) -> Any:
    """Import the module that defines a public ``name`` on first access, and keep the value here."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
