#!/usr/bin/env python3
"""Run every TFLite file of a check bundle on tflite-runtime and compare with Keras.

Imports only ``tflite_runtime.interpreter`` and numpy (plus the standard
library), so it runs in its own virtualenv, e.g. tflite-runtime 2.14 (Python
<= 3.11, numpy < 2):

    python -m tfmot_wfn.apps.runtime_check --output bundle/       # main venv writes the bundle
    python3.11 -m venv /tmp/tflrt
    /tmp/tflrt/bin/pip install "tflite-runtime==2.14.0" "numpy<2"
    /tmp/tflrt/bin/python tools/check_tflite_runtime.py bundle/

DIR holds ``inputs.npy`` and, for each ``<name>.tflite``, ``<name>.expected.npy``
(the Keras model's outputs on the inputs). A file passes when the max absolute
difference is <= 1e-5 (``--atol``) and the argmax over the last axis is the
same for every input. Prints one line per file and ``N passed, M failed``;
exits 1 when a file fails (or DIR holds no .tflite file), 2 on a usage error.
"""

import argparse
import os
import sys

import numpy as np

try:
    from tflite_runtime.interpreter import Interpreter
except ImportError as _error:  # pragma: no cover - depends on the virtualenv
    Interpreter = None
    _IMPORT_ERROR = _error


def run_file(path, inputs, num_threads):
    interpreter = Interpreter(model_path=path, num_threads=num_threads)
    details = interpreter.get_input_details()
    if len(details) != 1:
        raise ValueError("the model has %d inputs, the bundle holds one" % len(details))
    detail = details[0]
    if tuple(detail["shape"]) != tuple(inputs.shape):
        interpreter.resize_tensor_input(detail["index"], list(inputs.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], inputs.astype(detail["dtype"]))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def check(path, inputs, expected_path, atol, num_threads):
    """(passed, line) for one file."""
    name = os.path.basename(path)
    try:
        expected = np.load(expected_path)
        got = run_file(path, inputs, num_threads)
        if got.shape != expected.shape:
            raise ValueError("output shape %s, expected %s" % (got.shape, expected.shape))
    except Exception as e:  # noqa: BLE001 - reported per file
        return False, "FAIL %s: %s: %s" % (name, type(e).__name__, e)
    diff = float(np.abs(got.astype(np.float64) - expected).max()) if got.size else 0.0
    same = int(np.sum(got.argmax(-1) == expected.argmax(-1)))
    total = int(np.prod(expected.shape[:-1]))
    passed = diff <= atol and same == total
    return passed, "%s %s: max |diff| %.3g, top-1 equal %d/%d" % (
        "PASS" if passed else "FAIL", name, diff, same, total)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory", help="the bundle: *.tflite, *.expected.npy, inputs.npy")
    parser.add_argument("--atol", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if Interpreter is None:
        print("tflite_runtime is not installed here: %s" % _IMPORT_ERROR, file=sys.stderr)
        return 2
    folder = args.directory
    inputs_path = os.path.join(folder, "inputs.npy")
    if not os.path.isfile(inputs_path):
        print("no inputs.npy in %s" % folder, file=sys.stderr)
        return 2
    inputs = np.load(inputs_path)
    files = sorted(f for f in os.listdir(folder) if f.endswith(".tflite"))
    if not files:
        print("no *.tflite file in %s" % folder)
        print("0 passed, 0 failed")
        return 1
    passed = failed = 0
    import tflite_runtime

    print("tflite_runtime %s, numpy %s, %d inputs of shape %s" % (
        getattr(tflite_runtime, "__version__", "?"), np.__version__, len(inputs),
        tuple(inputs.shape[1:])))
    for file in files:
        stem = file[: -len(".tflite")]
        ok, line = check(os.path.join(folder, file), inputs,
                         os.path.join(folder, stem + ".expected.npy"), args.atol, args.threads)
        print(line)
        passed, failed = passed + ok, failed + (not ok)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
