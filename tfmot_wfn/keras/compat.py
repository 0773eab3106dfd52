"""The one place where the Keras implementation is chosen, and where private Keras/TF APIs are used.

Keras 3 (``import keras``) is the default. Setting ``TF_USE_LEGACY_KERAS=1``
before import selects legacy Keras 2 (``tf_keras``), the convention TensorFlow
and tfmot follow. Every other module imports ``keras`` from here.

Every private Keras or TensorFlow attribute the package relies on is read in this
module only, each in a small function whose docstring says which attribute and
why no public API does (``Private:`` lines). tests/test_compat.py checks each one
against the installed Keras/TensorFlow, so a release that removes or changes one
fails there by name.
"""

from __future__ import annotations

import os
from typing import Callable

import tensorflow as tf  # noqa: F401  (TensorFlow is the only supported backend)
from tensorflow.python.ops import resource_variable_ops
from tensorflow.python.ops import control_flow_util  # private: see in_xla_compilation


def _legacy_requested() -> bool:
    """TensorFlow's own reading of ``TF_USE_LEGACY_KERAS`` (tensorflow/__init__.py): any
    other value leaves ``tf.keras`` at Keras 3, and so must it leave us."""
    return os.environ.get("TF_USE_LEGACY_KERAS", None) in ("true", "True", "1")


IS_LEGACY_KERAS = _legacy_requested()

if IS_LEGACY_KERAS:  # pragma: no cover - exercised by the legacy CI job
    import tf_keras as keras  # type: ignore
else:
    import keras  # type: ignore

    if keras.backend.backend() != "tensorflow":
        raise ImportError(
            "tfmot_wfn needs the TensorFlow backend of Keras, but KERAS_BACKEND is "
            f"{keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow before importing."
        )


def variable_path(variable) -> str:
    """A variable's full name: Keras 3 ``Variable.path``; tf_keras ``name`` without ``:0``."""
    path = getattr(variable, "path", None)
    if isinstance(path, str) and path:
        return path
    name = str(variable.name)
    return name[:-2] if name.endswith(":0") else name


def build_from_config(layer, build_config) -> None:
    """``layer.build_from_config``; under tf_keras inside the layer's name scope, so that
    its variables are named ``layer/kernel:0`` as when Keras builds it, not ``kernel:0``.

    Private (tf_keras only): ``layer._name_scope()``, the scope ``__call__`` builds in (no
    public name); ``_build_input_shape``, which ``__call__`` records and
    ``get_build_config`` reads; MultiHeadAttention's ``_query_shape``/``_value_shape``/
    ``_key_shape``, the only record of the shapes its config was built from.
    """
    if not IS_LEGACY_KERAS:
        layer.build_from_config(build_config)
        return
    with tf.name_scope(layer._name_scope()):  # pragma: no cover - legacy CI job
        layer.build_from_config(build_config)
    input_shape = (build_config or {}).get("input_shape")
    if input_shape is not None:  # pragma: no cover - legacy CI job
        # What tf_keras's __call__ records around build() (a custom build() may not):
        # without them the layer is rebuilt, or get_build_config() returns None.
        if getattr(layer, "_build_input_shape", None) is None:
            layer._build_input_shape = tf.TensorShape(input_shape) \
                if not isinstance(input_shape, (dict, list)) else input_shape
        layer.built = True
    if isinstance(layer, keras.layers.MultiHeadAttention) and not layer.weights \
            and getattr(layer, "_query_shape", None) is not None:  # pragma: no cover
        # tf_keras's MultiHeadAttention makes its dense sublayers from the shapes
        # in its config but creates their weights at its first call only.
        def zeros(shape):
            dims = [1 if d is None else int(d) for d in shape.as_list()]
            return tf.zeros(dims, layer.compute_dtype)

        layer(zeros(layer._query_shape), zeros(layer._value_shape), key=zeros(layer._key_shape))


def short_name(variable) -> str:
    """A variable's own name (``"kernel"``): Keras 3 ``name``; tf_keras ``"dense/kernel:0"``."""
    return str(variable.name).split("/")[-1].split(":")[0]


def callback_params(callback) -> dict:
    """``callback.params`` or ``{}`` (tf_keras sets the attribute only inside ``fit``)."""
    return getattr(callback, "params", None) or {}


def _is_optimizer_v2(optimizer) -> bool:
    """A tf_keras legacy optimizer (``tf_keras.optimizers.legacy.*``, OptimizerV2): no build
    flag, ``variables`` is a method, and slots are made by the private ``_create_all_weights``."""
    return IS_LEGACY_KERAS and callable(getattr(optimizer, "variables", None)) \
        and hasattr(optimizer, "_create_all_weights")


def optimizer_variables(optimizer) -> list:
    """The optimizer's variables (a property in Keras 3 and tf_keras's optimizers, a method
    of tf_keras's legacy OptimizerV2)."""
    variables = optimizer.variables
    return list(variables() if callable(variables) else variables)


def optimizer_built(optimizer) -> bool:
    """Whether the optimizer made its slot variables (Keras 3: ``built``; tf_keras: only the
    private ``_built``, read here because tf_keras has no public flag; a legacy OptimizerV2:
    whether it holds more than its step counter)."""
    if _is_optimizer_v2(optimizer):  # pragma: no cover - legacy CI job
        return len(optimizer_variables(optimizer)) > 1
    return bool(getattr(optimizer, "built", False) or getattr(optimizer, "_built", False))


def build_optimizer(optimizer, variables) -> None:
    """Make the optimizer's state for `variables` (slots, step counter) without a step:
    ``build`` in Keras 3 and tf_keras, the private ``_create_all_weights`` of a legacy
    OptimizerV2 (it has no public one)."""
    if _is_optimizer_v2(optimizer):  # pragma: no cover - legacy CI job
        optimizer._create_all_weights(list(variables))
    else:
        optimizer.build(list(variables))


def seed_generator_states(model) -> list:
    """The state variables of the Keras 3 ``SeedGenerator``s in `model` (Dropout, random
    augmentation layers): ``model.variables`` lists them, named ``seed_generator_state``
    (Keras's own name; there is no public list). Empty under tf_keras, whose random layers
    draw from TensorFlow's seeded ops."""
    if IS_LEGACY_KERAS:  # pragma: no cover - legacy CI job
        return []
    return [v for v in model.variables if v.name == "seed_generator_state"]


def steps_per_execution(model) -> int:
    """The model's ``steps_per_execution`` as an int (tf_keras keeps a variable; 1 if unset)."""
    k = getattr(model, "steps_per_execution", None)
    if k is None:
        return 1
    if hasattr(k, "numpy"):
        k = k.numpy()
    return int(k)


def in_xla_compilation() -> bool:
    """Whether the graph being built now will be compiled by XLA (``jit_compile=True``).

    Private API: TensorFlow has no public way to ask; XLA drops Assert ops, so the
    wrapper checks on the host instead (``control_flow_util``, tested in test_compat).
    """
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


def variable_dtype(variable):
    """The dtype a variable stores (a ``tf.DType``).

    tf_keras's ``AutoCastVariable.dtype`` is the compute dtype inside a layer call
    under mixed precision (float16), ``true_dtype`` the stored one (float32).
    """
    return tf.dtypes.as_dtype(getattr(variable, "true_dtype", None) or variable.dtype)


def numpy_dtype(variable):
    """The numpy dtype a variable stores (Keras 3 gives a string, tf_keras a ``tf.DType``)."""
    return variable_dtype(variable).as_numpy_dtype


def autocasts(variable) -> bool:
    """Whether a layer reads `variable` cast to its compute dtype under mixed precision.

    Keras 3 marks every variable (``_autocast``; BatchNormalization's gamma/beta
    opt out). tf_keras wraps the variables that autocast in an ``AutoCastVariable``
    when a mixed precision policy is active, and leaves the others plain.

    Private (Keras 3): ``Variable._autocast``, the flag ``add_weight(autocast=...)``
    sets; Keras has no public getter.
    """
    if IS_LEGACY_KERAS:  # pragma: no cover - legacy CI job
        return type(variable).__name__ == "AutoCastVariable" or hasattr(variable, "true_dtype")
    return bool(getattr(variable, "_autocast", True))


def _attribute_owners(layer):
    """`layer` and every layer nested in it (MultiHeadAttention's dense layers).

    Private: ``Layer._flatten_layers``, the only way to list the layers tracked inside
    a layer that is not a model (no public ``submodules`` on Keras 3 layers).
    """
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is None:
        return [layer]
    return list(flatten(include_self=True, recursive=True))


class SubstitutedWeights:
    """tf_keras: the layer's weight attributes hold given tensors for the duration of a call.

    Keras 3 runs a layer on other values of its variables with ``StatelessScope``;
    tf_keras has no such scope. Like tfmot's ``ClusterWeights``, this sets each
    attribute of `layer` (and of its sublayers) that holds one of the variables of
    `replacements` (``{id(variable): (variable, tensor)}``) to the tensor, bypassing
    the layer's attribute tracking, and puts the variables back on exit, even on
    an error, so nothing outside the call ever sees a tensor (weights order,
    saving, cloning and stripping are unchanged). Gradients flow through the
    tensors to the variables they were computed from; other state updates
    (BatchNormalization's moving statistics) go to the real variables.

    Private: relies on tf_keras layers reading their weights through their
    attributes in ``call`` and on ``object.__setattr__`` skipping attribute tracking.

    Raises:
      ValueError: a variable of `replacements` is not an attribute of the layer or
        of its sublayers (a custom `FixableLayer` keeping its weights in a list or
        dict), so the layer could not be made to compute with the fixed values.
    """

    def __init__(self, layer, replacements):
        self.layer = layer
        self.replacements = replacements
        self._swapped = []

    def __enter__(self):
        found = set()
        try:
            for owner in _attribute_owners(self.layer):
                for name, value in list(vars(owner).items()):
                    entry = self.replacements.get(id(value))
                    if entry is None or entry[0] is not value:
                        continue
                    self._swapped.append((owner, name, value))
                    object.__setattr__(owner, name, entry[1])
                    found.add(id(value))
        except BaseException:
            self._restore()
            raise
        missing = [v for key, (v, _) in self.replacements.items() if key not in found]
        if missing:
            self._restore()
            raise ValueError(
                f"Layer {self.layer.name!r} ({type(self.layer).__name__}) does not hold the "
                f"fixable weight {variable_path(missing[0])!r} as an attribute of itself or of "
                "a sublayer, so under tf_keras (TF_USE_LEGACY_KERAS=1) the wrapper cannot make "
                "it compute with the fixed values. Keep each weight returned by "
                "get_fixable_weights() in its own attribute (self.w = self.add_weight(...)), "
                "not in a list or dict.")
        return self

    def _restore(self):
        while self._swapped:
            owner, name, value = self._swapped.pop()
            object.__setattr__(owner, name, value)

    def __exit__(self, *exc):
        self._restore()
        return False


def sublayers(layer, include_self: bool = True) -> list:
    """`layer` and every layer nested in it, at any depth (models, wrappers, attention)."""
    owners = _attribute_owners(layer)
    return owners if include_self else [x for x in owners if x is not layer]


class RecordedCalls:
    """Records every call of the given layers: ``(order, layer, args, kwargs, outputs)``.

    For counting work (`tfmot_wfn.hardware_cost`): each layer's ``call`` is replaced
    on the instance (bypassing attribute tracking) for the duration of the block and
    put back on exit, even on an error. Calls are listed in the order they started.
    """

    def __init__(self, layers):
        unique = {id(layer): layer for layer in layers}
        self.layers = list(unique.values())
        self.calls = []
        self._patched = []
        self._started = 0

    def _recorder(self, layer, call):
        def recording_call(*args, **kwargs):
            order = self._started
            self._started += 1
            outputs = call(*args, **kwargs)
            self.calls.append((order, layer, args, kwargs, outputs))
            return outputs
        return recording_call

    def __enter__(self):
        try:
            for layer in self.layers:
                had_own = "call" in vars(layer)
                self._patched.append((layer, had_own, vars(layer).get("call")))
                object.__setattr__(layer, "call", self._recorder(layer, layer.call))
        except BaseException:
            self._restore()
            raise
        return self

    def _restore(self):
        while self._patched:
            layer, had_own, own = self._patched.pop()
            if had_own:
                object.__setattr__(layer, "call", own)
            else:
                object.__delattr__(layer, "call")

    def __exit__(self, *exc):
        self._restore()
        self.calls.sort(key=lambda c: c[0])
        return False



# ----------------------------------------------------------------------------
# Models: which kind, and the graph of a Functional model.
# ----------------------------------------------------------------------------
def is_functional(model) -> bool:
    """Whether `model` is a Functional model (built from ``keras.Input``; not Sequential in
    Keras 3, Sequential included in tf_keras).

    Private: Keras 3's ``keras.src.models.functional.Functional`` class and tf_keras's
    ``Model._is_graph_network`` flag; neither Keras exports a public test.
    """
    functional = getattr(getattr(keras, "src", None), "models", None)
    cls = getattr(getattr(functional, "functional", None), "Functional", None) if functional else None
    if cls is not None:
        return isinstance(model, cls)
    return bool(getattr(model, "_is_graph_network", False))


def producing_layer(tensor):
    """The layer whose call produced the symbolic Keras `tensor` (an InputLayer for an input).

    Private: ``KerasTensor._keras_history`` (``.operation`` in Keras 3, ``.layer`` in
    tf_keras); Keras has no public tensor -> layer map.
    """
    history = tensor._keras_history
    return getattr(history, "operation", None) or history.layer


def inbound_nodes(layer) -> list:
    """The nodes of `layer` in the model graphs it was called in (one per call).

    Private: ``Layer._inbound_nodes``; the public ``layer.input`` raises for a layer
    called more than once instead of telling how often.
    """
    return list(layer._inbound_nodes)


def outbound_nodes(layer) -> list:
    """The nodes of the layers that consume an output of `layer` (one per consumer call).

    Private: ``Layer._outbound_nodes``; Keras has no public list of a layer's consumers.
    """
    return list(layer._outbound_nodes)


def node_input_tensors(node) -> list:
    """The symbolic input tensors of a graph node, as a flat list (tf_keras: maybe one tensor).

    Private: ``Node.input_tensors``; nodes are not public API in either Keras.
    """
    return tf.nest.flatten(node.input_tensors)


def sequential_input_layer(model):
    """The ``InputLayer`` a Sequential model was started with, or None.

    Private: Keras 3's ``Sequential._layers`` and tf_keras's ``_self_tracked_trackables``,
    the layer lists that include the InputLayer (``model.layers`` leaves it out).
    """
    own = getattr(model, "_layers", None)
    own = own if own is not None else getattr(model, "_self_tracked_trackables", [])
    first = own[0] if own else None
    return first if isinstance(first, keras.layers.InputLayer) else None


def input_layer_spec(input_layer) -> tuple:
    """``(batch_shape, dtype)`` of an ``InputLayer``, to create the same ``keras.Input``.

    Private (tf_keras): ``_batch_input_shape`` (Keras 3 has the public ``batch_shape``);
    ``_dtype``, the dtype the InputLayer was given, where Keras 3 has one.
    """
    batch_shape = getattr(input_layer, "batch_shape", None) or input_layer._batch_input_shape
    return batch_shape, getattr(input_layer, "_dtype", None) or input_layer.dtype


def legacy_loss_tracker(model):
    """tf_keras: the ``Mean`` metric behind the logged ``loss`` of a compiled model; else None.

    Private (tf_keras): ``model.compiled_loss._total_loss_mean``; tf_keras logs that
    metric, not what ``compute_loss`` returns, and has no public handle on it.
    """
    if not IS_LEGACY_KERAS:
        return None
    return getattr(getattr(model, "compiled_loss", None), "_total_loss_mean", None)


# ----------------------------------------------------------------------------
# Variables
# ----------------------------------------------------------------------------
def _plain_resource_variable(variable):
    """The plain ``tf.Variable`` that holds `variable`'s value, or None (e.g. mirrored).

    Private: Keras 3's ``Variable._value`` (its backing ``tf.Variable``) and TF's
    ``resource_variable_ops.ResourceVariable`` class (the exact type of a plain,
    undistributed ``tf.Variable``: ``tf.Variable`` itself is the common base).
    """
    inner = getattr(variable, "_value", variable)
    return inner if type(inner) is resource_variable_ops.ResourceVariable else None


def assign_scalar(variables, value: int) -> None:
    """``v.assign(value)`` for each variable, by the raw op where it is a plain resource.

    Runs at every batch: a Keras ``assign`` costs ~0.1 ms (a compiled function call
    as much), as much as a small model's whole training step; the raw op ~10 us.
    Distributed (mirrored) variables keep their own ``assign``.
    """
    tensors = {}  # one constant per dtype
    for v in variables:
        inner = _plain_resource_variable(v)
        if inner is not None:
            tensor = tensors.get(inner.dtype)
            if tensor is None:
                tensor = tensors[inner.dtype] = tf.constant(value, inner.dtype)
            resource_variable_ops.gen_resource_variable_ops.assign_variable_op(inner.handle, tensor)
        else:
            v.assign(value)


#: `scalar_assigner` compiles one function for this many plain variables or more, about
#: where one call of it gets cheaper than one raw assignment per variable.
COMPILED_ASSIGN_FROM = 32


def scalar_assigner(variables) -> Callable[[int], None]:
    """A function ``assign(value)`` that does `assign_scalar(variables, value)`.

    With `COMPILED_ASSIGN_FROM` plain variables or more (a network of a hundred wrapped
    layers has as many step variables) one ``tf.function``, traced here, assigns them all
    in a single call instead of one eager op each; fewer keep the raw ops. Distributed
    (mirrored) variables keep their own ``assign`` either way.
    """
    variables = list(variables)
    inners = [_plain_resource_variable(v) for v in variables]
    plain = [inner for inner in inners if inner is not None]
    if len(plain) < COMPILED_ASSIGN_FROM:
        return lambda value: assign_scalar(variables, value)
    others = [v for v, inner in zip(variables, inners) if inner is None]

    def assign_all(value):
        for inner in plain:
            inner.assign(tf.cast(value, inner.dtype))

    # Traced here, once; calling the concrete function skips the per-call signature lookup.
    assign_plain = tf.function(assign_all, autograph=False).get_concrete_function(
        tf.TensorSpec([], tf.int64))

    def assign(value: int) -> None:
        assign_plain(tf.constant(value, tf.int64))
        for v in others:
            v.assign(value)

    return assign


def own_variables(layer) -> list:
    """The variables a layer writes as its own in .keras / .weights.h5 files, in file order.

    Reason: Keras's `save_own_variables` writes ``_trainable_variables +
    _non_trainable_variables`` (tf_keras: ``_trainable_weights + _non_trainable_weights``)
    by position; `WeightFixingWrapper.load_own_variables` reads files of an older layout
    that had more of them.
    """
    if IS_LEGACY_KERAS:  # pragma: no cover - legacy CI job
        return list(layer._trainable_weights) + list(layer._non_trainable_weights)  # noqa: SLF001
    return list(layer._trainable_variables) + list(layer._non_trainable_variables)  # noqa: SLF001


def summary_metadata(plugin: str, description: str = ""):
    """A ``SummaryMetadata`` proto for a TensorBoard plugin (``"scalars"``, ``"histograms"``).

    Public (``tf.compat.v1.SummaryMetadata``); here so that the summary writers need
    neither the tensorboard package nor ``tensorflow.core``. The plugins' data protos
    hold only a version field, 0: serialised, no bytes.
    """
    metadata = tf.compat.v1.SummaryMetadata()
    metadata.plugin_data.plugin_name = plugin
    metadata.plugin_data.content = b""
    if description:
        metadata.summary_description = description
    return metadata


__all__ = ["COMPILED_ASSIGN_FROM", "IS_LEGACY_KERAS", "RecordedCalls", "SubstitutedWeights",
           "assign_scalar", "autocasts", "own_variables", "scalar_assigner",
           "build_from_config", "callback_params", "inbound_nodes",
           "in_xla_compilation", "input_layer_spec", "is_functional", "keras", "legacy_loss_tracker",
           "node_input_tensors", "numpy_dtype", "outbound_nodes", "producing_layer",
           "sequential_input_layer", "short_name", "steps_per_execution", "sublayers", "summary_metadata",
           "tf", "variable_dtype", "variable_path"]
