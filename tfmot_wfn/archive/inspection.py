"""A readable description of an archive's contents (for ``tfmot-wfn inspect``)."""

from __future__ import annotations

from typing import Dict

import numpy as np

from tfmot_wfn.core.weight_statistics import entropy_bits
from tfmot_wfn.archive.wfn_format import ArchiveContents


def describe(contents: ArchiveContents, file_bytes: int) -> Dict:
    """Palette, per-tensor storage and totals of a decoded archive, as a dict."""
    tensors = []
    indexed_values = []
    for t in contents.tensors:
        row = {"name": t.name, "shape": list(t.array.shape), "dtype": str(t.array.dtype),
               "elements": int(t.array.size), "indexed": t.indexed,
               "unique_values": int(np.unique(t.array).size) if t.array.size else 0}
        if t.indexed:
            indexed_values.append(t.array.astype(np.float32).ravel())
        else:
            row["reason"] = "not all values are in the palette: stored raw, bit-exact"
        tensors.append(row)
    values = np.concatenate(indexed_values) if indexed_values else np.zeros(0, np.float32)
    return {
        "format_version": contents.format_version,
        "coding": contents.coding,
        "file_bytes": int(file_bytes),
        "palette": [float(v) for v in contents.palette],
        "indexed_weights": int(values.size),
        "indexed_entropy_bits": entropy_bits(values) if values.size else 0.0,
        "raw_weights": int(sum(t["elements"] for t in tensors if not t["indexed"])),
        "tensors": tensors,
    }


def format_description(summary: Dict) -> str:
    """The dict of `describe` as a text table."""
    lines = [
        f"tfmot_wfn archive v{summary['format_version']} ({summary['coding']} coding), "
        f"{summary['file_bytes']} bytes",
        f"palette: {len(summary['palette'])} values: "
        + ", ".join(f"{v:g}" for v in summary["palette"]),
        f"palette-indexed weights: {summary['indexed_weights']} "
        f"(entropy {summary['indexed_entropy_bits']:.3f} bits); raw weights: {summary['raw_weights']}",
        f"{'tensor':<48s} {'dtype':<8s} {'elements':>9s} {'unique':>7s}  storage",
    ]
    for t in summary["tensors"]:
        storage = "palette indices" if t["indexed"] else f"raw ({t['reason']})"
        lines.append(f"{t['name']:<48s} {t['dtype']:<8s} {t['elements']:>9d} "
                     f"{t['unique_values']:>7d}  {storage}")
    return "\n".join(lines)
