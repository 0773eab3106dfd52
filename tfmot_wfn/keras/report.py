"""Network-wide weight metrics: palette, unique values, entropy, fixed fraction, report.

They accept a model made by `fix_weights` (effective weights of the wrappers;
the numbers are its `FixingNetwork.statistics`) or a plain model such as the
result of `strip_fixing` (the weights the fixing would cover: kernels, biases,
normalization gamma/beta; the same statistics, `core.weight_statistics.summarize`).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np

from tfmot_wfn.core.powers_of_two import format_signed_digits, signed_digits
from tfmot_wfn.core.weight_statistics import WeightSummary, summarize, value_counts
from tfmot_wfn.keras import fixable_layer
from tfmot_wfn.keras.compat import variable_path
from tfmot_wfn.keras.fixing_wrapper import WeightFixingWrapper
from tfmot_wfn.keras.network import FixingNetwork, wrappers_of
from tfmot_wfn.utils.json_report import JsonReport


def _leaves(model):
    if isinstance(model, (list, tuple)):
        for m in model:
            yield from _leaves(m)
        return
    if isinstance(model, WeightFixingWrapper) or not hasattr(model, "layers"):
        yield model
        return
    for layer in model.layers:
        yield from _leaves(layer)


def layer_weights(model) -> List[Tuple[str, str, np.ndarray, np.ndarray]]:
    """``(layer name, weight name, effective values, fixed mask)`` for every fixable weight."""
    rows = []
    for layer in _leaves(model):
        if isinstance(layer, WeightFixingWrapper):
            for v, values, mask in zip(layer.fixable_variables, layer.effective_numpy(), layer.mask_numpy()):
                rows.append((layer.layer.name, variable_path(v), values, mask))
        elif layer.weights and fixable_layer.is_supported(layer):
            for v in fixable_layer.fixable_weights(layer):
                values = v.numpy()
                rows.append((layer.name, variable_path(v), values, np.ones(values.shape, bool)))
    if not rows:
        raise ValueError("The model has no fixable weights (no supported layer with weights).")
    return rows


def _plain_fixable_layers(model) -> List:
    """Supported layers with weights that are not wrapped (all of them in a plain model)."""
    return [layer for layer in _leaves(model) if not isinstance(layer, WeightFixingWrapper)
            and layer.weights and fixable_layer.is_supported(layer)]


def _summary(model) -> WeightSummary:
    """The network's statistics; for a plain (or partly wrapped) model, of `layer_weights`."""
    network = FixingNetwork.find(model)
    if network is not None and network.size and not _plain_fixable_layers(model):
        return network.statistics()
    rows = layer_weights(model)
    return summarize(np.concatenate([r[2].astype(np.float32).ravel() for r in rows]),
                     np.concatenate([r[3].ravel() for r in rows]))


def palette(model) -> np.ndarray:
    """Sorted unique values of the fixed weights (for a plain model: of all fixable weights)."""
    return _summary(model).palette


def unique_weights(model, include_zero: bool = True) -> int:
    """Number of distinct values among ALL fixable weights (free ones included)."""
    summary = _summary(model)
    return summary.unique_values if include_zero else summary.unique_values_nonzero


def weight_entropy(model, include_zero: bool = True) -> float:
    """Shannon entropy (bits) of the distribution of all fixable weight values."""
    summary = _summary(model)
    return summary.entropy_bits if include_zero else summary.entropy_bits_nonzero


def fixed_fraction(model) -> float:
    """Fraction of fixable weights fixed so far (a model made by fix_weights)."""
    if not wrappers_of(model) and not isinstance(model, WeightFixingWrapper):
        raise ValueError(
            "fixed_fraction needs a model made by tfmot_wfn.fix_weights; a plain model carries "
            "no fixing state.")
    return _summary(model).fixed_fraction


@dataclasses.dataclass
class FixingReport(JsonReport):
    """Summary of a (partly) fixed network. `str(report)` is a readable text."""

    total_weights: int
    fixed_fraction: float
    unique_values: int
    unique_values_nonzero: int
    entropy_bits: float
    entropy_bits_nonzero: float
    zero_fraction: float
    palette: List[Dict]
    layers: List[Dict]
    #: Weights left float, grouped by layer and reason: ``{"layer", "class", "weights"
    #: (short names), "size" (values), "reason"}`` (running statistics, layers kept float).
    not_fixed: List[Dict] = dataclasses.field(default_factory=list)
    #: The fixing rule of a wrapped model (`fix_weights(..., rule=)`); None for a plain model,
    #: which does not record how it was fixed.
    rule: Optional[str] = None
    #: Whether the kernels were kept int8-exact (`fix_weights(..., int8_exact=)`); None for a
    #: plain model, like `rule`.
    int8_exact: Optional[bool] = None

    def __str__(self) -> str:
        lines = [
            f"weights: {self.total_weights}   fixed: {self.fixed_fraction:.2%}   "
            f"zeros: {self.zero_fraction:.2%}",
            f"unique values: {self.unique_values} (with 0), {self.unique_values_nonzero} (without 0)",
            f"entropy: {self.entropy_bits:.3f} bits (with 0), {self.entropy_bits_nonzero:.3f} bits "
            "(without 0)",
            f"palette ({len(self.palette)} values, count, sum of signed powers of two):",
        ]
        if self.rule is not None:
            exact = ", int8-exact kernel channels" if self.int8_exact else ""
            lines.insert(1, f"fixing rule: {self.rule}{exact}")
        for p in self.palette:
            lines.append(f"  {p['value']:>+14.8g}  {p['count']:>9d}  {p['powers_of_two']}")
        lines.append("layers:")
        for layer in self.layers:
            lines.append(f"  {layer['layer']:<28s} {layer['weights']:>9d} weights  "
                         f"{layer['fixed_fraction']:>7.2%} fixed  {layer['unique_values']:>5d} values")
        if self.not_fixed:
            lines.append("not fixed (kept float):")
            for entry in self.not_fixed:
                lines.append(f"  {entry['layer']:<28s} {'/'.join(entry['weights'])} "
                             f"({entry['size']} values): {entry['reason']}")
        return "\n".join(lines)


def not_fixed_weights(model) -> List[Dict]:
    """The weights fixing leaves float, grouped by layer and reason (see `FixingReport.not_fixed`)."""
    out: List[Dict] = []
    for layer in _leaves(model):
        if isinstance(layer, WeightFixingWrapper):
            inner = layer.layer
            found = fixable_layer.unfixed_weights(inner, layer.fix_biases, layer.fix_batchnorm)
        elif layer.weights and (fixable_layer.is_supported(layer)
                                or fixable_layer.kept_float_reason(layer) is not None):
            inner = layer
            found = fixable_layer.unfixed_weights(layer)
        else:
            continue
        groups: Dict[str, Dict] = {}
        for v, reason in found:
            entry = groups.setdefault(reason, {
                "layer": inner.name, "class": type(inner).__name__, "weights": [], "size": 0,
                "reason": reason})
            entry["weights"].append(fixable_layer._short_name(v))
            entry["size"] += int(np.prod(v.shape))
        out.extend(groups.values())
    return out


def _settings_of(model) -> Dict:
    """``rule`` and ``int8_exact`` of a wrapped model; None for a plain one."""
    network = FixingNetwork.find(model)
    if network is None:
        return {"rule": None, "int8_exact": None}
    return {"rule": network.rule, "int8_exact": network.int8_exact}


def report(model) -> FixingReport:
    """Network-wide and per-layer statistics, and the palette with each value's
    decomposition into signed powers of two."""
    summary = _summary(model)
    rows = layer_weights(model)
    per_layer: Dict[str, Dict] = {}
    for name, _, v, m in rows:
        entry = per_layer.setdefault(name, {"layer": name, "values": [], "masks": []})
        entry["values"].append(v.ravel())
        entry["masks"].append(m.ravel())
    layers = []
    for entry in per_layer.values():
        v = np.concatenate(entry["values"])
        m = np.concatenate(entry["masks"])
        layers.append({"layer": entry["layer"], "weights": int(v.size),
                       "fixed_fraction": float(m.mean()),
                       "unique_values": int(value_counts(v)[0].size)})
    return FixingReport(
        total_weights=summary.total_weights,
        fixed_fraction=summary.fixed_fraction,
        unique_values=summary.unique_values,
        unique_values_nonzero=summary.unique_values_nonzero,
        entropy_bits=summary.entropy_bits,
        entropy_bits_nonzero=summary.entropy_bits_nonzero,
        zero_fraction=summary.zero_fraction,
        palette=[{"value": float(p), "count": int(c), "powers_of_two": format_signed_digits(p),
                  "terms": len(signed_digits(p))}
                 for p, c in zip(summary.palette, summary.palette_counts)],
        layers=layers,
        not_fixed=not_fixed_weights(model),
        **_settings_of(model),
    )
