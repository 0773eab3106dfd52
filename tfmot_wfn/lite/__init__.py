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
```

Modules: `tflite_flatbuffer` (schema object API I/O), `palette_format` (names,
metadata), `palette_encoding` / `palette_decoding` (the flatbuffer rewrites),
`keras_conversion` (Keras -> float TFLite), `batchnorm_folding`,
`export_reasons` (why a tensor is not indexed), `export`, `inspection`, `runtime`,
`archive` (the entropy-coded archive: `save_archive` / `load_archive`).
"""

import importlib as _importlib

# Imported on first use (PEP 562): `tfmot_wfn.lite.archive` alone needs no TensorFlow.
_EXPORTS = {
    "FoldedPair": "batchnorm_folding", "fold_batchnorm": "batchnorm_folding",
    "foldable_batchnorms": "batchnorm_folding",
    "MODES": "export", "ExportResult": "export", "export_tflite": "export",
    "export_tflite_bytes": "export", "load_keras_model": "export",
    "TensorInfo": "inspection", "TFLiteInspection": "inspection", "inspect": "inspection",
    "convert_to_tflite": "keras_conversion",
    "decode_palette": "palette_decoding",
    "encode_palette": "palette_encoding",
    "IndexedTensor": "palette_format", "NonPaletteTensor": "palette_format",
    "available_runtimes": "runtime", "load_interpreter": "runtime",
    "make_interpreter": "runtime", "run_interpreter": "runtime", "runtime_name": "runtime",
    "ArchiveError": "archive", "ArchiveContents": "archive", "save_archive": "archive",
    "load_archive": "archive", "read_archive": "archive", "archive_size_report": "archive",
    "export_and_measure": "benchmark",
    "BATCHNORM_MODES": "export",
    "KeptScale": "batchnorm_scale", "keep_batchnorm_scales": "batchnorm_scale",
    "fold_scale_ops": "batchnorm_scale",
    "write_check_bundle": "runtime_check", "check_bundle": "runtime_check",
    "CheckResult": "runtime_check",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tfmot_wfn.lite' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f"tfmot_wfn.lite.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
