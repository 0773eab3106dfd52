"""`hardware_cost(model)`: what one inference of a Keras model costs in float32, int8 and shift-add form.

```python
cost = tfmot_wfn.hardware_cost(final_model)            # plain, stripped or wrapped model
print(cost)                                             # table per layer + totals
cost.energy_pj["shift_add"] / cost.energy_pj["int8"]    # estimated energy ratio
```

The model runs eagerly on a zero input of batch 1, once to build it and once more
while every layer call is recorded; the MACs of each layer come from the recorded
input/output shapes and its weights (for a model made by `fix_weights`: the effective weights, fixed values
where fixed). The arithmetic lives in `tfmot_wfn.core.hardware_cost`.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from tfmot_wfn.core.energy_table import EnergyTable
from tfmot_wfn.core.hardware_cost import HardwareCost, LayerWork, WeightGroup, estimate
from tfmot_wfn.core.weight_terms import DEFAULT_MAX_TERMS
from tfmot_wfn.keras.compat import RecordedCalls, keras, sublayers
from tfmot_wfn.keras.fixable_layer import layer_classes
from tfmot_wfn.keras.fixing_wrapper import WeightFixingWrapper


CONV = layer_classes("Conv1D", "Conv2D", "Conv3D")
CONV_TRANSPOSE = layer_classes("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
DEPTHWISE = layer_classes("DepthwiseConv1D", "DepthwiseConv2D")
SEPARABLE = layer_classes("SeparableConv1D", "SeparableConv2D")
DENSE = layer_classes("Dense")
EINSUM = layer_classes("EinsumDense")
EMBEDDING = layer_classes("Embedding")
ATTENTION = layer_classes("MultiHeadAttention")
COUNTED = CONV + CONV_TRANSPOSE + DEPTHWISE + SEPARABLE + DENSE + EINSUM + EMBEDDING + ATTENTION
NORMALIZATION = layer_classes("LayerNormalization", "GroupNormalization", "UnitNormalization",
                         "Normalization")
BATCHNORM = layer_classes("BatchNormalization")

REASON_BATCHNORM = ("per-channel scale and shift of the activations (2 operations per value); it "
                    "folds into the preceding convolution for deployment (lite.fold_batchnorm)")
REASON_NORMALIZATION = ("normalizes the activations with statistics computed from them (or given "
                        "preprocessing statistics): elementwise work, not a weight multiply")
REASON_NO_WEIGHTS = "no weights: activation, pooling, reshaping or other elementwise work"
REASON_UNKNOWN = ("has weights, but its work is not one the estimate counts (Conv, Dense, "
                  "EinsumDense, Embedding, MultiHeadAttention)")


def _shape(x) -> Tuple[int, ...]:
    while isinstance(x, (list, tuple, dict)):
        x = list(x.values())[0] if isinstance(x, dict) else x[0]
    return tuple(int(d) for d in x.shape)


def _size(x) -> int:
    return int(np.prod(_shape(x), dtype=np.int64))


def _first_input(args, kwargs):
    if args:
        return args[0]
    for key in ("inputs", "query", "x"):
        if key in kwargs:
            return kwargs[key]
    return next(iter(kwargs.values()))


def _einsum_uses(equation: str, input_shape, kernel_shape) -> int:
    """Times each kernel value is used: MACs / kernel size, MACs = product of all index sizes."""
    inputs, output = equation.split("->")
    x_spec, k_spec = inputs.split(",")
    sizes: Dict[str, int] = dict(zip(k_spec, kernel_shape))
    x_letters = x_spec.replace("...", "")
    explicit = input_shape[len(input_shape) - len(x_letters):]
    sizes.update({c: d for c, d in zip(x_letters, explicit) if c not in sizes})
    ellipsis = input_shape[:len(input_shape) - len(x_letters)] if "..." in x_spec else ()
    macs = int(np.prod([sizes[c] for c in sizes], dtype=np.int64)) * int(np.prod(ellipsis, dtype=np.int64))
    return macs // int(np.prod(kernel_shape, dtype=np.int64))


class _Values:
    """Weight values as the model computes with them (a wrapper's effective values)."""

    def __init__(self, layers):
        self.effective = {}
        for layer in layers:
            if isinstance(layer, WeightFixingWrapper):
                for v, values in zip(layer.fixable_variables, layer.effective_numpy()):
                    self.effective[id(v)] = values

    def __call__(self, variable) -> np.ndarray:
        found = self.effective.get(id(variable))
        return np.asarray(found if found is not None else variable.numpy())


def _groups(layer, x, y, values: _Values) -> List[WeightGroup]:
    """The weight groups of one call of a counted (non-attention) layer."""
    if isinstance(layer, EMBEDDING):
        return [WeightGroup("embeddings", values(layer.embeddings), "lookup", _size(x))]
    if isinstance(layer, SEPARABLE):
        dw, pw = values(layer.depthwise_kernel), values(layer.pointwise_kernel)
        uses = _size(y) // pw.shape[-1]
        out = [WeightGroup("depthwise_kernel", dw, "multiply", uses),
               WeightGroup("pointwise_kernel", pw, "multiply", uses)]
    else:
        # Keras 3 names a depthwise kernel `kernel`, tf_keras `depthwise_kernel`
        attr = "depthwise_kernel" if hasattr(layer, "depthwise_kernel") else "kernel"
        kernel = values(getattr(layer, attr))
        if isinstance(layer, EINSUM):
            uses = _einsum_uses(layer.equation, _shape(x), kernel.shape)
        elif isinstance(layer, CONV_TRANSPOSE):
            uses = _size(x) // kernel.shape[-1]
        elif isinstance(layer, DEPTHWISE):
            uses = _size(y) // (kernel.shape[-2] * kernel.shape[-1])
        else:  # Conv, Dense: once per output position
            uses = _size(y) // kernel.shape[-1]
        out = [WeightGroup(attr, kernel, "multiply", uses)]
    bias = getattr(layer, "bias", None)
    if bias is not None:
        b = values(bias)
        out.append(WeightGroup("bias", b, "bias", _size(y) // max(1, b.size)))
    return out


def _merge(work: LayerWork, groups: Sequence[WeightGroup], float_macs: int = 0) -> None:
    """Add one more call of a layer: the same weights are used again (read once)."""
    by_name = {g.name: g for g in work.groups}
    for g in groups:
        if g.name in by_name:
            by_name[g.name].uses += g.uses
        else:
            work.groups.append(g)
    work.float_macs += float_macs


def _attention_float_macs(children: Dict[str, list]) -> int:
    """QK^T and AV products of the recorded calls of one MultiHeadAttention."""
    total = 0
    for q, k, v in zip(children.get("query", []), children.get("key", []), children.get("value", [])):
        targets = int(np.prod(q[1:-2], dtype=np.int64))
        sources = int(np.prod(k[1:-2], dtype=np.int64))
        heads = q[-2]
        total += targets * sources * heads * (q[-1] + v[-1])
    return total


ATTENTION_PARTS = {"_query_dense": "query", "_key_dense": "key", "_value_dense": "value",
                   "_output_dense": "output"}


def _attention_children(layers) -> Dict[int, Tuple[object, str]]:
    """id(projection layer) -> (its MultiHeadAttention, "query" | "key" | "value" | "output")."""
    out = {}
    for layer in layers:
        if isinstance(layer, ATTENTION):
            for attr, part in ATTENTION_PARTS.items():
                child = getattr(layer, attr, None)
                if child is not None:
                    out[id(child)] = (layer, part)
    return out


def _inside_counted(layers) -> set:
    """ids of layers nested inside a counted layer (attention's softmax, dropout, ...)."""
    inside = set()
    for layer in layers:
        if isinstance(layer, COUNTED):
            inside.update(id(x) for x in sublayers(layer, include_self=False))
    return inside


def _not_counted_reason(layer) -> Optional[str]:
    if isinstance(layer, (keras.Model, WeightFixingWrapper)) or sublayers(layer, include_self=False):
        return None  # a container: its layers are listed themselves
    if type(layer).__name__ == "InputLayer":
        return None
    if isinstance(layer, BATCHNORM):
        return REASON_BATCHNORM
    if isinstance(layer, NORMALIZATION):
        return REASON_NORMALIZATION
    return REASON_UNKNOWN if layer.weights else REASON_NO_WEIGHTS


def _layer_work(calls, layers, values: _Values) -> Tuple[List[LayerWork], List[Dict]]:
    attention = _attention_children(layers)
    inside = _inside_counted(layers)
    works: Dict[int, LayerWork] = {}
    projections: Dict[int, Dict[str, list]] = {}
    not_counted: Dict[int, Dict] = {}
    for _, layer, args, kwargs, outputs in calls:
        owner, part = attention.get(id(layer), (None, None))
        if owner is not None:
            x = _first_input(args, kwargs)
            groups = _groups(layer, x, outputs, values)
            for g in groups:
                g.name = f"{part}/{g.name}"
            work = works.setdefault(id(owner), LayerWork(owner.name, type(owner).__name__, []))
            _merge(work, groups)
            projections.setdefault(id(owner), {}).setdefault(part, []).append(_shape(outputs))
        elif isinstance(layer, ATTENTION):
            works.setdefault(id(layer), LayerWork(layer.name, type(layer).__name__, []))
        elif isinstance(layer, COUNTED) and id(layer) not in inside:
            work = works.setdefault(id(layer), LayerWork(layer.name, type(layer).__name__, []))
            _merge(work, _groups(layer, _first_input(args, kwargs), outputs, values))
        elif id(layer) not in inside and id(layer) not in attention:
            reason = _not_counted_reason(layer)
            if reason is not None:
                not_counted.setdefault(id(layer), {"layer": layer.name, "class": type(layer).__name__,
                                                   "reason": reason})
    for key, children in projections.items():
        works[key].float_macs = _attention_float_macs(children)
    return list(works.values()), list(not_counted.values())


def _model_input_shapes(model) -> List[Tuple[int, ...]]:
    try:
        inputs = list(model.inputs or [])
    except (AttributeError, ValueError):
        inputs = []
    if not inputs:
        raise ValueError(
            f"{getattr(model, 'name', type(model).__name__)!r} has no known input shape (a "
            "subclassed model, a layer, or a Sequential without an Input): pass input_shape, "
            "without the batch dimension, e.g. hardware_cost(model, input_shape=(32, 32, 3)).")
    shapes = [tuple(x.shape[1:]) for x in inputs]
    for s in shapes:
        if any(d is None for d in s):
            raise ValueError(f"the model's input shape {(None,) + s} has unknown dimensions besides "
                             "the batch: pass the shape of one example, e.g. "
                             "hardware_cost(model, input_shape=(224, 224, 3)).")
    return shapes


def _input_arrays(model, input_shape):
    if input_shape is None:
        shapes = _model_input_shapes(model)
    else:
        nested = isinstance(input_shape, (list, tuple)) and input_shape and all(
            isinstance(s, (list, tuple)) for s in input_shape)
        shapes = [tuple(s) for s in input_shape] if nested else [tuple(input_shape)]
        for s in shapes:
            if not s or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1
                            for d in s):
                raise ValueError(f"input_shape must be positive integers without the batch "
                                 f"dimension (a list of them for several inputs), got {input_shape!r}")
    try:
        dtypes = [getattr(x.dtype, "name", x.dtype) for x in (model.inputs or [])]
    except (AttributeError, ValueError):
        dtypes = []
    if len(dtypes) != len(shapes):
        dtypes = ["float32"] * len(shapes)
    arrays = [np.zeros((1,) + tuple(int(d) for d in s), dtype=np.dtype(str(t)))
              for s, t in zip(shapes, dtypes)]
    return arrays, [list(s) for s in shapes]


def hardware_cost(model, input_shape=None, *, energy_table: Optional[EnergyTable] = None,
                  activation_bits: int = 16, memory: str = "dram",
                  max_terms: int = DEFAULT_MAX_TERMS) -> HardwareCost:
    """Estimated cost of one inference (batch 1) in float32, int8 and shift-add form.

    Args:
      model: a Keras model (made by `fix_weights`, stripped, or plain) or layer.
      input_shape: one example's shape without the batch dimension (a list of shapes
        for several inputs); default: the model's input shape.
      energy_table: per-operation energies (`tfmot_wfn.EnergyTable`); default: the
        45 nm figures of Horowitz (ISSCC 2014).
      activation_bits: fixed-point width of the activations the shift-add form shifts and adds.
      memory: ``"dram"`` or ``"sram"``, where the weights are read from once per inference.
      max_terms: a non-zero weight with more signed power-of-two terms is "not a sum of a
        few powers of two"; if any has, the shift-add form is reported as not applicable.

    Returns:
      a `HardwareCost` (`print` it; `to_dict()`, `to_json(path)`).
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"hardware_cost expects a Keras model or layer, got {type(model).__name__}")
    table = energy_table
    arrays, shapes = _input_arrays(model, input_shape)
    x = arrays if len(arrays) > 1 else arrays[0]
    # A first call builds whatever is not built yet (a subclassed model traces its call
    # while building, which would be recorded too); the recorded call is the second.
    model(x, training=False)
    layers = sublayers(model)
    values = _Values(layers)
    with RecordedCalls(layers) as recorded:
        model(x, training=False)
    works, not_counted = _layer_work(recorded.calls, layers, values)
    if not works:
        raise ValueError(f"{model.name!r} has no layer whose work the estimate counts (Conv, Dense, "
                         "EinsumDense, Embedding, MultiHeadAttention)")
    return estimate(works, table, activation_bits=activation_bits, memory=memory,
                    max_terms=max_terms, not_counted=not_counted,
                    input_shape=shapes[0] if len(shapes) == 1 else shapes)
