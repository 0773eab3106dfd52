"""The hardware cost section of `tfmot-wfn report` (printed text, hardware_cost.txt, report.json)."""

from __future__ import annotations

import os
from typing import Dict, Tuple

TEXT_FILE = "hardware_cost.txt"
PLOT_FILE = os.path.join("plots", "hardware_cost.png")


def hardware_cost_section(model, output: str, plots: bool = True) -> Tuple[Dict, str]:
    """``(dict for report.json, text)`` of `tfmot_wfn.hardware_cost(model)` with the defaults.

    Writes the text to ``output/hardware_cost.txt`` and, with `plots`, the figure
    to ``output/plots/hardware_cost.png`` (`plot.hardware_cost`; its path is the
    dict's ``"plot"``). A model whose cost cannot be estimated (e.g. no known input
    shape) gives ``{"error": reason}`` and a one-line text instead of failing the report.
    """
    import tfmot_wfn

    try:
        cost = tfmot_wfn.hardware_cost(model)
    except (ValueError, TypeError) as e:
        reason = str(e).splitlines()[0]
        section, text = {"error": reason}, f"hardware cost: not estimated: {reason}"
    else:
        section, text = cost.to_dict(), str(cost)
        if plots:
            from tfmot_wfn.apps import plot

            section["plot"] = os.path.join(output, PLOT_FILE)
            plot.hardware_cost(cost, section["plot"])
    with open(os.path.join(output, TEXT_FILE), "w") as f:
        f.write(text + "\n")
    return section, text
