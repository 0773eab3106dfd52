"""End to end on the digits CNN with BatchNorm: float model -> fix_weights -> ten stages -> strip."""

from __future__ import annotations

import numpy as np
import pytest

import keras
import keras_helpers as kh
import tfmot_wfn
from tfmot_wfn.keras.network import wrappers_of

#: "Lossless", exactly as the demo reports it (tfmot_wfn/demo.py: ``fixed_acc >=
#: float_acc - 0.005``): at most half a point of test accuracy below the float model.
LOSSLESS_TOLERANCE = 0.005


def test_shared_short_schedule_run_is_sane(float_cnn, fixed_cnn, stripped_cnn, digits):
    """The 10-steps-per-stage run the other tests share: fully fixed, few values, still accurate."""
    assert float_cnn.accuracy > 0.8
    assert tfmot_wfn.fixed_fraction(fixed_cnn.model) == 1.0
    assert len(fixed_cnn.callback.history) == 10
    assert tfmot_wfn.unique_weights(stripped_cnn) < 64
    assert tfmot_wfn.weight_entropy(stripped_cnn) < 5.0
    # 10 training steps per stage on a briefly trained model: a sanity bound, not the lossless
    # claim (the slow test below); a broken pipeline ends near chance. Measured on this run,
    # float 0.925: 0.875 with the default rule "bounded_third" (as "third"), 0.889 "late_third",
    # 0.914 "nearest_capped", 0.894 "paper", 0.906 "capped", 0.908 "bounded"; with 30 steps a
    # stage "late_third" 0.925, "third" 0.931, then 0.922, 0.911, 0.919, 0.925.
    assert fixed_cnn.accuracy >= float_cnn.accuracy - 0.07


@pytest.mark.slow
def test_digits_cnn_full_paper_schedule_is_lossless(float_cnn, digits, tmp_path):
    # The demo's recipe: defaults (distance 0.015, gamma 0.4), the paper's ten
    # stages, one epoch of re-training per stage.
    run = kh.run_full_schedule(float_cnn.model, digits, steps_per_stage=None, batch_size=32)
    history = run.callback.history
    assert [h.fraction for h in history] == list(tfmot_wfn.PAPER_FRACTIONS)
    assert [h.distance for h in history] == pytest.approx(
        [tfmot_wfn.DEFAULT_DISTANCE * (10 - i) for i in range(10)])
    steps_per_epoch = int(np.ceil(len(digits.x_train) / 32))
    assert [s["step"] for s in run.snapshots] == [i * steps_per_epoch for i in range(10)]

    final = tfmot_wfn.strip_fixing(run.model)
    stripped_accuracy = kh.accuracy(final, digits.x_test, digits.y_test)
    assert stripped_accuracy == run.accuracy
    assert run.accuracy >= float_cnn.accuracy - LOSSLESS_TOLERANCE, (
        f"fixed {run.accuracy:.4f} vs float {float_cnn.accuracy:.4f}")

    rep = tfmot_wfn.report(final)
    assert rep.fixed_fraction == 1.0
    assert tfmot_wfn.fixed_fraction(run.model) == 1.0
    assert rep.unique_values == tfmot_wfn.unique_weights(final) < 64
    assert rep.entropy_bits == tfmot_wfn.weight_entropy(final) < 5.0
    palette = kh.wrapper_palette(wrappers_of(run.model)[0])
    np.testing.assert_array_equal(tfmot_wfn.palette(final), palette)
    max_order = max(h.max_order for h in history)
    assert all(kh.is_sum_of_signed_powers_of_two(v, max_order + 1) for v in palette)
    assert all(entry["terms"] <= 4 for entry in rep.palette)

    # The final model is a plain Keras model that survives a save/load unchanged.
    path = str(tmp_path / "final.keras")
    final.save(path)
    loaded = keras.models.load_model(path)
    assert kh.accuracy(loaded, digits.x_test, digits.y_test) == stripped_accuracy
    assert tfmot_wfn.unique_weights(loaded) == rep.unique_values
