"""Keras 3 and tf_keras give the same results from the same calls.

The calls of `tests/legacy_equivalence.py` (fix_weights, the paper's ten stages,
strip_fixing, metrics; with and without ``preserve_sparsity``) run in this process
and in a subprocess with the other setting of ``TF_USE_LEGACY_KERAS``, so the test
compares Keras 3 with tf_keras whichever of them pytest runs under.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import legacy_equivalence
import tfmot_wfn

pytestmark = pytest.mark.legacy

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    other_is_legacy = not tfmot_wfn.IS_LEGACY_KERAS
    if importlib.util.find_spec("tf_keras" if other_is_legacy else "keras") is None:
        pytest.skip("the other Keras (tf_keras: pip install '.[legacy]') is not installed")
    path = str(tmp_path_factory.mktemp("equivalence") / "other.npz")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1" if other_is_legacy else "0",
               TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, os.path.join(HERE, "legacy_equivalence.py"), path],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    here = legacy_equivalence.run()
    with np.load(path) as other:
        other = {k: other[k] for k in other.files}
    assert bool(other["legacy"]) == other_is_legacy and bool(here["legacy"]) != other_is_legacy
    return here, other


def test_same_keys(both):
    here, other = both
    assert sorted(here) == sorted(other)


@pytest.mark.parametrize("variant", ["dense", "sparse"])
def test_every_stage_gives_identical_masks_values_and_palette(both, variant):
    here, other = both
    for i in range(len(tfmot_wfn.PAPER_FRACTIONS)):
        for what in ("masks", "values", "palette"):
            key = f"{variant}/stage{i}/{what}"
            assert here[key].dtype == other[key].dtype, key
            np.testing.assert_array_equal(here[key], other[key], err_msg=key)
    assert here[f"{variant}/stage9/masks"].all()  # the last stage fixes everything


@pytest.mark.parametrize("variant", ["dense", "sparse"])
def test_stripped_models_and_metrics_are_identical(both, variant):
    here, other = both
    for what in ("fixed_at_start", "unique", "entropy", "stripped_weights"):
        key = f"{variant}/{what}"
        np.testing.assert_array_equal(here[key], other[key], err_msg=key)
    # Same weights; the two Keras run the same TensorFlow ops up to float32 rounding.
    np.testing.assert_allclose(here[f"{variant}/predictions"], other[f"{variant}/predictions"],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(here[f"{variant}/regularizer_after_stage0"],
                               other[f"{variant}/regularizer_after_stage0"], rtol=1e-6)


def test_preserve_sparsity_keeps_the_zeros_under_both(both):
    for result in both:
        zeros = result["sparse/stage0/values"] == 0
        assert result["sparse/fixed_at_start"] > 0.3  # half of the kernels are 0
        # every weight that was 0 at the start is still exactly 0 at the end
        start_zeros = result["sparse/stage0/masks"] & zeros
        assert (result["sparse/stage9/values"][start_zeros] == 0).all()
