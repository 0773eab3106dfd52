"""The network being fixed: `FixingNetwork`, one object for all its `WeightFixingWrapper`s.

Weight Fixing Networks fix the network as a whole: one schedule, one greedy
stage over every fixable weight at once, one palette shared by every layer, one
regulariser over all free weights. `FixingNetwork` holds what that needs:

* the wrappers, and the settings they share (`FixingConfig`, checked equal on
  every wrapper);
* where each fixable weight sits in the network's flat weight vector
  (`WeightSlot`: wrapper, variable, ``[start, stop)``), computed once;
* the shared palette, and the fixing stage (`run_fixing_stage`) that writes
  masks, fixed values and the palette back into every wrapper;
* the regulariser's lookup table (`regularizer_table.RegularizerTable`), made on
  first use and refreshed after every stage;
* the network statistics (fixed fraction, unique values, entropy, palette usage)
  that `report`, `FixingSummaries`, the fix job and `UpdateFixingStep` print.

```python
network = tfmot_wfn.FixingNetwork.of(fixed_model)   # cached on the model
network.run_fixing_stage(0.3, distance=0.15)
network.statistics().fixed_fraction                  # ~0.3
```

`FixingNetwork.of(model)` keeps the network on the model (attribute
``_wfn_fixing_network``, never saved) and rebuilds it when the model's wrappers
changed, so the callback, the regularised loss of `fit` and the report share
one network and one regulariser table. Nothing here runs per training step.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from tfmot_wfn.core.fixing_rules import AUTO_RULE, choose_rule, stage_options
from tfmot_wfn.core.greedy_fixing import fixing_stage
from tfmot_wfn.core.int8_channels import ChannelBlock, snap_stage
from tfmot_wfn.core.weight_statistics import WeightSummary, summarize, value_counts
from tfmot_wfn.keras import fixable_layer, regularizer_table
from tfmot_wfn.keras.compat import keras, numpy_dtype, variable_path
from tfmot_wfn.keras.compute_dtypes import round_for_compute_dtypes
from tfmot_wfn.keras.fixing_config import FixingConfig
from tfmot_wfn.keras.fixing_wrapper import WeightFixingWrapper
from tfmot_wfn.keras.kernel_channels import channel_blocks
from tfmot_wfn.utils.finite import count_nonfinite
from tfmot_wfn.utils.validation import check_real

#: The attribute of a model (or of a single wrapper) that caches its `FixingNetwork`.
CACHE_ATTRIBUTE = "_wfn_fixing_network"


def forget_network(model_or_wrapper) -> None:
    """Drop the `FixingNetwork` cached on a model or wrapper (after its wrappers' settings
    changed: `FixingRestart`); the next `FixingNetwork.of` builds a new one."""
    if getattr(model_or_wrapper, CACHE_ATTRIBUTE, None) is not None:
        setattr(model_or_wrapper, CACHE_ATTRIBUTE, None)


def wrappers_of(model_or_layers) -> List[WeightFixingWrapper]:
    """Every `WeightFixingWrapper` in a model (nested models included) or list of layers."""
    found: List[WeightFixingWrapper] = []
    seen = set()

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if isinstance(layer, WeightFixingWrapper):
            found.append(layer)
        elif isinstance(layer, keras.Model) or hasattr(layer, "layers"):
            for sub in getattr(layer, "layers", []):
                visit(sub)

    if isinstance(model_or_layers, (list, tuple)):
        for item in model_or_layers:
            visit(item)
    else:
        visit(model_or_layers)
    return found


def is_wrapped(model) -> bool:
    """True for a model made by `tfmot_wfn.fix_weights` (it holds WeightFixingWrapper layers)."""
    return bool(wrappers_of(model))


@dataclasses.dataclass
class StageSummary:
    """What one network-wide fixing stage did."""

    fraction: float
    distance: float
    total: int
    fixed: int
    newly_fixed: int
    palette_size: int
    steps: int
    max_order: int
    #: ``int8_exact``: newly fixed weights moved onto their channel's power-of-two grid.
    int8_snapped: int = 0


@dataclasses.dataclass(frozen=True)
class WeightSlot:
    """Where one fixable weight sits in the network's flat weight vector."""

    wrapper: WeightFixingWrapper
    #: Position of the weight in ``wrapper.fixable_variables`` (and masks, fixed_values).
    index: int
    variable: Any
    start: int
    stop: int

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(int(d) for d in self.variable.shape)


def _slots(wrappers: Sequence[WeightFixingWrapper]) -> Tuple[WeightSlot, ...]:
    """The flat layout of every fixable weight, in wrapper order (the one offset loop)."""
    slots, offset = [], 0
    for wrapper in wrappers:
        for index, variable in enumerate(wrapper.fixable_variables):
            size = int(np.prod(variable.shape))
            slots.append(WeightSlot(wrapper, index, variable, offset, offset + size))
            offset += size
    return tuple(slots)


def _one_auto_rule(wrappers: Sequence[WeightFixingWrapper]) -> None:
    """Give every wrapper whose rule ``"auto"`` was chosen for its layer alone
    (``fix_weights(layer)``, the way to wrap a subclassed model's layers one by one:
    ``"gentle"`` for a depthwise layer, ``"bounded_third"`` for a Dense) the rule ``"auto"``
    stands for in the whole network, as ``fix_weights(model)`` chooses it."""
    alone = [w for w in wrappers if w.rule_chosen_alone]
    if not alone:
        return
    rule = choose_rule(AUTO_RULE, fixable_layer.has_depthwise([w.layer for w in wrappers]))
    for w in alone:
        if w.fixing_config.rule != rule:
            w.fixing_config = dataclasses.replace(w.fixing_config, rule=rule)


def _check_consistent(wrappers: Sequence[WeightFixingWrapper]) -> FixingConfig:
    """The shared config of `wrappers`; ValueError if two disagree on a network setting."""
    first, *others = wrappers
    for w in others:
        if w.fixing_config.network_settings() != first.fixing_config.network_settings():
            raise ValueError(
                f"The WeightFixingWrappers {first.name!r} and {w.name!r} have different fixing "
                "settings (schedule, distance, zero_distance, palette_capacity, regularization, "
                "temperature, rule or int8_exact), but the network is fixed as a whole with one palette. Give "
                "every wrapper the same settings (fix_weights(model) does; when wrapping layers "
                "one by one, pass the same fixing_schedule and distance to each).")
    return first.fixing_config


# Every live network, so that a stage run through one refreshes the regulariser
# table of any other network over the same wrappers (weak: networks die with
# their model or when no longer referenced).
_LIVE: "weakref.WeakSet[FixingNetwork]" = weakref.WeakSet()


def _same(a: Sequence, b: Sequence) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


class FixingNetwork:
    """All `WeightFixingWrapper`s of a network, fixed as a whole (see the module docstring).

    Build it with `FixingNetwork.of` from a model made by `fix_weights` (nested
    models included), a wrapper, or a list of wrappers. Every wrapper must be built
    and share the network settings (`fixing_config.NETWORK_SETTINGS`).

    Attributes:
      wrappers: the wrappers, in model order.
      config: the `FixingConfig` they share (schedule, distance, regularization,
        temperature, zero_distance, palette_capacity).
      slots: one `WeightSlot` per fixable weight: the flat layout of the network's
        weights, in which masks, values and the regulariser's table are ordered.
      size: the number of fixable weights.

    Raises:
      ValueError: no wrapper, or wrappers with different network settings.
      TypeError: something that is not a `WeightFixingWrapper` in the list.
    """

    def __init__(self, wrappers: Sequence[WeightFixingWrapper]):
        wrappers = tuple(wrappers)
        if not wrappers:
            raise ValueError(
                "No WeightFixingWrapper found; build the model with tfmot_wfn.fix_weights.")
        for w in wrappers:
            if not isinstance(w, WeightFixingWrapper):
                raise TypeError(
                    f"FixingNetwork takes WeightFixingWrappers, got {type(w).__name__}")
        _one_auto_rule(wrappers)
        self.config: FixingConfig = _check_consistent(wrappers)
        self.wrappers = wrappers
        self.slots = _slots(wrappers)
        self.size = self.slots[-1].stop if self.slots else 0
        # Every wrapper holds a copy of the shared palette (its layer computes with it).
        self._palette_copies = [(w.palette, w.palette_size) for w in wrappers if w.built]
        self._table: Optional[regularizer_table.RegularizerTable] = None
        self._blocks: Optional[Tuple[ChannelBlock, ...]] = None
        _LIVE.add(self)

    @classmethod
    def of(cls, model_or_wrappers) -> "FixingNetwork":
        """The network of a wrapped model, a wrapper or a list of wrappers.

        A model's (or a wrapper's) network is cached on it and reused while it holds
        the same wrappers, all built; a list reuses a live network over exactly
        those wrappers. Raises ValueError if there is no wrapper.
        """
        network = cls.find(model_or_wrappers)
        if network is None:
            raise ValueError(
                "No WeightFixingWrapper found; build the model with tfmot_wfn.fix_weights.")
        return network

    @classmethod
    def find(cls, model_or_wrappers) -> Optional["FixingNetwork"]:
        """Like `of`, but None for a model, layer or list without any wrapper."""
        if isinstance(model_or_wrappers, FixingNetwork):
            return model_or_wrappers
        wrappers = wrappers_of(model_or_wrappers)
        if not wrappers:
            return None
        built = all(w.built for w in wrappers)
        if isinstance(model_or_wrappers, (list, tuple)):
            found = next((n for n in list(_LIVE) if _same(n.wrappers, wrappers)), None)
            return found if found is not None and built else cls(wrappers)
        cached = getattr(model_or_wrappers, CACHE_ATTRIBUTE, None)
        if cached is not None and built and _same(cached.wrappers, wrappers):
            return cached
        network = cls(wrappers)
        if built:
            # Derived data, not tracked state: never saved, rebuilt when stale.
            setattr(model_or_wrappers, CACHE_ATTRIBUTE, network)
        return network

    def __repr__(self) -> str:
        return (f"FixingNetwork({len(self.wrappers)} wrappers, {self.size} fixable weights, "
                f"distance={self.distance}, schedule={self.fixing_schedule!r})")

    # ---------------------------------------------------------------- settings
    @property
    def fixing_schedule(self):
        return self.config.fixing_schedule

    @property
    def distance(self) -> float:
        return self.config.distance

    @property
    def regularization(self) -> float:
        return self.config.regularization

    @property
    def temperature(self) -> float:
        return self.config.temperature

    @property
    def zero_distance(self) -> float:
        return self.config.zero_distance

    @property
    def rule(self) -> str:
        """The fixing rule's name (`tfmot_wfn.core.fixing_rules`)."""
        return self.config.rule

    @property
    def palette_capacity(self) -> int:
        return self.config.palette_capacity

    @property
    def int8_exact(self) -> bool:
        """Whether every kernel channel is kept int8-exact (`tfmot_wfn.core.int8_channels`)."""
        return self.config.int8_exact

    @property
    def channel_blocks(self) -> Tuple[ChannelBlock, ...]:
        """The kernels' output channels in the flat layout (`kernel_channels.channel_blocks`)."""
        if self._blocks is None:
            self._blocks = channel_blocks(self.slots)
        return self._blocks

    def resolve_schedules(self, steps_per_epoch: Optional[int]) -> None:
        """`FixingSchedule.resolve` on every distinct schedule object of the wrappers."""
        done = []
        for w in self.wrappers:
            if not any(w.fixing_schedule is s for s in done):
                w.fixing_schedule.resolve(steps_per_epoch)
                done.append(w.fixing_schedule)

    # ------------------------------------------------------------------ state
    @property
    def variables(self) -> list:
        """The fixable variables, in flat order."""
        return [slot.variable for slot in self.slots]

    @property
    def step_variables(self) -> list:
        """Every wrapper's ``fixing_step`` variable (they hold the same step)."""
        return [w.fixing_step for w in self.wrappers]

    def stored_step(self) -> int:
        """The schedule position saved in the wrappers (-1 before training)."""
        return int(self.step_variables[0].numpy())

    def weight_arrays(self) -> Tuple[List[np.ndarray], List[np.ndarray]]:
        """``(effective values, fixed masks)``: one numpy array per slot (eager)."""
        values, masks = [], []
        for w in self.wrappers:
            values.extend(w.effective_numpy())
            masks.extend(w.mask_numpy())
        return values, masks

    def flat_weights(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(values float32, fixed mask)`` of every fixable weight, flat, in slot order."""
        values, masks = self.weight_arrays()
        if not values:
            return np.zeros(0, np.float32), np.zeros(0, bool)
        return (np.concatenate([a.astype(np.float32).ravel() for a in values]),
                np.concatenate([m.ravel() for m in masks]))

    @property
    def palette_variables(self) -> Tuple[Any, Any]:
        """``(palette, palette_size)`` variables of the shared palette, for graph code."""
        return self._palette_copies[0]  # the copies are always written together

    def palette(self) -> np.ndarray:
        """The shared palette (sorted float32 values; empty before the first stage)."""
        if not self._palette_copies:
            return np.zeros(0, np.float32)
        palette, size = self._palette_copies[0]  # the copies are always written together
        return np.asarray(palette.numpy())[:int(size.numpy())]

    def preserved_zeros(self) -> int:
        """Weights fixed to 0 by ``preserve_sparsity`` when the wrappers were built."""
        return sum(int(w.preserved_zeros.numpy()) for w in self.wrappers
                   if getattr(w, "preserved_zeros", None) is not None)

    # ------------------------------------------------------------- statistics
    def statistics(self) -> WeightSummary:
        """Fixed fraction, unique values, entropy, zeros and palette usage of the network."""
        return summarize(*self.flat_weights())

    def palette_usage(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(palette values, number of fixed weights holding each)``: one sort, of the fixed ones."""
        values, fixed = self.flat_weights()
        return value_counts(values[fixed])

    def layer_fixed_fractions(self) -> Dict[str, float]:
        """Fixed fraction of each wrapped layer's fixable weights, by the wrapped layer's name."""
        out: Dict[str, float] = {}
        for w in self.wrappers:
            masks = w.mask_numpy()
            total = sum(m.size for m in masks)
            out[w.layer.name] = float(sum(int(m.sum()) for m in masks) / total) if total else 0.0
        return out

    # -------------------------------------------------------------- regulariser
    @property
    def regularizer_table(self) -> regularizer_table.RegularizerTable:
        """The regulariser's lookup table over this network's weights, made on first use."""
        if self._table is None:
            self._table = regularizer_table.RegularizerTable(self)
        return self._table

    def refresh_regularizer(self) -> bool:
        """Rebuild the regulariser table if the palette or the masks changed (eager)."""
        if self.regularization == 0.0:
            return False
        return self.regularizer_table.refresh_if_changed()

    def reload_settings(self) -> None:
        """Read the wrappers' settings again (`FixingRestart` changed their ``distance`` /
        ``fixing_schedule``). The regulariser table stays the one a traced training step
        reads; `UpdateFixingStep` refreshes it at the next fit's first batch."""
        self.config = _check_consistent(self.wrappers)

    def _refresh_tables(self) -> None:
        """After a stage: every live table over any of these wrappers follows the new state."""
        mine = set(map(id, self.wrappers))
        for network in list(_LIVE):
            if network._table is not None and mine.intersection(map(id, network.wrappers)):
                network._table.refresh()

    # ------------------------------------------------------------------ stage
    def run_fixing_stage(self, fraction: float, distance: float) -> StageSummary:
        """Fix `fraction` of all fixable weights of the network, in one greedy stage.

        See the module-level `run_fixing_stage` for the semantics.
        """
        fraction = check_real("fraction", fraction, 0.0, 1.0, high_open=False)
        options = stage_options(self.rule, fraction)  # of the schedule's fraction
        distance = check_real("distance", distance, 0.0)
        values, masks = self.weight_arrays()
        if not any(a.size for a in values):
            raise ValueError(
                "The wrappers hold no fixable weight (e.g. only BatchNormalization with "
                "fix_batchnorm=False, or layers without weights): there is nothing to fix.")
        self._check_finite(values)
        flat_w, flat_m = self.flat_weights()
        preserved = self.preserved_zeros()
        if preserved and fraction < 1.0:
            share = min(1.0, preserved / flat_w.size)
            fraction = min(1.0, share + (1.0 - share) * fraction)
        result = fixing_stage(flat_w, flat_m, fraction, distance, self.zero_distance,
                              palette=self.palette(), **options)
        snapped = 0
        if self.int8_exact:
            # Before the compute-dtype rounding: codes within 127 times 2^e are exact in
            # float16/bfloat16 (for e >= -24 in float16), so that rounding keeps them.
            values, snapped = snap_stage(flat_w, flat_m, result.values, result.fixed,
                                         self.channel_blocks, distance)
            result = dataclasses.replace(result, values=values,
                                         palette=np.unique(values[result.fixed]))
        rounded = round_for_compute_dtypes(self.slots, result.values, result.fixed,
                                            result.fixed & ~flat_m)
        if rounded is not result.values:
            result = dataclasses.replace(result, values=rounded,
                                         palette=np.unique(rounded[result.fixed]))
        if result.palette.size > self.palette_capacity:
            raise ValueError(
                f"The palette has {result.palette.size} values, more than palette_capacity="
                f"{self.palette_capacity}. Use a larger distance, or "
                "fix_weights(..., palette_capacity=...).")
        self._write(result.values, result.fixed, result.palette)
        # The regulariser's table follows the new palette and masks.
        self._refresh_tables()
        return StageSummary(
            fraction=float(fraction), distance=float(distance), total=int(flat_w.size),
            fixed=int(result.fixed.sum()), newly_fixed=result.newly_fixed,
            palette_size=int(result.palette.size), steps=result.steps,
            max_order=result.max_order, int8_snapped=snapped)

    def _check_finite(self, values: Sequence[np.ndarray]) -> None:
        for slot, array in zip(self.slots, values):
            bad = count_nonfinite(array)
            if bad:
                raise FloatingPointError(
                    f"{bad} of {array.size} values of weight {variable_path(slot.variable)!r} in "
                    f"layer {slot.wrapper.layer.name!r} are NaN or Inf, so they cannot be fixed. "
                    "Training diverged: lower the learning rate or clip gradients (e.g. "
                    "optimizer clipnorm=0.5), then resume from the last checkpoint.")

    def _write(self, values: np.ndarray, fixed: np.ndarray, palette: np.ndarray) -> None:
        """Masks, fixed values and the palette into every wrapper's variables."""
        for slot in self.slots:
            v, dtype = slot.variable, numpy_dtype(slot.variable)
            part = values[slot.start:slot.stop].reshape(slot.shape)
            mask = fixed[slot.start:slot.stop].reshape(slot.shape)
            slot.wrapper.fixed_values[slot.index].assign(np.where(mask, part, 0).astype(dtype))
            slot.wrapper.masks[slot.index].assign(mask)
            # The underlying variable takes the fixed values too, so the model
            # holds them even outside the wrapper.
            v.assign(np.where(mask, part, v.numpy()).astype(dtype))
        padded = np.zeros(self.palette_capacity, np.float32)
        padded[:palette.size] = palette
        for copy, size in self._palette_copies:
            copy.assign(padded)
            size.assign(np.int32(palette.size))


def run_fixing_stage(model_or_wrappers, fraction: float, distance: float) -> StageSummary:
    """Fix `fraction` of all fixable weights of the network, in one greedy stage.

    Weights already fixed stay fixed at their values. Every wrapper receives the
    same palette. Nothing is written if the stage fails. The same as
    ``FixingNetwork.of(model_or_wrappers).run_fixing_stage(fraction, distance)``.

    With ``fix_weights(..., preserve_sparsity=True)`` the zeros of the model were
    fixed to 0 before the first stage (a fraction ``s`` of all fixable weights),
    and `fraction` applies to the other weights: the stage fixes
    ``s + (1 - s) * fraction`` of all of them, so that a pruned model goes through
    the same staircase on its non-zero weights as a dense one (``1.0`` still fixes
    everything).

    Under a mixed precision policy the newly fixed values are rounded to the
    narrowest compute dtype of the network (a no-op for almost every value, and a
    relative change of at most 2**-11 for float16, 2**-8 for bfloat16 otherwise),
    so that the layers compute with exactly the palette values.

    With ``fix_weights(..., int8_exact=True)`` the newly fixed values of every kernel's
    output channels are snapped onto the channel's power-of-two grid first
    (`tfmot_wfn.core.int8_channels.snap_stage`; ``StageSummary.int8_snapped`` counts them).

    Raises:
      TypeError / ValueError: bad `fraction` or `distance`, no wrapper, wrappers
        with different settings, or no fixable weight.
      FloatingPointError: NaN or Inf among the weights (names the layer), or a
        value not representable in a layer's compute dtype.
    """
    fraction = check_real("fraction", fraction, 0.0, 1.0, high_open=False)
    distance = check_real("distance", distance, 0.0)
    if isinstance(model_or_wrappers, WeightFixingWrapper):
        model_or_wrappers = [model_or_wrappers]
    return FixingNetwork.of(model_or_wrappers).run_fixing_stage(fraction, distance)
