"""`fix_weights(..., preserve_sparsity=True)`: the zeros of a (pruned) model stay exactly 0.

They are fixed to 0 when the wrappers are built and count as fixed; the schedule's
fractions apply to the other weights (a stage at f fixes ``s + (1 - s) f`` of all).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import keras_helpers as kh
import tfmot_wfn
from tfmot_wfn.core.greedy_fixing import quota_for
from tfmot_wfn.keras.compat import keras
from tfmot_wfn.keras.network import run_fixing_stage, wrappers_of

pytestmark = pytest.mark.legacy  # also run under tf_keras: see pytest.ini


def pruned_model(sparsity=0.6, seed=0):
    """`kh.dense_model` with `sparsity` of its kernels set to exactly 0."""
    model = kh.dense_model(seed=seed)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.weights:
            kernel, bias = layer.get_weights()
            kernel[rng.random(kernel.shape) < sparsity] = 0.0
            layer.set_weights([kernel, bias + 0.05])
    return model


def flat(arrays):
    return np.concatenate([np.ravel(a) for a in arrays])


def test_zeros_are_fixed_up_front_and_counted():
    model = pruned_model()
    zeros = flat(model.get_weights()) == 0
    fixed = tfmot_wfn.fix_weights(model, preserve_sparsity=True)
    masks = kh.flat_masks(fixed)
    np.testing.assert_array_equal(masks, zeros)
    assert kh.flat_fixed_values(fixed)[masks].tolist() == [0.0] * int(zeros.sum())
    assert tfmot_wfn.fixed_fraction(fixed) == pytest.approx(zeros.mean())
    assert sum(int(w.preserved_zeros.numpy()) for w in wrappers_of(fixed)) == zeros.sum()
    assert all(int(w.palette_size.numpy()) == 0 for w in wrappers_of(fixed))  # no stage yet
    # The model passed in is unchanged, and a model without the option fixes nothing yet.
    np.testing.assert_array_equal(flat(model.get_weights()) == 0, zeros)
    plain = tfmot_wfn.fix_weights(model)
    assert not kh.flat_masks(plain).any()
    assert all(w.preserved_zeros is None for w in wrappers_of(plain))
    assert "preserve_sparsity" not in wrappers_of(plain)[0].get_config()


def test_stage_fractions_apply_to_the_weights_that_are_not_zero():
    fixed = tfmot_wfn.fix_weights(pruned_model(), preserve_sparsity=True)
    n = kh.flat_masks(fixed).size
    share = kh.flat_masks(fixed).mean()
    for i, fraction in enumerate(tfmot_wfn.PAPER_FRACTIONS):
        summary = run_fixing_stage(fixed, fraction, 0.015 * max(1, 10 - i))
        expected = n if fraction == 1.0 else quota_for(n, share + (1 - share) * fraction)
        assert summary.fixed == expected, (i, fraction)
    final = tfmot_wfn.strip_fixing(fixed)
    before = flat(pruned_model().get_weights())
    assert (flat(final.get_weights())[before == 0] == 0).all()


def test_training_never_moves_the_zeros_and_a_checkpoint_keeps_them(tmp_path):
    model = pruned_model()
    zeros = flat(model.get_weights()) == 0
    schedule = tfmot_wfn.StagedFixing((0.5, 1.0), steps_per_stage=3, begin_step=2)
    fixed = tfmot_wfn.fix_weights(model, fixing_schedule=schedule, preserve_sparsity=True)
    kh.compile_classifier(fixed, keras.optimizers.Adam(1e-2), from_logits=True)
    x, y = kh.classification_data(n=32)
    fixed.fit(x, y, batch_size=8, epochs=1, verbose=0,  # 4 steps: one stage at step 2
              callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0)])
    assert (kh.flat_values(fixed)[zeros] == 0).all()
    assert 0 < tfmot_wfn.fixed_fraction(fixed) < 1
    path = os.path.join(tmp_path, "mid.keras")
    fixed.save(path)
    with tfmot_wfn.fixing_scope():
        loaded = keras.models.load_model(path)
    kh.assert_states_equal(kh.network_state(loaded), kh.network_state(fixed))
    assert [int(w.preserved_zeros.numpy()) for w in wrappers_of(loaded)] == [
        int(w.preserved_zeros.numpy()) for w in wrappers_of(fixed)]
    assert wrappers_of(loaded)[0].get_config()["preserve_sparsity"] is True
    loaded.compile(optimizer=keras.optimizers.Adam(1e-2),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0,
               callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0)])
    assert tfmot_wfn.fixed_fraction(loaded) == 1.0
    assert (kh.flat_values(loaded)[zeros] == 0).all()
