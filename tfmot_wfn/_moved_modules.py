"""Old module paths of tfmot_wfn 0.1 that still import, for one release.

The package was reorganised by dependency (``core`` <- ``keras`` <- ``tflite`` /
``export`` / ``archive`` <- ``apps``). Importing an old path returns the module
at its new path (the same object, so patching either name patches both) and
emits a `DeprecationWarning` naming the new path. ``tfmot_wfn.data`` and
``tfmot_wfn.plot`` are kept as short public names without a warning.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# old path -> new path
MOVED = {
    "tfmot_wfn.atomic_files": "tfmot_wfn.utils.atomic_files",
    "tfmot_wfn.cli": "tfmot_wfn.apps.cli",
    "tfmot_wfn.demo": "tfmot_wfn.apps.demo",
    "tfmot_wfn.fix_job": "tfmot_wfn.apps.fix_job",
    "tfmot_wfn.keras.metrics": "tfmot_wfn.keras.report",
    "tfmot_wfn.keras.network_fixing": "tfmot_wfn.keras.network",
    "tfmot_wfn.lite.archive": "tfmot_wfn.archive.wfn_archive",
    "tfmot_wfn.lite.archive_inspection": "tfmot_wfn.archive.inspection",
    "tfmot_wfn.lite.batchnorm_folding": "tfmot_wfn.keras.batchnorm_folding",
    "tfmot_wfn.lite.batchnorm_scale": "tfmot_wfn.export.batchnorm_mul",
    "tfmot_wfn.lite.benchmark": "tfmot_wfn.apps.export_benchmark",
    "tfmot_wfn.lite.compaction": "tfmot_wfn.tflite.compaction",
    "tfmot_wfn.lite.export": "tfmot_wfn.export.palette_export",
    "tfmot_wfn.lite.export_reasons": "tfmot_wfn.export.tensor_reasons",
    "tfmot_wfn.lite.inspection": "tfmot_wfn.tflite.inspection",
    "tfmot_wfn.lite.keras_conversion": "tfmot_wfn.export.conversion",
    "tfmot_wfn.lite.latency": "tfmot_wfn.tflite.latency",
    "tfmot_wfn.lite.palette_decoding": "tfmot_wfn.tflite.palette_decoding",
    "tfmot_wfn.lite.palette_encoding": "tfmot_wfn.tflite.palette_encoding",
    "tfmot_wfn.lite.palette_format": "tfmot_wfn.tflite.palette_format",
    "tfmot_wfn.lite.runtime": "tfmot_wfn.tflite.runtime",
    "tfmot_wfn.lite.runtime_check": "tfmot_wfn.apps.runtime_check",
    "tfmot_wfn.lite.tflite_flatbuffer": "tfmot_wfn.tflite.flatbuffer",
}
# short public names, no warning
ALIASES = {
    "tfmot_wfn.data": "tfmot_wfn.apps.data",
    "tfmot_wfn.plot": "tfmot_wfn.apps.plot",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, new: str, warn: bool):
        self.new, self.warn = new, warn

    def create_module(self, spec):
        if self.warn:
            warnings.warn(f"{spec.name} moved to {self.new}; the old path will be removed in the "
                          f"next release: import {self.new}", DeprecationWarning, stacklevel=2)
        return importlib.import_module(self.new)

    def exec_module(self, module):
        pass  # already executed under its new name


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new = MOVED.get(fullname) or ALIASES.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new, fullname in MOVED))


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` once."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())
