"""neuralcleanse: find and remove backdoors in image classifiers (Neural Cleanse, Wang et al., S&P 2019).

The public API, re-exported here; docs/how-it-works.md states the conventions (images are (N, C, H, W) floats
in [0, 1], triggers stamp as ``(1 - m) * x + m * p``, rates are fractions).
"""

from ._version import __version__
from .attacks import PoisonedData, TrojanAttack, TrojanConfig, poison, trojan
from .config import FAST, REFERENCE, ScanConfig
from .data import DataError, ImageData, clean_sample, load_dataset
from .loading import LoadedModel, load_model
from .metrics import accuracy, attack_success_rate, predict
from .models import ARCHITECTURES, build_model
from .outliers import anomaly_index
from .preprocess import Preprocessing
from .probe import ModelOutputs, probe_outputs
from .reverse import ReverseConfig, reverse_engineer
from .scan import NeuralCleanse, SanityCheckError, ScanReport
from .store.model_dir import ModelFileError, load_saved_model, save_model
from .triggers import Trigger, parse_trigger

__all__ = [
    "ARCHITECTURES", "FAST", "REFERENCE", "DataError", "ImageData", "LoadedModel", "ModelFileError", "ModelOutputs",
    "NeuralCleanse", "PoisonedData", "Preprocessing", "ReverseConfig", "SanityCheckError", "ScanConfig", "ScanReport",
    "Trigger", "TrojanAttack", "TrojanConfig", "__version__", "accuracy", "anomaly_index", "attack_success_rate",
    "build_model", "clean_sample", "load_dataset", "load_model", "load_saved_model", "parse_trigger", "poison",
    "predict", "probe_outputs", "reverse_engineer", "save_model", "trojan",
]
