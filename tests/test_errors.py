"""The error catalogue of docs/errors.md: one test (at least) per row.

Every refusal is checked for its exception type and message, and that it leaves
nothing half-done: the model passed in is unchanged (same layers, weights and
`compute_loss`), no `WeightFixingWrapper` was completed before the error, and the
fixing state of a wrapped model is untouched.
"""

from __future__ import annotations

import math
import os
import re

import numpy as np
import pytest

from tfmot_wfn.keras.compat import IS_LEGACY_KERAS, keras, tf
import keras_helpers as kh
import tfmot_wfn
from tfmot_wfn.core.greedy_fixing import quota_for
from tfmot_wfn.keras.network import run_fixing_stage, wrappers_of

pytestmark = pytest.mark.legacy  # also run under tf_keras: see pytest.ini

L = keras.layers
Wrapper = tfmot_wfn.WeightFixingWrapper


# ------------------------------------------------------------------ helpers
class _WrapperCount:
    """Counts WeightFixingWrappers whose construction completed (cheaper than scanning gc)."""

    def __init__(self):
        self.count = 0
        self._init = Wrapper.__init__

    def __enter__(self):
        counter, init = self, self._init

        def counting_init(wrapper, *args, **kwargs):
            init(wrapper, *args, **kwargs)
            counter.count += 1

        Wrapper.__init__ = counting_init
        return self

    def __exit__(self, *exc):
        Wrapper.__init__ = self._init


class Unchanged:
    """Snapshot of a model (or layer, or list of layers) to check an error left it alone."""

    ATTRIBUTES = ("compute_loss", "_wfn_regularizer_installed")

    def __init__(self, *objects):
        self.objects = objects
        self.layers = [list(getattr(o, "layers", [])) for o in objects]
        self.weights = [[w.copy() for w in self._weights(o)] for o in objects]
        self.attributes = [self._attributes(o) for o in objects]

    @classmethod
    def _attributes(cls, obj):
        return [getattr(obj, "__dict__", {}).get(a) for a in cls.ATTRIBUTES]

    @staticmethod
    def _weights(obj):
        if not getattr(obj, "built", True):
            return []  # tf_keras: get_weights() of an unbuilt model raises
        if isinstance(obj, (list, tuple)):
            return [w for item in obj for w in item.get_weights()]
        return obj.get_weights()

    def check(self):
        for obj, layers, weights, attributes in zip(
                self.objects, self.layers, self.weights, self.attributes):
            assert list(getattr(obj, "layers", [])) == layers
            now = self._weights(obj)
            assert len(now) == len(weights)
            for a, b in zip(now, weights):
                np.testing.assert_array_equal(a, b)
            assert self._attributes(obj) == attributes


def refused(error, match, call, *untouched):
    """`call()` raises `error` matching `match` and leaves `untouched` objects as they were.

    Returns the message. No WeightFixingWrapper may have been completed before the
    error (a list of layers is checked whole before any is wrapped).
    """
    snapshot = Unchanged(*untouched)
    with _WrapperCount() as wrappers:
        try:
            call()
        except error as e:
            message = str(e)
        else:
            pytest.fail(f"did not raise {error.__name__}")
    assert re.search(match, message), f"{match!r} not found in {message!r}"
    assert wrappers.count == 0, f"{wrappers.count} WeightFixingWrapper(s) made before the error"
    snapshot.check()
    return message


def _fit_args(n=32, batch_size=8):
    x, y = kh.classification_data(n=n)
    return dict(x=x, y=y, batch_size=batch_size, shuffle=False, verbose=0)


def _fixed_dense(schedule=None, **kwargs):
    fixed = tfmot_wfn.fix_weights(kh.dense_model(), fixing_schedule=schedule, **kwargs)
    return kh.compile_classifier(fixed, from_logits=True)


class WeightedUnsupported(L.Layer):
    """A custom layer with a weight that does not implement FixableLayer."""

    def build(self, input_shape):
        self.v = self.add_weight(shape=(input_shape[-1],), name="v")

    def call(self, x):
        return x * self.v


class Sub(keras.Model):
    """A subclassed model, written as the refusal message of fix_weights suggests."""

    def __init__(self, wrap=True, distances=(0.015, 0.015)):
        super().__init__()
        schedule = tfmot_wfn.StagedFixing((0.5, 0.8, 1.0), steps_per_stage=2)
        d1, d2 = L.Dense(16, name="d1"), L.Dense(3, name="d2")
        if wrap:
            d1 = tfmot_wfn.fix_weights(d1, fixing_schedule=schedule, distance=distances[0])
            d2 = tfmot_wfn.fix_weights(d2, fixing_schedule=schedule, distance=distances[1])
        self.d1, self.d2 = d1, d2

    def call(self, x):
        return self.d2(keras.activations.relu(self.d1(x)))


@pytest.fixture
def policy():
    """Set a global dtype policy for one test; the previous one is restored after it."""
    previous = keras.mixed_precision.global_policy()
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy(previous)


# ------------------------------------------------------- models that are refused
def test_subclassed_model_is_refused_and_the_workaround_in_the_message_works():
    plain = Sub(wrap=False)
    x = kh.classification_data(n=4)[0]
    plain(x)
    message = refused(ValueError, "subclassed keras.Model.*Sequential and Functional",
                      lambda: tfmot_wfn.fix_weights(plain), plain)
    assert "fix_weights(keras.layers.Dense(10), fixing_schedule=schedule)" in message
    assert "UpdateFixingStep" in message and "strip_fixing(self.dense)" in message

    # The workaround: wrap the layers inside the subclass with one shared schedule.
    model = Sub()
    model(x)
    kh.compile_classifier(model, from_logits=True)
    update = tfmot_wfn.UpdateFixingStep(verbose=0)
    model.fit(callbacks=[update], epochs=2, **_fit_args(n=32, batch_size=8))  # 8 steps
    assert [round(s.fraction, 3) for s in update.history] == [0.5, 0.8, 1.0]
    assert tfmot_wfn.fixed_fraction(model) == 1.0
    assert model._wfn_regularizer_installed  # fit added the regulariser
    palette = tfmot_wfn.palette(model)
    assert all(np.array_equal(kh.wrapper_palette(w), palette) for w in wrappers_of(model))
    # ... and strip each wrapped layer into a plain one with the palette weights.
    d1, d2 = tfmot_wfn.strip_fixing([model.d1, model.d2])
    assert type(d1) is L.Dense and type(d2) is L.Dense
    for layer, wrapper in ((d1, model.d1), (d2, model.d2)):
        for a, b in zip(layer.get_weights(), wrapper.effective_numpy()):
            np.testing.assert_array_equal(a, b)
            assert np.isin(a, palette).all()


def test_layers_wrapped_one_by_one_share_the_rule_auto_chooses_for_the_network():
    # rule="auto" for one layer picks "gentle" for a depthwise layer and "bounded_third" for a
    # Dense; the network chooses again for all its layers (as fix_weights(model) does)
    # instead of refusing them as different settings.
    schedule = tfmot_wfn.StagedFixing((0.5, 1.0), steps_per_stage=2)

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dw = tfmot_wfn.fix_weights(L.DepthwiseConv2D(3), fixing_schedule=schedule)
            self.flat = L.Flatten()
            self.dense = tfmot_wfn.fix_weights(L.Dense(3), fixing_schedule=schedule)

        def call(self, x):
            return self.dense(self.flat(self.dw(x)))

    net = Net()
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 6, 6, 2), dtype=np.float32), rng.integers(0, 3, 8)
    net(x)
    assert (net.dw.fixing_config.rule, net.dense.fixing_config.rule) == ("gentle", "bounded_third")
    kh.compile_classifier(net, from_logits=True)
    net.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0)])
    assert (net.dw.fixing_config.rule, net.dense.fixing_config.rule) == ("gentle", "gentle")
    assert tfmot_wfn.fixed_fraction(net) == 1.0
    # A rule given explicitly is the user's: two different ones are still refused.
    a = tfmot_wfn.fix_weights(L.Dense(3), rule="paper")
    b = tfmot_wfn.fix_weights(L.Dense(3), rule="nearest")
    a.build((None, 4)), b.build((None, 3))
    with pytest.raises(ValueError, match="different fixing settings"):
        tfmot_wfn.FixingNetwork([a, b])


def test_a_subclassed_model_nested_in_a_functional_one_is_refused_by_name():
    class Block(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.d = L.Dense(4)

        def call(self, x):
            return self.d(x)

    inp = keras.Input((6,))
    model = keras.Model(inp, L.Dense(2)(Block(name="block")(inp)), name="outer")
    refused(ValueError, r"'block' \(nested in model 'outer'\) is a subclassed keras.Model.*fix_weights\(keras.layers.Dense",
            lambda: tfmot_wfn.fix_weights(model), model)


def test_a_layer_shared_by_a_nested_model_and_the_outer_one_is_refused():
    # Cloning copies each model alone: the fixed model would hold two untied copies.
    shared = L.Dense(6, name="shared")
    inner_in = keras.Input((6,))
    inner = keras.Model(inner_in, shared(inner_in), name="inner")
    inp = keras.Input((6,))
    model = keras.Model(inp, L.Dense(2)(shared(inner(inp))), name="outer")
    refused(ValueError, r"'shared' is used in two models of the network, 'outer' and 'inner'.*untied",
            lambda: tfmot_wfn.fix_weights(model), model)


def test_fit_on_a_subclassed_model_never_called_says_to_call_it_first():
    model = Sub()  # layers wrapped one by one, the model not built yet
    kh.compile_classifier(model, from_logits=True)
    with pytest.raises(ValueError, match=r"are not built yet.*Call the model on a batch once"):
        model.fit(callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0)], epochs=1, **_fit_args())
    model(kh.classification_data(n=4)[0])  # as the message says: then fit works
    update = tfmot_wfn.UpdateFixingStep(verbose=0)
    model.fit(callbacks=[update], epochs=1, **_fit_args())
    assert update.history and tfmot_wfn.fixed_fraction(model) > 0


def test_strip_fixing_of_a_subclassed_model_names_the_per_layer_way():
    model = Sub()
    model(kh.classification_data(n=4)[0])
    refused(ValueError, r"subclassed keras.Model.*strip_fixing\(model.dense\)",
            lambda: tfmot_wfn.strip_fixing(model), model)


def test_unbuilt_model_is_refused():
    model = keras.Sequential([L.Dense(3)])
    refused(ValueError, r"is not built.*keras.Input", lambda: tfmot_wfn.fix_weights(model), model)


def test_unsupported_layer_with_weights_is_refused_in_a_model_alone_or_in_a_list():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), L.Dense(4), L.PReLU(name="my_prelu"), L.Dense(2)])
    refused(ValueError, r"'my_prelu' of class PReLU has weights.*FixableLayer",
            lambda: tfmot_wfn.fix_weights(model), model)
    lstm = L.LSTM(3, name="the_lstm")
    lstm.build((None, 2, 4))
    refused(ValueError, "'the_lstm' of class LSTM.*FixableLayer",
            lambda: tfmot_wfn.fix_weights(lstm), lstm)
    custom = WeightedUnsupported(name="the_custom")
    custom.build((None, 2, 4))
    refused(ValueError, "'the_custom' of class WeightedUnsupported.*FixableLayer",
            lambda: tfmot_wfn.fix_weights(custom), custom)
    dense = L.Dense(2)
    dense.build((None, 3))
    # A list: the supported first layer is not wrapped either.
    for unsupported in (lstm, custom):
        layers = [dense, unsupported]
        refused(ValueError, "FixableLayer", lambda: tfmot_wfn.fix_weights(layers), layers)


def test_model_without_weights_is_refused():
    model = keras.Sequential([keras.Input((4,)), L.ReLU(), L.Flatten()])
    refused(ValueError, "no layer with weights", lambda: tfmot_wfn.fix_weights(model), model)


def test_model_without_fixable_weights_under_the_flags_is_refused():
    model = keras.Sequential([keras.Input((4,)), L.BatchNormalization(), L.ReLU()])
    refused(ValueError, r"no fixable weight with fix_biases=True and fix_batchnorm=False",
            lambda: tfmot_wfn.fix_weights(model, fix_batchnorm=False), model)
    tfmot_wfn.fix_weights(model)  # with gamma/beta fixed there is something to fix


def test_a_single_layer_without_weights_is_refused():
    relu = L.ReLU(name="the_relu")
    relu.build((None, 4))
    refused(ValueError, "'the_relu' \\(ReLU\\) has no weights", lambda: tfmot_wfn.fix_weights(relu))
    refused(ValueError, "'the_relu' \\(ReLU\\) has no weights", lambda: Wrapper(relu))


def test_a_preprocessing_normalization_layer_alone_has_nothing_to_fix():
    norm = L.Normalization(name="the_norm")  # adapt()-able: mean, variance and count are weights
    norm.build((None, 4))
    refused(ValueError, "'the_norm' has nothing to fix: Normalization: preprocessing statistics",
            lambda: tfmot_wfn.fix_weights(norm))
    refused(ValueError, "'the_norm' has nothing to fix", lambda: Wrapper(norm))


def test_freeze_batchnorm_refuses_layers_fixed_models_and_unbuilt_models():
    refused(TypeError, "freeze_batchnorm expects a Keras model, got Dense",
            lambda: tfmot_wfn.freeze_batchnorm(L.Dense(3)))
    fixed = tfmot_wfn.fix_weights(kh.dense_model(batchnorm=True))
    refused(ValueError, "was made by tfmot_wfn.fix_weights: freeze BatchNorm in the float model "
                        "before fixing", lambda: tfmot_wfn.freeze_batchnorm(fixed))
    unbuilt = keras.Sequential([L.Dense(3), L.BatchNormalization()])
    refused(ValueError, "is not built", lambda: tfmot_wfn.freeze_batchnorm(unbuilt))


def test_preserve_sparsity_needs_built_layers():
    dense = L.Dense(3, name="fresh")
    refused(ValueError, r"preserve_sparsity=True keeps the zeros.*'fresh' is not built",
            lambda: tfmot_wfn.fix_weights(dense, preserve_sparsity=True), dense)
    built = L.Dense(3, name="built")
    built.build((None, 4))
    refused(ValueError, "'fresh' is not built",
            lambda: tfmot_wfn.fix_weights([built, dense], preserve_sparsity=True), built, dense)
    wrapper = tfmot_wfn.fix_weights(built, preserve_sparsity=True)  # built: fine
    wrapper.build((None, 4))
    assert int(wrapper.preserved_zeros.numpy()) == 3  # the zero-initialised bias


@pytest.mark.skipif(not IS_LEGACY_KERAS, reason="tf_keras only (Keras 3 uses StatelessScope)")
def test_legacy_fixable_layer_holding_its_weights_in_a_list_is_refused():
    class ListLayer(L.Layer, tfmot_wfn.FixableLayer):
        def build(self, input_shape):
            self.ws = [self.add_weight(name="w", shape=(input_shape[-1], 2))]

        def call(self, x):
            return x @ self.ws[0]

        def get_fixable_weights(self):
            return list(self.ws)

    wrapper = Wrapper(ListLayer(name="listy"))
    with pytest.raises(ValueError, match=r"'listy' \(ListLayer\) does not hold the fixable "
                                         r"weight .*w' as an attribute.*not in a list or dict"):
        wrapper(np.ones((2, 3), "float32"))
    assert isinstance(wrapper.layer.ws[0], tf.Variable)  # nothing was left substituted


def test_a_stage_over_wrappers_without_fixable_weights_is_refused():
    wrapper = tfmot_wfn.fix_weights(L.BatchNormalization(), fix_batchnorm=False)
    wrapper.build((None, 4))
    assert wrapper.fixable_variables == []
    refused(ValueError, "hold no fixable weight", lambda: run_fixing_stage([wrapper], 0.5, 0.05))
    refused(ValueError, "No WeightFixingWrapper found",
            lambda: run_fixing_stage(kh.dense_model(), 0.5, 0.05))


def test_already_fixed_model_or_layer_is_refused():
    fixed = tfmot_wfn.fix_weights(kh.dense_model())
    state = kh.network_state(fixed)
    refused(ValueError, "already contains the WeightFixingWrapper 'fix_dense.*strip_fixing",
            lambda: tfmot_wfn.fix_weights(fixed), fixed)
    refused(ValueError, "already a WeightFixingWrapper",
            lambda: tfmot_wfn.fix_weights(fixed.layers[0]))
    refused(ValueError, "already a WeightFixingWrapper", lambda: Wrapper(fixed.layers[0]))
    # Nested inside a bigger model.
    inp = keras.Input((8,))
    outer = keras.Model(inp, L.Dense(2)(fixed(inp)))
    refused(ValueError, "already contains the WeightFixingWrapper",
            lambda: tfmot_wfn.fix_weights(outer), outer)
    kh.assert_states_equal(kh.network_state(fixed), state)
    # A stripped model is a plain model again and can be fixed.
    assert wrappers_of(tfmot_wfn.fix_weights(tfmot_wfn.strip_fixing(fixed)))


# -------------------------------------------------------------- NaN, Inf, zeros
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_weights_are_refused_up_front(bad):
    model = kh.dense_model()
    layer = model.layers[2]
    kernel = layer.kernel
    kernel.assign(np.where(np.eye(*kernel.shape, dtype=bool), bad, kernel.numpy()))
    pattern = rf"3 of 48 values of weight '.*kernel' in layer '{layer.name}' are NaN or Inf.*finite"
    refused(ValueError, pattern, lambda: tfmot_wfn.fix_weights(model), model)
    refused(ValueError, "NaN or Inf", lambda: tfmot_wfn.fix_weights(layer), layer)
    layers = [model.layers[0], layer]
    refused(ValueError, "NaN or Inf", lambda: tfmot_wfn.fix_weights(layers), layers)


def test_nan_appearing_during_training_stops_the_next_stage_naming_the_layer():
    fixed = _fixed_dense(tfmot_wfn.StagedFixing((0.5, 0.8, 1.0), steps_per_stage=2))
    states = []

    class Poison(keras.callbacks.Callback):  # placed BEFORE UpdateFixingStep
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 2:  # the second stage runs at this step
                states.append(kh.network_state(self.model))
                kernel = wrappers_of(self.model)[1].fixable_variables[0]
                mask = wrappers_of(self.model)[1].mask_numpy()[0]
                kernel.assign(np.where(~mask, np.nan, kernel.numpy()))

    name = wrappers_of(fixed)[1].layer.name
    with pytest.raises(FloatingPointError,
                       match=rf"values of weight '.*kernel' in layer '{name}' are NaN or Inf"):
        fixed.fit(callbacks=[Poison(), tfmot_wfn.UpdateFixingStep(verbose=0)], epochs=1,
                  **_fit_args())
    # The failed stage wrote nothing: masks, fixed values, palette as before it.
    after = kh.network_state(fixed)
    for a, b in zip(states[0], after):
        for key in ("masks", "fixed_values"):
            for x, y in zip(a[key], b[key]):
                np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(a["palette"], b["palette"])


def test_nan_appearing_during_training_is_caught_at_the_end_of_the_epoch(tmp_path):
    # The only stage runs at step 0; without the per-epoch check the NaN would
    # go unnoticed until strip_fixing.
    fixed = _fixed_dense(tfmot_wfn.StagedFixing((0.5,), steps_per_stage=1))

    class Poison(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 3:  # the last batch of epoch 0
                wrapper = wrappers_of(self.model)[0]
                kernel, mask = wrapper.fixable_variables[0], wrapper.mask_numpy()[0]
                kernel.assign(np.where(mask, kernel.numpy(), np.inf))

    backup = tmp_path / "backup"
    name = wrappers_of(fixed)[0].layer.name
    with pytest.raises(FloatingPointError,
                       match=rf"weight '.*kernel' in layer '{name}' became NaN or Inf at the end "
                             r"of epoch 0"):
        fixed.fit(callbacks=[Poison(), tfmot_wfn.UpdateFixingStep(verbose=0),
                             keras.callbacks.BackupAndRestore(str(backup))], epochs=2,
                  **_fit_args())
    # UpdateFixingStep is listed before BackupAndRestore: the diverged state was not backed up.
    assert not (backup / "latest.weights.h5").exists()
    # check_finite=False turns the per-epoch check off (the stage would still refuse).
    fixed2 = _fixed_dense(tfmot_wfn.StagedFixing((0.5,), steps_per_stage=1))
    fixed2.fit(callbacks=[Poison(), tfmot_wfn.UpdateFixingStep(verbose=0, check_finite=False)],
               epochs=1, **_fit_args())


def test_all_zero_tensors_are_fixed_to_zero():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)),
                              L.Dense(16, kernel_initializer="zeros", name="zero"),
                              L.ReLU(), L.Dense(3, name="normal")])
    fixed = kh.compile_classifier(tfmot_wfn.fix_weights(
        model, fixing_schedule=tfmot_wfn.StagedFixing((0.5, 1.0), steps_per_stage=2)),
        from_logits=True)
    zero = fixed.get_layer("fix_zero")
    # (ReLU of 0 has zero gradient, so the zero layer stays zero while training.)
    fixed.fit(callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0)], epochs=1, **_fit_args())
    assert tfmot_wfn.fixed_fraction(fixed) == 1.0
    for values, mask in zip(zero.effective_numpy(), zero.mask_numpy()):
        assert mask.all() and not np.any(values)
    assert 0.0 in tfmot_wfn.palette(fixed)
    # A network that is all zeros: one stage fixes everything to the palette [0].
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, kernel_initializer="zeros")])
    fixed = tfmot_wfn.fix_weights(model)
    summary = run_fixing_stage(fixed, 0.3, 0.15)
    assert summary.fixed == int(15 * 0.3) and summary.palette_size == 1
    run_fixing_stage(fixed, 1.0, 0.015)
    np.testing.assert_array_equal(tfmot_wfn.palette(fixed), [0.0])
    assert not np.any(kh.flat_values(fixed)) and kh.flat_masks(fixed).all()
    assert not np.any(tfmot_wfn.strip_fixing(fixed).get_weights()[0])


# ---------------------------------------------------------- schedules, distance
@pytest.mark.parametrize("make, error, match", [
    (lambda: tfmot_wfn.StagedFixing((0.5, 0.3)), ValueError, "strictly increasing"),
    (lambda: tfmot_wfn.StagedFixing((0.5, 0.5, 1.0)), ValueError, "strictly increasing"),
    (lambda: tfmot_wfn.StagedFixing((0.0, 1.0)), ValueError, r"in \(0, 1\]"),
    (lambda: tfmot_wfn.StagedFixing((-0.1, 1.0)), ValueError, r"in \(0, 1\]"),
    (lambda: tfmot_wfn.StagedFixing((0.5, 1.2)), ValueError, r"in \(0, 1\]"),
    (lambda: tfmot_wfn.StagedFixing((math.nan,)), ValueError, r"in \(0, 1\]"),
    (lambda: tfmot_wfn.StagedFixing(()), ValueError, "must not be empty"),
    (lambda: tfmot_wfn.StagedFixing(steps_per_stage=0), ValueError, "steps_per_stage must be >= 1"),
    (lambda: tfmot_wfn.StagedFixing(begin_step=-1), ValueError, "begin_step must be >= 0"),
    (lambda: tfmot_wfn.PolynomialFixing(0.5, 0.3, 0, 10), ValueError,
     r"final_fraction must be in \[initial_fraction, 1\]"),
    (lambda: tfmot_wfn.PolynomialFixing(0.0, 1.0, 0, 10), ValueError,
     r"initial_fraction must be in"),
    (lambda: tfmot_wfn.PolynomialFixing(0.3, 1.5, 0, 10), ValueError, "final_fraction must be in"),
    (lambda: tfmot_wfn.PolynomialFixing(0.3, 1.0, 10, 10), ValueError, "greater than begin_step"),
    (lambda: tfmot_wfn.PolynomialFixing(0.3, 1.0, 0, 10, power=0), ValueError, "power must be > 0"),
    (lambda: tfmot_wfn.PolynomialFixing(0.3, 1.0, 0, 10, frequency=0), ValueError, "frequency"),
])
def test_bad_schedules_are_refused(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize("distance, error", [
    (0.0, ValueError), (-0.1, ValueError), (1.0, ValueError), (1.5, ValueError),
    (math.nan, ValueError), (math.inf, ValueError), ("0.1", TypeError), (None, TypeError),
])
def test_bad_distance_is_refused(distance, error):
    model = kh.dense_model()
    match = (r"distance must be in \(0.0, 1.0\)" if error is ValueError
             else "distance must be a number")
    refused(error, match, lambda: tfmot_wfn.fix_weights(model, distance=distance), model)


@pytest.mark.parametrize("kwargs, match", [
    (dict(regularization=-0.1), "regularization must be in"),
    (dict(temperature=0.0), "temperature must be in"),
    (dict(zero_distance=0.0), "zero_distance must be in"),
])
def test_bad_regularizer_settings_are_refused(kwargs, match):
    model = kh.dense_model()
    refused(ValueError, match, lambda: tfmot_wfn.fix_weights(model, **kwargs), model)


@pytest.mark.parametrize("fraction, distance, error, match", [
    (0.0, 0.05, ValueError, r"fraction must be in \(0.0, 1.0\]"),
    (1.5, 0.05, ValueError, r"fraction must be in"),
    (0.5, 0.0, ValueError, "distance must be > 0"),
    (0.5, math.nan, ValueError, "distance must be > 0"),
    ("0.5", 0.05, TypeError, "fraction must be a number"),
    (0.5, None, TypeError, "distance must be a number"),
])
def test_bad_stage_arguments_are_refused(fraction, distance, error, match):
    fixed = tfmot_wfn.fix_weights(kh.dense_model())
    state = kh.network_state(fixed)
    refused(error, match, lambda: run_fixing_stage(fixed, fraction, distance))
    kh.assert_states_equal(kh.network_state(fixed), state)


def test_epoch_schedule_with_unknown_epoch_length_is_refused():
    import tensorflow as tf

    fixed = _fixed_dense(tfmot_wfn.StagedFixing())
    x, y = kh.classification_data(n=16)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4).repeat()
    state = kh.network_state(fixed)
    # tf_keras refuses an infinite dataset without steps_per_epoch itself, earlier.
    match = ("infinite dataset, you must specify the number of steps" if IS_LEGACY_KERAS
             else "steps per epoch is unknown.*steps_per_stage")
    with pytest.raises(ValueError, match=match):
        fixed.fit(dataset, epochs=1, verbose=0, callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0)])
    kh.assert_states_equal(kh.network_state(fixed), state)


# ----------------------------------------------------------------- training use
@pytest.mark.parametrize("mode", sorted(kh.RUN_MODES))
def test_missing_update_fixing_step_is_refused(mode):
    """Graph and eager: the wrapper's Assert op on its step fails. XLA drops Assert ops:
    the same check runs on the host while fit traces its train step."""
    fixed = tfmot_wfn.fix_weights(kh.dense_model(batchnorm=True))
    fixed.compile(optimizer="adam", **kh.RUN_MODES[mode],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = kh.classification_data(n=16)
    state, weights = kh.network_state(fixed), fixed.get_weights()
    missing = r"without the tfmot_wfn.UpdateFixingStep\(\) callback"
    with pytest.raises(tf.errors.InvalidArgumentError, match=missing):
        fixed.fit(x, y, epochs=1, verbose=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="on_train_batch_begin"):
        fixed(x, training=True)  # a custom training loop without the callback
    # Nothing trained: wrapper state, weights and BatchNorm statistics as before.
    kh.assert_states_equal(kh.network_state(fixed), state)
    for before, after in zip(weights, fixed.get_weights()):
        np.testing.assert_array_equal(before, after)
    fixed.predict(x, verbose=0)  # inference needs no callback
    fixed.evaluate(x, y, verbose=0)
    if mode == "xla":  # fit's first trace failed: the message says to compile again
        with pytest.raises(tf.errors.InvalidArgumentError, match="compile the model again"):
            fixed.fit(x, y, epochs=1, verbose=0)
        fixed.compile(optimizer="adam", jit_compile=True,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # With the callback the model trains and runs the first stage.
    update = tfmot_wfn.UpdateFixingStep(verbose=0)
    fixed.fit(x, y, epochs=1, verbose=0, callbacks=[update])
    n = kh.flat_masks(fixed).size
    assert [h.fraction for h in update.history] == [0.3]
    assert int(kh.flat_masks(fixed).sum()) == update.history[0].fixed == quota_for(n, 0.3)
    assert all(int(w.fixing_step.numpy()) == 1 for w in wrappers_of(fixed))


def test_plain_model_trained_with_update_fixing_step_is_refused():
    model = kh.compile_classifier(kh.dense_model(), from_logits=True)
    with pytest.raises(ValueError, match="found no WeightFixingWrapper.*fix_weights"):
        model.fit(callbacks=[tfmot_wfn.UpdateFixingStep()], epochs=1, **_fit_args())


def test_wrappers_with_different_settings_are_refused():
    model = Sub(distances=(0.015, 0.03))
    model(kh.classification_data(n=4)[0])
    kh.compile_classifier(model, from_logits=True)
    state = kh.network_state(model)
    with pytest.raises(ValueError, match="'fix_d1' and 'fix_d2' have different fixing settings"):
        model.fit(callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0)], epochs=1, **_fit_args())
    kh.assert_states_equal(kh.network_state(model), state)


def test_workers_holding_different_states_are_refused():
    """The cross-worker digest check with a stand-in strategy. The real two-process run is
    test_multi_worker_with_different_weights_on_each_worker_is_refused in test_distributed.py."""
    from tfmot_wfn.keras.fixing_callbacks import check_workers_agree

    class TwoWorkers:
        num_replicas_in_sync = 2

        class extended:  # noqa: N801 - mimics tf.distribute's attribute
            worker_devices = ("/job:worker/task:0/device:CPU:0",)

        def __init__(self, offset):
            self.offset = offset

        def experimental_distribute_values_from_function(self, fn):
            return fn(None)

        def gather(self, value, axis=0):
            mine = float(np.asarray(value)[0])
            return np.array([mine, mine + self.offset])

    class Model:
        def __init__(self, strategy):
            self.distribute_strategy = strategy

    fixed = tfmot_wfn.fix_weights(kh.dense_model())
    wrappers = wrappers_of(fixed)
    check_workers_agree(Model(TwoWorkers(0.0)), wrappers, "now")  # same digest: fine
    refused(RuntimeError, "workers hold different weights or fixing states now.*same seed",
            lambda: check_workers_agree(Model(TwoWorkers(1.0)), wrappers, "now"))


def test_palette_larger_than_its_capacity_is_refused_and_writes_nothing():
    fixed = tfmot_wfn.fix_weights(kh.dense_model(seed=4), palette_capacity=2)
    state = kh.network_state(fixed)
    refused(ValueError, r"more than palette_capacity=2.*larger distance",
            lambda: run_fixing_stage(fixed, 1.0, 0.01))
    kh.assert_states_equal(kh.network_state(fixed), state)


# ---------------------------------------------------------------- wrong types
def _model():
    return kh.dense_model()


@pytest.mark.parametrize("call, error, match", [
    (lambda m: tfmot_wfn.fix_weights(42), TypeError, "expects a keras layer.*got int"),
    (lambda m: tfmot_wfn.fix_weights("model"), TypeError, "got str"),
    (lambda m: tfmot_wfn.fix_weights(np.zeros(3)), TypeError,
     "fix_weights expects a keras layer.*got ndarray"),
    (lambda m: tfmot_wfn.fix_weights([L.Dense(2), "dense"]), TypeError,
     "list containing str; a list must hold keras layers only"),
    (lambda m: tfmot_wfn.fix_weights([m]), TypeError, "list containing Sequential"),
    (lambda m: tfmot_wfn.fix_weights([L.Dense(2), m]), TypeError,
     "list containing Sequential; a list must hold keras layers only"),
    (lambda m: tfmot_wfn.fix_weights(m, fix_biases="no"), TypeError,
     "fix_biases must be True or False"),
    (lambda m: tfmot_wfn.fix_weights(m, fix_batchnorm=1), TypeError, "fix_batchnorm must be"),
    (lambda m: tfmot_wfn.fix_weights(m, preserve_sparsity="yes"), TypeError,
     "preserve_sparsity must be True or False"),
    (lambda m: tfmot_wfn.fix_weights(m, regularization="0.4"), TypeError,
     "regularization must be a number"),
    (lambda m: tfmot_wfn.fix_weights(m, fixing_schedule="staged"), TypeError,
     "fixing_schedule must be a tfmot_wfn FixingSchedule"),
    (lambda m: tfmot_wfn.fix_weights(m, fixing_schedule=[0.5, 1.0]), TypeError,
     "fixing_schedule must be"),
    (lambda m: tfmot_wfn.fix_weights(m, palette_capacity=2.5), ValueError,
     "palette_capacity must be a positive integer"),
    (lambda m: tfmot_wfn.fix_weights(m, palette_capacity=0), ValueError,
     "palette_capacity must be a positive integer"),
    (lambda m: tfmot_wfn.fix_weights(m, palette_capacity=True), ValueError,
     "palette_capacity must be a positive integer"),
    (lambda m: tfmot_wfn.fix_weights(m, palette_size=10), TypeError, "unexpected keyword"),
    (lambda m: Wrapper(m), TypeError, "wraps single layers"),
    (lambda m: Wrapper("dense"), TypeError, "wraps a keras.layers.Layer"),
    (lambda m: tfmot_wfn.UpdateFixingStep(verbose="x"), TypeError, "verbose must be 0 or 1"),
    (lambda m: tfmot_wfn.UpdateFixingStep(check_finite="yes"), TypeError,
     "check_finite must be True or False"),
    (lambda m: tfmot_wfn.FixingSummaries(log_dir=3), TypeError, "log_dir must be a path"),
    (lambda m: tfmot_wfn.strip_fixing(42), TypeError, "strip_fixing expects a keras Model or layer"),
    (lambda m: tfmot_wfn.strip_fixing("model"), TypeError, "expects a keras Model or layer"),
    (lambda m: tfmot_wfn.strip_fixing(m), ValueError, "has no WeightFixingWrapper"),
    (lambda m: tfmot_wfn.StagedFixing(fractions="0.5"), TypeError,
     "fractions must be a sequence of numbers"),
    (lambda m: tfmot_wfn.StagedFixing(fractions=0.5), TypeError, "fractions must be a sequence"),
    (lambda m: tfmot_wfn.StagedFixing(fractions=(0.5, "1")), TypeError,
     "every fraction must be a number"),
    (lambda m: tfmot_wfn.StagedFixing(steps_per_stage=2.5), TypeError,
     "steps_per_stage must be an integer"),
    (lambda m: tfmot_wfn.PolynomialFixing("0.3", 1.0, 0, 10), TypeError,
     "initial_fraction must be a number"),
    (lambda m: tfmot_wfn.PolynomialFixing(0.3, 1.0, 0, 10, frequency=1.5), TypeError,
     "frequency must be an integer"),
])
def test_wrong_argument_types_are_refused(call, error, match):
    model = _model()
    refused(error, match, lambda: call(model), model)


# ---------------------------------------------------------- mixed precision
def _is_exact(values, dtype) -> bool:
    values = np.asarray(values, np.float32)
    return bool(np.all(values.astype(dtype).astype(np.float32) == values))


def test_a_model_fixed_under_mixed_float16_exports_to_tflite(policy):
    # The converter cannot lower float16 convolutions / matmuls to built-in ops: the export
    # computes in float32 (the fixed values are exact in float16, so the weights are the same).
    from tfmot_wfn import lite

    policy("mixed_float16")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 2)), L.Conv2D(4, 3), L.ReLU(), L.Flatten(),
                              L.Dense(3), L.Activation("linear", dtype="float32")])
    fixed = tfmot_wfn.fix_weights(model)
    run_fixing_stage(fixed, 1.0, 0.05)
    x = np.random.default_rng(0).random((4, 6, 6, 2), dtype=np.float32)
    expected = np.asarray(fixed(x))
    for mode in ("palette", "dense"):
        data, _ = lite.export_tflite_bytes(fixed, mode=mode)
        got = lite.run_interpreter(lite.load_interpreter(data), x)
        np.testing.assert_allclose(got, expected, rtol=2e-2, atol=2e-2)  # float16 activations
    assert keras.mixed_precision.global_policy().name == "mixed_float16"
    assert all(layer.compute_dtype == "float16" for layer in fixed.layers[:-1])


def test_mixed_float16_model_trains_with_exact_float16_palette(policy):
    policy("mixed_float16")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8,)), L.Dense(32, use_bias=False, name="probe"), L.BatchNormalization(),
        L.ReLU(), L.Dense(16, name="hidden"), L.ReLU(), L.Dense(3, dtype="float32", name="out")])
    fixed = tfmot_wfn.fix_weights(
        model, fixing_schedule=tfmot_wfn.StagedFixing((0.5, 0.8, 1.0), steps_per_stage=2))
    kh.compile_classifier(fixed, keras.optimizers.Adam(1e-2), from_logits=True)
    assert type(fixed.optimizer).__name__.startswith("LossScaleOptimizer")  # tf_keras: ...V3
    fixed.fit(callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0)], epochs=2, **_fit_args(n=64))
    assert tfmot_wfn.fixed_fraction(fixed) == 1.0
    palette = tfmot_wfn.palette(fixed)
    assert palette.size > 1 and _is_exact(palette, np.float16)
    # The wrappers compute like the layers they wrap (the output layer stays float32).
    assert fixed.get_layer("out").compute_dtype == "float32"  # an output layer: its name kept
    assert fixed.get_layer("fix_probe").compute_dtype == "float16"
    assert fixed.predict(kh.classification_data(n=8)[0], verbose=0).dtype == np.float32
    for w in wrappers_of(fixed):
        for values in w.effective_numpy():
            assert np.isin(values, palette).all()
    # The float16 kernel the layer actually multiplies with: identity @ kernel, in float16.
    probe = fixed.get_layer("fix_probe")
    used = np.asarray(probe(np.eye(8, dtype="float16")))
    assert used.dtype == np.float16
    np.testing.assert_array_equal(used.astype(np.float32), probe.effective_numpy()[0])
    assert np.isfinite(fixed.predict(kh.classification_data(n=8)[0], verbose=0)).all()
    stripped = tfmot_wfn.strip_fixing(fixed)
    np.testing.assert_array_equal(stripped.get_layer("probe").kernel.numpy(),
                                  probe.effective_numpy()[0])


def test_mixed_precision_batchnorm_gamma_beta_stay_float32(policy):
    """Keras does not autocast BatchNormalization's gamma/beta: their fixed values are read
    in float32 too (not rounded to float16 inside the layer call)."""
    policy("mixed_float16")
    fixed = tfmot_wfn.fix_weights(keras.Sequential([keras.Input((4,)), L.BatchNormalization()]))
    wrapper = wrappers_of(fixed)[0]
    value = np.float32(1 + 2.0**-12)  # not a float16
    wrapper.masks[0].assign(np.ones(4, bool))
    wrapper.fixed_values[0].assign(np.full(4, value))
    seen = []
    effective = wrapper.effective_weight
    wrapper.effective_weight = lambda i: seen.append(effective(i)) or seen[-1]
    fixed(np.ones((2, 4), "float16"), training=False)
    gamma = seen[0]
    assert gamma.dtype == "float32" and np.all(gamma.numpy() == value)


def _dense_at(value, policy_name, policy):
    policy(policy_name)
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, use_bias=False, name="d")])
    model.layers[0].kernel.assign(np.full((4, 3), value, "float32"))
    fixed = tfmot_wfn.fix_weights(model)
    wrapper = wrappers_of(fixed)[0]
    palette = np.zeros(wrapper.palette_capacity, "float32")
    palette[0] = value
    wrapper.palette.assign(palette)  # an earlier stage's centre, offered again
    wrapper.palette_size.assign(1)
    return fixed, wrapper


def test_mixed_precision_centre_not_representable_is_rounded(policy):
    value = np.float32(1 + 2.0**-12)  # a float32 value between two float16 values
    assert not _is_exact([value], np.float16)
    fixed, wrapper = _dense_at(value, "float32", policy)  # float32: kept as it is
    run_fixing_stage(fixed, 1.0, 0.015)
    np.testing.assert_array_equal(tfmot_wfn.palette(fixed), [value])
    fixed, wrapper = _dense_at(value, "mixed_float16", policy)  # float16: rounded to nearest
    run_fixing_stage(fixed, 1.0, 0.015)
    np.testing.assert_array_equal(tfmot_wfn.palette(fixed), [1.0])
    np.testing.assert_array_equal(kh.wrapper_palette(wrapper), [1.0])
    assert (wrapper.effective_numpy()[0] == 1.0).all()


def test_mixed_bfloat16_palette_is_exact_in_bfloat16(policy):
    import tensorflow as tf

    bfloat16 = tf.bfloat16.as_numpy_dtype
    policy("mixed_bfloat16")
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((8,)), L.Dense(64), L.Dense(32)])
    fixed = tfmot_wfn.fix_weights(model)
    for fraction, distance in ((0.5, 0.15), (0.9, 0.05), (1.0, 0.0075)):
        run_fixing_stage(fixed, fraction, distance)
    assert _is_exact(tfmot_wfn.palette(fixed), bfloat16)
    assert _is_exact(kh.flat_values(fixed), bfloat16)


def test_mixed_precision_previously_fixed_value_not_representable_is_refused(policy):
    value = np.float32(1 + 2.0**-12)
    fixed, wrapper = _dense_at(value, "mixed_float16", policy)
    mask = np.zeros((4, 3), bool)
    mask[0, 0] = True
    wrapper.masks[0].assign(mask)  # fixed before, e.g. under the float32 policy
    wrapper.fixed_values[0].assign(np.where(mask, value, 0).astype("float32"))
    state = kh.network_state(fixed)
    refused(FloatingPointError, r"Fixed value 1.000244140625 of weight '.*kernel' in layer 'd' "
            r"is not exactly representable in float16.*same policy",
            lambda: run_fixing_stage(fixed, 1.0, 0.015))
    kh.assert_states_equal(kh.network_state(fixed), state)


def test_mixed_precision_weight_beyond_float16_range_is_refused(policy):
    policy("mixed_float16")
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, name="huge")])
    model.layers[0].kernel.assign(np.full((4, 3), 1e5, "float32"))
    refused(ValueError, r"'huge' holds 100000, beyond the largest float16 value 65504.*float32",
            lambda: tfmot_wfn.fix_weights(model), model)
    policy("float32")
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, name="huge")])
    model.layers[0].kernel.assign(np.full((4, 3), 1e5, "float32"))
    tfmot_wfn.fix_weights(model)  # fine in float32


# --------------------------------------------------------------- safe loading
def test_saved_models_load_with_safe_mode(tmp_path):
    fixed = _fixed_dense(tfmot_wfn.StagedFixing((0.5, 0.8, 1.0), steps_per_stage=4))
    fixed.fit(callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0)], epochs=1, **_fit_args())
    assert 0 < tfmot_wfn.fixed_fraction(fixed) < 1  # mid-schedule
    x = kh.classification_data(n=8)[0]
    path = os.path.join(tmp_path, "mid.keras")
    fixed.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    kh.assert_states_equal(kh.network_state(loaded), kh.network_state(fixed))
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), fixed.predict(x, verbose=0))
    stripped = tfmot_wfn.strip_fixing(fixed)
    path = os.path.join(tmp_path, "stripped.keras")
    stripped.save(path)
    plain = keras.models.load_model(path, safe_mode=True)
    assert not wrappers_of(plain)
    for a, b in zip(plain.get_weights(), stripped.get_weights()):
        np.testing.assert_array_equal(a, b)
