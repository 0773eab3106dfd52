"""`tfmot_wfn.keras.cloning`: copying layers, cloning and walking nested models (Keras 3 and tf_keras)."""

from __future__ import annotations

import numpy as np
import pytest

from tfmot_wfn.keras import cloning
from tfmot_wfn.keras.compat import keras, variable_path

pytestmark = pytest.mark.legacy  # also run under tf_keras: see pytest.ini

L = keras.layers


def _nested():
    """inp -> inner Sequential -> inner Functional -> head, all built."""
    keras.utils.set_random_seed(3)
    seq = keras.Sequential([keras.Input((4,)), L.Dense(6, name="s_dense"),
                            L.BatchNormalization(name="s_bn")], name="inner_seq")
    f_in = keras.Input((6,), name="f_in")
    inner = keras.Model(f_in, L.Dense(5, name="f_dense")(L.ReLU(name="f_relu")(f_in)),
                        name="inner_fn")
    inp = keras.Input((4,), name="outer_in")
    out = L.Dense(2, name="head")(inner(seq(inp)))
    return keras.Model(inp, out, name="outer")


def test_walk_layers_opens_nested_models_in_layer_order():
    model = _nested()
    names = [layer.name for layer in cloning.walk_layers(model)]
    assert names[-1] == "head" and "inner_seq" not in names and "inner_fn" not in names
    assert [n for n in names if n in ("s_dense", "s_bn", "f_relu", "f_dense", "head")] == \
        ["s_dense", "s_bn", "f_relu", "f_dense", "head"]
    flat = list(cloning.walk_layers(model, descend=lambda layer: False))
    assert flat == list(model.layers)


def test_walk_models_yields_the_model_then_its_nested_models_depth_first():
    model = _nested()
    assert [m.name for m in cloning.walk_models(model)] == ["outer", "inner_seq", "inner_fn"]
    assert [m.name for m in cloning.walk_models(model, descend=lambda layer: False)] == ["outer"]


def test_is_functional_or_sequential():
    model = _nested()

    class Sub(keras.Model):
        def call(self, x):
            return x

    assert cloning.is_functional_or_sequential(model)
    assert cloning.is_functional_or_sequential(model.get_layer("inner_seq"))
    assert not cloning.is_functional_or_sequential(Sub())
    assert cloning.is_model(model.get_layer("inner_fn")) and not cloning.is_model(L.Dense(1))


def test_copy_layer_holds_equal_weights_in_new_variables():
    dense = L.Dense(3, name="probe_copy")
    dense.build((None, 2))
    dense.set_weights([np.arange(6, dtype="float32").reshape(2, 3), np.ones(3, "float32")])
    new = cloning.copy_layer(dense)
    assert new is not dense and new.get_config() == dense.get_config()
    # Named as when Keras builds a layer in a call (tf_keras too, where build() alone does not).
    assert [variable_path(v) for v in new.weights] == ["probe_copy/kernel", "probe_copy/bias"]
    for a, b in zip(new.weights, dense.weights):
        assert a is not b
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    unbuilt = cloning.copy_layer(L.Dense(2))
    assert not unbuilt.built and not unbuilt.weights
    flatten = L.Flatten()
    flatten.build((None, 2, 2))
    assert not cloning.copy_layer(flatten).built  # no weights: built at its first call


def test_rebuilt_layer_takes_a_config_and_builds_like_the_original():
    dense = L.Dense(3, use_bias=False, name="probe_rebuilt")
    dense.build((None, 2))
    config = dense.get_config()
    config["use_bias"] = True
    new = cloning.rebuilt_layer(dense, config)
    assert new.built and [variable_path(v) for v in new.weights] == \
        ["probe_rebuilt/kernel", "probe_rebuilt/bias"]
    assert tuple(new.kernel.shape) == (2, 3)


def test_clone_model_clones_nested_models_and_keeps_every_name():
    model = _nested()
    seen = []

    def clone_function(layer):
        seen.append(layer.name)
        return cloning.copy_layer(layer)

    clone = cloning.clone_model(model, clone_function)
    assert {"s_dense", "s_bn", "f_relu", "f_dense", "head"} <= set(seen)
    assert "inner_seq" not in seen and "inner_fn" not in seen  # cloned, not passed on
    assert [m.name for m in cloning.walk_models(clone)] == ["outer", "inner_seq", "inner_fn"]
    assert [layer.name for layer in clone.layers] == [layer.name for layer in model.layers]
    assert clone.get_layer("inner_fn") is not model.get_layer("inner_fn")
    assert [layer.name for layer in clone.get_layer("inner_fn").layers] == \
        [layer.name for layer in model.get_layer("inner_fn").layers]
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    np.testing.assert_allclose(clone.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)
