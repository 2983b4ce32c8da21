"""The jobs behind the CLI verbs, one module each: train, evaluate, scan, scan-zoo, mitigate, demo.

Each job is one importable function that loads what it needs, runs the library, writes only where it is told
to, and returns values (figures as plain dicts, reports as objects); the CLI formats and prints them.
"""

from .demo import demo
from .evaluate import evaluate_model
from .mitigate import mitigate_model
from .scan import scan_model
from .scan_zoo import scan_zoo_job
from .train import train_model

__all__ = ["demo", "evaluate_model", "mitigate_model", "scan_model", "scan_zoo_job", "train_model"]
