"""Scanning a zoo of models: the manifest (:mod:`.manifest`), the runner (:mod:`.runner`, on an engine of
:mod:`neuralcleanse.engine`) and the summary (:mod:`.summary`)."""

from .manifest import Truth, ZooEntry, read_zoo
from .runner import ZooResult, finished_rows, scan_zoo
from .summary import ZOO_HTML, ZOO_JSON, write_zoo_summary, zoo_summary

__all__ = [
    "ZOO_HTML",
    "ZOO_JSON",
    "Truth",
    "ZooEntry",
    "ZooResult",
    "finished_rows",
    "read_zoo",
    "scan_zoo",
    "write_zoo_summary",
    "zoo_summary",
]
