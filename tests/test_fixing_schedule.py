"""StagedFixing and PolynomialFixing: values, distance multipliers, validation, config."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfmot_wfn.keras.compat import keras
import tfmot_wfn
from tfmot_wfn.keras import fixing_schedule as schedules

pytestmark = pytest.mark.legacy  # also run under tf_keras: see pytest.ini

PAPER = (0.3, 0.6, 0.8, 0.9, 0.95, 0.975, 0.99, 0.9975, 0.999, 1.0)


# ------------------------------------------------------------------ StagedFixing
def test_paper_fractions_are_the_reference_default():
    assert tfmot_wfn.PAPER_FRACTIONS == PAPER
    assert tfmot_wfn.StagedFixing().fractions == PAPER


def test_staged_values_at_given_steps():
    s = tfmot_wfn.StagedFixing(steps_per_stage=100)
    assert s(0) == (True, 0.3)
    assert s(1) == (False, 0.3)
    assert s(50) == (False, 0.3)
    assert s(99) == (False, 0.3)
    assert s(100) == (True, 0.6)
    assert s(250) == (False, 0.8)
    assert s(900) == (True, 1.0)
    assert s(901) == (False, 1.0)
    assert s(1000) == (False, 1.0)  # no stage after the last one
    assert s(10**9) == (False, 1.0)
    assert s.end_step == 900
    assert [s.stage_at(t) for t in (0, 100, 500, 900, 1000, 50)] == [0, 1, 5, 9, None, None]



@pytest.mark.parametrize("schedule", [
    tfmot_wfn.StagedFixing(steps_per_stage=7, begin_step=3),
    tfmot_wfn.PolynomialFixing(0.3, 1.0, begin_step=5, end_step=303, frequency=100),
    tfmot_wfn.PolynomialFixing(0.3, 1.0, begin_step=0, end_step=300, frequency=100),
])
def test_stage_at_numbers_the_stages_in_order(schedule):
    """stage_at(step) is the stage's index in the schedule (the base class counts them)."""
    steps = [t for t in range(400) if schedule(t)[0]]
    assert [schedule.stage_at(t) for t in steps] == list(range(len(steps)))
    assert [schedule.stage_at(t) for t in range(400)] == [
        schedules.FixingSchedule.stage_at(schedule, t) for t in range(400)]
    assert schedule.stage_at(steps[0] + 1) is None


def test_staged_stage_steps_and_fractions_match_the_staircase():
    s = tfmot_wfn.StagedFixing(steps_per_stage=7, begin_step=3)
    stages = [(t, f) for t in range(0, 200) for should, f in [s(t)] if should]
    assert stages == [(3 + 7 * i, PAPER[i]) for i in range(10)]
    assert s.end_step == 3 + 7 * 9


def test_staged_before_begin_step_is_zero_and_not_fixing():
    s = tfmot_wfn.StagedFixing(fractions=(0.5, 1.0), steps_per_stage=10, begin_step=20)
    assert s(0) == (False, 0.0)
    assert s(19) == (False, 0.0)
    assert s(20) == (True, 0.5)
    assert s(30) == (True, 1.0)
    assert s(31) == (False, 1.0)


def test_staged_distance_multipliers_are_ten_down_to_one():
    s = tfmot_wfn.StagedFixing(steps_per_stage=5)
    assert [s.distance_multiplier(5 * i) for i in range(10)] == [10.0, 9.0, 8.0, 7.0, 6.0,
                                                                 5.0, 4.0, 3.0, 2.0, 1.0]
    # Between stages the multiplier is that of the stage just run; never below 1.
    assert s.distance_multiplier(7) == 9.0
    assert s.distance_multiplier(10**6) == 1.0
    short = tfmot_wfn.StagedFixing(fractions=(0.5, 0.9, 1.0), steps_per_stage=2)
    assert [short.distance_multiplier(t) for t in (0, 2, 4, 6)] == [3.0, 2.0, 1.0, 1.0]


def test_staged_epoch_based_schedule_resolves_from_steps_per_epoch():
    s = tfmot_wfn.StagedFixing(epochs_per_stage=2)
    assert s.steps_per_stage is None
    with pytest.raises(ValueError, match="steps_per_stage"):
        s(0)
    with pytest.raises(ValueError, match="steps_per_stage"):
        _ = s.end_step
    with pytest.raises(ValueError, match="steps per epoch"):
        s.resolve(None)
    s.resolve(12)
    assert s.steps_per_stage == 24
    assert s(24) == (True, 0.6)
    s.resolve(99)  # already resolved: unchanged
    assert s.steps_per_stage == 24


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(fractions=()), ValueError, "must not be empty"),
        (dict(fractions=(0.3, 0.3, 1.0)), ValueError, "strictly increasing"),
        (dict(fractions=(0.6, 0.3, 1.0)), ValueError, "strictly increasing"),
        (dict(fractions=(0.0, 0.5)), ValueError, r"\(0, 1\]"),
        (dict(fractions=(-0.1, 0.5)), ValueError, r"\(0, 1\]"),
        (dict(fractions=(0.5, 1.5)), ValueError, r"\(0, 1\]"),
        (dict(fractions=(0.5, float("nan"))), ValueError, r"\(0, 1\]"),
        (dict(steps_per_stage=0), ValueError, "steps_per_stage must be >= 1"),
        (dict(steps_per_stage=-5), ValueError, "steps_per_stage must be >= 1"),
        (dict(steps_per_stage=1.5), TypeError, "steps_per_stage must be an integer"),
        (dict(steps_per_stage=True), TypeError, "steps_per_stage must be an integer"),
        (dict(begin_step=-1), ValueError, "begin_step must be >= 0"),
        (dict(epochs_per_stage=0), ValueError, "epochs_per_stage must be >= 1"),
        (dict(epochs_per_stage="2"), TypeError, "epochs_per_stage must be an integer"),
    ],
)
def test_staged_invalid_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        tfmot_wfn.StagedFixing(**kwargs)


@settings(max_examples=60, deadline=None)
@given(
    fractions=st.lists(st.floats(0.001, 1.0, allow_nan=False), min_size=1, max_size=12, unique=True),
    steps_per_stage=st.integers(1, 50),
    begin_step=st.integers(0, 30),
)
def test_staged_schedule_properties(fractions, steps_per_stage, begin_step):
    fractions = sorted(fractions)
    s = tfmot_wfn.StagedFixing(fractions, steps_per_stage=steps_per_stage, begin_step=begin_step)
    horizon = begin_step + steps_per_stage * (len(fractions) + 2)
    values = [s(t) for t in range(horizon)]
    stage_steps = [t for t, (should, _) in enumerate(values) if should]
    assert stage_steps == [begin_step + i * steps_per_stage for i in range(len(fractions))]
    assert [values[t][1] for t in stage_steps] == fractions
    seen = [f for _, f in values]
    assert seen == sorted(seen)  # the fraction never decreases
    assert s.end_step == stage_steps[-1]
    multipliers = [s.distance_multiplier(t) for t in stage_steps]
    assert multipliers == [float(max(1, len(fractions) - i)) for i in range(len(fractions))]


# ---------------------------------------------------------------- PolynomialFixing
def test_polynomial_values_at_given_steps():
    s = tfmot_wfn.PolynomialFixing(0.3, 1.0, begin_step=0, end_step=1000, power=3, frequency=100)
    assert s(0) == (True, 0.3)
    should, f = s(500)
    assert should and f == pytest.approx(1.0 - 0.7 * 0.5**3)
    should, f = s(250)
    assert not should and f == pytest.approx(1.0 - 0.7 * 0.75**3)
    assert s(1000) == (True, 1.0)
    assert s(1100) == (False, 1.0)
    assert s.end_step == 1000


def test_polynomial_stage_steps_include_end_step_off_frequency():
    s = tfmot_wfn.PolynomialFixing(0.5, 0.9, begin_step=10, end_step=45, power=1, frequency=10)
    steps = [t for t in range(0, 100) if s(t)[0]]
    assert steps == [10, 20, 30, 40, 45]
    assert s(5) == (False, 0.0)
    assert [s(t)[1] for t in steps] == pytest.approx([0.5, 0.5 + 0.4 * 10 / 35, 0.5 + 0.4 * 20 / 35,
                                                      0.5 + 0.4 * 30 / 35, 0.9])


def test_polynomial_distance_multiplier_shrinks_linearly_to_one():
    s = tfmot_wfn.PolynomialFixing(0.3, 1.0, begin_step=100, end_step=200, max_multiplier=10)
    assert s.distance_multiplier(0) == 10.0
    assert s.distance_multiplier(100) == 10.0
    assert s.distance_multiplier(150) == pytest.approx(5.5)
    assert s.distance_multiplier(200) == 1.0
    assert s.distance_multiplier(300) == 1.0


@settings(max_examples=60, deadline=None)
@given(
    initial=st.floats(0.01, 1.0),
    extra=st.floats(0.0, 1.0),
    begin=st.integers(0, 50),
    length=st.integers(1, 200),
    power=st.floats(0.5, 5.0),
)
def test_polynomial_fraction_is_monotone_between_initial_and_final(initial, extra, begin, length, power):
    final = initial + (1.0 - initial) * extra
    s = tfmot_wfn.PolynomialFixing(initial, final, begin, begin + length, power=power, frequency=7)
    fractions = [s(t)[1] for t in range(begin, begin + length + 3)]
    assert fractions[0] == pytest.approx(initial)
    assert fractions[-1] == pytest.approx(final)
    assert all(b >= a - 1e-12 for a, b in zip(fractions, fractions[1:]))
    assert all(initial - 1e-12 <= f <= final + 1e-12 for f in fractions)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(initial_fraction=0.0), ValueError, r"initial_fraction must be in \(0, 1\]"),
        (dict(initial_fraction=1.2), ValueError, r"initial_fraction must be in \(0, 1\]"),
        (dict(final_fraction=0.2), ValueError, "final_fraction must be in"),
        (dict(final_fraction=1.01), ValueError, "final_fraction must be in"),
        (dict(end_step=100), ValueError, r"end_step \(100\) must be greater than begin_step \(100\)"),
        (dict(end_step=50), ValueError, "must be greater than begin_step"),
        (dict(begin_step=-1), ValueError, "begin_step must be >= 0"),
        (dict(begin_step=1.0), TypeError, "begin_step must be an integer"),
        (dict(power=0), ValueError, "power must be > 0"),
        (dict(frequency=0), ValueError, "frequency must be >= 1"),
        (dict(max_multiplier=0.5), ValueError, "max_multiplier must be >= 1"),
    ],
)
def test_polynomial_invalid_arguments(kwargs, error, message):
    args = dict(initial_fraction=0.3, final_fraction=1.0, begin_step=100, end_step=200)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        tfmot_wfn.PolynomialFixing(**args)


# -------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "schedule",
    [
        tfmot_wfn.StagedFixing(),
        tfmot_wfn.StagedFixing(fractions=(0.25, 0.5, 1.0), steps_per_stage=17, begin_step=4),
        tfmot_wfn.StagedFixing(epochs_per_stage=3),
        tfmot_wfn.PolynomialFixing(0.2, 0.95, begin_step=5, end_step=500, power=2.5, frequency=33,
                                   max_multiplier=4.0),
    ],
    ids=["paper", "staged-custom", "staged-epochs", "polynomial"],
)
def test_schedule_config_round_trip(schedule):
    config = schedule.get_config()
    clone = type(schedule).from_config(config)
    assert clone == schedule
    assert clone.get_config() == config
    assert repr(clone) == repr(schedule)
    restored = schedules.deserialize(schedules.serialize(schedule))
    assert type(restored) is type(schedule) and restored == schedule
    # Registered with Keras, so generic Keras (de)serialization works as well.
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert type(again) is type(schedule) and again == schedule
    if schedule.get_config().get("steps_per_stage", 1) is not None:
        for t in range(0, 1000, 13):
            assert clone(t) == schedule(t)
            assert clone.distance_multiplier(t) == schedule.distance_multiplier(t)


def test_deserialize_unknown_schedule_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown fixing schedule 'Cosine'"):
        schedules.deserialize({"class_name": "Cosine", "config": {}})


def test_schedules_differ_by_config():
    assert tfmot_wfn.StagedFixing(steps_per_stage=3) != tfmot_wfn.StagedFixing(steps_per_stage=4)
    assert tfmot_wfn.StagedFixing(steps_per_stage=3) != tfmot_wfn.PolynomialFixing(0.3, 1.0, 0, 10)
    assert math.isclose(tfmot_wfn.PolynomialFixing(0.3, 1.0, 0, 10).fraction_at(10), 1.0)
