"""Where each kernel's output channels sit in the network's flat weight vector (``int8_exact``).

`FixingNetwork` lays every fixable weight out flat (`WeightSlot`). The ``int8_exact``
constraint (`tfmot_wfn.core.int8_channels`) needs, for each kernel, its output channels,
the axis along which TFLite gives an int8 weight one scale per channel:

* ``kernel`` of Dense, EinsumDense, Conv1D/2D/3D and ``pointwise_kernel`` of separable
  convolutions: the last axis;
* depthwise kernels ``(..., in, multiplier)`` (DepthwiseConv ``kernel``, separable
  ``depthwise_kernel``): output channel ``in * multiplier + m``, the last two axes
  together (as `tfmot_wfn.keras.batchnorm_folding.is_depthwise` and the int8 exporter
  read them);
* transposed convolutions ``(..., out, in)``: the second-to-last axis.

Biases, BatchNorm gamma/beta, embeddings and custom `FixableLayer` weights have no
channel block: they stay unconstrained.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

from tfmot_wfn.core.int8_channels import ChannelBlock
from tfmot_wfn.keras.batchnorm_folding import is_depthwise
from tfmot_wfn.keras.compat import keras, short_name

#: Weight names constrained by ``int8_exact`` (the weights of TFLite's int8 weight ops).
KERNEL_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel")


def _transposed(layer) -> bool:
    names = ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
    return isinstance(layer, tuple(getattr(keras.layers, n) for n in names
                                   if hasattr(keras.layers, n)))


def output_channel_layout(layer, variable) -> Optional[Tuple[int, int]]:
    """``(channels, inner)`` of a kernel viewed as ``(outer, channels, inner)``; None: not a kernel."""
    shape = tuple(int(d) for d in variable.shape)
    name = short_name(variable)
    if name not in KERNEL_NAMES or len(shape) < 2:
        return None
    if name == "depthwise_kernel" or (name == "kernel" and is_depthwise(layer)):
        return shape[-2] * shape[-1], 1
    if _transposed(layer):
        return shape[-2], shape[-1]
    return shape[-1], 1


def channel_blocks(slots: Sequence) -> Tuple[ChannelBlock, ...]:
    """One `ChannelBlock` per kernel among a network's `WeightSlot`s, in flat order."""
    blocks = []
    for slot in slots:
        layout = output_channel_layout(slot.wrapper.layer, slot.variable)
        if layout is not None and slot.stop > slot.start:
            blocks.append(ChannelBlock(slot.start, slot.stop, *layout))
    return tuple(blocks)


__all__ = ["KERNEL_NAMES", "channel_blocks", "output_channel_layout"]
