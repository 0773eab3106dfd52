"""WeightFixingWrapper: exact predictions, fixed weights that never move, the shared palette,
the schedule's fixed fraction, save/load round trips and configs."""

from __future__ import annotations

import json

import zipfile

import numpy as np
import pytest

from tfmot_wfn.keras.compat import keras, tf
import keras_helpers as kh
import tfmot_wfn
from tfmot_wfn.core.greedy_fixing import quota_for
from tfmot_wfn.core.powers_of_two import ZERO_DISTANCE
from tfmot_wfn.keras.network import run_fixing_stage, wrappers_of

pytestmark = pytest.mark.legacy  # also run under tf_keras: see pytest.ini

L = keras.layers
PAPER = tfmot_wfn.PAPER_FRACTIONS


# ------------------------------------------------------------- predictions
def test_wrapped_predictions_equal_the_original_before_any_stage(float_cnn, digits):
    fixed = tfmot_wfn.fix_weights(float_cnn.model)
    np.testing.assert_array_equal(fixed.predict(digits.x_test, verbose=0, batch_size=512),
                                  float_cnn.predictions)
    assert not kh.flat_masks(fixed).any()
    assert all(int(w.fixing_step.numpy()) == -1 for w in wrappers_of(fixed))
    assert all(int(w.palette_size.numpy()) == 0 for w in wrappers_of(fixed))


# --------------------------------------------------- fixed weights never move
OPTIMIZERS = {
    "sgd_momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    "adam": lambda: keras.optimizers.Adam(0.01),
    "adamw": lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fixed_weights_never_move_under_any_optimizer(name):
    model = kh.dense_model(batchnorm=True, seed=7)
    x, y = kh.classification_data(n=64, seed=7)
    # Three free steps build optimizer state (momentum, Adam moments), then a
    # stage at step 3 fixes half the weights, then six more steps.
    schedule = tfmot_wfn.StagedFixing((0.5, 1.0), steps_per_stage=1000, begin_step=3)
    fixed = tfmot_wfn.fix_weights(model, fixing_schedule=schedule)
    fixed.compile(optimizer=OPTIMIZERS[name](),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    update = tfmot_wfn.UpdateFixingStep(verbose=0)
    recorder = kh.StageRecorder(update)
    fixed.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[update, recorder])

    assert len(recorder.snapshots) == 1 and recorder.snapshots[0]["step"] == 3
    snap = recorder.snapshots[0]
    mask, at_stage = snap["masks"], snap["values"]
    assert mask.sum() == quota_for(mask.size, 0.5)
    after = kh.flat_values(fixed)
    np.testing.assert_array_equal(kh.flat_masks(fixed), mask)
    # Fixed entries: bit-identical to the values the stage gave them.
    assert after[mask].tobytes() == at_stage[mask].tobytes()
    assert after[mask].tobytes() == snap["fixed_values"][mask].tobytes()
    # Free entries trained.
    assert np.mean(after[~mask] != at_stage[~mask]) > 0.9
    if name == "adamw":
        # Weight decay did move the raw variables under the fixed entries: the
        # wrapper is what keeps the effective weights exact.
        raw = np.concatenate([v.numpy().ravel() for w in wrappers_of(fixed)
                              for v in w.fixable_variables])
        assert np.any(raw[mask] != at_stage[mask])
    # The layers compute with the effective weights: compare with a plain model.
    stripped = tfmot_wfn.strip_fixing(fixed)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), fixed.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)


# ------------------------------------------------------ network-wide palette
def test_full_schedule_fixes_everything_into_one_palette(fixed_cnn):
    wrappers = wrappers_of(fixed_cnn.model)
    assert len(wrappers) == 5
    first = wrappers[0]
    palette = kh.wrapper_palette(first)
    assert palette.size == int(first.palette_size.numpy()) > 0
    for w in wrappers:
        # Same palette variable contents (padding included) and size in every wrapper.
        np.testing.assert_array_equal(w.palette.numpy(), first.palette.numpy())
        assert int(w.palette_size.numpy()) == palette.size
        for mask, values, fixed_values in zip(w.mask_numpy(), w.effective_numpy(),
                                              [f.numpy() for f in w.fixed_values]):
            assert mask.all()
            assert np.isin(values, palette).all()
            np.testing.assert_array_equal(values, fixed_values)
    assert np.all(np.diff(palette) > 0)  # sorted, unique
    assert np.all(first.palette.numpy()[palette.size:] == 0)
    # The palette is exactly the set of values in use.
    np.testing.assert_array_equal(np.unique(kh.flat_values(fixed_cnn.model) + 0.0), palette)


def test_palette_values_are_zero_or_sums_of_signed_powers_of_two(fixed_cnn):
    palette = kh.wrapper_palette(wrappers_of(fixed_cnn.model)[0])
    max_order = max(s.max_order for s in fixed_cnn.callback.history)
    floor = np.log2(ZERO_DISTANCE) - max_order - 1
    for value in palette:
        assert kh.is_sum_of_signed_powers_of_two(value, max_terms=max_order + 1), value
        # Bounded: few terms in practice, none finer than the order allows.
        assert kh.is_sum_of_signed_powers_of_two(value, max_terms=4), value
        if value != 0:
            assert abs(value) >= ZERO_DISTANCE / 2
            mantissa_exponents = [e for _, e in tfmot_wfn.core.signed_digits(float(value))]
            assert min(mantissa_exponents) >= floor


def test_fixed_count_follows_the_schedule_and_only_grows(fixed_cnn):
    snaps = fixed_cnn.snapshots
    assert [s["step"] for s in snaps] == [10 * i for i in range(10)]
    n = snaps[0]["masks"].size
    previous_mask = np.zeros(n, bool)
    previous_values = None
    for i, snap in enumerate(snaps):
        mask = snap["masks"]
        assert mask.sum() == int(n * PAPER[i]) == max(int(n * f) for f in PAPER[: i + 1])
        assert snap["summary"].fixed == mask.sum()
        assert snap["summary"].newly_fixed == mask.sum() - previous_mask.sum()
        assert snap["summary"].fraction == PAPER[i]
        # Stage allowance: delta * (10 - i).
        assert snap["summary"].distance == pytest.approx(tfmot_wfn.DEFAULT_DISTANCE * (10 - i))
        assert np.all(mask[previous_mask])  # nothing is ever unfixed
        if previous_values is not None:
            # ... and nothing fixed changes value.
            assert snap["values"][previous_mask].tobytes() == previous_values[previous_mask].tobytes()
        # Every palette is a superset of the previous one.
        palette = snap["palettes"][0]
        assert np.isin(snap["values"][mask], palette).all()
        if i:
            assert np.isin(snaps[i - 1]["palettes"][0], palette).all()
        previous_mask, previous_values = mask, snap["values"]
    assert previous_mask.all()
    assert tfmot_wfn.fixed_fraction(fixed_cnn.model) == 1.0


def test_polynomial_schedule_in_fit_fixes_the_scheduled_fraction():
    model = kh.dense_model(seed=3)
    x, y = kh.classification_data(n=40, seed=3)
    schedule = tfmot_wfn.PolynomialFixing(0.2, 0.9, begin_step=0, end_step=8, power=1, frequency=4)
    fixed = tfmot_wfn.fix_weights(model, fixing_schedule=schedule)
    fixed.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    update = tfmot_wfn.UpdateFixingStep(verbose=0)
    recorder = kh.StageRecorder(update)
    fixed.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[update, recorder])
    n = recorder.snapshots[0]["masks"].size
    assert [s["step"] for s in recorder.snapshots] == [0, 4, 8]
    assert [int(s["masks"].sum()) for s in recorder.snapshots] == [
        int(n * 0.2), int(n * 0.55), int(n * 0.9)]
    assert [s["summary"].distance for s in recorder.snapshots] == pytest.approx(
        [tfmot_wfn.DEFAULT_DISTANCE * m for m in (10.0, 5.5, 1.0)])


# --------------------------------------------------- missing UpdateFixingStep
# The refusal itself, in each run mode, is in test_errors.py.
MISSING_CALLBACK = r"without the tfmot_wfn.UpdateFixingStep\(\) callback"


@pytest.mark.parametrize("mode", sorted(kh.RUN_MODES))
def test_the_check_follows_the_step_variable_not_the_fit(mode):
    """tfmot's check: the step starts at -1 and the callback advances it. The step is
    saved with the model, so once it advanced a later fit without the callback trains
    (and runs no stage, as tfmot prunes nothing without its callback); a fit with the
    callback again continues the schedule where the step stands."""
    fixed = tfmot_wfn.fix_weights(kh.dense_model(), fixing_schedule=tfmot_wfn.StagedFixing(
        (0.5, 1.0), steps_per_stage=3))
    fixed.compile(optimizer="adam", **kh.RUN_MODES[mode],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = kh.classification_data(n=16)
    fixed.fit(x, y, batch_size=8, epochs=1, verbose=0,
              callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0)])  # steps 0, 1
    masks = kh.flat_masks(fixed)
    fixed.fit(x, y, batch_size=8, epochs=1, verbose=0)
    np.testing.assert_array_equal(kh.flat_masks(fixed), masks)
    assert all(int(w.fixing_step.numpy()) == 2 for w in wrappers_of(fixed))
    update = tfmot_wfn.UpdateFixingStep(verbose=0)
    fixed.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[update])  # steps 2, 3
    assert [h.fraction for h in update.history] == [1.0] and kh.flat_masks(fixed).all()
    assert update.step == 4
    # A step set back to -1 (say, weights of a never-trained model loaded) is refused again.
    for w in wrappers_of(fixed):
        w.fixing_step.assign(-1)
    if mode != "xla":  # XLA checks while tracing: this fit reuses the traced function
        with pytest.raises(tf.errors.InvalidArgumentError, match=MISSING_CALLBACK):
            fixed.fit(x, y, batch_size=8, epochs=1, verbose=0)


# ---------------------------------------------------------- stage failures
def test_a_failing_stage_writes_nothing():
    fixed = tfmot_wfn.fix_weights(kh.dense_model(seed=4), palette_capacity=2)
    state = kh.network_state(fixed)
    with pytest.raises(ValueError, match="palette_capacity=2"):
        run_fixing_stage(fixed, 1.0, 0.01)
    kh.assert_states_equal(kh.network_state(fixed), state)

    fixed = tfmot_wfn.fix_weights(kh.dense_model(seed=4))
    kernel = wrappers_of(fixed)[0].fixable_variables[0]
    kernel.assign(np.where(np.eye(*kernel.shape, dtype=bool), np.nan, kernel.numpy()))
    state = kh.network_state(fixed)
    with pytest.raises(FloatingPointError, match="NaN or Inf.*diverged"):
        run_fixing_stage(fixed, 0.5, 0.05)
    kh.assert_states_equal(kh.network_state(fixed), state)


def test_run_fixing_stage_without_wrappers_is_a_clear_error():
    with pytest.raises(ValueError, match="No WeightFixingWrapper found"):
        run_fixing_stage(kh.dense_model(), 0.5, 0.05)


# ------------------------------------------------------------ save / load
def _plain(config):
    """Config as JSON would hold it (tuples become lists after loading)."""
    return json.loads(json.dumps(config))


def _resumable(base, steps_per_stage):
    fixed = tfmot_wfn.fix_weights(base, fixing_schedule=tfmot_wfn.StagedFixing(
        steps_per_stage=steps_per_stage))
    fixed.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return fixed


def _write_old_layout(new_path, old_path, fixable_counts):
    """Copy a .keras file, giving each wrapper's ``vars`` the layout of tfmot_wfn 0.2.0: the
    wrapped layer's first `k` (fixable) variables, then the wrapper's own."""
    import io

    import h5py

    with zipfile.ZipFile(new_path) as source:
        members = {name: source.read(name) for name in source.namelist()}
    weights = io.BytesIO(members["model.weights.h5"])
    with h5py.File(weights, "r+") as h5:
        for name, k in fixable_counts.items():
            own, inner = h5[f"layers/{name}/vars"], h5[f"layers/{name}/layer/vars"]
            values = [own[str(i)][()] for i in range(len(own))]
            for key in list(own):
                del own[key]
            for i, value in enumerate([inner[str(j)][()] for j in range(k)] + values):
                own[str(i)] = value
    members["model.weights.h5"] = weights.getvalue()
    with zipfile.ZipFile(old_path, "w") as target:
        for name, data in members.items():
            target.writestr(name, data)


def test_wrapped_weights_are_saved_once_and_files_of_the_old_layout_load(tmp_path):
    """A wrapper's own variables are its masks, fixed values, palette and step; the wrapped
    layer saves its kernel and bias (tfmot_wfn 0.2.0 stored them twice: such files load)."""
    from tfmot_wfn.keras.compat import own_variables

    base = kh.dense_model(batchnorm=True, seed=3)
    fixed = tfmot_wfn.fix_weights(base)
    tfmot_wfn.run_fixing_stage(fixed, 0.5, 0.05)
    for w in wrappers_of(fixed):
        own = {id(v) for v in own_variables(w)}
        assert not own & {id(v) for v in w.layer.weights}
        assert len(own) == 2 * len(w.fixable_variables) + 3  # masks, values, palette, size, step
    new_path = str(tmp_path / "new.keras")
    fixed.save(new_path)
    # The old layout: each wrapper's own variables after copies of its fixable ones.
    old_path = str(tmp_path / "old.keras")
    _write_old_layout(new_path, old_path, {  # Keras names the layers' groups by class
        "weight_fixing_wrapper" + (f"_{i}" if i else ""): len(w.fixable_variables)
        for i, w in enumerate(wrappers_of(fixed))})
    with zipfile.ZipFile(new_path) as new, zipfile.ZipFile(old_path) as old:
        assert (new.getinfo("model.weights.h5").file_size
                < old.getinfo("model.weights.h5").file_size)
    x, _ = kh.classification_data(n=16, seed=3)
    saved = kh.network_state(fixed)
    for path in (new_path, old_path):
        with tfmot_wfn.fixing_scope():
            loaded = keras.models.load_model(path)
        kh.assert_states_equal(kh.network_state(loaded), saved)
        np.testing.assert_array_equal(loaded.predict(x, verbose=0), fixed.predict(x, verbose=0))


def test_keras_save_load_mid_schedule_is_exact_and_resumes(tmp_path):
    base = kh.dense_model(batchnorm=True, seed=11)
    x, y = kh.classification_data(n=64, seed=11)
    fit = dict(batch_size=16, shuffle=False, verbose=0)  # 4 steps per epoch = 1 stage

    uninterrupted = _resumable(base, 4)
    run_a = tfmot_wfn.UpdateFixingStep(verbose=0)
    rec_a = kh.StageRecorder(run_a)
    uninterrupted.fit(x, y, epochs=10, callbacks=[run_a, rec_a], **fit)

    interrupted = _resumable(base, 4)
    run_b = tfmot_wfn.UpdateFixingStep(verbose=0)
    interrupted.fit(x, y, epochs=3, callbacks=[run_b], **fit)  # stages at steps 0, 4, 8
    assert len(run_b.history) == 3
    saved = kh.network_state(interrupted)
    assert all(s["fixing_step"] == 12 for s in saved)
    path = str(tmp_path / "mid.keras")
    interrupted.save(path)

    loaded_plain = keras.models.load_model(path)
    with tfmot_wfn.fixing_scope():
        loaded_scoped = keras.models.load_model(path)
    for loaded in (loaded_plain, loaded_scoped):
        assert len(wrappers_of(loaded)) == len(wrappers_of(interrupted))
        kh.assert_states_equal(kh.network_state(loaded), saved)
        for w_old, w_new in zip(wrappers_of(interrupted), wrappers_of(loaded)):
            assert _plain(w_new.get_config()) == _plain(w_old.get_config())
            assert w_new.fixing_schedule == w_old.fixing_schedule
        np.testing.assert_array_equal(loaded.predict(x, verbose=0), interrupted.predict(x, verbose=0))

    # Resume with a NEW callback: it continues at step 12, stage 3.
    run_c = tfmot_wfn.UpdateFixingStep(verbose=0)
    rec_c = kh.StageRecorder(run_c)
    loaded_plain.fit(x, y, epochs=7, callbacks=[run_c, rec_c], **fit)
    assert [s["step"] for s in rec_c.snapshots] == [4 * i for i in range(3, 10)]
    assert [s["step"] for s in rec_a.snapshots] == [4 * i for i in range(10)]
    assert [h.fixed for h in run_b.history + run_c.history] == [h.fixed for h in run_a.history]
    assert all(s["fixing_step"] == 40 for s in kh.network_state(loaded_plain))

    mask_at_save = np.concatenate([m.ravel() for s in saved for m in s["masks"]])
    values_at_save = np.concatenate([v.ravel() for s in saved for v in s["effective"]])
    for model in (uninterrupted, loaded_plain):
        mask = kh.flat_masks(model)
        values = kh.flat_values(model)
        assert mask.all()
        assert values[mask_at_save].tobytes() == values_at_save[mask_at_save].tobytes()
        assert np.isin(saved[0]["palette"][: saved[0]["palette_size"]],
                       kh.wrapper_palette(wrappers_of(model)[0])).all()
    # Same masks at the same step as the uninterrupted run (for the masks fixed by then).
    np.testing.assert_array_equal(rec_a.snapshots[2]["masks"], mask_at_save)


class _TwoStages(tfmot_wfn.FixingSchedule):
    """A user's own schedule: half the weights at step 0, all at step ``every``."""

    def __init__(self, every=2):
        self.every = every

    def __call__(self, step):
        return step in (0, self.every), (0.5 if step < self.every else 1.0)

    def distance_multiplier(self, step):
        return 2.0 if step < self.every else 1.0

    @property
    def end_step(self):
        return self.every

    def get_config(self):
        return {"every": self.every}


_RegisteredTwoStages = keras.saving.register_keras_serializable(package="wfn_tests")(
    type("RegisteredTwoStages", (_TwoStages,), {}))


@pytest.mark.parametrize("registered", [True, False])
def test_a_model_with_a_schedule_of_ones_own_loads_back(registered, tmp_path):
    cls = _RegisteredTwoStages if registered else _TwoStages
    x, y = kh.classification_data(n=16)
    fixed = tfmot_wfn.fix_weights(kh.dense_model(), fixing_schedule=cls(2))
    fixed.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    fixed.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0)])
    path = str(tmp_path / "own_schedule.keras")
    fixed.save(path)
    if not registered:
        with pytest.raises(ValueError, match="custom_objects="):
            keras.models.load_model(path)
    loaded = keras.models.load_model(path, custom_objects=None if registered else {cls.__name__: cls})
    for wrapper in wrappers_of(loaded):
        assert type(wrapper.fixing_schedule) is cls and wrapper.fixing_schedule.every == 2
    kh.assert_states_equal(kh.network_state(loaded), kh.network_state(fixed))


def test_saved_fully_fixed_model_round_trips(fixed_cnn, digits, tmp_path):
    path = str(tmp_path / "fixed.keras")
    fixed_cnn.model.save(path)
    loaded = keras.models.load_model(path)
    kh.assert_states_equal(kh.network_state(loaded), kh.network_state(fixed_cnn.model))
    np.testing.assert_array_equal(
        loaded.predict(digits.x_test, verbose=0, batch_size=512),
        fixed_cnn.model.predict(digits.x_test, verbose=0, batch_size=512))
    stripped = tfmot_wfn.strip_fixing(loaded)
    assert [layer.name for layer in stripped.layers] == [
        layer.name for layer in tfmot_wfn.strip_fixing(fixed_cnn.model).layers]


# ------------------------------------------------------------------- config
@pytest.mark.parametrize("schedule", [
    tfmot_wfn.StagedFixing((0.4, 0.8, 1.0), steps_per_stage=5, begin_step=2),
    tfmot_wfn.PolynomialFixing(0.3, 1.0, begin_step=0, end_step=50, frequency=10),
], ids=["staged", "polynomial"])
def test_wrapper_get_config_from_config_round_trip(schedule):
    wrapper = tfmot_wfn.WeightFixingWrapper(
        L.Conv2D(3, 2, name="c"), fixing_schedule=schedule, distance=0.02, regularization=0.3,
        temperature=0.07, zero_distance=2.0**-8, fix_biases=False, fix_batchnorm=False,
        palette_capacity=128)
    config = wrapper.get_config()
    assert config["fixing_schedule"] == {"class_name": type(schedule).__name__,
                                         "config": schedule.get_config()}
    assert (config["distance"], config["regularization"], config["temperature"]) == (0.02, 0.3, 0.07)
    assert (config["zero_distance"], config["fix_biases"], config["fix_batchnorm"],
            config["palette_capacity"]) == (2.0**-8, False, False, 128)
    clone = tfmot_wfn.WeightFixingWrapper.from_config(config)
    assert clone.get_config() == config
    assert clone.fixing_schedule == schedule and clone.fixing_schedule is not schedule
    assert type(clone.layer) is L.Conv2D and clone.layer.get_config() == wrapper.layer.get_config()
    again = keras.layers.deserialize(keras.layers.serialize(wrapper))
    assert isinstance(again, tfmot_wfn.WeightFixingWrapper)
    assert again.get_config() == config


def test_wrapper_built_variables():
    wrapper = tfmot_wfn.WeightFixingWrapper(L.Dense(3), palette_capacity=16)
    keras.Sequential([keras.Input((5,)), wrapper])
    assert [tuple(m.shape) for m in wrapper.masks] == [(5, 3), (3,)]
    assert all(tf.dtypes.as_dtype(m.dtype) == tf.bool for m in wrapper.masks)
    assert [tuple(f.shape) for f in wrapper.fixed_values] == [(5, 3), (3,)]
    assert tuple(wrapper.palette.shape) == (16,)
    assert int(wrapper.fixing_step.numpy()) == -1
    assert all(not v.trainable for v in wrapper.masks + wrapper.fixed_values)
    assert {id(v) for v in wrapper.trainable_variables} == {id(v) for v in wrapper.layer.weights}


def test_wrapper_refuses_models_and_non_layers():
    with pytest.raises(TypeError, match="wraps single layers"):
        tfmot_wfn.WeightFixingWrapper(kh.dense_model())
    with pytest.raises(TypeError, match="wraps a keras.layers.Layer"):
        tfmot_wfn.WeightFixingWrapper("dense")
    with pytest.raises(ValueError, match="PReLU.*FixableLayer"):
        tfmot_wfn.WeightFixingWrapper(L.PReLU())
