"""FixingConfig: one validated, frozen object for the fixing parameters of fix_weights and the
wrapper; and the argument-check and finiteness helpers it shares with the rest of the package."""

from __future__ import annotations

import dataclasses
import inspect
import math

import numpy as np
import pytest

from tfmot_wfn.keras.compat import keras
import tfmot_wfn
from tfmot_wfn.keras.fixing_config import NETWORK_SETTINGS, FixingConfig
from tfmot_wfn.utils.finite import count_nonfinite
from tfmot_wfn.utils.validation import check_bool, check_positive_int, check_real

pytestmark = pytest.mark.legacy  # also run under tf_keras: see pytest.ini

L = keras.layers


def test_defaults_are_those_of_fix_weights_and_the_wrapper():
    config = FixingConfig()
    fields = {f.name for f in dataclasses.fields(FixingConfig)}
    parameters = inspect.signature(tfmot_wfn.fix_weights).parameters
    for name in fields - {"fixing_schedule", "palette_capacity"}:
        assert parameters[name].default == getattr(config, name), name
    # The wrapper takes its settings as keywords: given none, it holds the defaults (with
    # the rule "auto" chose for its layer).
    wrapper = tfmot_wfn.WeightFixingWrapper(L.Dense(3))
    assert wrapper.fixing_config == dataclasses.replace(config, rule="bounded_third")
    assert wrapper.palette_capacity == config.palette_capacity == 4096
    assert config.distance == tfmot_wfn.DEFAULT_DISTANCE
    assert config.fixing_schedule == tfmot_wfn.StagedFixing()  # None -> the paper's schedule


def test_config_is_frozen_normalised_and_round_trips_through_fix_weights():
    schedule = tfmot_wfn.StagedFixing((0.5, 1.0), steps_per_stage=3)
    config = FixingConfig(fixing_schedule=schedule, distance=np.float32(0.25), regularization=0,
                          temperature=1, fix_biases=np.bool_(False), palette_capacity=np.int64(64))
    assert type(config.distance) is float and config.distance == 0.25
    assert type(config.regularization) is float and config.regularization == 0.0
    assert config.fix_biases is False and type(config.palette_capacity) is int
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.distance = 0.5
    model = keras.Sequential([keras.Input((4,)), L.Dense(3), L.Dense(2)])
    fixed = tfmot_wfn.fix_weights(model, **config.to_kwargs())
    wrappers = [layer for layer in fixed.layers if isinstance(layer, tfmot_wfn.WeightFixingWrapper)]
    assert len(wrappers) == 2
    # rule="auto" (the default) becomes the rule chosen for this network (no depthwise layer).
    assert config.rule == "auto"
    chosen = dataclasses.replace(config, rule="bounded_third")
    for w in wrappers:
        assert w.fixing_config == chosen
        assert w.fixing_schedule == schedule and w.fixing_schedule is not schedule
        assert [v is w.layer.kernel for v in w.fixable_variables] == [True]  # no biases
    # A serialized schedule is accepted (old saved configs hold dicts).
    from_dict = FixingConfig(fixing_schedule={"class_name": "StagedFixing",
                                              "config": schedule.get_config()})
    assert from_dict.fixing_schedule == schedule
    assert config.network_settings() == tuple(getattr(config, n) for n in NETWORK_SETTINGS)


def test_wrapper_takes_a_whole_config_and_keywords_beside_it():
    schedule = tfmot_wfn.StagedFixing((0.5, 1.0))
    config = FixingConfig(distance=0.03, fix_biases=False, rule="paper", palette_capacity=32)
    wrapper = tfmot_wfn.WeightFixingWrapper(L.Dense(3, name="d"), fixing_config=config)
    assert wrapper.fixing_config == config and wrapper.name == "fix_d"
    # The schedule (positional, as tfmot's wrappers take theirs) and keyword settings replace
    # the config's fields and are validated like the others.
    wrapper = tfmot_wfn.WeightFixingWrapper(L.Dense(3), schedule, fixing_config=config,
                                            distance=0.01, name="w")
    assert wrapper.fixing_config == dataclasses.replace(
        config, fixing_schedule=schedule, distance=0.01)
    assert wrapper.name == "w" and wrapper.fix_biases is False
    # fit resolves an epoch-based schedule in place: the caller's (frozen) config keeps its own.
    wrapper = tfmot_wfn.WeightFixingWrapper(L.Dense(3), fixing_config=config)
    assert wrapper.fixing_schedule == config.fixing_schedule
    wrapper.fixing_schedule.resolve(7)
    assert config.fixing_schedule.steps_per_stage is None
    with pytest.raises(ValueError, match=r"distance must be in \(0.0, 1.0\), got 2"):
        tfmot_wfn.WeightFixingWrapper(L.Dense(3), fixing_config=config, distance=2)
    with pytest.raises(TypeError, match="fixing_config must be a tfmot_wfn.FixingConfig, got dict"):
        tfmot_wfn.WeightFixingWrapper(L.Dense(3), fixing_config={"distance": 0.03})
    # Settings are keyword-only: a third positional argument is refused, not taken as delta.
    with pytest.raises(TypeError, match="positional"):
        tfmot_wfn.WeightFixingWrapper(L.Dense(3), schedule, 0.03)
    # A keyword that is neither a setting nor a Layer argument is refused by Keras (Keras 3:
    # ValueError, tf_keras: TypeError).
    with pytest.raises((TypeError, ValueError), match="distanse"):
        tfmot_wfn.WeightFixingWrapper(L.Dense(3), distanse=0.03)


def test_wrapper_config_without_newer_keys_still_loads():
    wrapper = tfmot_wfn.WeightFixingWrapper(L.Dense(3, name="d"), distance=0.02)
    config = wrapper.get_config()
    assert "preserve_sparsity" not in config  # absent unless set: configs of 0.1 load
    for key in ("palette_capacity", "temperature"):  # keys an older config may lack
        older = {k: v for k, v in config.items() if k != key}
        clone = tfmot_wfn.WeightFixingWrapper.from_config(older)
        assert clone.fixing_config == wrapper.fixing_config
        assert clone.get_config() == config


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(distance=0.0), ValueError, r"^distance must be in \(0.0, 1.0\), got 0.0$"),
    (dict(distance=math.inf), ValueError, r"distance must be in \(0.0, 1.0\), got inf"),
    (dict(distance=True), TypeError, "^distance must be a number, got bool True$"),
    (dict(regularization=-0.1), ValueError, r"^regularization must be in \[0.0, inf\), got -0.1$"),
    (dict(temperature=math.nan), ValueError, r"^temperature must be in \(0.0, inf\), got nan$"),
    (dict(zero_distance=1.0), ValueError, r"^zero_distance must be in \(0.0, 1.0\), got 1.0$"),
    (dict(fix_batchnorm="yes"), TypeError, "^fix_batchnorm must be True or False, got str 'yes'$"),
    (dict(preserve_sparsity=0), TypeError, "^preserve_sparsity must be True or False"),
    (dict(palette_capacity=0), ValueError, "^palette_capacity must be a positive integer, got 0$"),
    (dict(palette_capacity=8.0), ValueError, "palette_capacity must be a positive integer"),
    (dict(fixing_schedule=[0.5, 1.0]), TypeError,
     r"fixing_schedule must be a tfmot_wfn FixingSchedule \(StagedFixing or PolynomialFixing\), "
     "got list"),
    (dict(fixing_schedule={"class_name": "Cosine", "config": {}}), ValueError,
     "Unknown fixing schedule 'Cosine'"),
])
def test_config_refuses_bad_arguments_with_what_and_how(kwargs, error, message):
    with pytest.raises(error, match=message):
        FixingConfig(**kwargs)
    # fix_weights and the wrapper refuse them with the same error.
    with pytest.raises(error, match=message):
        tfmot_wfn.WeightFixingWrapper(L.Dense(2), **kwargs)


# ----------------------------------------------------------------- helpers
def test_check_real_bounds_and_wording():
    assert check_real("x", 1, 0.0) == 1.0 and type(check_real("x", np.int32(1), 0.0)) is float
    assert check_real("x", 1.0, 0.0, 1.0, high_open=False) == 1.0
    assert check_real("x", 0.0, 0.0, low_open=False) == 0.0
    with pytest.raises(ValueError, match=r"^x must be > 0.0, got 0.0$"):
        check_real("x", 0.0, 0.0)
    with pytest.raises(ValueError, match=r"^x must be >= 1, got 0.5$"):
        check_real("x", 0.5, 1, low_open=False)
    with pytest.raises(ValueError, match=r"^x must be in \(0.0, 1.0\], got 1.5$"):
        check_real("x", 1.5, 0.0, 1.0, high_open=False)
    with pytest.raises(TypeError, match="^x must be a number, got NoneType None$"):
        check_real("x", None, 0.0)


def test_check_bool_and_positive_int():
    assert check_bool("b", np.bool_(True)) is True and check_bool("b", False) is False
    with pytest.raises(TypeError, match="^b must be True or False, got int 1$"):
        check_bool("b", 1)
    assert check_positive_int("n", np.uint8(3)) == 3
    for bad in (0, -1, True, 2.0, "3"):
        with pytest.raises(ValueError, match=f"^n must be a positive integer, got {bad!r}$"):
            check_positive_int("n", bad)


def test_count_nonfinite():
    assert count_nonfinite(np.float32([1, np.nan, np.inf, -np.inf, 0])) == 3
    assert count_nonfinite(np.zeros((3, 4), np.float16)) == 0
    assert count_nonfinite(np.array([[np.nan]], np.float64)) == 1
    assert count_nonfinite(np.arange(5)) == 0 and count_nonfinite(np.zeros(0)) == 0
    assert count_nonfinite([1.0, float("nan")]) == 1
