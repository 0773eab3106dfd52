"""Named fixing rules map to the stage options they document, and each changes the result
the way its name says on a pool where the rules disagree."""

import numpy as np
import pytest

from tfmot_wfn.core import fixing_rules, fixing_stage
from tfmot_wfn.core.greedy_fixing import DISTANCE_CAP


def test_rules_map_to_their_stage_options():
    assert fixing_rules.stage_options("paper") == {"nearest_only": False, "distance_cap": None}
    assert fixing_rules.stage_options("nearest") == {"nearest_only": True, "distance_cap": None}
    assert fixing_rules.stage_options("capped") == {"nearest_only": False,
                                                    "distance_cap": DISTANCE_CAP}
    assert fixing_rules.stage_options("nearest_capped") == {"nearest_only": True,
                                                            "distance_cap": DISTANCE_CAP}
    assert fixing_rules.DEFAULT_RULE in fixing_rules.RULES


def test_unknown_rule_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown fixing rule 'fast'.*'capped'.*'paper'"):
        fixing_rules.get_rule("fast")


def test_the_default_rule_is_the_stage_default():
    rng = np.random.default_rng(3)
    w = rng.normal(0, 0.2, 4000).astype(np.float32)
    default = fixing_stage(w, None, 0.6, 0.05)
    named = fixing_stage(w, None, 0.6, 0.05, **fixing_rules.stage_options(fixing_rules.DEFAULT_RULE))
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
    assert dragged == {"paper": 10, "nearest": 0, "capped": 0, "nearest_capped": 0}
