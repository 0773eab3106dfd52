"""tfmot_wfn.hardware_cost: operation counts, bits and energy of float32 / int8 / shift-add forms.

Small models with hand-set weights (zeros, one-term and multi-term powers of two) are
counted by hand and by a slow reference that loops over every output position and
every weight, one operation at a time.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

import tfmot_wfn
from tfmot_wfn.core.energy_table import EnergyTable
from tfmot_wfn.core.hardware_cost import LayerWork, WeightGroup, estimate
from tfmot_wfn.core.powers_of_two import signed_digits
from tfmot_wfn.core.weight_terms import term_counts
from tfmot_wfn.keras.compat import keras

L = keras.layers
#: palette values and their signed power-of-two terms
PALETTE = {0.0: 0, 0.5: 1, -0.25: 1, 0.75: 2, -0.625: 2, 0.875: 2, 0.6875: 3}


def _palette_weights(shape, seed):
    rng = np.random.default_rng(seed)
    return rng.choice(np.array(sorted(PALETTE), np.float32), size=shape)


def _set_palette_weights(model, seed=0):
    for i, v in enumerate(model.weights):
        v.assign(_palette_weights(tuple(v.shape), seed + i))
    return model


# ----------------------------------------------------------------------------- slow reference
class Reference:
    """Counts and energies accumulated one operation at a time."""

    def __init__(self, table=EnergyTable(), activation_bits=16, memory="dram"):
        self.t, self.bits, self.memory = table, activation_bits, memory
        self.macs = self.skipped = self.shifts = self.adds = 0
        self.energy = {"float32": 0.0, "int8": 0.0, "shift_add": 0.0}
        self.stored = []  # (values, is_bias)

    def mac(self, w):
        t = self.t
        self.macs += 1
        self.energy["float32"] += t.fp32_mul_pj + t.fp32_add_pj
        self.energy["int8"] += t.int8_mul_pj + t.int32_add_pj
        if w == 0:
            self.skipped += 1
            return
        k = len(signed_digits(float(w)))
        self.shifts += k
        self.adds += k  # k - 1 adds of the terms, then the accumulate
        self.energy["shift_add"] += (k * t.add_pj(self.bits) + (k - 1) * t.add_pj(self.bits)
                                     + t.int32_add_pj)

    def bias(self, b):
        self.energy["float32"] += self.t.fp32_add_pj
        self.energy["int8"] += self.t.int32_add_pj
        if b != 0:
            self.adds += 1
            self.energy["shift_add"] += self.t.int32_add_pj

    def float_mac(self):
        for form in self.energy:
            self.energy[form] += self.t.fp32_mul_pj + self.t.fp32_add_pj

    def store(self, values, is_bias=False):
        self.stored.append((np.asarray(values), is_bias))

    def totals(self):
        values = np.concatenate([v.ravel() for v, _ in self.stored])
        k = np.unique(values).size
        index_bits = math.ceil(math.log2(k))
        per32 = self.t.dram_read_32bit_pj if self.memory == "dram" else self.t.sram_read_32bit_pj
        n = values.size
        n_bias = sum(v.size for v, b in self.stored if b)
        read = {"float32": 32 * n, "int8": 8 * (n - n_bias) + 32 * n_bias, "shift_add": index_bits * n}
        return {form: self.energy[form] + read[form] * per32 / 32 for form in self.energy}


def ref_conv2d(ref, kernel, bias, out_hw):
    for _ in range(out_hw[0]):
        for _ in range(out_hw[1]):
            for w in kernel.ravel():
                ref.mac(w)
            for b in bias:
                ref.bias(b)
    ref.store(kernel), ref.store(bias, True)


def ref_depthwise(ref, kernel, bias, out_hw):
    kh, kw, channels, mult = kernel.shape
    for _ in range(out_hw[0]):
        for _ in range(out_hw[1]):
            for c in range(channels):
                for m in range(mult):
                    for i in range(kh):
                        for j in range(kw):
                            ref.mac(kernel[i, j, c, m])
                    ref.bias(bias[c * mult + m])
    ref.store(kernel), ref.store(bias, True)


def ref_dense(ref, kernel, bias, rows):
    for _ in range(rows):
        for o in range(kernel.shape[1]):
            for i in range(kernel.shape[0]):
                ref.mac(kernel[i, o])
            ref.bias(bias[o])
    ref.store(kernel), ref.store(bias, True)


def _output_hw(model, layer):
    return tuple(keras.Model(model.inputs, layer.output).output.shape[1:3])


# ------------------------------------------------------------------------------ energy table
def test_energy_table_defaults_and_width_rule():
    t = EnergyTable()
    assert (t.fp32_mul_pj, t.fp32_add_pj, t.int8_mul_pj, t.int8_add_pj, t.int32_add_pj,
            t.sram_read_32bit_pj, t.dram_read_32bit_pj) == (3.7, 0.9, 0.2, 0.03, 0.1, 5.0, 640.0)
    assert t.add_pj(8) == 0.03 and t.add_pj(32) == 0.1
    assert t.add_pj(16) == pytest.approx(0.03 + 0.07 / 3)
    assert t.add_pj(4) == pytest.approx(0.015) and t.add_pj(64) == pytest.approx(0.2)
    assert t.shift_pj(16) == t.add_pj(16)
    assert EnergyTable(shift_32bit_pj=0.05).shift_pj(32) == pytest.approx(0.05)
    assert EnergyTable(shift_32bit_pj=0.05).shift_pj(16) == pytest.approx(0.05 * t.add_pj(16) / 0.1)
    assert t.int_mul_pj(16) == pytest.approx(0.8)
    assert t.description == "M. Horowitz, ISSCC 2014, 45 nm"
    assert EnergyTable(dram_read_32bit_pj=100.0).description == "custom energy table"
    assert EnergyTable(source="my 7 nm SoC").to_dict()["description"] == "my 7 nm SoC"
    assert t.read_pj(8, "dram") == 160.0 and t.read_pj(64, "sram") == 10.0
    with pytest.raises(ValueError, match="fp32_mul_pj"):
        EnergyTable(fp32_mul_pj=-1.0)
    with pytest.raises(ValueError, match="'dram' or 'sram'"):
        t.read_pj(32, "hbm")
    with pytest.raises(ValueError, match="positive number of bits"):
        t.add_pj(0)


def test_term_counts_match_the_signed_digits_the_report_prints():
    values = np.array(list(PALETTE), np.float32)
    assert term_counts(values).tolist() == list(PALETTE.values())
    assert term_counts(np.float32([0.1]))[0] > 6  # not a sum of a few powers of two
    rng = np.random.default_rng(0)
    many = np.concatenate([rng.normal(size=2000), rng.normal(size=500).astype(np.float32),
                           [2.0**-40, 3.0, -7.0, 1e300, 5e-324]])
    assert term_counts(many).tolist() == [len(signed_digits(float(v))) for v in many]
    with pytest.raises(ValueError, match="finite"):
        term_counts(np.array([np.nan]))


# -------------------------------------------------------------------------- hand-counted models
def test_dense_hand_counted():
    model = keras.Sequential([keras.Input((4,)), L.Dense(2)])
    kernel = np.array([[0.5, 0.0], [0.75, -0.25], [0.0, -0.625], [0.6875, 0.5]], np.float32)
    bias = np.array([0.0, 0.5], np.float32)
    model.layers[0].set_weights([kernel, bias])
    cost = tfmot_wfn.hardware_cost(model)
    row = cost.layers[0]
    assert row["macs"] == 8 and row["skipped_macs"] == 2 and row["skipped_share"] == 0.25
    assert row["shifts"] == 1 + 2 + 1 + 2 + 3 + 1  # terms of the 6 non-zero weights
    assert row["adds"] == (10 - 6) + 6 + 1  # term adds + accumulates + the non-zero bias
    assert cost.shift_add_applies and cost.terms_histogram == {"1": 3, "2": 2, "3": 1}
    t = EnergyTable()
    k = np.unique(np.concatenate([kernel.ravel(), bias])).size  # 0, 0.5, 0.75, -0.25, -0.625, 0.6875
    assert cost.palette_size == k == 6 and cost.bits_per_weight["palette"] == 3
    assert cost.energy_pj["float32"] == pytest.approx(8 * 4.6 + 2 * 0.9 + 10 * 640)
    assert cost.energy_pj["int8"] == pytest.approx(8 * 0.3 + 2 * 0.1 + (8 * 8 + 2 * 32) * 20)
    assert cost.energy_pj["shift_add"] == pytest.approx(
        10 * t.add_pj(16) + 4 * t.add_pj(16) + (6 + 1) * 0.1 + 10 * 3 * 20)
    h = cost.bits_per_weight["entropy_coded"]
    assert cost.weight_bits_moved == {"float32": 320, "int8": 128, "palette": 30,
                                      "entropy_coded": pytest.approx(10 * h)}
    assert cost.storage_bytes["float32"] == 40 and cost.storage_bytes["int8"] == 16


def test_one_conv_matches_the_hand_count_and_the_slow_reference():
    inp = keras.Input((5, 6, 2))
    conv = L.Conv2D(3, 3, strides=(1, 2), padding="same")
    model = _set_palette_weights(keras.Model(inp, conv(inp)), seed=1)
    cost = tfmot_wfn.hardware_cost(model, memory="sram", activation_bits=8)
    assert cost.totals["macs"] == 5 * 3 * (3 * 3 * 2 * 3)  # output 5x3 positions
    ref = Reference(activation_bits=8, memory="sram")
    kernel, bias = (v.numpy() for v in conv.weights)
    ref_conv2d(ref, kernel, bias, _output_hw(model, conv))
    _assert_matches(cost, ref)


def test_depthwise_conv_matches_the_slow_reference():
    inp = keras.Input((6, 6, 3))
    dw = L.DepthwiseConv2D(3, depth_multiplier=2)
    model = _set_palette_weights(keras.Model(inp, dw(inp)), seed=2)
    cost = tfmot_wfn.hardware_cost(model)
    assert cost.totals["macs"] == 4 * 4 * 3 * 3 * 3 * 2
    ref = Reference()
    kernel, bias = (v.numpy() for v in dw.weights)
    ref_depthwise(ref, kernel, bias, _output_hw(model, dw))
    _assert_matches(cost, ref)


def _assert_matches(cost, ref):
    assert cost.totals["macs"] == ref.macs and cost.totals["skipped_macs"] == ref.skipped
    assert cost.totals["shifts"] == ref.shifts and cost.totals["adds"] == ref.adds
    for form, value in ref.totals().items():
        assert cost.energy_pj[form] == pytest.approx(value, rel=1e-9), form


def test_attention_block_matches_the_slow_reference():
    tokens, dim, heads, key_dim = 5, 8, 2, 4
    inp = keras.Input((tokens, dim))
    mha = L.MultiHeadAttention(heads, key_dim)
    out = L.Dense(3)(mha(inp, inp))
    model = _set_palette_weights(keras.Model(inp, out), seed=3)
    cost = tfmot_wfn.hardware_cost(model)
    names = [r["layer"] for r in cost.layers]
    assert names == [mha.name, model.layers[-1].name]
    projections = 3 * tokens * dim * heads * key_dim + tokens * heads * key_dim * dim
    assert cost.layers[0]["macs"] == projections
    assert cost.layers[0]["float_macs"] == tokens * tokens * heads * (key_dim + key_dim)
    ref = Reference()
    for part in ("_query_dense", "_key_dense", "_value_dense", "_output_dense"):
        sub = getattr(mha, part)
        kernel, bias = (v.numpy() for v in sub.weights)
        for _ in range(tokens):  # each projection runs once per token (query = value = inp)
            for w in kernel.ravel():
                ref.mac(w)
            for b in bias.ravel():
                ref.bias(b)
        ref.store(kernel), ref.store(bias, True)
    for _ in range(tokens * tokens * heads * 2 * key_dim):
        ref.float_mac()
    dense = model.layers[-1]
    ref_dense(ref, dense.kernel.numpy(), dense.bias.numpy(), tokens)
    _assert_matches(cost, ref)


def test_separable_transpose_embedding_and_einsum_counts():
    inp = keras.Input((6, 6, 2))
    h = L.SeparableConv2D(4, 3)(inp)                       # 4x4 out
    h = L.Conv2DTranspose(3, 2, strides=2)(h)              # 8x8 out from 4x4x4 in
    model = keras.Model(inp, h)
    cost = tfmot_wfn.hardware_cost(model)
    sep, tr = cost.layers
    assert sep["macs"] == 16 * (3 * 3 * 2) + 16 * (2 * 4)
    assert tr["macs"] == 16 * (2 * 2 * 3 * 4)
    tok = keras.Input((7,), dtype="int32")
    e = L.Embedding(100, 6)(tok)
    y = L.EinsumDense("abc,cd->abd", output_shape=(None, 5), bias_axes="d")(e)
    cost = tfmot_wfn.hardware_cost(keras.Model(tok, y))
    emb, ein = cost.layers
    assert emb["macs"] == 0 and emb["lookups"] == 7 and cost.totals["lookups"] == 7
    assert ein["macs"] == 7 * 6 * 5
    # an embedding reads only the rows it looks up: 7 x 6 values, not the 600 stored
    assert cost.weight_bits_moved["float32"] == 32 * (7 * 6 + 6 * 5 + 5)
    assert cost.storage_bytes["float32"] == 4 * (600 + 30 + 5)


def test_a_shared_layer_is_counted_per_call_and_read_once():
    inp = keras.Input((4,))
    dense = L.Dense(4, use_bias=False)
    model = _set_palette_weights(keras.Model(inp, dense(dense(inp))))
    cost = tfmot_wfn.hardware_cost(model)
    assert len(cost.layers) == 1 and cost.totals["macs"] == 2 * 16
    assert cost.weight_bits_moved["float32"] == 32 * 16


def test_not_counted_layers_are_listed_with_the_reason():
    inp = keras.Input((6, 6, 1))
    h = L.Conv2D(2, 3)(inp)
    h = L.BatchNormalization()(h)
    h = L.ReLU()(h)
    h = L.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, h)
    cost = tfmot_wfn.hardware_cost(model)
    assert not any("call" in vars(layer) for layer in model.layers)  # the recording is undone
    reasons = {e["class"]: e["reason"] for e in cost.not_counted}
    assert set(reasons) == {"BatchNormalization", "ReLU", "GlobalAveragePooling2D"}
    assert "folds into the preceding convolution" in reasons["BatchNormalization"]
    assert reasons["ReLU"].startswith("no weights")
    text = str(cost)
    assert "not counted:" in text and "estimate from operation counts" in text


# ------------------------------------------------------------------- fixed, wrapped, float models
def _small_cnn(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1))
    h = L.Conv2D(4, 3, padding="same")(inp)
    h = L.ReLU()(h)
    h = L.DepthwiseConv2D(3)(h)
    h = L.Flatten()(h)
    return keras.Model(inp, L.Dense(3)(h))


@pytest.mark.legacy  # also under tf_keras (a plain model's weights are read there too)
def test_wrapped_stripped_and_float_models():
    base = _small_cnn()
    float_cost = tfmot_wfn.hardware_cost(base)
    assert not float_cost.shift_add_applies and float_cost.energy_pj["shift_add"] is None
    assert "not sums of at most 6 signed powers of two" in float_cost.shift_add_note
    assert "shift-add n/a" in str(float_cost)
    fixed = tfmot_wfn.fix_weights(base)
    tfmot_wfn.run_fixing_stage(fixed, 0.5, 0.05)
    half = tfmot_wfn.hardware_cost(fixed)
    assert not half.shift_add_applies  # the free half is still float
    tfmot_wfn.run_fixing_stage(fixed, 1.0, 0.05)
    wrapped = tfmot_wfn.hardware_cost(fixed)
    stripped = tfmot_wfn.hardware_cost(tfmot_wfn.strip_fixing(fixed))
    assert wrapped.shift_add_applies and wrapped.to_dict() == stripped.to_dict()
    assert wrapped.totals["macs"] == float_cost.totals["macs"]
    assert wrapped.palette_size == tfmot_wfn.report(fixed).unique_values
    # the point of fixing: shift-adds and palette indices cost less than int8 here
    assert wrapped.energy_pj["shift_add"] < wrapped.energy_pj["int8"] < wrapped.energy_pj["float32"]
    assert wrapped.bits_per_weight["palette"] == math.ceil(math.log2(wrapped.palette_size))


def test_core_estimate_agrees_with_a_per_weight_loop_on_random_groups():
    groups = [WeightGroup("k", _palette_weights((3, 5), 7), "multiply", 11),
              WeightGroup("bias", _palette_weights((5,), 8), "bias", 11)]
    cost = estimate([LayerWork("x", "Custom", groups, float_macs=13)], activation_bits=12)
    ref = Reference(activation_bits=12)
    for _ in range(11):
        for w in groups[0].values.ravel():
            ref.mac(w)
        for b in groups[1].values:
            ref.bias(b)
    for _ in range(13):
        ref.float_mac()
    ref.store(groups[0].values), ref.store(groups[1].values, True)
    _assert_matches(cost, ref)


def test_arguments_are_validated_with_clear_errors():
    model = _small_cnn()
    with pytest.raises(ValueError, match="activation_bits"):
        tfmot_wfn.hardware_cost(model, activation_bits=0)
    with pytest.raises(ValueError, match="'dram' or 'sram'"):
        tfmot_wfn.hardware_cost(model, memory="l2")
    with pytest.raises(TypeError, match="EnergyTable"):
        tfmot_wfn.hardware_cost(model, energy_table={"fp32_mul_pj": 1.0})
    with pytest.raises(TypeError, match="Keras model"):
        tfmot_wfn.hardware_cost("model.keras")
    dynamic = keras.Sequential([keras.Input((None, None, 1)), L.Conv2D(2, 3)])
    with pytest.raises(ValueError, match="unknown dimensions"):
        tfmot_wfn.hardware_cost(dynamic)
    assert tfmot_wfn.hardware_cost(dynamic, input_shape=(5, 5, 1)).totals["macs"] == 9 * 18
    with pytest.raises(ValueError, match="without the batch"):
        tfmot_wfn.hardware_cost(dynamic, input_shape=(5, -1, 1))
    with pytest.raises(ValueError, match="no known input shape"):
        tfmot_wfn.hardware_cost(L.Dense(2))
    custom = tfmot_wfn.hardware_cost(model, energy_table=EnergyTable(dram_read_32bit_pj=0.0))
    assert custom.weight_read_pj == {"float32": 0.0, "int8": 0.0, "palette": 0.0, "entropy_coded": 0.0}


def test_to_json_round_trips(tmp_path):
    cost = tfmot_wfn.hardware_cost(_small_cnn())
    path = tmp_path / "cost.json"
    cost.to_json(str(path))
    assert json.loads(path.read_text()) == json.loads(json.dumps(cost.to_dict()))
    assert "HardwareCost" in tfmot_wfn.__all__ and "hardware_cost" in tfmot_wfn.__all__
    assert "EnergyTable" in tfmot_wfn.__all__


# ---------------------------------------------------------------------------- plot and report
def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from tfmot_wfn.apps import plot

    fixed = tfmot_wfn.fix_weights(_small_cnn())
    tfmot_wfn.run_fixing_stage(fixed, 1.0, 0.05)
    cost = tfmot_wfn.hardware_cost(fixed)
    for source, name in ((cost, "a.png"), (cost.to_dict(), "b.png"),
                         (tfmot_wfn.hardware_cost(_small_cnn()), "float.png")):
        fig = plot.hardware_cost(source, str(tmp_path / name))
        data = (tmp_path / name).read_bytes()
        assert data[:4] == b"\x89PNG" and len(data) > 2000
        assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="energy_pj"):
        plot.hardware_cost({"palette": []})


def test_report_command_writes_the_section(tmp_path, capsys):
    from tfmot_wfn.apps import cli

    fixed = tfmot_wfn.fix_weights(_small_cnn())
    tfmot_wfn.run_fixing_stage(fixed, 1.0, 0.05)
    final = tfmot_wfn.strip_fixing(fixed)
    path = str(tmp_path / "final.keras")
    final.save(path)
    out = str(tmp_path / "rep")
    assert cli.main(["report", path, "--output", out]) == 0
    printed = capsys.readouterr().out
    assert "hardware cost per inference" in printed and "estimate from operation counts" in printed
    written = json.load(open(os.path.join(out, "report.json")))
    section = written["hardware_cost"]
    expected = json.loads(json.dumps(tfmot_wfn.hardware_cost(final).to_dict()))
    assert section.pop("plot") == os.path.join(out, "plots", "hardware_cost.png")
    assert section == expected and section["shift_add_applies"]
    assert open(os.path.join(out, "plots", "hardware_cost.png"), "rb").read(4) == b"\x89PNG"
    assert open(os.path.join(out, "hardware_cost.txt")).read() == str(tfmot_wfn.hardware_cost(final)) + "\n"


def test_benchmark_rows_cost_each_method_in_its_deployed_form():
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
    import hardware_cost_rows as rows

    base = _small_cnn()
    fixed = tfmot_wfn.fix_weights(base)
    tfmot_wfn.run_fixing_stage(fixed, 1.0, 0.05)
    final = tfmot_wfn.strip_fixing(fixed)
    cost, sram = tfmot_wfn.hardware_cost(final), tfmot_wfn.hardware_cost(final, memory="sram")
    wfn = rows.row_columns(final, "wfn")
    assert wfn["hw_energy_dram_nj"] == pytest.approx(cost.energy_pj["shift_add"] / 1e3)
    assert wfn["hw_energy_sram_nj"] == pytest.approx(sram.energy_pj["shift_add"] / 1e3)
    assert wfn["hw_bits_moved"] == cost.weight_bits_moved["palette"]
    assert wfn["hw_form"].startswith("shift-add")
    float_cost = tfmot_wfn.hardware_cost(base)
    assert rows.row_columns(base, "float")["hw_energy_dram_nj"] == pytest.approx(
        float_cost.energy_pj["float32"] / 1e3)
    assert rows.row_columns(base, "int8")["hw_bits_moved"] == float_cost.weight_bits_moved["int8"]
    clustered = rows.row_columns(final, "clustered")  # fp32 arithmetic, palette reads
    assert clustered["hw_energy_dram_nj"] == pytest.approx(
        (cost.compute_pj["float32"] + cost.weight_read_pj["palette"]) / 1e3)
    assert rows.cells(wfn).count("|") == 1 and rows.cells({}) == "n/a | n/a"
    assert "hw_error" in rows.row_columns(keras.Sequential([L.Dense(2)]), "float")


@pytest.mark.legacy  # also under tf_keras (a plain model's weights are read there too)
def test_nested_subclassed_and_1d_models():
    inner = keras.Sequential([keras.Input((10, 2)), L.Conv1D(4, 3), L.ReLU()], name="inner")
    inp = keras.Input((10, 2))
    model = keras.Model(inp, L.Dense(3)(inner(inp)))
    cost = tfmot_wfn.hardware_cost(model)
    assert [r["class"] for r in cost.layers] == ["Conv1D", "Dense"]
    assert cost.layers[0]["macs"] == 8 * (3 * 2 * 4) and cost.layers[1]["macs"] == 8 * 4 * 3

    class Block(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = L.Conv2D(2, 3, padding="same")
            self.dense = L.Dense(5)

        def call(self, x):
            return self.dense(self.conv(x))

    block = Block()
    with pytest.raises(ValueError, match="pass input_shape"):
        tfmot_wfn.hardware_cost(block)
    cost = tfmot_wfn.hardware_cost(block, input_shape=(4, 4, 3))
    assert [r["macs"] for r in cost.layers] == [16 * 27 * 2, 16 * 2 * 5]


def test_wrapped_attention_uses_the_fixed_values():
    inp = keras.Input((4, 8))
    model = keras.Model(inp, L.MultiHeadAttention(2, 4)(inp, inp))
    fixed = tfmot_wfn.fix_weights(model)
    tfmot_wfn.run_fixing_stage(fixed, 1.0, 0.05)
    wrapped = tfmot_wfn.hardware_cost(fixed)
    assert wrapped.shift_add_applies  # the float variables are not what is counted
    assert wrapped.to_dict() == tfmot_wfn.hardware_cost(tfmot_wfn.strip_fixing(fixed)).to_dict()
    assert wrapped.layers[0]["float_macs"] == 4 * 4 * 2 * (4 + 4)


def test_counts_per_distinct_value_equal_the_per_weight_reference():
    """Terms are counted once per distinct value; the totals, the histogram and the note's
    example equal those of counting every weight."""
    from tfmot_wfn.core import hardware_cost as core_cost
    from tfmot_wfn.core.weight_terms import term_counts, terms_histogram

    rng = np.random.default_rng(7)
    palette = np.array([0, -0.0, 0.5, -0.25, 0.375, 1 / 3, -0.1, 2 ** -7], np.float32)
    for _ in range(50):
        groups = [core_cost.WeightGroup(
            name=f"w{i}", role="multiply", uses=int(rng.integers(0, 5)),
            values=(rng.choice(palette, size=int(rng.integers(0, 40))) if rng.random() < 0.7
                    else rng.standard_normal(int(rng.integers(0, 40))).astype(np.float32)))
            for i in range(int(rng.integers(1, 4)))]
        max_terms = int(rng.integers(1, 4))
        work = core_cost.LayerWork("layer", "Dense", groups)
        cost = core_cost.estimate([work], max_terms=max_terms)
        counts = core_cost.layer_counts(work, max_terms)
        terms = [term_counts(g.values) for g in groups]
        every = np.concatenate(terms)
        assert counts["shifts"] == sum(g.uses * int(t.sum()) for g, t in zip(groups, terms))
        assert counts["weights_over_max_terms"] == int(np.count_nonzero(every > max_terms))
        assert cost.terms_histogram == {str(k): n for k, n in terms_histogram(every).items()}
        assert cost.shift_add_applies == (not np.any(every > max_terms))
        if not cost.shift_add_applies:
            values = np.concatenate([g.values for g in groups]).astype(np.float64)
            assert f"(e.g. {values[every > max_terms][0]:.9g})" in cost.shift_add_note
