"""The one place where the Keras implementation is chosen.

Keras 3 (``import keras``) is the default. Setting ``TF_USE_LEGACY_KERAS=1``
before import selects legacy Keras 2 (``tf_keras``), the convention TensorFlow
and tfmot follow. Every other module imports ``keras`` from here.
"""

from __future__ import annotations

import os

import tensorflow as tf  # noqa: F401  (TensorFlow is the only supported backend)
from tensorflow.python.ops import control_flow_util  # private: see in_xla_compilation


def _legacy_requested() -> bool:
    return os.environ.get("TF_USE_LEGACY_KERAS", "").strip().lower() in ("1", "true", "yes")


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
    its variables are named ``layer/kernel:0`` as when Keras builds it, not ``kernel:0``."""
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
    """
    if IS_LEGACY_KERAS:  # pragma: no cover - legacy CI job
        return type(variable).__name__ == "AutoCastVariable" or hasattr(variable, "true_dtype")
    return bool(getattr(variable, "_autocast", True))


def _attribute_owners(layer):
    """`layer` and every layer nested in it (MultiHeadAttention's dense layers)."""
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


__all__ = ["IS_LEGACY_KERAS", "SubstitutedWeights", "autocasts", "build_from_config",
           "callback_params", "in_xla_compilation", "keras", "numpy_dtype", "short_name",
           "steps_per_execution", "tf", "variable_dtype", "variable_path"]
