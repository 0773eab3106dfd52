"""palette, unique_weights, weight_entropy, fixed_fraction and report on hand-set weights."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tfmot_wfn.keras.compat import keras
import keras_helpers as kh
import tfmot_wfn
from tfmot_wfn.keras.network import wrappers_of

pytestmark = pytest.mark.legacy  # also run under tf_keras: see pytest.ini

L = keras.layers

KERNEL = np.float32([[0.5, 0.5, 0.25], [0.0, -0.5, 0.75]])
BIAS = np.float32([0.0, -0.0, 1.0])  # -0.0 is the same value as 0.0
# Values: 0 x3, 0.5 x2, 0.25, -0.5, 0.75, 1.
COUNTS_WITH_ZERO = [3, 2, 1, 1, 1, 1]
COUNTS_WITHOUT_ZERO = [2, 1, 1, 1, 1]


def entropy(counts):
    total = sum(counts)
    return -sum(c / total * math.log2(c / total) for c in counts)


def known_model():
    model = keras.Sequential([keras.Input((2,)), L.Dense(3, name="known")], name="known_model")
    model.layers[0].set_weights([KERNEL, BIAS])
    return model


def test_plain_model_metrics():
    model = known_model()
    np.testing.assert_array_equal(tfmot_wfn.palette(model), np.float32([-0.5, 0, 0.25, 0.5, 0.75, 1]))
    assert tfmot_wfn.unique_weights(model) == 6
    assert tfmot_wfn.unique_weights(model, include_zero=True) == 6
    assert tfmot_wfn.unique_weights(model, include_zero=False) == 5
    assert tfmot_wfn.weight_entropy(model) == pytest.approx(entropy(COUNTS_WITH_ZERO), abs=1e-12)
    assert tfmot_wfn.weight_entropy(model, include_zero=False) == pytest.approx(
        entropy(COUNTS_WITHOUT_ZERO), abs=1e-12)
    assert tfmot_wfn.weight_entropy(model) == pytest.approx(2.4194, abs=1e-4)
    with pytest.raises(ValueError, match="needs a model made by tfmot_wfn.fix_weights"):
        tfmot_wfn.fixed_fraction(model)


def test_plain_model_report_numbers_and_text():
    rep = tfmot_wfn.report(known_model())
    assert isinstance(rep, tfmot_wfn.FixingReport)
    assert rep.total_weights == 9
    assert rep.fixed_fraction == 1.0
    assert rep.unique_values == 6 and rep.unique_values_nonzero == 5
    assert rep.entropy_bits == pytest.approx(entropy(COUNTS_WITH_ZERO), abs=1e-12)
    assert rep.entropy_bits_nonzero == pytest.approx(entropy(COUNTS_WITHOUT_ZERO), abs=1e-12)
    assert rep.zero_fraction == pytest.approx(3 / 9)
    assert [(p["value"], p["count"], p["powers_of_two"], p["terms"]) for p in rep.palette] == [
        (-0.5, 1, "-2^-1", 1),
        (0.0, 3, "0", 0),
        (0.25, 1, "2^-2", 1),
        (0.5, 2, "2^-1", 1),
        (0.75, 1, "2^0 - 2^-2", 2),
        (1.0, 1, "2^0", 1),
    ]
    assert rep.layers == [{"layer": "known", "weights": 9, "fixed_fraction": 1.0, "unique_values": 6}]

    text = str(rep)
    assert "weights: 9" in text
    assert "unique values: 6 (with 0), 5 (without 0)" in text
    assert f"entropy: {entropy(COUNTS_WITH_ZERO):.3f} bits (with 0)" in text
    assert f"{entropy(COUNTS_WITHOUT_ZERO):.3f} bits (without 0)" in text
    assert "palette (6 values" in text
    lines = text.splitlines()
    for value, count, powers in [("+0.75", 1, "2^0 - 2^-2"), ("-0.5", 1, "-2^-1"),
                                 ("+0.5", 2, "2^-1"), ("+0", 3, "0")]:
        assert any(line.split()[:2] == [value, str(count)] and line.rstrip().endswith(powers)
                   for line in lines), (value, text)
    assert any(line.split()[:2] == ["known", "9"] for line in lines)


def test_report_to_dict_and_json(tmp_path):
    rep = tfmot_wfn.report(known_model())
    path = tmp_path / "report.json"
    rep.to_json(str(path))
    data = json.loads(path.read_text())
    assert data == json.loads(json.dumps(rep.to_dict()))
    assert data["unique_values"] == 6 and data["total_weights"] == 9
    assert [p["value"] for p in data["palette"]] == [-0.5, 0.0, 0.25, 0.5, 0.75, 1.0]


def _partly_fixed_model():
    """Effective weights = KERNEL/BIAS, but only 4 of the 9 entries fixed."""
    fixed = tfmot_wfn.fix_weights(known_model())
    wrapper = wrappers_of(fixed)[0]
    kernel, bias = wrapper.fixable_variables
    kernel.assign(np.float32([[0.3, 0.5, 0.25], [0.1, -0.2, 0.75]]))
    bias.assign(np.float32([0.0, 0.0, 0.9]))
    wrapper.masks[0].assign(np.array([[True, False, False], [True, True, False]]))
    wrapper.masks[1].assign(np.array([False, False, True]))
    wrapper.fixed_values[0].assign(np.float32([[0.5, 9, 9], [0.0, -0.5, 9]]))
    wrapper.fixed_values[1].assign(np.float32([9, 9, 1.0]))
    return fixed


def test_wrapped_model_metrics_use_effective_weights_and_masks():
    fixed = _partly_fixed_model()
    np.testing.assert_array_equal(wrappers_of(fixed)[0].effective_numpy()[0], KERNEL)
    # palette: the distinct values of the FIXED entries only.
    np.testing.assert_array_equal(tfmot_wfn.palette(fixed), np.float32([-0.5, 0.0, 0.5, 1.0]))
    assert tfmot_wfn.fixed_fraction(fixed) == pytest.approx(4 / 9)
    assert tfmot_wfn.fixed_fraction(wrappers_of(fixed)[0]) == pytest.approx(4 / 9)
    # unique values / entropy: over ALL effective weights, free ones included.
    assert tfmot_wfn.unique_weights(fixed) == 6
    assert tfmot_wfn.unique_weights(fixed, include_zero=False) == 5
    assert tfmot_wfn.weight_entropy(fixed) == pytest.approx(entropy(COUNTS_WITH_ZERO), abs=1e-12)
    assert tfmot_wfn.weight_entropy(fixed, include_zero=False) == pytest.approx(
        entropy(COUNTS_WITHOUT_ZERO), abs=1e-12)
    rep = tfmot_wfn.report(fixed)
    assert rep.total_weights == 9
    assert rep.fixed_fraction == pytest.approx(4 / 9)
    assert [(p["value"], p["count"]) for p in rep.palette] == [(-0.5, 1), (0.0, 1), (0.5, 1), (1.0, 1)]
    assert rep.layers == [{"layer": "known", "weights": 9, "fixed_fraction": pytest.approx(4 / 9),
                           "unique_values": 6}]
    assert "fixed: 44.44%" in str(rep)


def test_normalization_scale_shift_count_but_moving_statistics_do_not():
    model = keras.Sequential([keras.Input((3,)), L.Dense(4), L.BatchNormalization()])
    rep = tfmot_wfn.report(model)
    assert rep.total_weights == 3 * 4 + 4 + 4 + 4  # kernel, bias, gamma, beta
    fixed = tfmot_wfn.fix_weights(model)
    assert tfmot_wfn.report(fixed).total_weights == rep.total_weights
    assert tfmot_wfn.fixed_fraction(fixed) == 0.0


def test_metrics_refuse_a_model_without_fixable_weights():
    model = keras.Sequential([keras.Input((3,)), L.ReLU()])
    for fn in (tfmot_wfn.palette, tfmot_wfn.unique_weights, tfmot_wfn.weight_entropy,
               tfmot_wfn.report):
        with pytest.raises(ValueError, match="no fixable weights"):
            fn(model)


def test_metrics_agree_between_fixed_and_stripped_models(fixed_cnn, stripped_cnn):
    fixed = fixed_cnn.model
    values = kh.flat_values(fixed)
    palette = kh.wrapper_palette(wrappers_of(fixed)[0])
    np.testing.assert_array_equal(tfmot_wfn.palette(fixed), palette)
    np.testing.assert_array_equal(tfmot_wfn.palette(stripped_cnn), palette)
    assert tfmot_wfn.unique_weights(fixed) == tfmot_wfn.unique_weights(stripped_cnn) == palette.size
    assert tfmot_wfn.unique_weights(fixed, include_zero=False) == int((palette != 0).sum())
    _, counts = np.unique(values + 0.0, return_counts=True)
    assert tfmot_wfn.weight_entropy(fixed) == pytest.approx(entropy(counts.tolist()), abs=1e-9)
    assert tfmot_wfn.weight_entropy(stripped_cnn) == pytest.approx(entropy(counts.tolist()), abs=1e-9)
    nonzero = values[values != 0]
    _, counts_nz = np.unique(nonzero, return_counts=True)
    assert tfmot_wfn.weight_entropy(fixed, include_zero=False) == pytest.approx(
        entropy(counts_nz.tolist()), abs=1e-9)
    rep_fixed, rep_stripped = tfmot_wfn.report(fixed), tfmot_wfn.report(stripped_cnn)
    # Every number agrees; only the wrapped model knows the rule (and int8_exact) it was fixed with.
    assert (rep_fixed.rule, rep_stripped.rule) == ("bounded_third", None)
    assert rep_fixed.to_dict() == {**rep_stripped.to_dict(), "rule": "bounded_third",
                                   "int8_exact": False}
    assert rep_fixed.total_weights == values.size
    assert sum(p["count"] for p in rep_fixed.palette) == values.size
    assert [layer["layer"] for layer in rep_fixed.layers] == [
        w.layer.name for w in wrappers_of(fixed)]
    for entry in rep_fixed.palette:
        digits = tfmot_wfn.core.signed_digits(entry["value"])
        assert entry["terms"] == len(digits)
        assert math.fsum(s * 2.0**e for s, e in digits) == entry["value"]
