"""One module per model format: each loader reads a file into a :class:`RawModel` without running code from it.

- :mod:`.detect`: which format a file is in (:func:`detect_format`, :data:`FORMATS`).
- :mod:`.torch`: neuralcleanse model directories, TorchScript, state dicts (and refusing pickled code).
- :mod:`.onnx` and :mod:`.onnx_ops`: ONNX graphs converted to a differentiable :class:`OnnxModule`.
- :mod:`.keras`, :mod:`.keras_config`, :mod:`.keras_layers`, :mod:`.keras_model`: Keras HDF5/``.keras`` files
  rebuilt as a :class:`KerasModule`.
- :mod:`.raw`: :class:`RawModel`, what every loader returns, and the helpers they share.

:func:`neuralcleanse.loading.load_model` is the entry point that picks the loader and applies preprocessing.
"""

from .detect import FORMATS, detect_format
from .keras import load_keras
from .keras_layers import KERAS_LAYERS
from .keras_model import KerasModule
from .onnx import OnnxModule, load_onnx
from .onnx_ops import ONNX_OPS
from .raw import RawModel, first_line, layout_from_dims
from .torch import load_neuralcleanse, load_state_dict, load_torchscript

__all__ = [
    "FORMATS",
    "KERAS_LAYERS",
    "ONNX_OPS",
    "KerasModule",
    "OnnxModule",
    "RawModel",
    "detect_format",
    "first_line",
    "layout_from_dims",
    "load_keras",
    "load_neuralcleanse",
    "load_onnx",
    "load_state_dict",
    "load_torchscript",
]
