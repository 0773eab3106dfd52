"""Sizes and latency of a fixed model's palette and int8 weight-only TFLite files against its float
one.

For the demo, the CLI and ``benchmarks/``:

```python
numbers = export_and_measure(fixed_model, "out/", x_test=x, y_test=y)
print(numbers["palette_bytes"] / numbers["dense_bytes"], numbers["latency_ratio_decoded"])
```

``python -m tfmot_wfn.apps.export_benchmark --output out/`` runs `digits_benchmark`: the
demo CNN fixed with and without `fold_batchnorm`, both exported and measured
(without folding, each BatchNorm's scale is kept as a MUL: ``batchnorm="scale_op"``).
"""

from __future__ import annotations

import gzip
import os
from typing import Dict, Optional

import numpy as np


def export_and_measure(
    model,
    folder: str,
    x_test: Optional[np.ndarray] = None,
    y_test: Optional[np.ndarray] = None,
    *,
    runs: int = 2000,
    num_threads: int = 1,
    name: str = "model",
    batchnorm: str = "scale_op",
) -> Dict:
    """Export ``model`` as ``{name}_dense.tflite``, ``{name}_palette.tflite`` and
    ``{name}_int8_weight_only.tflite`` and measure.

    Returns bytes (and gzip bytes) of the files, their ratios, the palette size,
    the largest output difference to Keras and top-1 agreement on ``x_test``
    (palette: as stored and decoded; int8 weight-only: as stored, and whether its outputs
    equal the float file's), test accuracy when ``y_test`` is given, and median
    single-input latency of the float file, the palette file as stored, the palette file
    decoded at load and the int8 weight-only file as stored (all in one run).
    ``batchnorm`` is passed to the palette export (``"scale_op"``: a BatchNorm after a
    conv is kept as a MUL by its scale, so the conv's kernel stays palette-indexed); the
    int8 weight-only export takes its own default (the converter's folded BatchNorm).
    """
    from tfmot_wfn.export.palette_export import export_tflite

    os.makedirs(folder, exist_ok=True)
    dense = export_tflite(model, os.path.join(folder, f"{name}_dense.tflite"), mode="dense")
    palette = export_tflite(model, os.path.join(folder, f"{name}_palette.tflite"),
                            batchnorm=batchnorm)
    weights = export_tflite(model, os.path.join(folder, f"{name}_int8_weight_only.tflite"),
                            mode="int8_weight_only")
    out = _file_numbers(dense, palette, batchnorm)
    out.update(weight_only_path=weights.path, weight_only_bytes=weights.bytes,
               weight_only_size_ratio=weights.bytes / dense.bytes,
               weight_only_gzip_bytes=_gzip_bytes(weights.path),
               weight_only_stored={dtype: sum(t.elements for t in weights.stored_weights
                                               if t.dtype == dtype)
                                    for dtype in ("int8", "float16")})
    if x_test is not None:
        out.update(_agreement_with_keras(model, palette.path, x_test, y_test, weights.path,
                                         dense.path))
    out.update(_latency_numbers(dense.path, palette.path, weights.path, runs, num_threads))
    return out


def _gzip_bytes(path: str) -> int:
    with open(path, "rb") as f:
        return len(gzip.compress(f.read(), 9))


def _file_numbers(dense, palette, batchnorm: str) -> Dict:
    """Sizes of the two exports (`ExportResult`s) and what the palette file indexes."""
    return {
        "dense_path": dense.path, "palette_path": palette.path,
        "dense_bytes": dense.bytes, "palette_bytes": palette.bytes,
        "size_ratio": palette.bytes / dense.bytes,
        "dense_gzip_bytes": _gzip_bytes(dense.path),
        "palette_gzip_bytes": _gzip_bytes(palette.path),
        "palette_size": palette.palette_size,
        "indexed_weights": palette.indexed_elements,
        "batchnorm": batchnorm,
        "batchnorm_scales": [k.batchnorm for k in palette.batchnorm_scales],
        "non_palette": [(t.name, t.reason) for t in palette.non_palette if t.dtype == "FLOAT32"],
    }


def _agreement_with_keras(model, palette_path: str, x_test, y_test, weights_path: str,
                          dense_path: str) -> Dict:
    """The palette file's outputs against Keras' (as stored and decoded at load), and the
    int8 weight-only file's (as stored; also against the float file's)."""
    import tfmot_wfn
    from tfmot_wfn.keras.network import is_wrapped
    from tfmot_wfn.tflite.runtime import load_interpreter, run_interpreter

    out: Dict = {}
    plain = tfmot_wfn.strip_fixing(model) if is_wrapped(model) else model
    expected = np.asarray(plain(x_test, training=False))
    for key, path, decode in (("as_stored", palette_path, False), ("decoded", palette_path, True),
                              ("weight_only", weights_path, False)):
        got = run_interpreter(load_interpreter(path, decode=decode), x_test)
        if key == "weight_only":
            dense = run_interpreter(load_interpreter(dense_path), x_test)
            out["weight_only_equal_float_file"] = bool(np.array_equal(got, dense))
        out[f"max_abs_diff_{key}"] = float(np.abs(got - expected).max())
        out[f"top1_equal_{key}"] = bool(np.array_equal(got.argmax(-1), expected.argmax(-1)))
        if y_test is not None:
            out[f"tflite_accuracy_{key}"] = float(np.mean(got.argmax(-1) == y_test))
    if y_test is not None:
        out["keras_accuracy"] = float(np.mean(expected.argmax(-1) == y_test))
    return out


def _latency_numbers(dense_path: str, palette_path: str, weights_path: str, runs: int,
                     num_threads: int) -> Dict:
    """Median single-input latency of the float file, the palette file (both paths) and the
    int8 weight-only file (as stored)."""
    from tfmot_wfn.tflite.latency import compare_latency

    latency = compare_latency({"float": dense_path,
                               "palette_as_stored": (palette_path, False),
                               "palette_decoded": (palette_path, True),
                               "int8_weight_only": (weights_path, False)},
                              num_threads=num_threads, runs=runs)
    return dict(
        latency_us=latency.median_us, latency_runs=runs, latency_threads=num_threads,
        latency_runtime=latency.runtime,
        latency_ratio_as_stored=latency.ratio("palette_as_stored", "float"),
        latency_ratio_decoded=latency.ratio("palette_decoded", "float"),
        latency_ratio_weight_only=latency.ratio("int8_weight_only", "float"))


def _train_and_fix(model, x, y, fixing_epochs_per_stage: int, seed: int):
    import keras

    import tfmot_wfn

    keras.utils.set_random_seed(seed)
    steps = int(np.ceil(len(x) / 32))
    schedule = tfmot_wfn.StagedFixing(steps_per_stage=fixing_epochs_per_stage * steps)
    fixed = tfmot_wfn.fix_weights(model, fixing_schedule=schedule)
    fixed.compile(optimizer=keras.optimizers.Adam(1e-3, clipnorm=0.5),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    epochs = (len(schedule.fractions) - 1) * fixing_epochs_per_stage + 1
    fixed.fit(x, y, batch_size=32, epochs=epochs, verbose=0,
              callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0)])
    return fixed


def digits_benchmark(folder: str = "wfn_lite_benchmark", seed: int = 0, runs: int = 3000,
                     float_epochs: int = 30, epochs_per_stage: int = 2) -> Dict:
    """The demo CNN on digits, with and without `fold_batchnorm` before fixing, measured.

    Trains the float model like the demo, fixes ``fold_batchnorm(model)`` and
    ``model`` with the demo's schedule, and runs `export_and_measure` on both
    ("unfolded": BatchNorm kept, exported with ``batchnorm="scale_op"``).
    About a minute on 2 CPU cores.
    """
    import keras

    import tfmot_wfn
    from tfmot_wfn.apps.demo import build_cnn, load_digits_split
    from tfmot_wfn.keras.batchnorm_folding import fold_batchnorm

    keras.utils.set_random_seed(seed)
    x_train, x_test, y_train, y_test = load_digits_split(seed)
    model = build_cnn(keras)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x_train, y_train, batch_size=32, epochs=float_epochs, verbose=0)
    float_accuracy = float(np.mean(np.asarray(model(x_test)).argmax(-1) == y_test))
    out: Dict = {"float_accuracy": float_accuracy, "seed": seed}
    for name, base in (("folded", fold_batchnorm(model)), ("unfolded", model)):
        fixed = _train_and_fix(base, x_train, y_train, epochs_per_stage, seed)
        numbers = export_and_measure(fixed, folder, x_test, y_test, runs=runs, name=name)
        numbers["unique_values"] = tfmot_wfn.report(fixed).unique_values
        out[name] = numbers
    return out


def _main(argv=None) -> int:
    import argparse
    import json

    parser = argparse.ArgumentParser(
        description="Palette vs float TFLite on the digits demo CNN: bytes, accuracy, latency.")
    parser.add_argument("--output", default="wfn_lite_benchmark")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=3000, help="latency rounds")
    args = parser.parse_args(argv)
    numbers = digits_benchmark(args.output, seed=args.seed, runs=args.runs)
    print(json.dumps(numbers, indent=1))
    for name in ("folded", "unfolded"):
        r = numbers[name]
        print(f"{name:>8}: float TFLite {r['dense_bytes']:,} B, palette TFLite "
              f"{r['palette_bytes']:,} B (x{r['size_ratio']:.3f}), K={r['palette_size']}, "
              f"accuracy {r['tflite_accuracy_decoded']:.4f}, latency x"
              f"{r['latency_ratio_as_stored']:.2f} as stored / x{r['latency_ratio_decoded']:.3f} "
              f"decoded; int8 weight-only TFLite {r['weight_only_bytes']:,} B "
              f"(x{r['weight_only_size_ratio']:.3f}), latency x"
              f"{r['latency_ratio_weight_only']:.3f} as stored (1 thread)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main())
