"""The folders neuralcleanse writes and reads, one module per folder kind.

- :mod:`~neuralcleanse.store.model_dir`: a trained or repaired model (``model.safetensors``, ``model.json``,
  ``triggers.npz``), written by ``train`` and ``mitigate``, read by every verb that takes a model;
- :mod:`~neuralcleanse.store.scan_dir`: a scan report (``report.json``, ``report.html``, ``triggers.npz``,
  PNG pictures), written by ``scan``, read by ``mitigate``;
- :mod:`~neuralcleanse.store.mitigation_dir`: a mitigation's result (``mitigation.json``, ``mitigation.html``,
  and the filter or the repaired model), written by ``mitigate``.

Each module owns its folder's file names, its writer and its reader. Files are written atomically (see
:mod:`neuralcleanse.atomic`), the folder's main file last: a folder holding it is complete. Nothing here
unpickles: weights are read with :mod:`safetensors`, metadata with :mod:`json`, arrays with
``numpy.load(allow_pickle=False)``.
"""
