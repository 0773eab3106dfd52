"""UpdateFixingStep (stage timing, epochs, resuming) and FixingSummaries (TensorBoard scalars)."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from tfmot_wfn.keras.compat import keras
import keras_helpers as kh
import tfmot_wfn
from tfmot_wfn.core.greedy_fixing import quota_for
from tfmot_wfn.keras.network import wrappers_of

pytestmark = pytest.mark.legacy  # also run under tf_keras: see pytest.ini

TAGS = {"fixing/fixed_fraction", "fixing/unique_values", "fixing/palette_size",
        "fixing/entropy_bits", "fixing/regularizer"}


def _fixed_dense(schedule, seed=0, **kwargs):
    fixed = tfmot_wfn.fix_weights(kh.dense_model(seed=seed), fixing_schedule=schedule, **kwargs)
    fixed.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return fixed


def test_epoch_based_schedule_runs_one_stage_per_epoch(capsys):
    x, y = kh.classification_data(n=40)
    schedule = tfmot_wfn.StagedFixing((0.5, 0.8, 1.0), epochs_per_stage=1)
    fixed = _fixed_dense(schedule)
    update = tfmot_wfn.UpdateFixingStep()  # verbose
    recorder = kh.StageRecorder(update)
    fixed.fit(x, y, batch_size=8, epochs=4, verbose=0, callbacks=[update, recorder])
    # 5 steps per epoch, resolved from fit.
    assert all(w.fixing_schedule.steps_per_stage == 5 for w in wrappers_of(fixed))
    assert [s["step"] for s in recorder.snapshots] == [0, 5, 10]
    n = recorder.snapshots[0]["masks"].size
    assert [h.fixed for h in update.history] == [quota_for(n, f) for f in (0.5, 0.8, 1.0)]
    assert [h.total for h in update.history] == [n] * 3
    assert [h.distance for h in update.history] == pytest.approx(
        [tfmot_wfn.DEFAULT_DISTANCE * m for m in (3, 2, 1)])
    assert [h.palette_size for h in update.history] == [s["palettes"][0].size
                                                      for s in recorder.snapshots]
    assert update.step == 20
    assert all(int(w.fixing_step.numpy()) == 20 for w in wrappers_of(fixed))
    out = capsys.readouterr().out
    # One line before each stage (a big model's stage takes seconds), one after it.
    assert out.count("[tfmot_wfn] step") == 6
    assert out.index("step 0: fixing stage 1 (50.00% of the weights") < out.index("step 0: fixed")
    assert "step 10: fixing stage 3 (100.00% of the weights" in out
    assert f"[tfmot_wfn] step 0: fixed {quota_for(n, 0.5)}/{n}" in out
    assert "step 10: fixed" in out and "(100.00%)" in out


def test_a_schedule_reused_for_a_second_model_is_resolved_afresh():
    # fit resolves an epoch-based schedule's steps_per_stage in the wrappers' copy, not in
    # the caller's object: a second run with another batch size still gets a stage an epoch.
    x, y = kh.classification_data(n=40)
    schedule = tfmot_wfn.StagedFixing((0.5, 0.8, 1.0))
    first = _fixed_dense(schedule)
    first.fit(x, y, batch_size=20, epochs=3, verbose=0, callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0)])
    assert schedule.steps_per_stage is None
    assert wrappers_of(first)[0].fixing_schedule.steps_per_stage == 2
    second = _fixed_dense(schedule)
    update = tfmot_wfn.UpdateFixingStep(verbose=0)
    recorder = kh.StageRecorder(update)
    second.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[update, recorder])
    assert [s["step"] for s in recorder.snapshots] == [0, 5, 10]
    assert schedule.steps_per_stage is None


def test_silent_callback_prints_nothing(capsys):
    x, y = kh.classification_data(n=16)
    fixed = _fixed_dense(tfmot_wfn.StagedFixing((1.0,), steps_per_stage=1))
    fixed.fit(x, y, batch_size=8, epochs=1, verbose=0,
              callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0)])
    assert "[tfmot_wfn]" not in capsys.readouterr().out
    assert kh.flat_masks(fixed).all()


def test_steps_continue_across_fits_with_new_callbacks():
    x, y = kh.classification_data(n=32)
    fixed = _fixed_dense(tfmot_wfn.StagedFixing((0.3, 0.6, 1.0), steps_per_stage=6))
    first = tfmot_wfn.UpdateFixingStep(verbose=0)
    fixed.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[first])  # steps 0..7
    assert [h.fraction for h in first.history] == [0.3, 0.6]
    assert first.step == 8
    second = tfmot_wfn.UpdateFixingStep(verbose=0)
    recorder = kh.StageRecorder(second)
    fixed.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[second, recorder])  # 8..15
    assert [s["step"] for s in recorder.snapshots] == [12]
    assert [h.fraction for h in second.history] == [1.0]
    assert second.step == 16
    assert tfmot_wfn.fixed_fraction(fixed) == 1.0


def test_a_network_of_many_wrappers_gets_every_step_written_across_fits():
    from tfmot_wfn.keras.compat import COMPILED_ASSIGN_FROM

    keras.utils.set_random_seed(0)
    layers = [keras.layers.Dense(4, activation="relu") for _ in range(COMPILED_ASSIGN_FROM + 3)]
    model = keras.Sequential([keras.Input((4,))] + layers + [keras.layers.Dense(2)])
    fixed = tfmot_wfn.fix_weights(model, tfmot_wfn.StagedFixing((0.5, 1.0), steps_per_stage=3))
    fixed.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    callback = tfmot_wfn.UpdateFixingStep(verbose=0)
    for fit, expected in ((1, 4), (2, 8)):  # the same callback, its step writer kept
        fixed.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[callback])
        steps = [int(w.fixing_step.numpy()) for w in wrappers_of(fixed)]
        assert steps == [expected] * len(layers + [None]) and callback.step == expected
    assert [h.fraction for h in callback.history] == [0.5, 1.0]


def test_callback_refuses_a_model_without_wrappers():
    model = kh.dense_model()
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = kh.classification_data(n=8)
    with pytest.raises(ValueError, match="found no WeightFixingWrapper"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[tfmot_wfn.UpdateFixingStep()])


def test_epoch_schedule_with_unknown_epoch_length_is_a_clear_error():
    x, y = kh.classification_data(n=16)
    fixed = _fixed_dense(tfmot_wfn.StagedFixing())
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4).repeat()
    # tf_keras refuses an infinite dataset without steps_per_epoch itself, earlier.
    match = ("infinite dataset, you must specify the number of steps" if tfmot_wfn.IS_LEGACY_KERAS
             else "steps per epoch is unknown")
    with pytest.raises(ValueError, match=match):
        fixed.fit(dataset, epochs=1, verbose=0, shuffle=False,
                  callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0)])
    # With steps_per_epoch given, the epoch length is known.
    update = tfmot_wfn.UpdateFixingStep(verbose=0)
    fixed.fit(dataset, epochs=1, steps_per_epoch=3, verbose=0, shuffle=False, callbacks=[update])
    assert wrappers_of(fixed)[0].fixing_schedule.steps_per_stage == 3
    assert len(update.history) == 1


# ------------------------------------------------------------ FixingSummaries
PALETTE_TAG = "fixing/palette_usage"
LAYER_PREFIX = "fixing/layer_fixed_fraction/"
RULE_TAG = "fixing/rule"


def _read_events(log_dir):
    """Every summary value under log_dir/fixing: [(tag, step, plugin, value as numpy)]."""
    files = glob.glob(os.path.join(log_dir, "fixing", "events.out.tfevents.*"))
    assert files, f"no event file under {log_dir}/fixing"
    out = []
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                array = (tf.make_ndarray(value.tensor) if value.HasField("tensor")
                         else np.float32(value.simple_value))
                out.append((value.tag, int(event.step),
                            value.metadata.plugin_data.plugin_name, array))
    return out


def _read_scalars(log_dir):
    """{tag: {step: value}} of the scalars; checks each (tag, step) is written once."""
    scalars, plugins = {}, {}
    for tag, step, plugin, array in _read_events(log_dir):
        if tag in (PALETTE_TAG, RULE_TAG):
            continue
        plugins[tag] = plugin
        assert step not in scalars.get(tag, {}), f"{tag} written twice at step {step}"
        scalars.setdefault(tag, {})[step] = float(array)
    # Tagged for TensorBoard's scalars dashboard.
    assert plugins == {tag: "scalars" for tag in scalars}
    return scalars


def test_fixing_summaries_writes_the_scalars_to_tensorboard(tmp_path):
    x, y = kh.classification_data(n=40)
    fixed = _fixed_dense(tfmot_wfn.StagedFixing((0.5, 1.0)))  # one stage per epoch
    update = tfmot_wfn.UpdateFixingStep(verbose=0)
    recorder = kh.StageRecorder(update)
    end_of_epoch = []
    log_dir = str(tmp_path / "logs")
    summaries = tfmot_wfn.FixingSummaries(log_dir)
    grab = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: end_of_epoch.append(
        (kh.flat_masks(fixed), kh.flat_values(fixed), float(tfmot_wfn.regularization_value(fixed)))))
    fixed.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[update, recorder, summaries, grab])

    scalars = _read_scalars(log_dir)
    layers = {LAYER_PREFIX + w.layer.name for w in wrappers_of(fixed)}
    assert set(scalars) == TAGS | layers
    assert all(sorted(steps) == [0, 1, 2] for steps in scalars.values())
    n = end_of_epoch[0][0].size
    for epoch, (mask, values, reg) in enumerate(end_of_epoch):
        assert scalars["fixing/fixed_fraction"][epoch] == pytest.approx(mask.mean(), abs=1e-6)
        assert scalars["fixing/unique_values"][epoch] == np.unique(values + 0.0).size
        assert scalars["fixing/palette_size"][epoch] == np.unique(values[mask] + 0.0).size
        _, counts = np.unique(values + 0.0, return_counts=True)
        p = counts / counts.sum()
        assert scalars["fixing/entropy_bits"][epoch] == pytest.approx(-(p * np.log2(p)).sum(),
                                                                      rel=1e-5)
        assert scalars["fixing/regularizer"][epoch] == pytest.approx(reg, rel=1e-5, abs=1e-7)
    assert scalars["fixing/fixed_fraction"][0] == pytest.approx(quota_for(n, 0.5) / n, abs=1e-6)
    assert scalars["fixing/fixed_fraction"][1] == 1.0
    assert scalars["fixing/regularizer"][0] > 0
    assert scalars["fixing/regularizer"][1] == 0.0  # nothing free any more
    assert scalars["fixing/palette_size"][2] == kh.wrapper_palette(wrappers_of(fixed)[0]).size
    rules = {(step, plugin, array.item().decode()) for tag, step, plugin, array
             in _read_events(log_dir) if tag == RULE_TAG}
    assert rules == {(epoch, "text", "rule bounded_third, distance 0.015") for epoch in range(3)}


def test_fixing_summaries_write_the_palette_histogram_and_layer_fractions_once_per_epoch(tmp_path):
    """fixing/palette_usage (histograms plugin) and fixing/layer_fixed_fraction/<layer>
    (scalars) are in the event files exactly once per epoch, with the model's numbers."""
    x, y = kh.classification_data(n=40)
    fixed = _fixed_dense(tfmot_wfn.StagedFixing((0.5, 1.0)))  # stages at epochs 0 and 1
    names = [w.layer.name for w in wrappers_of(fixed)]
    assert len(names) == 2
    expected = []

    def grab(epoch, logs):
        masks = kh.flat_masks(fixed)
        values = kh.flat_values(fixed).astype(np.float32)
        palette, counts = np.unique(values[masks], return_counts=True)
        per_layer = {}
        for w in wrappers_of(fixed):
            m = np.concatenate([a.ravel() for a in w.mask_numpy()])
            per_layer[w.layer.name] = m.mean()
        expected.append((palette, counts, per_layer))

    log_dir = str(tmp_path / "logs")
    fixed.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[
        tfmot_wfn.UpdateFixingStep(verbose=0), tfmot_wfn.FixingSummaries(log_dir),
        keras.callbacks.LambdaCallback(on_epoch_end=grab)])

    events = _read_events(log_dir)
    histograms = sorted((step, plugin, array) for tag, step, plugin, array in events
                        if tag == PALETTE_TAG)
    assert [(step, plugin) for step, plugin, _ in histograms] == [
        (0, "histograms"), (1, "histograms"), (2, "histograms")]
    for (_, _, buckets), (palette, counts, _) in zip(histograms, expected):
        # One bucket per palette value: (left edge, right edge, fixed weights holding it).
        assert buckets.dtype == np.float64 and buckets.shape == (palette.size, 3)
        assert np.all((buckets[:, 0] < palette) & (palette < buckets[:, 1]))
        np.testing.assert_array_equal(buckets[1:, 0], buckets[:-1, 1])
        np.testing.assert_array_equal(buckets[:, 2], counts)
    n = kh.flat_masks(fixed).size
    assert histograms[0][2][:, 2].sum() == quota_for(n, 0.5)
    assert histograms[1][2][:, 2].sum() == histograms[2][2][:, 2].sum() == n
    for name in names:
        points = sorted((step, plugin, float(array)) for tag, step, plugin, array in events
                        if tag == LAYER_PREFIX + name)
        assert [(step, plugin) for step, plugin, _ in points] == [
            (0, "scalars"), (1, "scalars"), (2, "scalars")]
        for (_, _, value), (_, _, per_layer) in zip(points, expected):
            assert value == pytest.approx(per_layer[name], abs=1e-6)
        assert points[1][2] == points[2][2] == 1.0
    # Stage 1 fixes half of the network as a whole: the layers' fractions, weighted by
    # their sizes, average to the network's.
    sizes = {w.layer.name: sum(m.size for m in w.mask_numpy()) for w in wrappers_of(fixed)}
    mean = sum(expected[0][2][k] * sizes[k] for k in names) / n
    assert mean == pytest.approx(quota_for(n, 0.5) / n, abs=1e-6)


def test_fixing_summaries_checks_its_argument():
    with pytest.raises(TypeError, match="log_dir must be a path"):
        tfmot_wfn.FixingSummaries(3)


def test_steps_per_execution_counts_steps_not_calls():
    """fit(steps_per_execution=2) calls batch callbacks once per 2 steps: the schedule still
    counts training steps, and a stage due inside an execution runs at its start."""
    x, y = kh.classification_data(n=32)
    fixed = _fixed_dense(tfmot_wfn.StagedFixing((0.5, 0.8, 1.0), steps_per_stage=3))
    fixed.compile(optimizer="adam", steps_per_execution=2,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    update = tfmot_wfn.UpdateFixingStep(verbose=0)
    recorder = kh.StageRecorder(update)
    # 4 steps per epoch = 2 calls; stages due at steps 0, 3, 6 run at steps 0, 2, 6.
    fixed.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0,
              callbacks=[update, recorder])
    assert [round(s.fraction, 3) for s in update.history] == [0.5, 0.8, 1.0]
    assert [s["step"] for s in recorder.snapshots] == [1, 3, 7]  # the call's last step
    assert update.step == 8
    assert all(int(w.fixing_step.numpy()) == 8 for w in wrappers_of(fixed))
    # An epoch-based schedule resolves to steps (not calls) and fixes once per epoch.
    fixed = _fixed_dense(tfmot_wfn.StagedFixing((0.5, 1.0)))
    fixed.compile(optimizer="adam", steps_per_execution=3,  # calls of 3 and 1 steps
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    update = tfmot_wfn.UpdateFixingStep(verbose=0)
    fixed.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[update])
    assert wrappers_of(fixed)[0].fixing_schedule.steps_per_stage == 4
    assert len(update.history) == 2 and update.step == 8


class TraceCounter(keras.layers.Layer):
    """Identity counting its training calls in Python: one per trace of a train step."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.traces = 0

    def call(self, inputs, training=None):
        if training:
            self.traces += 1
        return inputs


@pytest.mark.parametrize("jit_compile", [False, True])
def test_later_fits_reuse_the_traced_train_function(jit_compile):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), TraceCounter(), keras.layers.Dense(16),
                              keras.layers.ReLU(), keras.layers.Dense(3)])
    fixed = tfmot_wfn.fix_weights(model, fixing_schedule=tfmot_wfn.StagedFixing(
        (0.5, 0.8, 1.0), steps_per_stage=4))

    def compile_():
        fixed.compile(optimizer="adam", jit_compile=jit_compile,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    def fit():  # a new callback per fit, as the fix job's stages
        fixed.fit(x, y, batch_size=8, epochs=1, verbose=0,
                  callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0)])

    compile_()
    counter = next(layer for layer in fixed.layers if isinstance(layer, TraceCounter))
    x, y = kh.classification_data(n=32)
    fit()
    traces, train_function = counter.traces, fixed.train_function
    assert traces >= 1
    fit()
    fit()
    assert counter.traces == traces  # no retrace...
    assert fixed.train_function is train_function  # ...of the same function
    assert kh.flat_masks(fixed).all()  # and all three stages ran
    assert all(int(w.fixing_step.numpy()) == 12 for w in wrappers_of(fixed))
    compile_()  # a new compile: a new train function, traced once
    fit()
    fit()
    assert counter.traces == 2 * traces


def test_stage_numbers_count_the_schedule_across_fits(capsys):
    x, y = kh.classification_data(n=32)

    def stage_numbers(schedule):
        fixed = _fixed_dense(schedule)
        for _ in range(3):  # a new callback per fit
            fixed.fit(x, y, batch_size=8, epochs=1, verbose=0,
                      callbacks=[tfmot_wfn.UpdateFixingStep()])
        out = capsys.readouterr().out
        return out, [line.split(": fixing stage ")[1].split(" ")[0]
                     for line in out.splitlines() if ": fixing stage " in line]

    out, numbers = stage_numbers(tfmot_wfn.StagedFixing((0.3, 0.6, 1.0), steps_per_stage=4))
    assert numbers == ["1", "2", "3"]  # one stage per fit
    assert "step 0: fixing stage 1 (30.00% of the weights" in out
    assert "step 4: fixing stage 2 (60.00% of the weights" in out
    assert "step 8: fixing stage 3 (100.00% of the weights" in out
    # A polynomial schedule: every 3 steps from step 2, and at its end step 9.
    out, numbers = stage_numbers(tfmot_wfn.PolynomialFixing(
        0.3, 1.0, begin_step=2, end_step=9, frequency=3))
    assert numbers == ["1", "2", "3", "4"]
    assert "step 5: fixing stage 2" in out and "step 9: fixing stage 4 (100.00%" in out


# ----------------------------------------------------------------------------- fresh_optimizer
def _loop(fresh_optimizer, boundary=4):
    """A custom loop up to the stage at `boundary`: (model, callback, gradients of a step)."""
    x, y = kh.classification_data(n=32)
    schedule = tfmot_wfn.StagedFixing((0.5, 0.8, 1.0), steps_per_stage=boundary)
    model = _fixed_dense(schedule)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    update = tfmot_wfn.UpdateFixingStep(verbose=0, fresh_optimizer=fresh_optimizer)
    update.set_model(model)
    update.on_train_begin()

    def gradients(step):
        update.on_train_batch_begin(step)
        with tf.GradientTape() as tape:
            loss = tfmot_wfn.regularized_loss(model, loss_fn(y, model(x, training=True)))
        return tape.gradient(loss, model.trainable_variables)

    for step in range(boundary):
        model.optimizer.apply_gradients(zip(gradients(step), model.trainable_variables))
    return model, update, gradients


def _slots(optimizer):
    """The optimizer's variables but the learning rate, as arrays."""
    lr = optimizer.learning_rate
    return [np.asarray(v.numpy()) for v in optimizer.variables if v is not lr]


@pytest.mark.parametrize("fresh", [False, True])
def test_fresh_optimizer_resets_the_state_at_each_stage(fresh):
    model, update, gradients = _loop(fresh, boundary=4)
    optimizer = model.optimizer
    assert int(optimizer.iterations.numpy()) == 4
    assert any(np.any(s != 0) for s in _slots(optimizer)[1:])  # moments built up over 4 steps
    grads = gradients(4)  # the second stage runs here, before the step's update
    assert len(update.history) == 2
    if not fresh:
        assert int(optimizer.iterations.numpy()) == 4
        assert any(np.any(s != 0) for s in _slots(optimizer)[1:])
        return
    assert int(optimizer.iterations.numpy()) == 0
    assert all(np.all(s == 0) for s in _slots(optimizer))  # Adam: moments 0, iterations 0
    assert float(np.asarray(optimizer.learning_rate)) == pytest.approx(1e-2)
    # From here on it trains exactly as a freshly built Adam on the same weights would.
    copies = [tf.Variable(np.asarray(v.numpy())) for v in model.trainable_variables]
    reference = keras.optimizers.Adam(1e-2)
    reference.build(copies)
    for step in range(5, 8):
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        reference.apply_gradients(zip(grads, copies))
        grads = gradients(step)
    for v, c in zip(model.trainable_variables, copies):
        np.testing.assert_allclose(v.numpy(), c.numpy(), rtol=1e-6, atol=1e-7)
    for mine, theirs in zip(_slots(optimizer), _slots(reference)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-6, atol=1e-9)
    assert int(optimizer.iterations.numpy()) == 3


def test_fresh_optimizer_in_fit_restarts_iterations_after_each_stage():
    x, y = kh.classification_data(n=32)
    iterations = {}
    fixed = _fixed_dense(tfmot_wfn.StagedFixing((0.5, 1.0), steps_per_stage=4))
    record = keras.callbacks.LambdaCallback(on_train_batch_begin=lambda batch, logs=None: iterations.setdefault(
        len(iterations), int(fixed.optimizer.iterations.numpy())))
    update = tfmot_wfn.UpdateFixingStep(verbose=0, fresh_optimizer=True)
    fixed.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[update, record])
    assert [iterations[i] for i in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert update.fresh_optimizer and len(update.history) == 2


def test_fresh_optimizer_is_the_default_and_keeps_a_schedules_step_count():
    assert tfmot_wfn.UpdateFixingStep().fresh_optimizer is True
    x, y = kh.classification_data(n=16)
    fixed = tfmot_wfn.fix_weights(kh.dense_model(), fixing_schedule=tfmot_wfn.StagedFixing(
        (0.5, 1.0), steps_per_stage=2))
    update = tfmot_wfn.UpdateFixingStep(verbose=0)
    update.set_model(fixed)
    with pytest.warns(UserWarning, match="has none, so nothing is reset"):
        update.on_train_begin()
    fixed.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-2, 10)),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    seen = []  # at each batch's begin, after UpdateFixingStep's (a stage runs at batch 2)
    record = keras.callbacks.LambdaCallback(on_train_batch_begin=lambda batch, logs=None: seen.append(
        (int(fixed.optimizer.iterations.numpy()),
         max((float(np.abs(v.numpy()).max()) for v in fixed.optimizer.variables
              if v is not fixed.optimizer.iterations), default=0.0))))
    fixed.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[update, record])
    assert len(update.history) == 2
    # The schedule reads iterations: it keeps counting through the stage ...
    assert [i for i, _ in seen] == [0, 1, 2, 3]
    # ... while the moments were reset by it: zero again before the stage's first step.
    assert seen[1][1] > 0 and seen[2][1] == 0
    with pytest.raises(TypeError, match="fresh_optimizer must be True or False"):
        tfmot_wfn.UpdateFixingStep(fresh_optimizer="yes")


@pytest.mark.skipif(not tfmot_wfn.IS_LEGACY_KERAS, reason="tf_keras's legacy OptimizerV2")
def test_fresh_optimizer_resets_a_legacy_optimizer_v2():
    # tf_keras.optimizers.legacy.Adam has no build flag and a variables() method: it was
    # silently never reset.
    x, y = kh.classification_data(n=32)
    fixed = tfmot_wfn.fix_weights(kh.dense_model(), fixing_schedule=tfmot_wfn.StagedFixing(
        (0.3, 0.6, 1.0), steps_per_stage=3))
    optimizer = keras.optimizers.legacy.Adam(1e-2)
    fixed.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    fixed.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0)])
    assert int(optimizer.iterations.numpy()) == 2  # 8 steps, reset after the stage at step 6
    assert float(keras.backend.get_value(optimizer.learning_rate)) == pytest.approx(1e-2)
