"""Copying layers, cloning Sequential/Functional models and walking nested models.

The one implementation of each, used by `fix_weights`/`strip_fixing`,
`freeze_batchnorm` and `fold_batchnorm`:

```python
new = copy_layer(dense)                          # same config, build and weights
plain = clone_model(model, lambda layer: copy_layer(layer))   # nested models cloned too
for layer in walk_layers(model):                 # the layers, nested models opened up
    ...
```
"""

from __future__ import annotations

from typing import Callable, Iterator

from tfmot_wfn.keras.compat import (
    IS_LEGACY_KERAS,
    build_from_config,
    is_functional,
    keras,
    producing_layer,
)


def is_model(layer) -> bool:
    """Whether `layer` is a (nested) Keras model: the layers `clone_model` recurses into."""
    return isinstance(layer, keras.Model)


def is_functional_or_sequential(model) -> bool:
    """Whether Keras can clone `model` layer by layer (not a subclassed model)."""
    return isinstance(model, keras.Sequential) or is_functional(model)


def walk_layers(model, descend: Callable = is_model) -> Iterator:
    """The layers of `model` in ``model.layers`` order, each nested model (each layer
    for which ``descend(layer)``) replaced by its own layers, recursively.

    A wrapper is one layer (its inner layer is not visited).
    """
    for layer in model.layers:
        if descend(layer):
            yield from walk_layers(layer, descend)
        else:
            yield layer


def walk_models(model, descend: Callable = is_model) -> Iterator:
    """`model`, then each model nested in it (each layer for which ``descend(layer)``),
    depth first in ``model.layers`` order."""
    yield model
    for layer in model.layers:
        if descend(layer):
            yield from walk_models(layer, descend)


def rebuilt_layer(layer, config=None):
    """A new layer of `layer`'s class from `config` (default: `layer`'s), built as `layer`
    was (same build config, same variable names under tf_keras), with fresh weights."""
    new = layer.__class__.from_config(layer.get_config() if config is None else config)
    build_config = layer.get_build_config()
    if build_config is not None:
        build_from_config(new, build_config)
    return new


def _shared_as_is(layer) -> bool:
    """Whether `copy_layer` hands `layer` itself to the new model: a Keras 3 operation that
    is not a layer (``h + x`` in a Functional model becomes an ``Add`` op), or a ``Lambda``
    (no state; its config holds Python code, which Keras refuses to rebuild outside
    ``safe_mode=False``, or a function it cannot find by name)."""
    return not isinstance(layer, keras.layers.Layer) or isinstance(layer, keras.layers.Lambda)


def copy_layer(layer, config=None):
    """A new layer with the same config (or `config`), built the same way, holding the same
    weights (a layer without weights is not built: Keras builds it at its first call).
    Stateless operations and ``Lambda`` layers are shared as they are (`_shared_as_is`)."""
    if _shared_as_is(layer):
        return layer
    if not (layer.built and layer.weights):
        return layer.__class__.from_config(layer.get_config() if config is None else config)
    new = rebuilt_layer(layer, config)
    new.set_weights(layer.get_weights())
    return new


def computes_below_float32(model) -> bool:
    """Whether a layer of `model` (nested models opened) computes in a float narrower than
    float32 (a mixed precision policy: ``mixed_float16``, ``mixed_bfloat16``)."""
    def narrow(layer) -> bool:
        dtype = getattr(layer, "compute_dtype", None)
        return dtype in ("float16", "bfloat16")
    return any(narrow(layer) for layer in walk_layers(model))


def float32_model(model):
    """A copy of `model` whose every layer computes in float32 (the same weights: a mixed
    precision policy keeps float32 variables). The TFLite converter cannot lower float16
    convolutions and matmuls to built-in ops."""
    def as_float32(layer):
        if _shared_as_is(layer) or "dtype" not in layer.get_config():
            return copy_layer(layer)
        return copy_layer(layer, dict(layer.get_config(), dtype="float32"))

    return clone_model(model, as_float32)


def clone_model(model, clone_function: Callable):
    """`keras.models.clone_model`, recursing into nested models, keeping input names.

    Each layer that is not a model is replaced by ``clone_function(layer)``; each
    nested model by its clone. Keras names the cloned inputs after their tensors
    ("keras_tensor_7"), not after the original input layers; pass inputs re-created
    from the InputLayer configs so that the clone has the same layer names.
    """

    def visit(layer):
        if is_model(layer):
            return clone_model(layer, clone_function)
        return clone_function(layer)

    if IS_LEGACY_KERAS or isinstance(model, keras.Sequential) \
            or not is_functional_or_sequential(model):
        return keras.models.clone_model(model, clone_function=visit)

    def new_input(tensor):
        return keras.Input(**producing_layer(tensor).get_config())

    inputs = keras.tree.map_structure(new_input, model.input)
    return keras.models.clone_model(model, input_tensors=inputs, clone_function=visit)


__all__ = ["clone_model", "computes_below_float32", "copy_layer", "float32_model",
           "is_functional_or_sequential", "is_model", "rebuilt_layer", "walk_layers", "walk_models"]
