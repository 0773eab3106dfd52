"""Estimated energy per inference and weight bits moved for each benchmark row (tfmot_wfn.hardware_cost).

Each row is costed in the form it deploys as, all from one Keras model and one energy table
(Horowitz 45 nm, batch 1, weights read once per inference):

* ``float``: fp32 MACs, 32-bit weights;
* ``int8`` (post-training quantization; costed on the float model, same shapes): int8
  multiply + int32 accumulate, 8-bit weights, int32 biases;
* ``clustered`` (tfmot cluster_weights): the arithmetic stays fp32, weights are read as
  ceil(log2 K)-bit indices into the network's distinct values (K, as the TFLite palette column);
* ``wfn``: shift-add (each non-zero weight's power-of-two terms), ceil(log2 K)-bit indices.
"""

from __future__ import annotations

from typing import Dict

KINDS = ("float", "int8", "clustered", "wfn")
MEMORIES = ("dram", "sram")
COLUMNS = ("est. energy nJ/inference, weights in DRAM / SRAM", "weight kbit moved/inference")


def _form(kind: str, cost) -> tuple:
    """(arithmetic form, stored form, description) for a row of `kind`."""
    bits = int(cost.bits_per_weight["palette"])
    if kind == "float":
        return "float32", "float32", "fp32 MACs, 32-bit weights"
    if kind == "int8":
        return "int8", "int8", "int8 MACs, 8-bit weights"
    palette = f"{bits}-bit indices (K={cost.palette_size:,})"
    if kind == "wfn" and cost.shift_add_applies:
        return "shift_add", "palette", f"shift-add, {palette}"
    return "float32", "palette", f"fp32 MACs, {palette}"


def row_columns(model, kind: str) -> Dict:
    """The ``hw_*`` entries of a benchmark row; ``{"hw_error": ...}`` if the estimate fails."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    import tfmot_wfn

    try:
        costs = {m: tfmot_wfn.hardware_cost(model, memory=m) for m in MEMORIES}
    except Exception as e:  # noqa: BLE001 - a benchmark row must not die on the estimate
        return {"hw_error": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"}
    arithmetic, stored, description = _form(kind, costs["dram"])
    out = {"hw_form": description, "hw_macs": costs["dram"].totals["macs"],
           "hw_bits_moved": costs["dram"].weight_bits_moved[stored],
           "hw_palette_size": costs["dram"].palette_size,
           "hw_shift_add_applies": costs["dram"].shift_add_applies}
    for m, cost in costs.items():
        out[f"hw_energy_{m}_nj"] = (cost.compute_pj[arithmetic] + cost.weight_read_pj[stored]) / 1e3
    return out


def cells(row: Dict) -> str:
    """The two table cells (without the outer pipes) of the hardware cost columns."""
    if "hw_energy_dram_nj" not in row:
        return "n/a | n/a"
    return (f"{row['hw_energy_dram_nj']:,.1f} / {row['hw_energy_sram_nj']:,.1f} ({row['hw_form']}) "
            f"| {row['hw_bits_moved'] / 1e3:,.1f}")


NOTE = ("* **est. energy, weight kbit moved**: `tfmot_wfn.hardware_cost` (an estimate from operation "
        "counts with the 45 nm figures of Horowitz, ISSCC 2014; batch 1; weights read once per inference "
        "from DRAM at 640 pJ or SRAM at 5 pJ per 32 bits; activations not counted) in the form each row "
        "deploys as: float fp32 MACs and 32-bit weights; int8 PTQ int8 MACs, 8-bit weights, int32 biases "
        "(costed on the float model); tfmot clustering fp32 MACs and ceil(log2 K)-bit indices; WFN "
        "shift-adds (the power-of-two terms of each non-zero weight) and ceil(log2 K)-bit indices; K = "
        "distinct values of the counted kernels and biases (BatchNorm is not counted).")
