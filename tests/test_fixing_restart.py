"""FixingRestart: a wrapped model trained by the schedule goes back to exactly the state
fix_weights gave it, with the new run's distance and schedule, without tracing again."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import keras_helpers as kh
import tfmot_wfn
from tfmot_wfn.keras.compat import keras
from tfmot_wfn.keras.fixing_restart import FixingRestart
from tfmot_wfn.keras.network import FixingNetwork

pytestmark = pytest.mark.legacy  # also run under tf_keras: see pytest.ini

STEPS = 3  # batches a stage
BATCH = 16


def _data():
    return kh.classification_data(n=STEPS * BATCH, features=8, classes=3, seed=1)


def _fixed(distance=0.015, optimizer="adam"):
    base = kh.dense_model(batchnorm=True, seed=0)
    fixed = tfmot_wfn.fix_weights(base, distance=distance,
                                  fixing_schedule=tfmot_wfn.StagedFixing(steps_per_stage=STEPS))
    fixed.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return fixed


def _train(model):
    x, y = _data()
    cb = tfmot_wfn.UpdateFixingStep(verbose=0)
    model.fit(x, y, batch_size=BATCH, epochs=len(tfmot_wfn.PAPER_FRACTIONS), shuffle=False,
              verbose=0, callbacks=[cb])
    return cb


def _values(variables):
    return [np.array(v.numpy(), copy=True) for v in variables]


@pytest.fixture(scope="module")
def trained():
    """A wrapped model, its state before training, its restart, and the callback of its run."""
    model = _fixed()
    before = _values(model.variables)
    restart = FixingRestart(model)
    cb = _train(model)
    return model, before, restart, cb


def test_restart_puts_back_every_variable_and_a_fresh_optimizer(trained):
    model, before, restart, _ = trained
    after_training = _values(model.variables)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after_training))  # it trained
    assert FixingNetwork.of(model).stored_step() > 0
    restart.restart(distance=0.03)
    for value, variable in zip(before, model.variables):
        np.testing.assert_array_equal(variable.numpy(), value)
    assert int(model.optimizer.iterations.numpy()) == 0
    fresh = type(model.optimizer).from_config(model.optimizer.get_config())
    fresh.build(model.trainable_variables)
    for mine, theirs in zip(model.optimizer.variables, fresh.variables):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


def test_the_next_run_uses_the_new_settings_and_the_traced_step(trained):
    model, _, restart, first = trained
    schedule = tfmot_wfn.StagedFixing(steps_per_stage=STEPS)
    train_function = model.train_function
    restart.restart(distance=0.05, fixing_schedule=schedule)
    assert restart.settings() == {"distance": 0.05, "fixing_schedule": schedule}
    assert FixingNetwork.of(model).distance == 0.05
    cb = _train(model)
    # Every stage ran at the schedule's multiple of 0.05 where the first run's used 0.015.
    assert len(cb.history) == len(first.history) == len(tfmot_wfn.PAPER_FRACTIONS)
    np.testing.assert_allclose([s.distance for s in cb.history],
                               [s.distance * 0.05 / 0.015 for s in first.history])
    assert tfmot_wfn.fixed_fraction(model) == 1.0
    assert model.train_function is train_function  # not made again: no new trace


def test_a_restarted_run_matches_a_new_model_with_those_settings(trained):
    model, _, restart, _ = trained
    network = FixingNetwork.of(model)
    restart.restart(distance=0.03)
    # The traced step reads the regulariser table of the network it was traced with: the
    # restart updates that network in place (a new one would leave the step a stale table
    # once the garbage collector drops the old network).
    gc.collect()
    assert FixingNetwork.of(model) is network and network.distance == 0.03
    _train(model)
    new = _fixed(distance=0.03)
    _train(new)
    restarted, fresh = tfmot_wfn.strip_fixing(model), tfmot_wfn.strip_fixing(new)
    assert np.array_equal(tfmot_wfn.palette(model), tfmot_wfn.palette(new))
    for a, b in zip(restarted.get_weights(), fresh.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_stripped_model_of_an_earlier_run_is_not_touched_by_a_restart(trained):
    model, _, restart, _ = trained
    restart.restart(distance=0.02)
    _train(model)
    kept = tfmot_wfn.strip_fixing(model)
    weights = _values(kept.weights)
    restart.restart(distance=0.08)
    _train(model)
    for value, variable in zip(weights, kept.weights):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_the_learning_rate_comes_back_too():
    model = _fixed(optimizer=keras.optimizers.Adam(0.01))
    restart = FixingRestart(model)
    _train(model)
    model.optimizer.learning_rate.assign(0.001)  # as ReduceLROnPlateau would
    restart.restart(distance=0.02)
    assert float(np.asarray(model.optimizer.learning_rate)) == pytest.approx(0.01)


def test_bad_restarts_are_refused_and_change_nothing(trained):
    model, _, restart, _ = trained
    state = _values(model.variables)
    with pytest.raises(TypeError, match="takes distance, fixing_schedule, got rule"):
        restart.restart(rule="paper")
    with pytest.raises(ValueError, match="distance"):
        restart.restart(distance=1.5)
    for value, variable in zip(state, model.variables):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_a_model_already_trained_by_the_schedule_is_refused(trained):
    model, _, restart, _ = trained
    restart.restart(distance=0.015)
    _train(model)
    with pytest.raises(ValueError, match="before its first fixing fit"):
        FixingRestart(model)
    with pytest.raises(ValueError, match="No WeightFixingWrapper"):
        FixingRestart(kh.dense_model())
