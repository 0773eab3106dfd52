"""fix_weights and strip_fixing: what gets wrapped and that inputs never change.

What they refuse is checked once, in test_errors.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from tfmot_wfn.keras.compat import IS_LEGACY_KERAS, keras, variable_path
import keras_helpers as kh
import tfmot_wfn
from tfmot_wfn.keras.network import run_fixing_stage, wrappers_of

pytestmark = pytest.mark.legacy  # also run under tf_keras: see pytest.ini

L = keras.layers
Wrapper = tfmot_wfn.WeightFixingWrapper


# ------------------------------------------------------------------ builders
def zoo_2d():
    inp = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 3, padding="same")(inp)
    h = L.BatchNormalization()(h)
    h = L.ReLU()(h)
    h = L.DepthwiseConv2D(3, padding="same")(h)
    h = L.SeparableConv2D(4, 3, padding="same")(h)
    h = L.Conv2DTranspose(3, 3, padding="same")(h)
    h = L.LayerNormalization()(h)
    h = L.MaxPooling2D()(h)
    h = L.GlobalAveragePooling2D()(h)
    h = L.Dense(5, activation="relu")(h)
    h = L.Dropout(0.1)(h)
    out = L.EinsumDense("ab,bc->ac", output_shape=3, bias_axes="c")(h)
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    return keras.Model(inp, out, name="zoo_2d"), x


def zoo_1d():
    inp = keras.Input((6,), dtype="int32")
    h = L.Embedding(20, 8)(inp)
    h = L.Conv1D(8, 3, padding="same")(h)
    h = L.DepthwiseConv1D(3, padding="same")(h)
    h = L.SeparableConv1D(8, 3, padding="same")(h)
    h = L.Conv1DTranspose(8, 3, padding="same")(h)
    a = L.MultiHeadAttention(num_heads=2, key_dim=4)(h, h)
    h = L.Add()([h, a])
    h = L.Flatten()(h)
    out = L.Dense(3)(h)
    x = np.random.default_rng(0).integers(0, 20, size=(4, 6)).astype("int32")
    return keras.Model(inp, out, name="zoo_1d"), x


def zoo_3d():
    inp = keras.Input((4, 4, 4, 2))
    h = L.Conv3D(3, 3, padding="same")(inp)
    h = L.Conv3DTranspose(2, 3, padding="same")(h)
    h = L.Activation("tanh")(h)
    h = L.Flatten()(h)
    out = L.Dense(2)(h)
    x = np.random.default_rng(0).normal(size=(4, 4, 4, 4, 2)).astype("float32")
    return keras.Model(inp, out, name="zoo_3d"), x


ZOO = {"2d": zoo_2d, "1d": zoo_1d, "3d": zoo_3d}
EXPECTED_WEIGHTS = {
    # inner class -> short names of the fixed weights (moving statistics never)
    "Conv2D": ["kernel", "bias"],
    "BatchNormalization": ["gamma", "beta"],
    "DepthwiseConv2D": ["kernel", "bias"],
    "SeparableConv2D": ["depthwise_kernel", "pointwise_kernel", "bias"],
    "Conv2DTranspose": ["kernel", "bias"],
    "LayerNormalization": ["gamma", "beta"],
    "Dense": ["kernel", "bias"],
    "EinsumDense": ["kernel", "bias"],
    "Embedding": ["embeddings"],
    "Conv1D": ["kernel", "bias"],
    "DepthwiseConv1D": ["kernel", "bias"],
    "SeparableConv1D": ["depthwise_kernel", "pointwise_kernel", "bias"],
    "Conv1DTranspose": ["kernel", "bias"],
    "MultiHeadAttention": ["kernel", "bias"] * 4,
    "Conv3D": ["kernel", "bias"],
    "Conv3DTranspose": ["kernel", "bias"],
}
if IS_LEGACY_KERAS:  # tf_keras names a depthwise convolution's kernel "depthwise_kernel"
    EXPECTED_WEIGHTS["DepthwiseConv1D"] = EXPECTED_WEIGHTS["DepthwiseConv2D"] = [
        "depthwise_kernel", "bias"]


def short(v):
    return variable_path(v).split("/")[-1]


def weights_of(model):
    return [w.copy() for w in model.get_weights()]


def assert_weights_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


class ScaledDense(L.Layer, tfmot_wfn.FixableLayer):
    """Custom layer: only `w` is fixable, `scale` stays float."""

    def __init__(self, units=4, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units), name="w")
        self.scale = self.add_weight(shape=(), initializer="ones", name="scale")

    def call(self, x):
        return self.scale * (x @ self.w)

    def get_fixable_weights(self):
        return [self.w]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


# ------------------------------------------------------- supported layers
@pytest.mark.parametrize("zoo", sorted(ZOO))
def test_every_supported_layer_with_weights_is_wrapped(zoo):
    model, x = ZOO[zoo]()
    before = weights_of(model)
    expected_pred = model.predict(x, verbose=0)
    fixed = tfmot_wfn.fix_weights(model)

    assert fixed is not model
    # A wrapper is named fix_<layer>, but one making a model output keeps the layer's name,
    # and so the model its output names (loss / y / metric dicts keyed by them still work).
    assert fixed.output_names == model.output_names
    assert [layer.name for layer in fixed.layers] == [
        f"fix_{layer.name}" if layer.weights and layer.name not in model.output_names else layer.name
        for layer in model.layers]
    for orig, new in zip(model.layers, fixed.layers):
        if orig.weights:
            assert isinstance(new, Wrapper)
            assert type(new.layer) is type(orig)
            assert new.layer.name == orig.name
            assert new.layer is not orig
            names = [short(v) for v in new.fixable_variables]
            assert names == EXPECTED_WEIGHTS[type(orig).__name__]
            # Copies, not shared variables.
            assert not {id(v) for v in new.layer.weights} & {id(v) for v in orig.weights}
        else:
            assert not isinstance(new, Wrapper)
            assert type(new) is type(orig)
    np.testing.assert_array_equal(fixed.predict(x, verbose=0), expected_pred)

    # One network-wide stage fixing everything; then strip back to the plain architecture.
    summary = run_fixing_stage(fixed, 1.0, 0.05)
    assert summary.fixed == summary.total == sum(
        int(np.prod(v.shape)) for w in wrappers_of(fixed) for v in w.fixable_variables)
    wrapped_pred = fixed.predict(x, verbose=0)
    stripped = tfmot_wfn.strip_fixing(fixed)
    assert [type(layer) for layer in stripped.layers] == [type(layer) for layer in model.layers]
    assert [layer.name for layer in stripped.layers] == [layer.name for layer in model.layers]
    assert [layer.get_config() for layer in stripped.layers] == [
        layer.get_config() for layer in model.layers]
    np.testing.assert_allclose(stripped.predict(x, verbose=0), wrapped_pred, rtol=1e-6, atol=1e-6)
    assert_weights_equal(weights_of(model), before)


def test_batchnorm_moving_statistics_are_never_fixed():
    model, _ = zoo_2d()
    fixed = tfmot_wfn.fix_weights(model)
    bn = next(w for w in wrappers_of(fixed) if isinstance(w.layer, L.BatchNormalization))
    assert [short(v) for v in bn.fixable_variables] == ["gamma", "beta"]
    assert {short(v) for v in bn.layer.weights} >= {"moving_mean", "moving_variance"}


def test_fix_biases_and_fix_batchnorm_flags():
    model, _ = zoo_2d()
    fixed = tfmot_wfn.fix_weights(model, fix_biases=False, fix_batchnorm=False)
    names = {type(w.layer).__name__: [short(v) for v in w.fixable_variables]
             for w in wrappers_of(fixed)}
    assert names["Conv2D"] == ["kernel"]
    assert names["SeparableConv2D"] == ["depthwise_kernel", "pointwise_kernel"]
    assert names["BatchNormalization"] == []
    assert names["LayerNormalization"] == []
    assert names["EinsumDense"] == ["kernel"]
    run_fixing_stage(fixed, 1.0, 0.05)
    inner = {type(w.layer).__name__: w.layer for w in wrappers_of(fixed)}
    orig = {type(layer).__name__: layer for layer in model.layers}
    # Unfixed weights keep their float values.
    np.testing.assert_array_equal(inner["Conv2D"].bias.numpy(), orig["Conv2D"].bias.numpy())
    np.testing.assert_array_equal(inner["BatchNormalization"].gamma.numpy(),
                                  orig["BatchNormalization"].gamma.numpy())


# ------------------------------------------------------------ input kinds
def test_single_unbuilt_layer():
    layer = L.Dense(4, name="lonely")
    wrapper = tfmot_wfn.fix_weights(layer, distance=0.02)
    assert isinstance(wrapper, Wrapper)
    assert wrapper.name == "fix_lonely" and wrapper.layer.name == "lonely"
    assert wrapper.distance == 0.02
    assert not layer.built  # the passed layer is left alone
    model = keras.Sequential([keras.Input((3,)), wrapper])
    assert [short(v) for v in wrapper.fixable_variables] == ["kernel", "bias"]
    assert model.output_shape == (None, 4)


def test_single_built_layer_keeps_its_weights_in_a_copy():
    layer = L.Dense(4)
    layer.build((None, 3))
    before = weights_of(layer)
    wrapper = tfmot_wfn.fix_weights(layer)
    assert wrapper.layer is not layer
    assert_weights_equal(weights_of(wrapper.layer), before)
    x = np.random.default_rng(1).normal(size=(5, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(wrapper(x)), np.asarray(layer(x)))
    run_fixing_stage([wrapper], 1.0, 0.05)
    assert_weights_equal(weights_of(layer), before)


def test_list_of_layers():
    layers = [L.Dense(4), L.Conv2D(2, 3), L.BatchNormalization()]
    out = tfmot_wfn.fix_weights(layers, distance=0.03)
    assert isinstance(out, list) and len(out) == 3
    assert all(isinstance(w, Wrapper) and w.distance == 0.03 for w in out)
    assert [type(w.layer) for w in out] == [L.Dense, L.Conv2D, L.BatchNormalization]
    assert all(w.layer is not orig for w, orig in zip(out, layers))


def test_sequential_model():
    model = kh.dense_model(batchnorm=True)
    x, _ = kh.classification_data()
    fixed = tfmot_wfn.fix_weights(model)
    assert isinstance(fixed, keras.Sequential)
    assert [type(layer).__name__ for layer in fixed.layers] == [
        "WeightFixingWrapper", "WeightFixingWrapper", "ReLU", "WeightFixingWrapper"]
    np.testing.assert_array_equal(fixed.predict(x, verbose=0), model.predict(x, verbose=0))


def test_functional_with_nested_sequential_and_functional_submodels():
    keras.utils.set_random_seed(3)
    sub_seq = keras.Sequential([keras.Input((4,)), L.Dense(4), L.ReLU()], name="sub_seq")
    inner_in = keras.Input((4,))
    sub_fun = keras.Model(inner_in, L.Dense(3, name="inner_dense")(L.BatchNormalization()(inner_in)),
                          name="sub_fun")
    inp = keras.Input((5,))
    out = sub_fun(sub_seq(L.Dense(4, name="outer_dense")(inp)))
    model = keras.Model(inp, out, name="nested")
    before = weights_of(model)
    x, y = kh.classification_data(n=32, features=5)
    expected = model.predict(x, verbose=0)

    fixed = tfmot_wfn.fix_weights(model)
    assert [type(layer).__name__ for layer in fixed.layers] == [
        "InputLayer", "WeightFixingWrapper", "Sequential", "Functional"]
    seq = fixed.get_layer("sub_seq")
    fun = fixed.get_layer("sub_fun")
    assert [type(layer).__name__ for layer in seq.layers] == ["WeightFixingWrapper", "ReLU"]
    assert [type(layer).__name__ for layer in fun.layers] == [
        "InputLayer", "WeightFixingWrapper", "WeightFixingWrapper"]
    assert sorted(w.layer.name for w in wrappers_of(fixed)) == sorted(
        ["outer_dense", "inner_dense", seq.layers[0].layer.name, fun.layers[1].layer.name])
    np.testing.assert_array_equal(fixed.predict(x, verbose=0), expected)

    # Training reaches the nested wrappers.
    fixed.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    fixed.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[tfmot_wfn.UpdateFixingStep(
        verbose=0)])  # default schedule: stage 0 (0.3), stage 1 (0.6)
    masks = kh.flat_masks(fixed)
    assert masks.sum() == int(masks.size * 0.6)
    palette = kh.wrapper_palette(wrappers_of(fixed)[0])
    for w in wrappers_of(fixed):
        np.testing.assert_array_equal(kh.wrapper_palette(w), palette)
    assert np.isin(kh.flat_values(fixed)[masks], palette).all()
    # The nested wrappers trained: their free weights moved away from the original values.
    inner = fun.get_layer("fix_inner_dense")
    kernel_mask = inner.mask_numpy()[0]
    original_kernel = model.get_layer("sub_fun").get_layer("inner_dense").kernel.numpy()
    assert (~kernel_mask).any()
    assert np.all(inner.effective_numpy()[0][~kernel_mask] != original_kernel[~kernel_mask])

    stripped = tfmot_wfn.strip_fixing(fixed)
    assert not wrappers_of(stripped)
    assert [type(layer).__name__ for layer in stripped.get_layer("sub_fun").layers] == [
        "InputLayer", "BatchNormalization", "Dense"]
    np.testing.assert_allclose(stripped.predict(x, verbose=0), fixed.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)
    assert_weights_equal(weights_of(model), before)
    np.testing.assert_array_equal(model.predict(x, verbose=0), expected)


# ---------------------------------------------------------- custom layers
def test_custom_fixable_layer_fixes_only_declared_weights():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), ScaledDense(4, name="scaled"), L.Dense(3)])
    model.get_layer("scaled").scale.assign(1.37)
    x, y = kh.classification_data(n=32, features=6)
    fixed = tfmot_wfn.fix_weights(model)
    wrapper = fixed.layers[0]
    assert isinstance(wrapper, Wrapper) and isinstance(wrapper.layer, ScaledDense)
    assert [short(v) for v in wrapper.fixable_variables] == ["w"]
    assert len(wrapper.masks) == 1
    np.testing.assert_array_equal(fixed.predict(x, verbose=0), model.predict(x, verbose=0))

    run_fixing_stage(fixed, 1.0, 0.05)
    palette = kh.wrapper_palette(wrapper)
    assert np.isin(wrapper.effective_numpy()[0], palette).all()
    assert float(wrapper.layer.scale.numpy()) == np.float32(1.37)  # not fixed
    stripped = tfmot_wfn.strip_fixing(fixed)
    assert float(stripped.get_layer("scaled").scale.numpy()) == np.float32(1.37)
    np.testing.assert_array_equal(stripped.get_layer("scaled").w.numpy(),
                                  wrapper.effective_numpy()[0])


# ------------------------------------------------- the input is never changed
def test_shared_float_model_is_unchanged_by_fixing_training_and_stripping(
        float_cnn, fixed_cnn, stripped_cnn, digits):
    # `fixed_cnn` trained a model made from `float_cnn.model` through the whole
    # schedule and `stripped_cnn` stripped it; the original must be untouched.
    model = float_cnn.model
    assert [id(layer) for layer in model.layers] == float_cnn.layer_ids
    assert [layer.name for layer in model.layers] == float_cnn.layer_names
    assert [type(layer) for layer in model.layers] == float_cnn.layer_classes
    assert [layer.get_config() for layer in model.layers] == float_cnn.layer_configs
    assert_weights_equal(weights_of(model), float_cnn.weights)
    np.testing.assert_array_equal(model.predict(digits.x_test, verbose=0, batch_size=512),
                                  float_cnn.predictions)
    assert not any(isinstance(layer, Wrapper) for layer in model.layers)


def test_input_model_unchanged_through_fix_train_strip():
    model = kh.dense_model(batchnorm=True, seed=5)
    x, y = kh.classification_data(n=48)
    snap = kh.snapshot_float(model, x)
    fixed = tfmot_wfn.fix_weights(model, fixing_schedule=tfmot_wfn.StagedFixing(
        (0.5, 1.0), steps_per_stage=3))
    fixed.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    fixed.fit(x, y, batch_size=16, epochs=2, verbose=0,
              callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0)])
    assert kh.flat_masks(fixed).all()
    tfmot_wfn.strip_fixing(fixed)
    assert [id(layer) for layer in model.layers] == snap["layer_ids"]
    assert [layer.get_config() for layer in model.layers] == snap["layer_configs"]
    assert_weights_equal(weights_of(model), snap["weights"])
    np.testing.assert_array_equal(model.predict(x, verbose=0, batch_size=512), snap["predictions"])


def _triple(t):
    return t * 3.0


@pytest.mark.parametrize("function", [lambda t: t * 3.0, _triple], ids=["lambda", "named"])
def test_tensor_operators_and_lambda_layers_are_carried_over(function):
    # `h + inp` (a Keras 3 operation, not a layer) and Lambda layers (Python code in their
    # config, which Keras refuses to rebuild) hold no weights: they are shared as they are.
    inp = keras.Input((6,))
    h = L.Dense(6)(inp)
    h = L.Lambda(function)(h + inp)
    model = keras.Model(inp, L.Dense(2)(h))
    x = np.random.default_rng(0).random((4, 6), dtype=np.float32)
    snap = kh.snapshot_float(model, x)
    fixed = tfmot_wfn.fix_weights(model)
    assert len(wrappers_of(fixed)) == 2
    np.testing.assert_allclose(fixed(x), model(x), rtol=1e-6)
    run_fixing_stage(fixed, 1.0, 0.05)
    stripped = tfmot_wfn.strip_fixing(fixed)
    np.testing.assert_allclose(stripped(x), fixed(x), rtol=1e-6, atol=1e-6)
    assert not np.allclose(stripped(x), model(x))  # the fixed weights, not the float ones
    assert_weights_equal(weights_of(model), snap["weights"])
    np.testing.assert_array_equal(model.predict(x, verbose=0), snap["predictions"])


def test_a_multi_output_model_keeps_its_output_names_through_fit_save_and_load(tmp_path):
    # Keras names outputs after the layers making them: their wrappers keep those names, so
    # the float model's loss / y dicts work on the fixed model, also after a reload.
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    h = L.Dense(4, activation="relu", name="trunk")(inp)
    model = keras.Model(inp, [L.Dense(2, name="o1")(h), L.Dense(1, name="o2")(h)])
    x = np.random.default_rng(0).random((8, 4), dtype=np.float32)
    y = {"o1": np.zeros((8, 2), np.float32), "o2": np.ones((8, 1), np.float32)}
    fixed = tfmot_wfn.fix_weights(model, fixing_schedule=tfmot_wfn.StagedFixing((0.5, 1.0), steps_per_stage=1))
    assert fixed.output_names == model.output_names == ["o1", "o2"]
    assert [layer.name for layer in fixed.layers[1:]] == ["fix_trunk", "o1", "o2"]
    fixed.compile(optimizer="adam", loss={"o1": "mse", "o2": "mse"})
    fixed.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0)])
    assert tfmot_wfn.fixed_fraction(fixed) == 1.0
    path = str(tmp_path / "two_heads.keras")
    fixed.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.output_names == ["o1", "o2"]
    assert tfmot_wfn.strip_fixing(loaded).output_names == ["o1", "o2"]
    loaded.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0)])


# ----------------------------------------------------------------- strip_fixing
def test_strip_fixing_returns_the_original_architecture_with_palette_weights(
        float_cnn, fixed_cnn, stripped_cnn, digits):
    original, fixed, stripped = float_cnn.model, fixed_cnn.model, stripped_cnn
    assert not wrappers_of(stripped)
    assert not any(isinstance(layer, Wrapper) for layer in stripped.layers)
    assert stripped is not original
    assert [type(layer) for layer in stripped.layers] == [type(layer) for layer in original.layers]
    assert [layer.name for layer in stripped.layers] == [layer.name for layer in original.layers]
    assert [layer.get_config() for layer in stripped.layers] == [
        layer.get_config() for layer in original.layers]

    palette = kh.wrapper_palette(wrappers_of(fixed)[0])
    by_name = {w.layer.name: w for w in wrappers_of(fixed)}
    for layer in stripped.layers:
        if layer.name not in by_name:
            assert not layer.weights
            continue
        wrapper = by_name[layer.name]
        fixable = {short(v) for v in wrapper.fixable_variables}
        effective = dict(zip([short(v) for v in wrapper.fixable_variables],
                             wrapper.effective_numpy()))
        for v, inner in zip(layer.weights, wrapper.layer.weights):
            name = short(v)
            if name in fixable:
                assert np.isin(v.numpy(), palette).all(), name
                np.testing.assert_array_equal(v.numpy(), effective[name])
            else:  # BatchNorm moving statistics: copied as they are
                np.testing.assert_array_equal(v.numpy(), inner.numpy())
    np.testing.assert_allclose(stripped.predict(digits.x_test, verbose=0, batch_size=512),
                               fixed.predict(digits.x_test, verbose=0, batch_size=512),
                               rtol=1e-6, atol=1e-6)
    assert kh.accuracy(stripped, digits.x_test, digits.y_test) == fixed_cnn.accuracy


def test_strip_fixing_mid_schedule_keeps_free_weights_float():
    model = kh.dense_model(seed=2)
    x, _ = kh.classification_data()
    fixed = tfmot_wfn.fix_weights(model)
    run_fixing_stage(fixed, 0.5, 0.1)
    stripped = tfmot_wfn.strip_fixing(fixed)
    mask = kh.flat_masks(fixed)
    got = np.concatenate([v.ravel() for v in stripped.get_weights()])
    orig = np.concatenate([v.ravel() for v in model.get_weights()])
    palette = kh.wrapper_palette(wrappers_of(fixed)[0])
    assert mask.sum() == int(mask.size * 0.5)
    np.testing.assert_array_equal(got[~mask], orig[~mask])
    assert np.isin(got[mask], palette).all()
    np.testing.assert_allclose(stripped.predict(x, verbose=0), fixed.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)


def test_stripped_model_saves_and_loads_as_a_plain_keras_model(stripped_cnn, digits, tmp_path):
    path = str(tmp_path / "final.keras")
    stripped_cnn.save(path)
    loaded = keras.models.load_model(path)  # no custom objects needed
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in stripped_cnn.layers]
    assert_weights_equal(loaded.get_weights(), stripped_cnn.get_weights())
    np.testing.assert_array_equal(loaded.predict(digits.x_test, verbose=0),
                                  stripped_cnn.predict(digits.x_test, verbose=0))
