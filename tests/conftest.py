"""Shared fixtures of the test suite.

Importing TensorFlow and training a model cost seconds, so the trained models
are session-scoped and shared:

* `digits`: sklearn's 8x8 digit images (first 1437 train, last 360 test).
* `float_cnn`: a small float CNN with BatchNorm trained on them, plus a snapshot
  of its weights and predictions taken before anything else touched it.
* `fixed_cnn`: `fix_weights(float_cnn)` taken through the paper's whole ten-stage
  schedule (10 steps per stage), with a snapshot of the network after each stage.
* `stripped_cnn`: `strip_fixing(fixed_cnn.model)`.
* `trained_cnn`: the demo CNN trained briefly (3 epochs), for the export tests.

Under pytest-xdist (pytest.ini runs the suite in parallel processes) each worker
builds the fixtures it needs once.

Tests must treat the shared models as read-only (the tests that train make
their own models with `keras_helpers`). TensorFlow is imported lazily so that
pure-numpy tests of the core do not pay for it.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT_DIR = os.path.dirname(TESTS_DIR)
for _path in (TESTS_DIR, ROOT_DIR):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    import keras_helpers

    return keras_helpers.load_digits_data()


@pytest.fixture(scope="session")
def float_cnn(digits):
    """The demo-like float CNN (Conv-BN-ReLU x2, GAP, Dense), trained, with a pristine snapshot."""
    import keras_helpers

    return keras_helpers.train_float_cnn(digits)


@pytest.fixture(scope="session")
def fixed_cnn(float_cnn, digits):
    """`float_cnn` fixed through all ten paper stages, 10 training steps per stage."""
    import keras_helpers

    return keras_helpers.run_full_schedule(float_cnn.model, digits, steps_per_stage=10)


@pytest.fixture(scope="session")
def stripped_cnn(fixed_cnn):
    import tfmot_wfn

    return tfmot_wfn.strip_fixing(fixed_cnn.model)


@pytest.fixture(scope="session")
def trained_cnn(digits):
    """The demo CNN (Conv-BN-ReLU x2, Flatten, Dense), trained briefly (3 epochs); read-only."""
    from keras_helpers import keras

    from tfmot_wfn.apps.demo import build_cnn

    keras.utils.set_random_seed(3)
    model = build_cnn(keras)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(digits.x_train, digits.y_train, epochs=3, batch_size=64, verbose=0)
    return model
