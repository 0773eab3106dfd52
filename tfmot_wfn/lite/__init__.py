"""Mobile export: TFLite files whose fixed weights index ONE palette shared by the whole network.

```python
import tfmot_wfn
from tfmot_wfn import lite

fixed = tfmot_wfn.fix_weights(float_model)          # ... train with UpdateFixingStep ...
result = lite.export_tflite(fixed, "model.tflite") # palette file: uint8/int16 indices + 1 palette
# BatchNorm after a conv/dense: the kernel stays palette indices and the BN scale is a
# separate per-channel MUL (batchnorm="scale_op", default); or fold BN into the float
# model before fixing with lite.fold_batchnorm (then export with batchnorm="fold").
print(result)
print(lite.inspect("model.tflite"))                # table: palette, tensors, bytes, reasons
interpreter = lite.load_interpreter("model.tflite", num_threads=1)   # decoded once: float speed
probabilities = lite.run_interpreter(interpreter, x)
# For an app without our decoder: exact int8 weights the stock interpreter expands at load.
lite.export_tflite(fixed, "model_int8_weight_only.tflite", mode="int8_weight_only")
```

This module is the public face of three packages: `tfmot_wfn.tflite` (the
palette file format on the flatbuffer, inspection, runtimes; no Keras),
`tfmot_wfn.export` (Keras model -> palette TFLite) and `tfmot_wfn.archive` (the
entropy-coded ``.wfn`` archive). Names are imported on first use (PEP 562), so
`tfmot_wfn.lite.read_archive` does not import TensorFlow.
"""

import importlib as _importlib

_EXPORTS = {
    "FoldedPair": "tfmot_wfn.keras.batchnorm_folding",
    "fold_batchnorm": "tfmot_wfn.keras.batchnorm_folding",
    "foldable_batchnorms": "tfmot_wfn.keras.batchnorm_folding",
    "MODES": "tfmot_wfn.export.palette_export",
    "BATCHNORM_MODES": "tfmot_wfn.export.palette_export",
    "ExportResult": "tfmot_wfn.export.palette_export",
    "export_tflite": "tfmot_wfn.export.palette_export",
    "export_tflite_bytes": "tfmot_wfn.export.palette_export",
    "load_keras_model": "tfmot_wfn.export.palette_export",
    "convert_to_tflite": "tfmot_wfn.export.conversion",
    "keep_batchnorm_scales": "tfmot_wfn.export.batchnorm_mul",
    "TensorInfo": "tfmot_wfn.tflite.inspection",
    "TFLiteInspection": "tfmot_wfn.tflite.inspection",
    "inspect": "tfmot_wfn.tflite.inspection",
    "decode_palette": "tfmot_wfn.tflite.palette_decoding",
    "encode_palette": "tfmot_wfn.tflite.palette_encoding",
    "IndexedTensor": "tfmot_wfn.tflite.palette_format",
    "NonPaletteTensor": "tfmot_wfn.tflite.palette_format",
    "KeptScale": "tfmot_wfn.tflite.scale_ops",
    "fold_scale_ops": "tfmot_wfn.tflite.scale_ops",
    "available_runtimes": "tfmot_wfn.tflite.runtime",
    "load_interpreter": "tfmot_wfn.tflite.runtime",
    "make_interpreter": "tfmot_wfn.tflite.runtime",
    "run_interpreter": "tfmot_wfn.tflite.runtime",
    "runtime_name": "tfmot_wfn.tflite.runtime",
    "ArchiveError": "tfmot_wfn.archive.wfn_format",
    "ArchiveContents": "tfmot_wfn.archive.wfn_format",
    "save_archive": "tfmot_wfn.archive.wfn_archive",
    "load_archive": "tfmot_wfn.archive.wfn_archive",
    "read_archive": "tfmot_wfn.archive.wfn_decoding",
    "archive_size_report": "tfmot_wfn.archive.wfn_archive",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tfmot_wfn.lite' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
