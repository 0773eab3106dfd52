"""Real architectures end to end: build, fix, fit a stage, strip, export palette TFLite, measure.

Shared by `tests/test_architectures.py` (the checks) and `benchmarks/architectures.py`
(the README's architecture matrix). Keras comes from `tfmot_wfn.keras.compat`, so the
same code runs on tf_keras under ``TF_USE_LEGACY_KERAS=1`` once that seam exists.

```python
run = run_architecture("MobileNetV2", workdir)      # one short fit with two fixing stages
row = matrix_row(run)                                # the numbers of one matrix row
print(markdown_table([row]))
```

Models are keras.applications with ``weights=None``, a 32x32x3 input and 4 classes
(logits, so that output differences are not hidden by a softmax), and a small
Transformer encoder built with the functional API. The data are random (seeded): the
point is that every step works and what each step keeps, not accuracy.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from typing import Dict, List, Optional

import numpy as np

import tfmot_wfn
from tfmot_wfn import lite
from tfmot_wfn.keras.compat import keras

ARCHITECTURES = ("MobileNetV2", "ResNet50", "EfficientNetB0", "DenseNet121", "Transformer")
IMAGE_SHAPE = (32, 32, 3)
CLASSES = 4
SEQUENCE, VOCABULARY = 16, 64
#: Two stages: half the weights, then all of them (the second at the last step).
FRACTIONS = (0.5, 1.0)
#: |TFLite - Keras| on the logits must stay within this fraction of max |Keras logit| (the
#: logits of these untrained, fixed networks range from 1e-4 to a few units).
TFLITE_TOLERANCE = 1e-4


def transformer_encoder(seed: int = 0, blocks: int = 2, width: int = 32, heads: int = 2):
    """A small functional Transformer encoder classifier (token ids -> logits)."""
    L = keras.layers
    keras.utils.set_random_seed(seed)
    tokens = keras.Input((SEQUENCE,), dtype="int32", name="tokens")
    h = L.Embedding(VOCABULARY, width, name="embedding")(tokens)
    for b in range(blocks):
        a = L.MultiHeadAttention(heads, width // heads, name=f"attention_{b}")(h, h)
        h = L.LayerNormalization(name=f"attention_norm_{b}")(L.Add(name=f"attention_add_{b}")([h, a]))
        f = L.Dense(2 * width, activation="relu", name=f"ffn_in_{b}")(h)
        f = L.Dense(width, name=f"ffn_out_{b}")(f)
        h = L.LayerNormalization(name=f"ffn_norm_{b}")(L.Add(name=f"ffn_add_{b}")([h, f]))
    h = L.GlobalAveragePooling1D(name="pool")(h)
    logits = L.Dense(CLASSES, name="classifier")(h)
    return keras.Model(tokens, logits, name="transformer_encoder")


def build_model(name: str, seed: int = 0):
    """The float model `name` (one of `ARCHITECTURES`), freshly initialised."""
    if name == "Transformer":
        return transformer_encoder(seed)
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; one of {ARCHITECTURES}")
    keras.utils.set_random_seed(seed)
    return getattr(keras.applications, name)(
        weights=None, input_shape=IMAGE_SHAPE, classes=CLASSES, classifier_activation=None)


def make_data(name: str, n: int, seed: int = 0):
    """``(x, y)``: random images in [0, 1] (or token ids) and random labels."""
    rng = np.random.default_rng(seed)
    if name == "Transformer":
        x = rng.integers(0, VOCABULARY, (n, SEQUENCE)).astype("int32")
    else:
        x = rng.random((n,) + IMAGE_SHAPE).astype("float32")
    return x, rng.integers(0, CLASSES, n).astype("int64")


def leaf_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and hasattr(layer, "inputs"):
            yield from leaf_layers(layer)
        else:
            yield layer


class _StageTimer(keras.callbacks.Callback):
    """Wall time of each fixing stage: put one before and one after `UpdateFixingStep`."""

    def __init__(self, update, start=None):
        super().__init__()
        self.update, self.start, self.t0, self.seconds = update, start, 0.0, []

    def on_train_batch_begin(self, batch, logs=None):
        if self.start is None:
            self.t0 = time.perf_counter()
        elif len(self.update.history) > len(self.start.seconds):
            self.start.seconds.append(time.perf_counter() - self.start.t0)


@dataclasses.dataclass
class ArchitectureRun:
    """Everything one end-to-end run made and measured."""

    name: str
    float_model: object
    fixed: object
    stripped: object
    update: object                       # the UpdateFixingStep callback (its history)
    report: object                       # tfmot_wfn.report(stripped)
    export: object                       # lite ExportResult (palette mode)
    x: np.ndarray                        # the evaluation batch
    keras_wrapped: np.ndarray            # fixed(x, training=False)
    keras_stripped: np.ndarray           # stripped(x, training=False)
    tflite_decoded: np.ndarray           # load_interpreter(path) (palette decoded at load)
    tflite_stored: np.ndarray            # load_interpreter(path, decode=False) (as stored)
    stage_seconds: List[float]
    seconds: Dict[str, float]
    dense_bytes: Optional[int] = None    # float TFLite of the stripped model (if measured)


def run_architecture(name: str, workdir: str, steps_per_stage: int = 1, batch_size: int = 8,
                     seed: int = 0, dense_bytes: bool = False) -> ArchitectureRun:
    """Build `name`, fix it, fit through `FRACTIONS` (graph mode), strip, export, run TFLite."""
    seconds = {}
    t = time.perf_counter()

    def lap(key):
        nonlocal t
        now = time.perf_counter()
        seconds[key] = now - t
        t = now

    model = build_model(name, seed)
    lap("build")
    schedule = tfmot_wfn.StagedFixing(fractions=FRACTIONS, steps_per_stage=steps_per_stage)
    fixed = tfmot_wfn.fix_weights(model, fixing_schedule=schedule)
    lap("fix_weights")
    steps = (len(FRACTIONS) - 1) * steps_per_stage + 1
    x, y = make_data(name, steps * batch_size, seed)
    fixed.compile(optimizer=keras.optimizers.SGD(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    update = tfmot_wfn.UpdateFixingStep(verbose=0)
    before = _StageTimer(update)
    fixed.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0,
              callbacks=[before, update, _StageTimer(update, before)])
    lap("fit")
    stripped = tfmot_wfn.strip_fixing(fixed)
    lap("strip_fixing")
    report = tfmot_wfn.report(stripped)
    xe = x[:batch_size]
    keras_wrapped = np.asarray(fixed(xe, training=False))
    keras_stripped = np.asarray(stripped(xe, training=False))
    lap("keras_outputs")
    path = os.path.join(workdir, f"{name}_palette.tflite")
    export = lite.export_tflite(fixed, path)
    lap("export_tflite")
    decoded = lite.run_interpreter(lite.load_interpreter(path), xe)
    stored = lite.run_interpreter(lite.load_interpreter(path, decode=False), xe)
    lap("interpreter")
    dense = None
    if dense_bytes:
        dense = len(lite.export_tflite_bytes(stripped, mode="dense")[0])
        lap("dense_export")
    return ArchitectureRun(
        name=name, float_model=model, fixed=fixed, stripped=stripped, update=update,
        report=report, export=export, x=xe, keras_wrapped=keras_wrapped,
        keras_stripped=keras_stripped, tflite_decoded=np.asarray(decoded),
        tflite_stored=np.asarray(stored), stage_seconds=list(before.seconds), seconds=seconds,
        dense_bytes=dense)


# ------------------------------------------------------------------- the matrix
def dense_category(t) -> str:
    """A short name for why a tensor of the palette file stayed dense (`NonPaletteTensor`)."""
    from tfmot_wfn.tflite.scale_ops import SCALE_REASON

    r = t.reason
    if t.dtype != "FLOAT32":
        return f"{t.dtype.lower()} shapes/axes"
    if r == SCALE_REASON:
        return "BN scale MUL"
    if "shift divided by its scale" in r:
        return "BN shift/scale bias"
    if "folded into" in r:
        return "BN folded by converter"
    if "by the converter (it folded constant scalings" in r:
        return "weight scaled by converter"
    if "scale gamma/sqrt" in r or "shift beta-mean" in r:
        return "standalone BN scale/shift"
    if r.startswith("no weight of the Keras model"):
        return "graph constants"
    return "other: " + r.split(":")[0]


def dense_summary(non_palette) -> Dict[str, Dict[str, int]]:
    """``category -> {"tensors", "bytes"}`` of the tensors left dense."""
    out: Dict[str, Dict[str, int]] = collections.OrderedDict()
    for t in sorted(non_palette, key=lambda t: -t.bytes):
        entry = out.setdefault(dense_category(t), {"tensors": 0, "bytes": 0})
        entry["tensors"] += 1
        entry["bytes"] += int(t.bytes)
    return out


def not_fixed_summary(report) -> Dict[str, Dict[str, object]]:
    """``what -> {"layers", "values", "reason"}`` of the weights fixing left float."""
    out: Dict[str, Dict[str, object]] = collections.OrderedDict()
    for e in report.not_fixed:
        what = f"{e['class']} {'/'.join(e['weights'])}"
        entry = out.setdefault(what, {"layers": 0, "values": 0, "reason": e["reason"]})
        entry["layers"] += 1
        entry["values"] += int(e["size"])
    return out


def matrix_row(run: ArchitectureRun) -> Dict[str, object]:
    """The numbers of one architecture (see `markdown_table`)."""
    from tfmot_wfn.keras.network import wrappers_of

    with_weights = [layer for layer in leaf_layers(run.float_model) if layer.weights]
    wrappers = wrappers_of(run.fixed)
    fixable = sum(int(np.prod(v.shape)) for w in wrappers for v in w.fixable_variables)
    last = run.update.history[-1]
    wrapped_classes = sorted({type(w.layer).__name__ for w in wrappers})
    return {
        "architecture": run.name,
        "parameters": int(run.float_model.count_params()),
        "layers_with_weights": len(with_weights),
        "wrapped_layers": len(wrappers),
        "wrapped_classes": wrapped_classes,
        "fixable_weights": fixable,
        "not_fixed": not_fixed_summary(run.report),
        "stages": len(run.update.history),
        "stage_seconds": [round(s, 2) for s in run.stage_seconds],
        "palette_size": int(last.palette_size),
        "unique_values": int(run.report.unique_values),
        "palette_tflite_bytes": int(run.export.bytes),
        "dense_tflite_bytes": run.dense_bytes,
        "indexed_tensors": len(run.export.indexed),
        "max_abs_tflite_minus_keras": float(np.max(np.abs(run.tflite_decoded - run.keras_stripped))),
        "max_abs_stored_tflite_minus_keras": float(
            np.max(np.abs(run.tflite_stored - run.keras_stripped))),
        "max_abs_logit": float(np.max(np.abs(run.keras_stripped))),
        "left_dense": dense_summary(run.export.non_palette),
        "seconds": {k: round(v, 1) for k, v in run.seconds.items()},
    }


def _not_fixed_text(row) -> str:
    parts = []
    for what, e in row["not_fixed"].items():
        if what.endswith("moving_mean/moving_variance"):
            short = "running statistics"
        elif "preprocessing statistics" in e["reason"]:
            short = "preprocessing statistics, not trained"
        else:
            short = e["reason"].split(";")[0]
        layers = f"{e['layers']} layer" + ("s" if e["layers"] != 1 else "")
        parts.append(f"{what} ({layers}, {e['values']:,} values): {short}")
    return "; ".join(parts) or "nothing"


def _dense_text(row) -> str:
    return "; ".join(f"{k}: {e['tensors']} ({e['bytes']:,} B)" for k, e in row["left_dense"].items())


def markdown_table(rows: List[Dict[str, object]]) -> str:
    """The architecture matrix as a markdown table."""
    head = ["architecture", "layers with weights / wrapped", "fixable weights", "not fixed (why)",
            "stage time (s)", "palette / unique after last stage",
            "palette TFLite vs dense (bytes)", "max abs(tflite - keras)", "left dense in the file"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        dense = r["dense_tflite_bytes"]
        size = f"{r['palette_tflite_bytes']:,}" + (
            f" vs {dense:,} (x{r['palette_tflite_bytes'] / dense:.3f})" if dense else "")
        cells = [
            f"{r['architecture']} ({r['parameters']:,} params; {', '.join(r['wrapped_classes'])})",
            f"{r['layers_with_weights']} / {r['wrapped_layers']}",
            f"{r['fixable_weights']:,}",
            _not_fixed_text(r),
            " + ".join(f"{s:.2f}" for s in r["stage_seconds"]),
            f"{r['palette_size']} / {r['unique_values']}",
            size,
            f"{max(r['max_abs_tflite_minus_keras'], r['max_abs_stored_tflite_minus_keras']):.1e}"
            f" (logits up to {r['max_abs_logit']:.2g})",
            _dense_text(r),
        ]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)
