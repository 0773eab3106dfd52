"""Keras model -> float TFLite bytes, and the deployable form of a fixed model.

```python
plain, pal = deployable(fixed)     # strip_fixing if wrapped, and the network palette
data = convert_to_tflite(plain)    # ordinary float32 TFLite bytes
```
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from typing import Tuple

import numpy as np

from tfmot_wfn.keras.cloning import computes_below_float32, float32_model
from tfmot_wfn.keras.compat import IS_LEGACY_KERAS, tf
from tfmot_wfn.keras.fix import strip_fixing
from tfmot_wfn.keras.network import is_wrapped
from tfmot_wfn.keras.report import palette


def deployable(model) -> Tuple[object, np.ndarray]:
    """``(plain model, palette)`` of a fixed model.

    A wrapped model (from `fix_weights`) is stripped with `tfmot_wfn.strip_fixing`
    and its palette holds the fixed values only; for a plain model the palette is
    every value of its fixable weights (kernels, biases, normalization gamma/beta).
    A model under a mixed precision policy is copied to compute in float32 (its weights
    are float32 variables, and the fixed values exact in its compute dtype).
    """
    if not hasattr(model, "layers") or not hasattr(model, "inputs"):
        raise TypeError(
            f"expected a Keras Functional or Sequential model, got {type(model).__name__}")
    pal = palette(model)
    plain = strip_fixing(model) if is_wrapped(model) else model
    if computes_below_float32(plain):  # mixed precision: the converter needs float32 ops
        plain = float32_model(plain)
    return plain, np.asarray(pal, dtype=np.float32)


def convert_to_tflite(model) -> bytes:
    """Float32 TFLite bytes of a plain Keras model (no quantization, default converter).

    The converter folds BatchNormalization into the preceding Conv/Dense and
    drops all-zero biases. Keras 3 models are exported to a temporary
    SavedModel first; its progress message is not printed.
    """
    if is_wrapped(model):
        raise ValueError("convert_to_tflite takes a plain model; call tfmot_wfn.strip_fixing first")
    if IS_LEGACY_KERAS:  # pragma: no cover - legacy CI job
        return bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    with tempfile.TemporaryDirectory(prefix="tfmot_wfn_export_") as tmp:
        saved = os.path.join(tmp, "saved_model")
        with contextlib.redirect_stdout(io.StringIO()):
            model.export(saved, format="tf_saved_model", verbose=False)
        return bytes(tf.lite.TFLiteConverter.from_saved_model(saved).convert())
