"""Real architectures end to end (issue 7): MobileNetV2, ResNet50, EfficientNetB0, DenseNet121
(keras.applications, weights=None, 32x32x3, 4 classes) and a small functional Transformer encoder.

For each: `fix_weights` wraps every layer with weights (or `report` says why not), one short
graph-mode `fit` (batch 8, two steps) runs two fixing stages with `UpdateFixingStep`,
`strip_fixing` gives palette weights and the same outputs, and the palette TFLite file runs
on the interpreter with the Keras outputs (|tflite - keras| <= 1e-4 max |keras| on the
logits), every tensor it leaves dense listed with a reason. One run per architecture is
shared by its tests (a module-scoped parametrized fixture: one model alive at a time); the
applications are marked slow. Keras comes from `tfmot_wfn.keras.compat` so that this module
can also run under TF_USE_LEGACY_KERAS=1. `benchmarks/architectures.py` prints the matrix.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

import tfmot_wfn
from tfmot_wfn.keras import fixable_layer
from tfmot_wfn.keras.compat import IS_LEGACY_KERAS, keras, short_name
from tfmot_wfn.keras.network import wrappers_of
from tfmot_wfn.testing import architecture_matrix as am

SLOW = pytest.mark.slow
PARAMS = [pytest.param(name, marks=() if name == "Transformer" else SLOW, id=name)
          for name in am.ARCHITECTURES]
# The layer classes a user of these architectures expects wrapped.
EXPECTED_WRAPPED = {
    "MobileNetV2": {"Conv2D", "DepthwiseConv2D", "BatchNormalization", "Dense"},
    "ResNet50": {"Conv2D", "BatchNormalization", "Dense"},
    "EfficientNetB0": {"Conv2D", "DepthwiseConv2D", "BatchNormalization", "Dense"},
    "DenseNet121": {"Conv2D", "BatchNormalization", "Dense"},
    "Transformer": {"Embedding", "MultiHeadAttention", "LayerNormalization", "Dense"},
}


@pytest.fixture(scope="module", params=PARAMS)
def run(request, tmp_path_factory):
    result = am.run_architecture(request.param, str(tmp_path_factory.mktemp(request.param)))
    yield result
    # pytest keeps the value cached until after teardown: empty it, so that only one
    # architecture's models (ResNet50: ~25M weights, x3 with the fixing state) are alive.
    result.__dict__.clear()
    gc.collect()


def test_every_layer_with_weights_is_wrapped_or_explained(run):
    wrapped = {w.layer.name: w for w in wrappers_of(run.fixed)}
    explained = {e["layer"]: e["reason"] for e in run.report.not_fixed}
    for layer in am.leaf_layers(run.float_model):
        if not layer.weights:
            continue
        if layer.name in wrapped:
            # An output layer's wrapper keeps its name (the model's output names), others get fix_.
            name = layer.name if layer.name in run.float_model.output_names else f"fix_{layer.name}"
            assert isinstance(run.fixed.get_layer(name), tfmot_wfn.WeightFixingWrapper)
            continue
        # Not wrapped: only layers whose weights are not trained, with the reason in the report.
        reason = fixable_layer.kept_float_reason(layer)
        assert reason is not None, f"{layer.name} ({type(layer).__name__}) neither wrapped nor explained"
        assert explained.get(layer.name) == reason
    assert EXPECTED_WRAPPED[run.name] <= {type(w.layer).__name__ for w in wrapped.values()}
    if run.name == "EfficientNetB0":
        # Its input Normalization (mean/variance/count, not trained) is the one layer kept float.
        kept = [e for e in run.report.not_fixed if e["class"] == "Normalization"]
        assert [e["weights"] for e in kept] == [["mean", "variance", "count"]]
        assert "not trained" in kept[0]["reason"]
        assert "Normalization" in str(run.report)
    # Everything else left float is BatchNorm running statistics.
    for e in run.report.not_fixed:
        if e["class"] != "Normalization":
            assert e["class"] == "BatchNormalization"
            assert e["weights"] == ["moving_mean", "moving_variance"], e


def test_fit_runs_both_stages_and_fixes_everything(run):
    history = run.update.history
    assert [h.fraction for h in history] == list(am.FRACTIONS)
    assert history[-1].fixed == history[-1].total > 0
    assert len(run.stage_seconds) == len(am.FRACTIONS)
    assert tfmot_wfn.fixed_fraction(run.fixed) == 1.0
    assert run.report.fixed_fraction == 1.0


def test_stripped_weights_are_palette_values_and_predict_the_same(run):
    palette = tfmot_wfn.palette(run.fixed)            # the fixed values of the wrapped model
    assert palette.size == run.update.history[-1].palette_size
    values = np.concatenate([
        np.asarray(v.numpy(), np.float32).ravel()
        for layer in am.leaf_layers(run.stripped) if layer.weights and fixable_layer.is_supported(layer)
        for v in fixable_layer.fixable_weights(layer)])
    assert values.size == run.report.total_weights
    assert np.isin(values, palette).all()
    assert run.report.unique_values == np.unique(values).size <= palette.size
    assert not any(isinstance(layer, tfmot_wfn.WeightFixingWrapper) for layer in run.stripped.layers)
    # Same weights, same ops: the plain model computes what the wrapped one does.
    np.testing.assert_allclose(run.keras_stripped, run.keras_wrapped, rtol=0, atol=1e-6)


def test_palette_tflite_runs_and_matches_keras(run):
    export = run.export
    assert export.mode == "palette" and export.palette_size == run.update.history[-1].palette_size
    assert export.bytes > 0 and export.indexed
    atol = am.TFLITE_TOLERANCE * float(np.max(np.abs(run.keras_stripped)))
    np.testing.assert_allclose(run.tflite_decoded, run.keras_stripped, rtol=0, atol=atol)
    np.testing.assert_allclose(run.tflite_stored, run.keras_stripped, rtol=0, atol=atol)
    # Every tensor left dense is listed with a reason. No weight is among them (with
    # batchnorm="scale_op" a BN scale is a separate MUL and the kernel stays indices)
    # except where the converter folds a constant scaling into a kernel: EfficientNetB0's
    # input Rescaling(1/255) and Normalization into its first convolution (and then its
    # BatchNorm), and, with tf_keras's converter, MultiHeadAttention's 1/sqrt(key_dim)
    # into the query kernels.
    categories = am.dense_summary(export.non_palette)
    assert all(t.reason for t in export.non_palette)
    assert not [c for c in categories if c.startswith("other")], categories
    weights = {t.name: am.dense_category(t) for t in export.non_palette
               if am.dense_category(t) in ("weight scaled by converter", "BN folded by converter")}
    expected = {
        "EfficientNetB0": {"stem_conv/kernel": "weight scaled by converter",
                           "stem_conv/bias": "BN folded by converter"},
        "Transformer": {f"attention_{b}/query/kernel": "weight scaled by converter"
                        for b in range(2)} if IS_LEGACY_KERAS else {},
    }.get(run.name, {})
    assert weights == expected
    kernels = sum(1 for w in wrappers_of(run.fixed) for v in w.fixable_variables
                  if short_name(v) in fixable_layer.KERNEL_NAMES)
    assert len(export.indexed) >= kernels


def test_matrix_row(run):
    row = am.matrix_row(run)
    assert row["wrapped_layers"] + sum(
        1 for e in run.report.not_fixed if e["class"] == "Normalization") == row["layers_with_weights"]
    assert row["max_abs_tflite_minus_keras"] <= am.TFLITE_TOLERANCE * row["max_abs_logit"]
    table = am.markdown_table([row])
    assert table.count("\n") == 2 and run.name in table
    print("\n" + table)


def test_kept_float_layer_cannot_be_wrapped_alone():
    layer = keras.layers.Normalization()
    layer.build((None, 3))
    with pytest.raises(ValueError, match="nothing to fix.*not trained"):
        tfmot_wfn.fix_weights(layer)


def test_input_scaling_folded_into_the_first_conv_is_explained(tmp_path):
    """Fast version of EfficientNetB0's stem: Rescaling + adapted Normalization (kept float,
    unwrapped) before a Conv2D + BatchNorm. The converter folds the input scaling and the
    BatchNorm into the kernel; the exporter names the Keras weight and the factors."""
    from tfmot_wfn import lite
    from tfmot_wfn.keras.network import run_fixing_stage

    L = keras.layers
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).random((8, 8, 8, 3)).astype("float32") * 255
    norm = L.Normalization(axis=None, name="norm")
    norm.adapt(x / 255.0)
    inp = keras.Input((8, 8, 3))
    h = norm(L.Rescaling(1 / 255.0)(inp))
    h = L.BatchNormalization(name="bn")(L.Conv2D(8, 3, use_bias=False, name="conv")(h))
    model = keras.Model(inp, L.Dense(3, name="head")(L.GlobalAveragePooling2D()(h)))
    model.get_layer("bn").set_weights([
        np.full(8, 1.5, "float32"), np.zeros(8, "float32"),
        np.linspace(-0.1, 0.1, 8).astype("float32"), np.linspace(0.5, 2.0, 8).astype("float32")])

    fixed = tfmot_wfn.fix_weights(model)
    assert [type(w.layer).__name__ for w in wrappers_of(fixed)] == [
        "Conv2D", "BatchNormalization", "Dense"]
    assert not isinstance(fixed.get_layer("norm"), tfmot_wfn.WeightFixingWrapper)
    run_fixing_stage(fixed, 1.0, 0.015)
    not_fixed = {e["layer"]: e for e in tfmot_wfn.report(fixed).not_fixed}
    assert not_fixed["norm"]["weights"] == ["mean", "variance", "count"]
    assert not_fixed["bn"]["weights"] == ["moving_mean", "moving_variance"]

    path = str(tmp_path / "scaled.tflite")
    result = lite.export_tflite(fixed, path)
    reasons = {t.name: t.reason for t in result.non_palette}
    assert "weight 'conv/kernel' of layer 'conv' multiplied per output channel" in reasons[
        "conv/kernel"]
    expected = np.asarray(tfmot_wfn.strip_fixing(fixed)(x[:4]))
    got = lite.run_interpreter(lite.load_interpreter(path), x[:4])
    np.testing.assert_allclose(got, expected, rtol=0,
                               atol=am.TFLITE_TOLERANCE * np.max(np.abs(expected)))


def test_read_model_gives_every_vector_its_own_memory(tmp_path):
    """write_model stores equal small vectors once; read_model must not hand out views that
    alias each other (MobileNetV2: setting an op's outputs [192] changed a (192,) shape)."""
    from tfmot_wfn import lite
    from tfmot_wfn.tflite import flatbuffer as fb

    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((4, 4, 3))
    h = L.BatchNormalization()(L.Conv2D(5, 1, use_bias=False)(inp))
    model = keras.Model(inp, L.Dense(5)(L.Flatten()(h)))
    data, _ = lite.export_tflite_bytes(tfmot_wfn.strip_fixing(tfmot_wfn.fix_weights(model)))
    data = fb.write_model(fb.read_model(data))  # equal vectors shared in the file
    model_t = fb.read_model(data)
    vectors = []
    for subgraph in model_t.subgraphs:
        vectors += [v for v in (subgraph.inputs, subgraph.outputs) if isinstance(v, np.ndarray)]
        vectors += [t.shape for t in subgraph.tensors if isinstance(t.shape, np.ndarray)]
        for op in subgraph.operators:
            vectors += [v for v in (op.inputs, op.outputs) if isinstance(v, np.ndarray)]
    assert vectors and all(v.base is None for v in vectors)
    shapes = [tuple(t.shape) for t in model_t.subgraphs[0].tensors]
    for op in model_t.subgraphs[0].operators:
        op.outputs[0] = 0
    assert [tuple(t.shape) for t in model_t.subgraphs[0].tensors] == shapes
