"""TFLite side of a BatchNorm scale kept as a ``MUL`` after a conv/dense op (no Keras).

A palette export may keep a BatchNorm's per-channel scale ``s`` as a separate
``MUL`` after the op it follows, so that the op's weight stays palette values
(see `tfmot_wfn.export.batchnorm_mul`, which decides where). This module holds
what both directions share on the flatbuffer: the names, `KeptScale`, the small
graph edits, and `fold_scale_ops`, which multiplies such ``MUL``s back into the
static weights when a file is decoded for speed (`decode_palette`).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, Optional, Tuple, Union

import numpy as np

from tfmot_wfn.tflite import flatbuffer as fb

SCALE_PREFIX = "tfmot_wfn/bn_scale/"   # + the BatchNorm's name: the MUL's constant
UNSCALED_SUFFIX = "/wfn_unscaled"       # the op's output before the MUL
SCALE_REASON = "BatchNorm scale kept as a separate MUL (float, per channel)"
MIN_SCALE = 1e-12  # |s| below this (0 when gamma is fixed to 0): keep the folded weights
# Ops the converter folds a BatchNorm into, and the axis of their weight's (input 1's) output
# channels (TRANSPOSE_CONV's filter is OHWI; Keras 3's Conv1DTranspose converts to it too).
HOST_OPS = {"CONV_2D": 0, "FULLY_CONNECTED": 0, "DEPTHWISE_CONV_2D": -1, "CONV_3D": -1,
            "TRANSPOSE_CONV": 0}


@dataclasses.dataclass(frozen=True)
class KeptScale:
    """A BatchNorm whose scale is kept as a MUL after the op of ``layer``.

    Tensor names are those of the TFLite file: ``weight`` (palette values),
    ``bias`` (``b_folded / s``, "" when the op has none) and ``scale`` (``s``,
    named ``SCALE_PREFIX + batchnorm`` here; a compact export renames the three
    ``conv1/kernel``, ``conv1/bias``, ``bn1/scale``). ``exact``: the decode fast
    path reproduces the converter's folded weights and bias bit for bit.
    """

    subgraph: int
    layer: str
    batchnorm: str
    op: str
    channels: int
    weight: str
    bias: str
    scale: str
    exact: bool

    def to_metadata(self) -> Dict:
        return {"subgraph": self.subgraph, "tensor": self.scale, "layer": self.layer,
                "batchnorm": self.batchnorm}


def channels_last(array: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(array, axis, -1).reshape(-1, array.shape[axis])


def from_channels_last(flat: np.ndarray, shape: Tuple[int, ...], axis: int) -> np.ndarray:
    moved = list(shape)
    moved.append(moved.pop(axis % len(shape)))
    return np.moveaxis(flat.reshape(moved), -1, axis % len(shape))


def set_constant(model, subgraph, op, slot: int, values: np.ndarray, readers) -> str:
    """Give ``op``'s input ``slot`` the data ``values`` (a new tensor if others read it)."""
    index = int(op.inputs[slot])
    tensor = subgraph.tensors[index]
    buffer = fb.add_buffer(model, np.ascontiguousarray(values, dtype="<f4").tobytes())
    if len(readers.get(index, [])) > 1:
        index = fb.add_tensor(subgraph, fb.tensor_name(tensor) + "/wfn", fb.tensor_shape(tensor),
                              tensor.type, buffer)
        op.inputs[slot] = index
    else:
        tensor.buffer = buffer
    return fb.tensor_name(subgraph.tensors[index])


def unique_tensor_name(subgraph, name: str) -> str:
    taken = {fb.tensor_name(t) for t in subgraph.tensors}
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    return candidate


def mul_op(model, inputs, outputs, activation: int):
    mod = fb.schema()
    mul = mod.OperatorT()
    mul.opcodeIndex = fb.opcode_index(model, mod.BuiltinOperator.MUL)
    mul.inputs, mul.outputs = list(inputs), list(outputs)
    mul.builtinOptionsType = mod.BuiltinOptions.MulOptions
    mul.builtinOptions = mod.MulOptionsT()
    mul.builtinOptions.fusedActivationFunction = int(activation)
    return mul


def host_weight(model, subgraph, op) -> Optional[np.ndarray]:
    if op.inputs is None or len(op.inputs) < 2 or int(op.inputs[1]) < 0:
        return None
    tensor = subgraph.tensors[int(op.inputs[1])]
    quant = tensor.quantization
    if (tensor.type != fb.type_value("FLOAT32") or not fb.is_constant(model, tensor)
            or (quant is not None and quant.scale is not None and len(quant.scale) > 0)
            or tensor.sparsity is not None):
        return None
    return fb.constant_array(model, tensor)


def bias_slot(model, op) -> int:
    """The input slot of a host op's bias (`flatbuffer.BIAS_SLOTS`)."""
    return fb.BIAS_SLOTS.get(fb.op_name(model, op), 2)


def optional_bias(model, subgraph, op) -> Tuple[bool, Optional[np.ndarray]]:
    """(usable, bias values or None when the op has no bias input)."""
    slot = bias_slot(model, op)
    if op.inputs is None or len(op.inputs) <= slot or int(op.inputs[slot]) < 0:
        return True, None
    tensor = subgraph.tensors[int(op.inputs[slot])]
    if tensor.type != fb.type_value("FLOAT32") or not fb.is_constant(model, tensor):
        return False, None
    return True, fb.constant_array(model, tensor)


def _activation(op) -> Optional[int]:
    """The op's fused activation, or None when its options do not carry one (a damaged or
    unusual file: such an op is left as it is)."""
    value = getattr(op.builtinOptions, "fusedActivationFunction", None)
    return None if value is None else int(value)


# ------------------------------------------------------------------ decoding
def fold_scale_ops(model, subgraph, scales: Iterable[Union[int, str]]) -> int:
    """Multiply each kept-scale ``MUL`` back into the static weights of the op before it.

    For ``MUL(op(x, W, b), s)`` with ``s`` one of ``scales`` (tensor indices, or
    names): ``W *= s`` (per output channel), ``b *= s``, the MUL's fused activation
    goes back on the op, which writes the MUL's output, and the MUL is dropped.
    MULs whose op has non-constant weights, another reader or an activation are left
    as they are. Returns how many were folded.
    """
    wanted = set(scales)
    if not wanted:
        return 0
    mul_code = fb.schema().BuiltinOperator.MUL
    none = fb.schema().ActivationFunctionType.NONE
    producer = fb.producers(subgraph)
    readers = fb.consumers(subgraph)
    outputs = set(int(t) for t in (subgraph.outputs if subgraph.outputs is not None else []))
    drop = set()
    for pos, mul in enumerate(subgraph.operators or []):
        opcode = model.operatorCodes[mul.opcodeIndex]
        if (opcode.customCode or fb.builtin_code(opcode) != mul_code or mul.inputs is None
                or len(mul.inputs) != 2 or mul.outputs is None or len(mul.outputs) != 1):
            continue
        scale_tensor = subgraph.tensors[int(mul.inputs[1])]
        if int(mul.inputs[1]) not in wanted and fb.tensor_name(scale_tensor) not in wanted:
            continue
        scale = fb.constant_array(model, scale_tensor)
        unscaled = int(mul.inputs[0])
        host_pos = producer.get(unscaled)
        if scale is None or host_pos is None or unscaled in outputs:
            continue
        host = subgraph.operators[host_pos]
        host_name = fb.op_name(model, host)
        if (host_name not in HOST_OPS or len(readers.get(unscaled, [])) != 1
                or _activation(host) != none or _activation(mul) is None):
            continue
        weight = host_weight(model, subgraph, host)
        usable, bias = optional_bias(model, subgraph, host)
        axis = HOST_OPS[host_name]
        if weight is None or not usable or weight.shape[axis] != scale.size:
            continue
        scale = scale.astype(np.float32).ravel()
        shaped = np.ones(weight.ndim, int)
        shaped[axis] = scale.size
        set_constant(model, subgraph, host, 1, weight * scale.reshape(shaped), readers)
        if bias is not None:
            set_constant(model, subgraph, host, bias_slot(model, host), bias * scale, readers)
        host.builtinOptions.fusedActivationFunction = _activation(mul)
        host.outputs[0] = int(mul.outputs[0])
        drop.add(pos)
    if drop:
        subgraph.operators = [op for pos, op in enumerate(subgraph.operators) if pos not in drop]
    return len(drop)



__all__ = ["HOST_OPS", "KeptScale", "MIN_SCALE", "SCALE_PREFIX", "SCALE_REASON",
           "UNSCALED_SUFFIX", "bias_slot", "channels_last", "fold_scale_ops", "from_channels_last",
           "host_weight", "mul_op", "optional_bias", "set_constant", "unique_tensor_name"]
