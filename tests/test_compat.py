"""The Keras 3 / tf_keras seam (`tfmot_wfn.keras.compat`) and the wrapper call on both.

Under Keras 3 the wrapper runs its layer in a ``StatelessScope``; under tf_keras it
substitutes the effective weights for the layer's weight attributes during the call
only. These tests hold for both (the module runs in the legacy job too).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import keras_helpers as kh
import tfmot_wfn
from tfmot_wfn.keras import compat
from tfmot_wfn.keras.compat import keras, tf
from tfmot_wfn.keras.network import run_fixing_stage, wrappers_of

pytestmark = pytest.mark.legacy  # also run under tf_keras: see pytest.ini

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
L = keras.layers
Variable = getattr(keras, "Variable", tf.Variable)  # tf_keras layers hold tf.Variables


def _half_fixed(batchnorm=True):
    fixed = tfmot_wfn.fix_weights(kh.dense_model(batchnorm=batchnorm, seed=4))
    run_fixing_stage(fixed, 0.5, 0.1)
    return fixed


def test_keras_flavour_follows_the_environment():
    legacy = os.environ.get("TF_USE_LEGACY_KERAS") in ("true", "True", "1")  # TensorFlow's reading
    assert compat.IS_LEGACY_KERAS == tfmot_wfn.IS_LEGACY_KERAS == legacy
    assert keras.__name__ == ("tf_keras" if legacy else "keras")


@pytest.mark.parametrize("value, legacy", [("1", True), ("true", True), ("True", True),
                                           ("yes", False), ("TRUE", False), (" 1", False), ("0", False)])
def test_the_legacy_flag_is_read_as_tensorflow_reads_it(monkeypatch, value, legacy):
    # Else tfmot_wfn would use tf_keras while tf.keras (and the user's model) is Keras 3.
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", value)
    assert compat._legacy_requested() is legacy


def test_importing_tfmot_wfn_never_imports_tfmot():
    """tfmot sets TF_USE_LEGACY_KERAS=1 when imported: tfmot_wfn must not import it."""
    code = ("import os, sys, tfmot_wfn, tfmot_wfn.lite; tfmot_wfn.fix_weights; "
            "print('tensorflow_model_optimization' in sys.modules, "
            "os.environ.get('TF_USE_LEGACY_KERAS'))")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "None"]


def test_in_xla_compilation_tells_xla_graphs_apart():
    """The private TensorFlow API behind it is still there and still answers."""
    seen = {}

    def probe(name):
        def f(x):
            seen[name] = compat.in_xla_compilation()
            return x
        return f

    tf.function(probe("xla"), jit_compile=True)(tf.constant(1.0))
    tf.function(probe("graph"))(tf.constant(1.0))
    probe("eager")(tf.constant(1.0))
    assert seen == {"xla": True, "graph": False, "eager": False}


def test_call_uses_effective_weights_and_leaves_the_layer_untouched():
    fixed = _half_fixed()
    wrapper = wrappers_of(fixed)[0]
    dense = wrapper.layer
    before = [id(v) for v in dense.weights]
    kernel_before = dense.kernel
    # Move the fixed entries of the variable away: the call must not see it.
    mask = wrapper.mask_numpy()[0]
    dense.kernel.assign(np.where(mask, 123.0, dense.kernel.numpy()))
    x = kh.classification_data(n=4)[0]
    expected = x @ wrapper.effective_numpy()[0] + wrapper.effective_numpy()[1]
    np.testing.assert_allclose(np.asarray(wrapper(x)), expected, rtol=1e-5, atol=1e-5)
    assert dense.kernel is kernel_before and isinstance(dense.kernel, Variable)
    assert [id(v) for v in dense.weights] == before
    assert [compat.short_name(v) for v in dense.weights] == ["kernel", "bias"]


def test_an_error_inside_the_call_restores_the_attributes():
    fixed = _half_fixed(batchnorm=False)
    wrapper = wrappers_of(fixed)[0]
    kernel = wrapper.layer.kernel
    with pytest.raises(Exception):
        wrapper(np.ones((2, 5), "float32"))  # 5 features, the kernel takes 8
    assert wrapper.layer.kernel is kernel


def test_gradients_reach_the_free_entries_of_the_underlying_variables_only():
    fixed = _half_fixed()
    x, y = kh.classification_data(n=16)
    variables = [v for w in wrappers_of(fixed) for v in w.fixable_variables]
    masks = [m for w in wrappers_of(fixed) for m in w.mask_numpy()]
    for w in wrappers_of(fixed):
        w.fixing_step.assign(0)  # what UpdateFixingStep does before a training batch
    with tf.GradientTape() as tape:
        logits = fixed(x, training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
    grads = tape.gradient(loss, variables)
    assert all(g is not None for g in grads)
    for g, m in zip(grads, masks):
        g = np.asarray(tf.convert_to_tensor(g))
        assert (g[m] == 0).all()
        assert np.abs(g[~m]).sum() > 0 or not (~m).any()


def test_batchnorm_moving_statistics_update_in_training_only():
    fixed = _half_fixed()
    bn = [w for w in wrappers_of(fixed) if isinstance(w.layer, L.BatchNormalization)][0]
    mean = bn.layer.moving_mean.numpy().copy()
    x = kh.classification_data(n=16)[0] * 3 + 1
    fixed(x, training=False)
    np.testing.assert_array_equal(bn.layer.moving_mean.numpy(), mean)
    for w in wrappers_of(fixed):
        w.fixing_step.assign(0)  # what UpdateFixingStep does before a training batch
    fixed(x, training=True)
    assert not np.array_equal(bn.layer.moving_mean.numpy(), mean)
    assert isinstance(bn.layer.gamma, Variable)


@pytest.mark.parametrize("ext", ["keras", "h5"])
def test_wrapped_and_stripped_models_save_and_load(ext, tmp_path):
    fixed = _half_fixed()
    x = kh.classification_data(n=8)[0]
    path = os.path.join(tmp_path, f"mid.{ext}")
    fixed.save(path)
    with tfmot_wfn.fixing_scope():
        loaded = keras.models.load_model(path)
    kh.assert_states_equal(kh.network_state(loaded), kh.network_state(fixed))
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), fixed.predict(x, verbose=0))
    stripped = tfmot_wfn.strip_fixing(fixed)
    path = os.path.join(tmp_path, f"stripped.{ext}")
    stripped.save(path)
    plain = keras.models.load_model(path)
    assert not wrappers_of(plain)
    np.testing.assert_array_equal(plain.predict(x, verbose=0), stripped.predict(x, verbose=0))


def test_variable_helpers():
    layer = L.Dense(2, name="probe")
    layer.build((None, 3))
    kernel = layer.kernel
    assert compat.short_name(kernel) == "kernel"
    assert compat.variable_path(kernel).endswith("kernel") and ":" not in compat.variable_path(kernel)
    assert compat.numpy_dtype(kernel) == np.float32
    assert compat.variable_dtype(kernel) == tf.float32
    assert compat.autocasts(kernel) is not compat.IS_LEGACY_KERAS  # tf_keras: only under mixed
    assert compat.steps_per_execution(object()) == 1
    assert compat.callback_params(object()) == {}


# --------------------------------------------------------------------------------------
# Private Keras/TensorFlow APIs. Each function of compat.py that reads one says so in a
# "Private" line and has a test named after it here (test_private_<name>), which fails by
# name when a Keras or TensorFlow release removes the attribute or changes what is relied on.
# --------------------------------------------------------------------------------------
def test_every_private_api_of_compat_has_its_test():
    import ast

    tree = ast.parse(open(compat.__file__).read())
    private = [node.name for node in tree.body
               if isinstance(node, (ast.FunctionDef, ast.ClassDef))
               and "Private" in (ast.get_docstring(node) or "")]
    assert len(private) >= 12, private
    tests = [name for name in globals() if name.startswith("test_")]
    missing = [name for name in private
               if not any(name.strip("_").lower() in test for test in tests)]
    assert not missing, f"compat functions using private APIs without a test named after them: {missing}"


def _chain():
    x = keras.Input((3,), name="chain_in")
    dense = L.Dense(4, name="chain_dense")
    hidden = dense(x)
    bn = L.BatchNormalization(name="chain_bn")
    out = L.Dense(2, name="chain_out")(bn(hidden))
    return keras.Model(x, out), dense, bn, hidden


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = L.Dense(2)

    def call(self, x):
        return self.dense(x)


def test_private_build_from_config():
    dense = L.Dense(3, name="probe_build")
    dense.build((None, 5))
    new = L.Dense.from_config(dense.get_config())
    compat.build_from_config(new, dense.get_build_config())
    assert new.built and new.get_build_config() == dense.get_build_config()
    assert [compat.variable_path(v) for v in new.weights] == ["probe_build/kernel", "probe_build/bias"]
    mha = L.MultiHeadAttention(num_heads=2, key_dim=4)
    mha(np.ones((1, 3, 8), "float32"), np.ones((1, 5, 8), "float32"))
    copy = L.MultiHeadAttention.from_config(mha.get_config())
    compat.build_from_config(copy, mha.get_build_config())
    assert [tuple(v.shape) for v in copy.weights] == [tuple(v.shape) for v in mha.weights]
    if compat.IS_LEGACY_KERAS:  # the tf_keras internals it reads and writes
        assert callable(dense._name_scope) and new._build_input_shape is not None
        assert all(getattr(mha, a, None) is not None for a in ("_query_shape", "_value_shape",
                                                               "_key_shape"))


def test_private_autocasts():
    dense = L.Dense(2, dtype="mixed_float16")
    dense.build((None, 3))
    bn = L.BatchNormalization(dtype="mixed_float16")
    bn.build((None, 3))
    assert compat.autocasts(dense.kernel) and not compat.autocasts(bn.gamma)
    if not compat.IS_LEGACY_KERAS:
        assert dense.kernel._autocast is True and bn.gamma._autocast is False


def test_private_attribute_owners():
    mha = L.MultiHeadAttention(num_heads=2, key_dim=4)
    mha(np.ones((1, 3, 8), "float32"), np.ones((1, 3, 8), "float32"))
    owners = compat._attribute_owners(mha)
    assert owners[0] is mha and len(owners) > 1
    held = {id(v) for owner in owners for v in vars(owner).values()}
    assert {id(v) for v in mha.weights} <= held  # every weight is an attribute of some owner


def test_private_substitutedweights():
    dense = L.Dense(2, name="probe_sub")
    dense.build((None, 3))
    kernel = dense.kernel
    x = np.ones((1, 3), "float32")
    with compat.SubstitutedWeights(dense, {id(kernel): (kernel, tf.zeros((3, 2)))}):
        np.testing.assert_array_equal(np.asarray(dense(x)), np.zeros((1, 2)))  # bias is 0
    assert dense.kernel is kernel and [id(v) for v in dense.weights][0] == id(kernel)
    assert not np.array_equal(np.asarray(dense(x)), np.zeros((1, 2)))


def test_private_is_functional():
    model, _, _, _ = _chain()
    sequential = keras.Sequential([keras.Input((3,)), L.Dense(2)])
    subclassed = _Subclassed()
    subclassed(np.ones((1, 3), "float32"))
    assert compat.is_functional(model) and not compat.is_functional(subclassed)
    # Keras 3's Sequential is not a Functional model; tf_keras's is a graph network.
    assert compat.is_functional(sequential) is compat.IS_LEGACY_KERAS
    if compat.IS_LEGACY_KERAS:
        assert model._is_graph_network is True and subclassed._is_graph_network is False
    else:
        from keras.src.models.functional import Functional

        assert isinstance(model, Functional)


def test_private_producing_layer():
    model, dense, _, hidden = _chain()
    assert compat.producing_layer(hidden) is dense
    assert compat.producing_layer(model.outputs[0]) is model.get_layer("chain_out")
    assert isinstance(compat.producing_layer(model.inputs[0]), L.InputLayer)
    assert compat.producing_layer(model.inputs[0]).name == "chain_in"


def test_private_inbound_nodes():
    model, dense, bn, _ = _chain()
    assert len(compat.inbound_nodes(dense)) == 1 and len(compat.inbound_nodes(bn)) == 1
    dense(keras.Input((3,)))  # called again: one node per call
    assert len(compat.inbound_nodes(dense)) == 2


def test_private_outbound_nodes():
    model, dense, bn, hidden = _chain()
    assert len(compat.outbound_nodes(dense)) == 1  # feeds the BatchNorm only
    L.Dense(1)(hidden)
    assert len(compat.outbound_nodes(dense)) == 2


def test_private_node_input_tensors():
    model, dense, bn, hidden = _chain()
    inputs = compat.node_input_tensors(compat.inbound_nodes(bn)[0])
    assert isinstance(inputs, list) and len(inputs) == 1
    assert compat.producing_layer(inputs[0]) is dense and tuple(inputs[0].shape) == (None, 4)


def test_private_sequential_input_layer():
    started = keras.Sequential([keras.Input((3,), name="probe_in"), L.Dense(2)])
    first = compat.sequential_input_layer(started)
    assert isinstance(first, L.InputLayer) and first.name == "probe_in"
    assert all(not isinstance(layer, L.InputLayer) for layer in started.layers)
    assert compat.sequential_input_layer(keras.Sequential([L.Dense(2)])) is None


def test_private_input_layer_spec():
    for dtype in ("float32", "int32"):
        model = keras.Sequential([keras.Input((3, 4), dtype=dtype), L.Flatten()])
        batch_shape, got = compat.input_layer_spec(compat.sequential_input_layer(model))
        assert tuple(batch_shape) == (None, 3, 4) and tf.as_dtype(got) == tf.as_dtype(dtype)


def test_private_legacy_loss_tracker():
    model, _, _, _ = _chain()
    model.compile(optimizer="sgd", loss="mse")
    tracker = compat.legacy_loss_tracker(model)
    if not compat.IS_LEGACY_KERAS:
        assert tracker is None  # Keras 3 logs what compute_loss returns
        return
    assert tracker.name == "loss" and tracker.total.dtype == tf.float32
    model.fit(np.ones((4, 3), "float32"), np.zeros((4, 2), "float32"), verbose=0)
    assert float(tracker.result()) == pytest.approx(float(model.history.history["loss"][0]))


def test_private_plain_resource_variable():
    fixed = _half_fixed(batchnorm=False)
    steps = [w.fixing_step for w in wrappers_of(fixed)]
    inner = [compat._plain_resource_variable(v) for v in steps]
    assert all(type(v).__name__ == "ResourceVariable" for v in inner)  # the fast path
    if not compat.IS_LEGACY_KERAS:
        assert all(v._value is i for v, i in zip(steps, inner))
    compat.assign_scalar(steps, 7)
    assert [int(v.numpy()) for v in steps] == [7] * len(steps)

    class Mirrored:  # anything else keeps its own assign
        value = None

        def assign(self, value):
            self.value = value

    other = Mirrored()
    assert compat._plain_resource_variable(other) is None
    compat.assign_scalar([other, steps[0]], 3)
    assert other.value == 3 and int(steps[0].numpy()) == 3


@pytest.mark.parametrize("count", [3, compat.COMPILED_ASSIGN_FROM + 5])
def test_scalar_assigner_writes_every_variable_few_or_many(count, monkeypatch):
    steps = [tf.Variable(np.int64(-1)) for _ in range(count)] + [tf.Variable(np.int32(-1))]
    if count >= compat.COMPILED_ASSIGN_FROM:  # many: one compiled call, no eager op each

        def eager(*args):
            raise AssertionError("the eager path ran")

        monkeypatch.setattr(compat, "assign_scalar", eager)

    class Mirrored:  # anything else keeps its own assign
        value = None

        def assign(self, value):
            self.value = value

    other = Mirrored()
    assign = compat.scalar_assigner(steps + [other])
    for value in (5, 0, 123456):
        assign(value)
        assert [int(v.numpy()) for v in steps] == [value] * len(steps) and other.value == value


def test_summary_metadata_is_the_tensorboard_plugin_proto():
    metadata = compat.summary_metadata("scalars", "a description")
    assert metadata.plugin_data.plugin_name == "scalars" and metadata.plugin_data.content == b""
    assert metadata.summary_description == "a description"
    assert type(metadata).__name__ == "SummaryMetadata"
