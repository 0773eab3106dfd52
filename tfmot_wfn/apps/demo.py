"""The main job on built-in data: WFN on a small CNN with BatchNorm, scikit-learn digits.

Trains a float model, runs the paper's ten-stage schedule with the regulariser,
and reports float vs fixed accuracy, unique values, entropy and the palette.
Writes the fixed model (`.keras`, stripped: plain Keras layers) and
`report.json` to the output folder. About a minute on 2 CPU cores.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Dict, Optional

import numpy as np

from tfmot_wfn.utils.atomic_files import write_json_atomically

#: Batch size of the float training and of the fixing.
BATCH_SIZE = 32


def load_digits_split(seed: int = 0):
    """scikit-learn's 8x8 handwritten digits (ships with sklearn), 80/20 stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int64")
    return train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)


def build_cnn(keras):
    """Small CNN with BatchNorm for 8x8x1 images, 10 classes."""
    layers = keras.layers
    inputs = keras.Input((8, 8, 1), name="image")  # fixed names: file sizes do not vary
    h = layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv1")(inputs)
    h = layers.BatchNormalization(name="bn1")(h)
    h = layers.ReLU()(h)
    h = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="conv2")(h)
    h = layers.BatchNormalization(name="bn2")(h)
    h = layers.ReLU()(h)
    h = layers.Flatten()(h)
    outputs = layers.Dense(10, activation="softmax", name="classifier")(h)
    return keras.Model(inputs, outputs, name="digits_cnn")


def _export_mobile(model, output_dir: str, x_test, y_test) -> Dict:
    """Palette and float TFLite files and the archive of the fixed model, measured."""
    from tfmot_wfn import lite
    from tfmot_wfn.apps.export_benchmark import export_and_measure

    numbers = export_and_measure(model, output_dir, x_test, y_test, runs=300, name="model")
    archive = lite.save_archive(model, os.path.join(output_dir, "model.wfn"))
    numbers.update(archive_bytes=int(archive["archive_bytes"]),
                   archive_bound_bytes=float(archive["bound_bytes"]),
                   archive_within_bound=bool(archive["within_bound"]))
    return numbers


def run_demo(
    output_dir: str = "wfn_demo_output",
    distance: Optional[float] = None,
    float_epochs: int = 30,
    epochs_per_stage: int = 2,
    seed: int = 0,
    verbose: int = 1,
) -> Dict:
    """Run the demo and return the numbers it prints (also written to report.json)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tfmot_wfn
    from tfmot_wfn.keras.compat import keras

    start = time.time()
    say = print if verbose else (lambda *a, **k: None)
    distance = tfmot_wfn.DEFAULT_DISTANCE if distance is None else float(distance)
    os.makedirs(output_dir, exist_ok=True)
    keras.utils.set_random_seed(seed)
    digits = _Digits(*load_digits_split(seed))

    say(f"[1/4] training the float CNN on {len(digits.x_train)} digit images "
        f"({float_epochs} epochs)")
    model = _train_float(digits, float_epochs, verbose)
    float_acc = float(model.evaluate(digits.x_test, digits.y_test, verbose=0)[1])
    say(f"      float accuracy: {float_acc:.4f}")

    steps_per_epoch = int(np.ceil(len(digits.x_train) / BATCH_SIZE))
    schedule = tfmot_wfn.StagedFixing(steps_per_stage=epochs_per_stage * steps_per_epoch)
    say(f"[2/4] weight fixing: {len(schedule.fractions)} stages, {epochs_per_stage} epochs each, "
        f"delta={distance}")
    fix_epochs = (len(schedule.fractions) - 1) * epochs_per_stage + 1
    fixed, update = _fix_and_train(model, digits, schedule, distance, fix_epochs, verbose)

    say("[3/4] stripping and measuring")
    final = tfmot_wfn.strip_fixing(fixed)
    final.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    fixed_acc = float(final.evaluate(digits.x_test, digits.y_test, verbose=0)[1])
    rep = tfmot_wfn.report(final)
    model_path = os.path.join(output_dir, "fixed_model.keras")
    final.save(model_path)
    results = {
        "float_accuracy": float_acc,
        "fixed_accuracy": fixed_acc,
        "accuracy_change_points": 100.0 * (fixed_acc - float_acc),
        "lossless": fixed_acc >= float_acc - 0.005,
        "distance": distance,
        "stages": [s.__dict__ for s in update.history],
        **_report_numbers(rep),
        "model_path": model_path,
        "seconds": time.time() - start,
    }
    say("[4/4] exporting for mobile: palette TFLite, int8 weight-only TFLite, float TFLite, "
        "entropy-coded archive")
    results["mobile"] = _export_mobile(final, output_dir, digits.x_test, digits.y_test)
    results["seconds"] = time.time() - start
    write_json_atomically(os.path.join(output_dir, "report.json"), results)
    _print_results(say, results, rep, output_dir)
    return results


@dataclasses.dataclass
class _Digits:
    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


def _train_float(digits: _Digits, epochs: int, verbose: int):
    """The float CNN, trained (Adam 3e-3)."""
    from tfmot_wfn.keras.compat import keras
    from tfmot_wfn.keras.progress import EpochProgress

    model = build_cnn(keras)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(digits.x_train, digits.y_train, batch_size=BATCH_SIZE, epochs=epochs, verbose=0,
              callbacks=[EpochProgress(epochs, "float training", bool(verbose))])
    return model


def _fix_and_train(model, digits: _Digits, schedule, distance: float, epochs: int, verbose: int):
    """Wrap `model` for fixing and train it `epochs` epochs through the schedule.

    Returns the wrapped model and its `UpdateFixingStep` (whose history lists the stages).
    """
    import tfmot_wfn
    from tfmot_wfn.keras.compat import keras
    from tfmot_wfn.keras.progress import EpochProgress

    fixed = tfmot_wfn.fix_weights(model, fixing_schedule=schedule, distance=distance)
    fixed.compile(optimizer=keras.optimizers.Adam(1e-3, clipnorm=0.5),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    update = tfmot_wfn.UpdateFixingStep(verbose=0)
    fixed.fit(digits.x_train, digits.y_train, batch_size=BATCH_SIZE, epochs=epochs, verbose=0,
              callbacks=[update, EpochProgress(epochs, "fixing", bool(verbose))])
    return fixed, update


def _report_numbers(rep) -> Dict:
    """The `tfmot_wfn.report` numbers the demo's report.json holds."""
    return {"unique_values": rep.unique_values, "unique_values_nonzero": rep.unique_values_nonzero,
            "entropy_bits": rep.entropy_bits, "entropy_bits_nonzero": rep.entropy_bits_nonzero,
            "zero_fraction": rep.zero_fraction, "palette": rep.palette, "layers": rep.layers,
            "total_weights": rep.total_weights}


def _print_results(say, results: Dict, rep, output_dir: str) -> None:
    float_acc, fixed_acc = results["float_accuracy"], results["fixed_accuracy"]
    say("")
    say(f"float accuracy      : {float_acc:.4f}")
    say(f"fixed accuracy      : {fixed_acc:.4f}  ({results['accuracy_change_points']:+.2f} points, "
        f"{'lossless' if results['lossless'] else 'NOT lossless'})")
    say(f"weights             : {rep.total_weights} (kernels, BatchNorm gamma/beta, biases)")
    say(f"unique values       : {rep.unique_values} with 0, {rep.unique_values_nonzero} without 0")
    say(f"entropy             : {rep.entropy_bits:.3f} bits with 0, "
        f"{rep.entropy_bits_nonzero:.3f} bits without 0")
    say(f"zeros               : {rep.zero_fraction:.2%}")
    say("palette             : " + ", ".join(f"{p['value']:g}" for p in rep.palette))
    m = results["mobile"]
    say(f"float TFLite        : {m['dense_bytes']:>8,} bytes  (gzip {m['dense_gzip_bytes']:,})")
    say(f"palette TFLite      : {m['palette_bytes']:>8,} bytes  (x{m['size_ratio']:.3f}; "
        f"gzip {m['palette_gzip_bytes']:,}); top-1 equal to Keras: {m['top1_equal_decoded']}")
    stored = m["weight_only_stored"]
    say(f"int8 weight-only    : {m['weight_only_bytes']:>8,} bytes  "
        f"(x{m['weight_only_size_ratio']:.3f}; gzip {m['weight_only_gzip_bytes']:,}; "
        f"{stored['int8']:,} weights exact int8, {stored['float16']:,} float16); outputs equal "
        f"to the float file's: {m['weight_only_equal_float_file']}")
    say(f"archive (.wfn)      : {m['archive_bytes']:>8,} bytes  (entropy bound "
        f"{m['archive_bound_bytes']:,.0f})")
    say(f"palette latency     : x{m['latency_ratio_decoded']:.2f} of float decoded at load, "
        f"x{m['latency_ratio_as_stored']:.2f} as stored (1 thread, {m['latency_runtime']})")
    say(f"weight-only latency : x{m['latency_ratio_weight_only']:.2f} of float as stored (no "
        "decoder)")
    say(f"wrote {output_dir}/: fixed_model.keras, model_palette.tflite, "
        f"model_int8_weight_only.tflite, model_dense.tflite, model.wfn, report.json in "
        f"{results['seconds']:.0f} s")
