"""A check bundle: palette TFLite files, inputs and the Keras outputs they must reproduce.

The bundle lets another interpreter, in another environment, check the files
without tfmot_wfn or TensorFlow. ``tflite-runtime`` 2.14 (the design's named
runtime) has wheels up to Python 3.11 and needs ``numpy<2``, so CI runs it in its
own virtualenv:

```bash
python -m tfmot_wfn.apps.runtime_check --output bundle/          # main venv: write + check here
python -m venv /tmp/tflrt && /tmp/tflrt/bin/pip install "tflite-runtime==2.14.0" "numpy<2"
/tmp/tflrt/bin/python tools/check_tflite_runtime.py bundle/       # imports tflite_runtime + numpy
```

```python
manifest = write_check_bundle(fixed_model, "bundle/", x_test)
results = check_bundle("bundle/")          # the same check with the runtime found here
```

Files written (``<name>.tflite`` with ``<name>.expected.npy`` each):

* ``palette``: the default export (compact, BatchNorm scales kept as MULs,
  uint8 indices when the palette has <= 256 values);
* ``palette_named``: the same with ``compact=False`` (the converter's names,
  options and tables kept);
* ``palette_int16``: the same with int16 indices;
* ``palette_decoded``: what ``load_interpreter(decode=True)`` runs (weights
  decoded, BatchNorm MULs folded back into them);
* ``palette_bn_fold``: ``batchnorm="fold"`` (the converter's folded weights);
* ``int8_weight_only``: ``mode="int8_weight_only"`` (exact int8 weights with per-channel scales
  behind DEQUANTIZE, BatchNorm folded into the scales);
* ``float16``: ``mode="float16"`` (exact float16 weights behind DEQUANTIZE);
* ``dense``: the float TFLite file;

plus ``inputs.npy`` and ``manifest.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, List, Optional, Union

import numpy as np

INPUTS_FILE = "inputs.npy"
MANIFEST_FILE = "manifest.json"
EXPECTED_SUFFIX = ".expected.npy"
ATOL = 1e-5


VARIANTS: Dict[str, Dict] = {
    "palette": dict(mode="palette", batchnorm="scale_op", index_dtype=None),
    # the converter's names, options and tables kept (compact=False)
    "palette_named": dict(mode="palette", batchnorm="scale_op", index_dtype=None, compact=False),
    "palette_int16": dict(mode="palette", batchnorm="scale_op", index_dtype="int16"),
    "palette_bn_fold": dict(mode="palette", batchnorm="fold", index_dtype=None),
    # exact int8 weights (DEQUANTIZE version 5, BatchNorm folded into the channel scales)
    "int8_weight_only": dict(mode="int8_weight_only", batchnorm="fold", index_dtype=None),
    # exact float16 weights behind DEQUANTIZE (version 3), BatchNorm scales as MULs
    "float16": dict(mode="float16", batchnorm="scale_op", index_dtype=None),
    "dense": dict(mode="dense", batchnorm="fold", index_dtype=None),
}


def write_check_bundle(
    model,
    directory: Union[str, os.PathLike],
    x,
    atol: float = ATOL,
) -> Dict:
    """Write palette/int8 weight-only/float16/dense TFLite files of ``model``, ``x`` and the
    Keras outputs to ``directory``.

    Args:
      model: a fixed Keras model (wrapped by `fix_weights` or stripped) with one input
        and one output.
      directory: created if needed; files of an earlier bundle are overwritten.
      x: the inputs (e.g. the test set), saved as ``inputs.npy`` in the model's dtype.
      atol: the tolerance recorded in the manifest (the check scripts default to 1e-5).

    Returns:
      The manifest (also written to ``manifest.json``): per file its bytes, export
      settings and the BatchNorms kept as MULs.
    """
    import tfmot_wfn
    from tfmot_wfn.utils.atomic_files import write_bytes_atomically
    from tfmot_wfn.export.palette_export import export_tflite_bytes
    from tfmot_wfn.export.conversion import deployable
    from tfmot_wfn.tflite.palette_decoding import decode_palette

    plain, _ = deployable(model)
    if len(plain.inputs) != 1 or len(plain.outputs) != 1:
        raise ValueError("write_check_bundle takes a model with one input and one output")
    folder = os.fspath(directory)
    os.makedirs(folder, exist_ok=True)
    dtype = plain.inputs[0].dtype
    dtype = getattr(dtype, "name", dtype) or "float32"
    inputs = np.asarray(x, dtype=np.dtype(dtype))
    expected = np.asarray(plain(inputs, training=False), np.float32)
    np.save(os.path.join(folder, INPUTS_FILE), inputs)
    files: Dict[str, Dict] = {}
    for name, options in VARIANTS.items():
        if name == "palette_int16" and files["palette"]["index_dtypes"] == ["int16"]:
            continue  # the default file already has int16 indices
        data, result = export_tflite_bytes(plain, **options)
        outputs = {name: data}
        if name == "palette":
            outputs["palette_decoded"] = decode_palette(data)
        for out_name, out_data in outputs.items():
            write_bytes_atomically(os.path.join(folder, f"{out_name}.tflite"), out_data)
            np.save(os.path.join(folder, out_name + EXPECTED_SUFFIX), expected)
            files[out_name] = _manifest_entry(out_name, out_data, options, result)
    manifest = {
        "producer": f"tfmot_wfn {tfmot_wfn.__version__}", "atol": atol,
        "inputs": INPUTS_FILE, "input_shape": list(inputs.shape),
        "output_shape": list(expected.shape), "files": files,
    }
    with open(os.path.join(folder, MANIFEST_FILE), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    return manifest


def _manifest_entry(name: str, data: bytes, options: Dict, result) -> Dict:
    """One file's manifest entry: bytes, export settings (`VARIANTS`), BatchNorms kept as MULs."""
    decoded = name.endswith("_decoded")
    return {
        "bytes": len(data), "mode": options["mode"],
        "batchnorm": options["batchnorm"],
        "index_dtypes": sorted(set(result.index_dtypes.values())),
        "decoded": decoded,
        "compact": bool(result.compact) and not decoded,
        "batchnorm_scales": [k.batchnorm for k in result.batchnorm_scales],
    }


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One file of a bundle run by one interpreter."""

    name: str
    passed: bool
    max_abs_diff: float
    top1_equal: int
    total: int
    error: str = ""

    def __str__(self) -> str:
        if self.error:
            return f"FAIL {self.name}: {self.error}"
        return (f"{'PASS' if self.passed else 'FAIL'} {self.name}: max |diff| "
                f"{self.max_abs_diff:.3g}, top-1 equal {self.top1_equal}/{self.total}")


def check_bundle(
    directory: Union[str, os.PathLike],
    runtime: Optional[str] = None,
    atol: float = ATOL,
    num_threads: Optional[int] = 1,
) -> List[CheckResult]:
    """Run every ``*.tflite`` of a bundle as stored and compare with ``<name>.expected.npy``.

    The same check as ``tools/check_tflite_runtime.py``, with the interpreter
    `make_interpreter` picks here (or ``runtime``). Passing means max abs diff
    <= ``atol`` and identical argmax over the last axis.
    """
    from tfmot_wfn.tflite.runtime import make_interpreter, run_interpreter

    folder = os.fspath(directory)
    inputs = np.load(os.path.join(folder, INPUTS_FILE))
    results = []
    for file in sorted(f for f in os.listdir(folder) if f.endswith(".tflite")):
        name = file[: -len(".tflite")]
        try:
            expected = np.load(os.path.join(folder, name + EXPECTED_SUFFIX))
            interpreter = make_interpreter(os.path.join(folder, file), num_threads=num_threads,
                                           runtime=runtime)
            interpreter.allocate_tensors()
            got = np.asarray(run_interpreter(interpreter, inputs))
            if got.shape != expected.shape:
                raise ValueError(f"output shape {got.shape}, expected {expected.shape}")
        except Exception as e:  # noqa: BLE001 - reported per file
            results.append(CheckResult(file, False, float("nan"), 0, 0, f"{type(e).__name__}: {e}"))
            continue
        diff = float(np.abs(got.astype(np.float64) - expected).max()) if got.size else 0.0
        same = int(np.sum(got.argmax(-1) == expected.argmax(-1)))
        total = int(np.prod(expected.shape[:-1]))
        results.append(CheckResult(file, diff <= atol and same == total, diff, same, total))
    return results


def main(argv=None) -> int:
    """``--output DIR``: train the demo CNN briefly, fix it (BatchNorm kept) and write a bundle."""
    import argparse

    parser = argparse.ArgumentParser(
        description="Write a tflite-runtime check bundle of the digits demo CNN (BatchNorm kept).")
    parser.add_argument("--output", default="tflite_check_bundle")
    parser.add_argument("--model", default=None,
                        help="a fixed .keras model to use instead of training the demo CNN")
    parser.add_argument("--epochs", type=int, default=5, help="float training epochs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import keras

    import tfmot_wfn
    from tfmot_wfn.apps.demo import build_cnn, load_digits_split
    from tfmot_wfn.export.palette_export import load_keras_model

    keras.utils.set_random_seed(args.seed)
    x_train, x_test, y_train, _ = load_digits_split(args.seed)
    if args.model:
        model = load_keras_model(args.model)
    else:
        model = build_cnn(keras)
        model.compile(optimizer=keras.optimizers.Adam(3e-3),
                      loss="sparse_categorical_crossentropy")
        model.fit(x_train, y_train, batch_size=32, epochs=args.epochs, verbose=0)
        model = tfmot_wfn.fix_weights(model)
        tfmot_wfn.run_fixing_stage(model, 1.0, tfmot_wfn.DEFAULT_DISTANCE)
    manifest = write_check_bundle(model, args.output, x_test)
    for name, info in sorted(manifest["files"].items()):
        print(f"wrote {os.path.join(args.output, name)}.tflite ({info['bytes']:,} bytes)")
    results = check_bundle(args.output)
    for r in results:
        print(r)
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed (here, with the local runtime)")
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
