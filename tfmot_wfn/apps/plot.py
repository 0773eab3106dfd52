"""Plots of a fixed network (matplotlib, PNG): palette usage, stages, layers.

```python
from tfmot_wfn.apps import plot

plot.palette_histogram(final_model, "palette.png")        # weights per palette value, log scale
plot.stage_progress(update.history, "stages.png")         # fixed fraction, unique count per stage
plot.layer_unique_values(tfmot_wfn.report(final_model), "layers.png")
plot.save_all("plots/", final_model, history=update.history)   # all three
```

Every function takes a model (made by `fix_weights`, or plain/stripped), a
`FixingReport`, or its dict (``report.json``), and returns the matplotlib
`Figure` (shown inline in a notebook). Figures are made without pyplot, so no
global backend is selected or changed; PNGs are written with the Agg renderer.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

DPI = 120
#: Beyond this many distinct values the palette histogram is binned (BINS bins).
MAX_BARS = 512
BINS = 200
ZERO_COLOR = "#7f7f7f"
POSITIVE_COLOR = "#1f77b4"
NEGATIVE_COLOR = "#d62728"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save(fig, path: Optional[str]):
    if path is not None:
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fig.savefig(path, format="png", dpi=DPI)
    return fig


def _report_dict(source) -> Dict:
    """A report dict from a model, a FixingReport, or a dict (report.json or FixingReport.to_dict())."""
    if isinstance(source, dict):
        if "palette" not in source or "layers" not in source:
            raise ValueError("a report dict needs 'palette' and 'layers' (tfmot_wfn.report(model)"
                             ".to_dict() or a report.json written by tfmot-wfn)")
        return source
    if dataclasses.is_dataclass(source) and hasattr(source, "to_dict"):
        return source.to_dict()
    if hasattr(source, "layers") or hasattr(source, "weights"):
        import tfmot_wfn

        return tfmot_wfn.report(source).to_dict()
    raise TypeError("expected a Keras model, a tfmot_wfn.FixingReport or its dict, got "
                    f"{type(source).__name__}")


def _palette_arrays(source) -> Tuple[np.ndarray, np.ndarray]:
    if isinstance(source, tuple) and len(source) == 2:
        values, counts = (np.asarray(a).ravel() for a in source)
    else:
        rep = _report_dict(source)
        values = np.array([p["value"] for p in rep["palette"]], np.float64)
        counts = np.array([p["count"] for p in rep["palette"]], np.int64)
    if values.shape != counts.shape:
        raise ValueError("palette values and counts differ in length")
    order = np.argsort(values)
    return values[order], counts[order]


def _label(value: float) -> str:
    return "0" if value == 0 else f"{value:.3g}"


def palette_histogram(source, path: Optional[str] = None, title: Optional[str] = None,
                      max_labels: int = 64):
    """Bar per palette value (in value order) with the number of weights using it, log scale.

    Args:
      source: a model, a `FixingReport` / its dict, or ``(values, counts)``.
      path: write a PNG there (folders are created).
      title: default: palette size, weights and entropy.
      max_labels: label every value up to this many; beyond, about this many labels.

    More than `MAX_BARS` distinct values (a model that is not fixed) are drawn as a
    binned histogram instead.
    """
    values, counts = _palette_arrays(source)
    k = values.size
    fig = _figure(max(6.0, min(16.0, 0.22 * min(k, 60) + 3.0)), 4.0)
    ax = fig.add_subplot()
    if k == 0:
        ax.text(0.5, 0.5, "no fixed weights yet", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return _save(fig, path)
    if k > MAX_BARS:  # not a fixed network (or a huge palette): a binned histogram instead
        ax.hist(values, bins=BINS, weights=counts, color=POSITIVE_COLOR)
        ax.set_yscale("log")
        ax.set_xlabel("weight value (binned: more distinct values than bars)")
        ax.set_ylabel("weights (log scale)")
        ax.set_title(title or f"Weight values: {k:,} distinct, {int(counts.sum()):,} weights")
        return _save(fig, path)
    colors = [ZERO_COLOR if v == 0 else POSITIVE_COLOR if v > 0 else NEGATIVE_COLOR
              for v in values]
    positions = np.arange(k)
    ax.bar(positions, counts, color=colors, width=0.8)
    ax.set_yscale("log")
    ax.set_ylim(0.7, counts.max() * 2.0)
    step = max(1, int(np.ceil(k / max(1, max_labels))))
    shown = positions[::step]
    zero = np.flatnonzero(values == 0)
    if step > 1 and zero.size and zero[0] not in shown:  # always label 0
        shown = np.sort(np.concatenate([shown[np.abs(shown - zero[0]) > step // 2], zero]))
    ax.set_xticks(shown)
    ax.set_xticklabels([_label(values[i]) for i in shown], rotation=90, fontsize=8)
    ax.set_xlim(-0.7, k - 0.3)
    ax.set_xlabel("palette value (sorted; blue > 0, red < 0, grey = 0)")
    ax.set_ylabel("weights using it (log scale)")
    total = int(counts.sum())
    p = counts / total
    entropy = float(-(p * np.log2(p)).sum())
    ax.set_title(title or f"Weight usage over the palette: {k} values, {total:,} weights, "
                          f"entropy {entropy:.2f} bits")
    ax.grid(axis="y", which="major", alpha=0.3)
    return _save(fig, path)


def _stage_rows(history: Sequence) -> List[Dict]:
    rows = []
    for item in history:
        row = dataclasses.asdict(item) if dataclasses.is_dataclass(item) else dict(item)
        if "fixed" not in row or "total" not in row:
            raise ValueError("each stage needs 'fixed' and 'total' (a StageSummary from "
                             "UpdateFixingStep.history or its dict)")
        rows.append(row)
    return rows


def stage_progress(history: Sequence, path: Optional[str] = None, title: Optional[str] = None,
                   baseline_accuracy: Optional[float] = None):
    """Fixed fraction and unique count after each stage (and accuracy, when recorded).

    Args:
      history: `UpdateFixingStep.history` (StageSummary list) or dicts with at least
        ``fixed`` and ``total``; ``fraction`` (target), ``palette_size``,
        ``unique_values`` and ``accuracy`` / ``eval_accuracy`` are drawn when present.
      path: write a PNG there.
      baseline_accuracy: the float model's accuracy, drawn as a dashed line.
    """
    rows = _stage_rows(history)
    has_accuracy = any(r.get("eval_accuracy", r.get("accuracy")) is not None for r in rows)
    panels = 3 if has_accuracy else 2
    fig = _figure(4.2 * panels, 3.6)
    axes = fig.subplots(1, panels)
    if not rows:
        for ax in axes:
            ax.text(0.5, 0.5, "no stage ran yet", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
        return _save(fig, path)
    stages = np.arange(1, len(rows) + 1)
    _draw_fixed_fractions(axes[0], stages, rows)
    _draw_unique_counts(axes[1], stages, rows)
    if has_accuracy:
        _draw_accuracies(axes[2], stages, rows, baseline_accuracy)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _draw_fixed_fractions(ax, stages: np.ndarray, rows: List[Dict]) -> None:
    """Bars: fixed weights (%) after each stage; ticks: the schedule's targets."""
    fixed = np.array([r["fixed"] / r["total"] for r in rows]) * 100.0
    ax.bar(stages, fixed, color=POSITIVE_COLOR, alpha=0.8, label="fixed")
    if all("fraction" in r for r in rows):
        ax.plot(stages, np.array([r["fraction"] for r in rows]) * 100.0, "k_", markersize=14,
                markeredgewidth=2, label="target")
    ax.set_ylim(0, 105)
    ax.set_xlabel("stage")
    ax.set_ylabel("fixed weights (%)")
    ax.set_title("Fixed fraction")
    ax.set_xticks(stages)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def _draw_unique_counts(ax, stages: np.ndarray, rows: List[Dict]) -> None:
    """Lines (log scale): palette size and unique values in all weights after each stage."""
    for key, label, style in (("palette_size", "palette (fixed values)", "o-"),
                              ("unique_values", "unique values (all weights)", "s--")):
        if all(r.get(key) is not None for r in rows):
            ax.plot(stages, [r[key] for r in rows], style, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("stage")
    ax.set_ylabel("count (log scale)")
    ax.set_title("Unique values")
    ax.set_xticks(stages)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")


def _draw_accuracies(ax, stages: np.ndarray, rows: List[Dict],
                     baseline_accuracy: Optional[float]) -> None:
    """Line: accuracy after each stage; dashed: the float model's."""
    acc = [r.get("eval_accuracy", r.get("accuracy")) for r in rows]
    ax.plot(stages, [np.nan if a is None else 100.0 * a for a in acc], "o-", color="#2ca02c",
            label="after the stage")
    if baseline_accuracy is not None:
        ax.axhline(100.0 * baseline_accuracy, color="k", linestyle="--", linewidth=1,
                   label="float model")
    ax.legend(fontsize=8)
    ax.set_xlabel("stage")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy after each stage")
    ax.set_xticks(stages)
    ax.grid(alpha=0.3)


def layer_unique_values(source, path: Optional[str] = None, title: Optional[str] = None):
    """Horizontal bar per layer: distinct weight values, labelled with weights and fixed %.

    Args:
      source: a model, a `FixingReport` or its dict.
      path: write a PNG there.
    """
    rep = _report_dict(source)
    layers = rep["layers"]
    n = len(layers)
    fig = _figure(8.0, max(2.5, 0.24 * n + 1.4))
    ax = fig.add_subplot()
    if n == 0:
        ax.text(0.5, 0.5, "no fixable layer", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _save(fig, path)
    names = [layer["layer"] for layer in layers]
    unique = np.array([layer["unique_values"] for layer in layers])
    positions = np.arange(n)[::-1]  # first layer at the top
    ax.barh(positions, unique, color=POSITIVE_COLOR, alpha=0.85)
    ax.set_yticks(positions)
    ax.set_yticklabels(names, fontsize=8)
    for y, layer, u in zip(positions, layers, unique):
        ax.text(u, y, f" {u}  ({layer['weights']:,} w, {layer['fixed_fraction']:.0%} fixed)",
                va="center", fontsize=7)
    ax.set_xlim(0, unique.max() * 1.45 + 1)
    ax.set_xlabel("distinct weight values in the layer")
    ax.set_title(title or f"Unique values per layer (network palette: {len(rep['palette'])} values)")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


PLOT_FILES = {"palette": "palette_histogram.png", "stages": "stage_progress.png",
              "layers": "layer_unique_values.png"}


def save_all(folder: str, source, history: Optional[Sequence] = None,
             baseline_accuracy: Optional[float] = None) -> Dict[str, str]:
    """Write the plots as PNGs into `folder`; returns ``{"palette"|"stages"|"layers": path}``.

    The stage plot is written only when `history` (a non-empty stage list) is given;
    `baseline_accuracy` (the float model's) is drawn on it.
    """
    os.makedirs(folder, exist_ok=True)
    rep = _report_dict(source)
    paths = {}
    paths["palette"] = os.path.join(folder, PLOT_FILES["palette"])
    palette_histogram(rep, paths["palette"])
    paths["layers"] = os.path.join(folder, PLOT_FILES["layers"])
    layer_unique_values(rep, paths["layers"])
    if history:
        paths["stages"] = os.path.join(folder, PLOT_FILES["stages"])
        stage_progress(history, paths["stages"], baseline_accuracy=baseline_accuracy)
    return paths


def distance_frontier(search, path: Optional[str] = None, title: Optional[str] = None):
    """Validation accuracy against unique values for every run of a `DistanceSearch`.

    Proxy runs are hollow, full runs filled, the chosen model ringed; the dashed line is
    the float accuracy minus the tolerance.
    """
    rows = search.frontier
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    for source, face in (("proxy", "none"), ("full", POSITIVE_COLOR)):
        picked = [r for r in rows if r.source == source]
        if picked:
            ax.scatter([r.unique_values for r in picked], [r.accuracy for r in picked],
                       facecolors=face, edgecolors=POSITIVE_COLOR, label=f"{source} runs", zorder=3)
            for r in picked:
                ax.annotate(f"{r.distance:g}", (r.unique_values, r.accuracy), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
    chosen = [r for r in rows if r.source == "full" and r.distance == search.distance]
    if chosen:
        ax.scatter([chosen[-1].unique_values], [chosen[-1].accuracy], s=160, facecolors="none",
                   edgecolors=NEGATIVE_COLOR, label=f"chosen (delta {search.distance:g})", zorder=4)
    ax.axhline(search.float_accuracy - search.tolerance, color=ZERO_COLOR, linestyle="--",
               label="float accuracy - tolerance")
    ax.set_xscale("log")
    ax.set_xlabel("unique weight values (log)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title or "distance search: accuracy vs unique values (labels: delta)")
    ax.legend(fontsize=8)
    return _save(fig, path)


HARDWARE_FORMS = (("float32", "float32", "#7f7f7f"), ("int8", "int8", "#ff7f0e"),
                  ("shift_add", "shift-add", POSITIVE_COLOR))
STORAGE_LABELS = (("float32", "float32"), ("int8", "int8"), ("palette", "palette index"),
                  ("entropy_coded", "entropy-coded"))


def _hardware_dict(source) -> Dict:
    """A `HardwareCost` dict from a model, a `HardwareCost`, or its dict."""
    if isinstance(source, dict):
        if "energy_pj" not in source or "weight_bits_moved" not in source:
            raise ValueError("a hardware cost dict needs 'energy_pj' and 'weight_bits_moved' "
                             "(tfmot_wfn.hardware_cost(model).to_dict() or report.json's "
                             "'hardware_cost')")
        return source
    if dataclasses.is_dataclass(source) and hasattr(source, "energy_pj"):
        return source.to_dict()
    if hasattr(source, "layers") or hasattr(source, "weights"):
        import tfmot_wfn

        return tfmot_wfn.hardware_cost(source).to_dict()
    raise TypeError("expected a Keras model, a tfmot_wfn.HardwareCost or its dict, got "
                    f"{type(source).__name__}")


def hardware_cost(source, path: Optional[str] = None, title: Optional[str] = None):
    """Estimated energy per inference (float32 / int8 / shift-add) and weight bits moved.

    Args:
      source: a model, a `tfmot_wfn.HardwareCost`, or its dict (report.json's
        ``hardware_cost``).
      path: write a PNG there.

    Left: energy per inference in nJ, each bar split into arithmetic and weight
    reads (shift-add missing, with the reason, when the weights are not sums of a
    few powers of two). Right: weight bits read per inference in each stored form.
    """
    cost = _hardware_dict(source)
    fig = _figure(10.0, 3.8)
    left, right = fig.subplots(1, 2)
    for i, (key, label, colour) in enumerate(HARDWARE_FORMS):
        total = cost["energy_pj"].get(key)
        if total is None:
            left.text(i, 0, " n/a", rotation=90, ha="center", va="bottom", fontsize=8)
            continue
        read = cost["weight_read_pj"]["palette" if key == "shift_add" else key]
        left.bar(i, (total - read) / 1e3, color=colour, alpha=0.55,
                 label="arithmetic" if i == 0 else None)
        left.bar(i, read / 1e3, bottom=(total - read) / 1e3, color=colour,
                 label="weight reads" if i == 0 else None, hatch="//", edgecolor="white")
        left.text(i, total / 1e3, f"{total / 1e3:,.3g}", ha="center", va="bottom", fontsize=8)
    left.set_xticks(range(len(HARDWARE_FORMS)))
    left.set_xticklabels([label for _, label, _ in HARDWARE_FORMS])
    left.set_ylabel("energy per inference (nJ)")
    left.set_title(f"Energy estimate (weights from {cost['memory'].upper()})")
    left.legend(fontsize=8)
    left.grid(axis="y", alpha=0.3)
    bits = [cost["weight_bits_moved"][key] for key, _ in STORAGE_LABELS]
    right.bar(range(len(bits)), bits, color=["#7f7f7f", "#ff7f0e", POSITIVE_COLOR, "#2ca02c"])
    for i, b in enumerate(bits):
        right.text(i, b, f"{b:,.0f}", ha="center", va="bottom", fontsize=8)
    right.set_xticks(range(len(bits)))
    right.set_xticklabels([label for _, label in STORAGE_LABELS])
    right.set_ylabel("weight bits read per inference")
    right.set_title(f"Weight traffic (palette K={cost['palette_size']})")
    right.grid(axis="y", alpha=0.3)
    fig.suptitle(title or "Hardware cost per inference (an estimate from operation counts)")
    return _save(fig, path)
