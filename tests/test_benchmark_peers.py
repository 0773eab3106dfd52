"""The benchmark's tfmot peer (``benchmarks/peers_tf_keras.py``, a tf_keras subprocess) trains
and tests on exactly the images the main process hands it, not on a split it rebuilds.

Rebuilding the split there once drew each seed's own digits split, whose training images held
the main process's (seed 0) test images: tfmot's accuracy on seeds 1-4 came out 3-4 points too
high. Runs in the legacy job (tfmot needs tf_keras): ``TF_USE_LEGACY_KERAS=1 python -m pytest
tests -m legacy``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tfmot_wfn

pytestmark = [
    pytest.mark.legacy,
    pytest.mark.skipif(not tfmot_wfn.IS_LEGACY_KERAS,
                       reason="tfmot 0.8 runs on tf_keras only: run with TF_USE_LEGACY_KERAS=1"),
]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")


def test_the_tfmot_peer_trains_and_tests_on_the_images_it_is_given(tmp_path):
    pytest.importorskip("tensorflow_model_optimization", reason="pip install '.[legacy]' for tfmot")
    sys.path.insert(0, BENCHMARKS)
    try:
        import models
    finally:
        sys.path.remove(BENCHMARKS)
    from tfmot_wfn.keras.compat import keras

    x_train, x_test, y_train, y_test = models.digits(8, 1, seed=0)
    # A subset no rebuilt split could produce: 96 training and the last 60 test images.
    data = {"x_train": x_train[:96], "y_train": y_train[:96], "x_test": x_test[-60:], "y_test": y_test[-60:]}
    np.savez(tmp_path / "data.npz", **data)
    keras.utils.set_random_seed(0)
    model = models.build("mlp", keras)
    models.save_layer_weights(model, str(tmp_path / "float.npz"))
    expected = float(np.mean(np.argmax(model.predict(data["x_test"], verbose=0), -1) == data["y_test"]))

    spec = {"mode": "cluster", "model": "mlp", "weights_in": str(tmp_path / "float.npz"),
            "data_in": str(tmp_path / "data.npz"), "weights_out": str(tmp_path / "out.npz"),
            "clusters": 8, "epochs": 1, "lr": 1e-3, "clipnorm": 0.5, "seed": 0}
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, os.path.join(BENCHMARKS, "peers_tf_keras.py"), json.dumps(spec)],
                          capture_output=True, text=True, env=env, timeout=600)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(lines[0][len("RESULT "):])
    assert result["train_images"] == 96
    # The float accuracy it measured is that of the same weights on the same 60 test images.
    assert result["float_accuracy_tf_keras"] == pytest.approx(expected, abs=1e-9)
    with np.load(tmp_path / "out.npz") as out:
        kernel = next(out[k] for k in out.files if k.startswith("dense1::000"))
    assert np.unique(kernel).size <= 8
