"""Named fixing rules map to the stage options they document, and each changes the result
the way its name says on a pool where the rules disagree."""

import numpy as np
import pytest

from tfmot_wfn.core import fixing_rules, fixing_stage
from tfmot_wfn.core.greedy_fixing import DISTANCE_CAP, MAX_MOVE


def test_rules_map_to_their_stage_options():
    def options(nearest_only, cap, max_move=None):
        return {"nearest_only": nearest_only, "distance_cap": cap, "max_move": max_move}

    assert fixing_rules.stage_options("paper") == options(False, None)
    assert fixing_rules.stage_options("nearest") == options(True, None)
    assert fixing_rules.stage_options("capped") == options(False, DISTANCE_CAP)
    assert fixing_rules.stage_options("nearest_capped") == options(True, DISTANCE_CAP)
    assert fixing_rules.stage_options("bounded") == options(False, DISTANCE_CAP, MAX_MOVE)
    assert fixing_rules.stage_options("third") == options(False, None, MAX_MOVE)
    # "late_third": nearest_capped while the schedule's fraction is <= 0.9, then as "third".
    assert fixing_rules.LATE_AFTER == 0.9
    for fraction in (None, 0.3, 0.8, 0.9):
        assert fixing_rules.stage_options("late_third", fraction) == options(True, DISTANCE_CAP)
    for fraction in (0.95, 0.999, 1.0):
        assert fixing_rules.stage_options("late_third", fraction) == options(False, None, MAX_MOVE)
    # "bounded_third": as "bounded" up to 0.9, then as "third".
    for fraction in (None, 0.3, 0.9):
        assert fixing_rules.stage_options("bounded_third", fraction) == options(False, DISTANCE_CAP,
                                                                                MAX_MOVE)
    for fraction in (0.95, 1.0):
        assert fixing_rules.stage_options("bounded_third", fraction) == options(False, None, MAX_MOVE)
    for name in ("paper", "nearest", "capped", "nearest_capped", "bounded", "third"):
        assert fixing_rules.stage_options(name, 1.0) == fixing_rules.stage_options(name, 0.3)
    # "gentle" picks its weights as "late_third" does; it differs in the stage's distance only.
    for fraction in (None, 0.3, 0.9, 0.95, 1.0):
        assert fixing_rules.stage_options("gentle", fraction) == \
            fixing_rules.stage_options("late_third", fraction)
    assert MAX_MOVE == 1 / 3
    assert fixing_rules.DEFAULT_RULE == fixing_rules.AUTO_RULE == "auto"


def test_unknown_rule_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown fixing rule 'fast'.*'capped'.*'paper'.*'auto'"):
        fixing_rules.get_rule("fast")
    with pytest.raises(ValueError, match=r"unknown fixing rule 'fast'"):
        fixing_rules.choose_rule("fast", depthwise=False)
    # "auto" has no stage options of its own: it must be chosen for a network first.
    with pytest.raises(ValueError, match=r"'auto' stands for a rule chosen per network"):
        fixing_rules.stage_options("auto")


def test_auto_chooses_by_depthwise_convolutions_and_names_pass_through():
    assert fixing_rules.choose_rule("auto", depthwise=True) == fixing_rules.DEPTHWISE_RULE == "gentle"
    assert fixing_rules.choose_rule("auto", depthwise=False) == fixing_rules.PLAIN_RULE == "bounded_third"
    for name in fixing_rules.RULES:
        assert fixing_rules.choose_rule(name, depthwise=True) == name
        assert fixing_rules.choose_rule(name, depthwise=False) == name


def test_the_stage_defaults_are_the_legacy_rule():
    # core.fixing_stage keeps tfmot_wfn 0.1's options as its defaults (the speed benchmarks
    # measure them); fix_weights passes its rule's options explicitly.
    rng = np.random.default_rng(3)
    w = rng.normal(0, 0.2, 4000).astype(np.float32)
    default = fixing_stage(w, None, 0.6, 0.05)
    named = fixing_stage(w, None, 0.6, 0.05,
                         **fixing_rules.stage_options(fixing_rules.LEGACY_DEFAULT_RULE))
    np.testing.assert_array_equal(default.values, named.values)
    np.testing.assert_array_equal(default.fixed, named.fixed)


def test_paper_rule_drags_far_weights_where_the_other_rules_do_not():
    # 300 weights just off 1.0 (BatchNorm gammas) and 10 at 0.7 (relative distance 0.43 from
    # 1.0): the mean of the non-zero distances stays below a = 0.05, so the paper's rule fixes
    # the 0.7s to 1.0; they vote for 0.5, so nearest-only does not, and 0.43 > 3a caps them.
    rng = np.random.default_rng(0)
    gammas = (1.0 + rng.uniform(-0.01, 0.01, 300)).astype(np.float32)
    w = np.concatenate([gammas, np.full(10, 0.7, np.float32)])
    dragged = {}
    for name in fixing_rules.RULES:
        result = fixing_stage(w, None, 1.0, 0.05, **fixing_rules.stage_options(name))
        dragged[name] = int(np.count_nonzero(result.values[300:] == 1.0))
    assert dragged == {"paper": 10, "nearest": 0, "capped": 0, "nearest_capped": 0, "bounded": 0,
                       "third": 0, "late_third": 0, "bounded_third": 0, "gentle": 0}


def test_only_gentle_caps_the_stage_distance_at_its_reach():
    # The paper's schedule multiplies delta by 10, 9, ..., 1; "gentle" stops at REACH (4).
    assert fixing_rules.REACH == 4.0
    for multiplier in (10.0, 9.0, 5.0, 4.0, 3.0, 1.0):
        for name in fixing_rules.RULES:
            want = 0.015 * (min(multiplier, 4.0) if name == "gentle" else multiplier)
            assert fixing_rules.stage_distance(name, 0.015, multiplier) == pytest.approx(want)


def test_third_rule_lets_stragglers_join_a_used_centre_where_the_cap_does_not():
    # 300 weights just off 1.0 and 3 stragglers at 0.85 (a move of 0.18 onto 1.0), a = 0.015:
    # with them the mean distance stays below a. They are not 1.0's own voters and 0.18 > 3a, so
    # "nearest_capped" and "capped" open a second value for them; "third" (any weight within
    # max(a, 1/3)) and the paper's rule fix them to 1.0. At 0.5 (> 1/3) "third" refuses them.
    rng = np.random.default_rng(2)
    gammas = (1.0 + rng.uniform(-0.01, 0.01, 300)).astype(np.float32)
    for straggler, third_values in ((0.85, 1), (0.5, 2)):
        w = np.concatenate([gammas, np.full(3, straggler, np.float32)])
        values = {name: fixing_stage(w, None, 1.0, 0.015, **fixing_rules.stage_options(name)).values
                  for name in ("third", "paper", "nearest_capped", "capped")}
        assert np.unique(values["third"]).size == third_values
        assert np.unique(values["paper"]).size == 1
        assert np.unique(values["nearest_capped"]).size == 2
        assert np.unique(values["capped"]).size == 2
        moved = np.abs(values["third"] - w) / np.abs(w)
        assert moved.max() <= 1 / 3 + 1e-6


def test_bounded_rule_caps_moves_at_a_third_when_the_distance_is_large():
    # a = 0.3: "capped" lets a weight move up to 3a = 0.9 of its value; "bounded" up to 1/3
    # (never below a). 0.6 -> 1.0 is a move of 0.67; 0.8 -> 1.0 one of 0.25.
    rng = np.random.default_rng(1)
    gammas = (1.0 + rng.uniform(-0.01, 0.01, 300)).astype(np.float32)
    w = np.concatenate([gammas, np.full(10, 0.6, np.float32), np.full(10, 0.8, np.float32)])
    moved = {}
    for name in ("capped", "bounded"):
        result = fixing_stage(w, None, 1.0, 0.3, **fixing_rules.stage_options(name))
        v = result.values
        moved[name] = (int(np.count_nonzero(v[300:310] == 1.0)), int(np.count_nonzero(v[310:] == 1.0)))
        rel = np.abs(v - w) / np.abs(w)
        fixed_nonzero = result.fixed & (v != 0)
        bound = 3 * 0.3 if name == "capped" else max(0.3, 1 / 3)
        assert np.all(rel[fixed_nonzero] <= bound + 1e-6)
    assert moved == {"capped": (10, 10), "bounded": (0, 10)}
    # Below a the bound is a: max_move smaller than a does not stop the step.
    tiny = fixing_stage(w, None, 0.5, 0.3, nearest_only=False, distance_cap=3.0, max_move=0.01)
    assert tiny.fixed.sum() == int(w.size * 0.5)
    with pytest.raises(ValueError, match="max_move"):
        fixing_stage(w, None, 0.5, 0.3, max_move=0.0)


def test_bounded_third_lets_early_stages_join_a_popular_centre_where_late_third_does_not():
    # 300 weights near 1.0 and 10 at 0.82, with 0.8 and 1.0 offered (a palette), a = 0.1: the
    # 0.82s vote for 0.8. In an early stage (fraction 0.5) "late_third" is "nearest_capped" and
    # gives them 0.8; "bounded_third" is "bounded" (a move of 0.22 <= min(3a, 1/3)) and fixes them
    # to 1.0, as the paper's rule does. Past LATE_AFTER both are "third". At 0.7 (a move of 0.43)
    # no rule but the paper's moves them.
    rng = np.random.default_rng(2)
    gammas = (1.0 + rng.uniform(-0.01, 0.01, 300)).astype(np.float32)
    palette = np.array([0.8, 1.0], np.float32)

    def stragglers(value, rule, fraction):
        w = np.concatenate([gammas, np.full(10, value, np.float32)])
        result = fixing_stage(w, None, 1.0, 0.1, palette=palette,
                              **fixing_rules.stage_options(rule, fraction))
        return np.unique(result.values[300:]).tolist()

    assert stragglers(0.82, "late_third", 0.5) == [np.float32(0.8)]
    assert stragglers(0.82, "bounded_third", 0.5) == [1.0]
    assert stragglers(0.82, "paper", 0.5) == [1.0]
    for rule in ("late_third", "bounded_third"):
        assert stragglers(0.82, rule, 0.95) == [1.0]
        assert stragglers(0.7, rule, 0.5) == stragglers(0.7, rule, 0.95) == [0.75]
    assert stragglers(0.7, "paper", 0.5) == [1.0]


# ------------------------------------------------------------------ fix_weights(rule=...)
def _dragging_dense(rule):
    """A Dense whose kernel holds the gamma-dragging pool above, wrapped with `rule`."""
    import tfmot_wfn
    from tfmot_wfn.keras.compat import keras

    rng = np.random.default_rng(0)
    kernel = np.concatenate([(1.0 + rng.uniform(-0.01, 0.01, 300)), np.full(10, 0.7)])
    model = keras.Sequential([keras.Input((310,)), keras.layers.Dense(1, use_bias=False)])
    model.layers[0].set_weights([kernel.astype(np.float32).reshape(310, 1)])
    return tfmot_wfn.fix_weights(model, distance=0.05, rule=rule)


@pytest.mark.parametrize("rule, dragged", [("paper", 10), ("nearest", 0), ("capped", 0),
                                           ("nearest_capped", 0), ("bounded", 0),
                                           ("third", 0), ("late_third", 0),
                                           ("bounded_third", 0), ("gentle", 0)])
def test_fix_weights_applies_its_rule_in_the_network_stage(rule, dragged):
    import tfmot_wfn
    from tfmot_wfn.keras.network import FixingNetwork

    fixed = _dragging_dense(rule)
    tfmot_wfn.run_fixing_stage(fixed, 1.0, 0.05)
    values, _ = FixingNetwork.of(fixed).flat_weights()
    assert int(np.count_nonzero(values[300:] == 1.0)) == dragged
    assert tfmot_wfn.report(fixed).rule == rule
    assert f"fixing rule: {rule}" in str(tfmot_wfn.report(fixed))


@pytest.mark.parametrize("rule, values", [("late_third", 1), ("nearest_capped", 2)])
def test_late_third_gets_the_schedule_fraction_from_the_network_stage(rule, values):
    # The straggler pool (300 weights near 1.0, 3 at 0.85) in a Dense, a stage at 0.995 (past
    # LATE_AFTER): "late_third" fixes the stragglers to 1.0, as "third" does; "nearest_capped",
    # which it would be without the fraction, gives them a value of their own.
    import tfmot_wfn
    from tfmot_wfn.keras.compat import keras
    from tfmot_wfn.keras.network import FixingNetwork

    rng = np.random.default_rng(2)
    w = np.concatenate([(1.0 + rng.uniform(-0.01, 0.01, 300)), np.full(3, 0.85)]).astype(np.float32)
    model = keras.Sequential([keras.Input((w.size,)), keras.layers.Dense(1, use_bias=False)])
    model.layers[0].set_weights([w.reshape(-1, 1)])
    fixed = tfmot_wfn.fix_weights(model, distance=0.015, rule=rule)
    tfmot_wfn.run_fixing_stage(fixed, 0.995, 0.015)
    got, mask = FixingNetwork.of(fixed).flat_weights()
    assert mask.sum() == 301
    assert np.unique(got[mask]).size == values
    expected = fixing_stage(w, None, 0.995, 0.015, **fixing_rules.stage_options(rule, 0.995))
    np.testing.assert_array_equal(got, expected.values)


def test_the_rule_round_trips_through_the_config_and_old_configs_load():
    from tfmot_wfn.keras.fixing_wrapper import WeightFixingWrapper

    paper = _dragging_dense("paper").layers[0]
    config = paper.get_config()
    assert config["rule"] == "paper"
    assert WeightFixingWrapper.from_config(config).fixing_config.rule == "paper"
    default = _dragging_dense(fixing_rules.DEFAULT_RULE).layers[0].get_config()
    assert default["rule"] == fixing_rules.PLAIN_RULE == "bounded_third"  # "auto", no depthwise
    assert WeightFixingWrapper.from_config(default).fixing_config.rule == "bounded_third"
    # A config saved under the previous default names it, and keeps it.
    default["rule"] = "late_third"
    assert WeightFixingWrapper.from_config(default).fixing_config.rule == "late_third"
    # tfmot_wfn 0.1 wrote no rule for its default: such a config resumes with that rule.
    del default["rule"]
    assert WeightFixingWrapper.from_config(default).fixing_config.rule == "nearest_capped"
    assert fixing_rules.LEGACY_DEFAULT_RULE == "nearest_capped"


def _rules_of(fixed):
    from tfmot_wfn.keras.network import wrappers_of

    return {w.fixing_config.rule for w in wrappers_of(fixed)}


def test_fix_weights_auto_picks_one_rule_for_the_whole_network():
    import tfmot_wfn
    from tfmot_wfn.keras.compat import keras

    inputs = keras.Input((8, 8, 3))
    block = keras.Sequential([keras.Input((6, 6, 4)), keras.layers.DepthwiseConv2D(3)], name="block")
    h = keras.layers.Conv2D(4, 3)(inputs)
    h = keras.layers.BatchNormalization()(h)
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(block(h)))
    mobile = keras.Model(inputs, outputs)  # the depthwise layer sits in a nested model
    plain = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
                              keras.layers.Flatten(), keras.layers.Dense(2)])
    fixed = tfmot_wfn.fix_weights(mobile)
    assert _rules_of(fixed) == {"gentle"}
    assert tfmot_wfn.report(fixed).rule == "gentle"
    assert _rules_of(tfmot_wfn.fix_weights(plain)) == {"bounded_third"}
    assert _rules_of(tfmot_wfn.fix_weights(mobile, rule="paper")) == {"paper"}  # a name is kept
    # A list is one network; a wrapper on its own chooses by its layer; configs save the choice.
    wrappers = tfmot_wfn.fix_weights([keras.layers.Dense(2), keras.layers.SeparableConv2D(2, 3)])
    assert {w.fixing_config.rule for w in wrappers} == {"gentle"}
    assert tfmot_wfn.WeightFixingWrapper(keras.layers.DepthwiseConv2D(3)).get_config()["rule"] == "gentle"
    assert tfmot_wfn.WeightFixingWrapper(keras.layers.Dense(3)).fixing_config.rule == "bounded_third"


def test_a_bad_rule_is_refused_before_anything_is_built():
    import tfmot_wfn
    from tfmot_wfn.keras.compat import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"unknown fixing rule 'greedy'.*'nearest_capped'"):
        tfmot_wfn.fix_weights(model, rule="greedy")
    with pytest.raises(TypeError, match="rule must be a rule name"):
        tfmot_wfn.fix_weights(model, rule=3)


def test_the_plain_model_report_has_no_rule_and_summaries_record_it(tmp_path):
    import tfmot_wfn
    from tfmot_wfn.keras import summaries
    from tfmot_wfn.keras.compat import tf

    fixed = _dragging_dense("capped")
    assert tfmot_wfn.report(tfmot_wfn.strip_fixing(fixed)).rule is None
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        assert summaries.write_fixing_rule(fixed, step=0)
    writer.close()
    texts = [tf.make_ndarray(v.tensor).item().decode()
             for path in tmp_path.iterdir()
             for event in tf.compat.v1.train.summary_iterator(str(path))
             for v in event.summary.value if v.tag == summaries.RULE_TAG]
    assert texts == ["rule capped, distance 0.05"]


@pytest.mark.parametrize("rule, reach", [("gentle", 4.0), ("late_third", None)])
def test_the_callback_runs_each_stage_at_the_rules_distance(rule, reach):
    # Ten one-step stages of the paper's schedule on a small Dense: the stage summaries record
    # delta x 10, 9, ..., 1, and under "gentle" at most delta x 4.
    import tfmot_wfn
    from tfmot_wfn.keras.compat import keras

    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(32, 8)).astype(np.float32), rng.integers(0, 3, 32)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(3)])
    fixed = tfmot_wfn.fix_weights(model, tfmot_wfn.StagedFixing(steps_per_stage=1),
                                  distance=0.015, rule=rule)
    fixed.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    update = tfmot_wfn.UpdateFixingStep(verbose=0)
    fixed.fit(x, y, batch_size=32, epochs=10, verbose=0, callbacks=[update])
    multipliers = [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]
    want = [0.015 * (m if reach is None else min(m, reach)) for m in multipliers]
    assert [s.distance for s in update.history] == pytest.approx(want)
    assert update.history[-1].fixed == update.history[-1].total
