"""README's two tables of FRONTIER.json: the over-seeds summary and the fixing-rule table.

`frontier.py` rewrites them in the README (between the marker comments ``<!-- frontier:NAME
-->`` and ``<!-- /frontier:NAME -->``) whenever it writes the committed ``FRONTIER.md``, so that
a rerun of the benchmark leaves no hand-copied number behind::

    python benchmarks/frontier.py --report-only   # FRONTIER.md and README's tables from FRONTIER.json

Each table is built from `frontier.summarise` (mean over the seeds, paired standard error of
each drop); a row or cell the results do not have reads "not run".
"""

from __future__ import annotations

import os
import re
from typing import Dict, List, Optional

import frontier
import models
from paired_stats import LOSSLESS_POINTS

#: README's name of each model, in the order of its over-seeds table.
NAMES = {"resnet20": "ResNet-20, photos", "mobilenetv2_cifar": "MobileNetV2, photos",
         "mobilenetv2": "MobileNetV2, digits", "cnn": "digit CNN", "mlp": "MLP, digits"}
#: The rule table's columns: (model, delta, heading).
RULE_COLUMNS = (("resnet20", 0.015, "ResNet-20 photos"),
                ("mobilenetv2", 0.0075, "MobileNetV2 digits, delta 0.0075"),
                ("mobilenetv2", 0.015, "MobileNetV2 digits, delta 0.015"),
                ("mobilenetv2_cifar", 0.015, "MobileNetV2 photos, delta 0.015"),
                ("mobilenetv2_cifar", 0.03, "MobileNetV2 photos, delta 0.03"),
                ("cnn", 0.015, "digit CNN"))
#: The rule table's rows: rule -> its label.
RULE_LABELS = {"bounded_third": '`bounded_third` (`"auto"` without depthwise)',
               "gentle": '`gentle` (`"auto"` with depthwise)',
               "late_third": "`late_third` (the depthwise default before `gentle`)",
               "nearest_capped": "`nearest_capped` (0.1's default)",
               "third": "`third`", "capped": "`capped`", "paper": "`paper`"}


def _drop(row: Dict) -> str:
    """``+0.32 ± 0.35`` (or ``+0.32 (1 seed)``), bold when more than `LOSSLESS_POINTS` lost."""
    one = row["seeds"] == 1
    text = f"{row['drop']:+.1f}" if one and abs(row["drop"]) >= 10 else f"{row['drop']:+.2f}"
    if not one:
        text += f" ± {row['se']:.2f}"
    if row["drop"] > LOSSLESS_POINTS:
        text = f"**{text}**"
    return text + (" (1 seed)" if one else "")


def _auto_cell(name: str, per_model: Dict, auto: Optional[Dict]) -> str:
    """The auto row: chosen deltas, drop, and its ratios (`frontier.auto_compared`)."""
    if auto is None:
        return "not run"
    compared = frontier.auto_compared(name, per_model)
    # The chosen deltas of the seeds the ratios are over (those with the default rule's row too).
    seeds = (compared["seeds"] if compared is not None else
             [rows for rows in per_model["seeds"].values() if frontier.AUTO_LABEL in rows])
    chosen = ", ".join(f"{rows[frontier.AUTO_LABEL]['delta']:g}" for rows in seeds)
    text = f"{chosen}: {_drop(auto)}"
    if compared is not None and "h_tfmot" in compared:
        text += (f"; {compared['default_values'] / compared['auto_values']:.2f}x, "
                 f"{compared['h_tfmot'] / compared['h_auto']:.2f}x")
    return text


def over_seeds_table(results: Dict) -> List[str]:
    """Per model: the default rule's lossless deltas (rows on every seed), its sparsest lossless
    row against tfmot-16 (kernel values and entropy), tfmot-16's drop, the auto row."""
    lines = ["| model | default rule: lossless deltas | sparsest lossless row: drop; kernel values "
             "and entropy, tfmot-16 / WFN | tfmot-16 drop | `distance=\"auto\"`: chosen deltas: "
             "drop; fixed values of 0.015 / its own, entropy of tfmot-16 / its own |",
             "|---|---|---|---|---|"]
    for name, title in NAMES.items():
        if name not in results or not results[name].get("seeds"):
            continue
        per_model = results[name]
        rows = frontier.summarise(per_model)
        by = {r["label"]: r for r in rows}
        every = len(per_model["seeds"])
        default = models.default_rule(name)
        mine = sorted((r for r in rows if r["rule"] == default and r["seeds"] == every),
                      key=lambda r: r["delta"])
        lossless = [r for r in mine if r["drop"] <= LOSSLESS_POINTS]
        tfmot = by.get("tfmot-16")
        deltas = ", ".join(f"{r['delta']:g}" for r in lossless) or "none"
        if lossless and tfmot:
            best = min(lossless, key=lambda r: r["unique_kernels"])
            sparsest = (f"{best['delta']:g}: {_drop(best)}; {tfmot['unique_kernels']:,.0f} / "
                        f"{best['unique_kernels']:,.1f} = {tfmot['unique_kernels'] / best['unique_kernels']:.1f}x, "
                        f"{tfmot['entropy_kernels']:.2f} / {best['entropy_kernels']:.2f} = "
                        f"{tfmot['entropy_kernels'] / best['entropy_kernels']:.2f}x")
        else:
            sparsest = "none" if tfmot else "not run"
        flt = by["float"]
        lines.append(
            f"| {title} ({every} seeds, float {100 * flt['accuracy']:.1f} ± "
            f"{100 * flt['accuracy_std']:.1f}%) | `{default}`: {deltas} | {sparsest} | "
            f"{_drop(tfmot) if tfmot else 'not run'} | "
            f"{_auto_cell(name, per_model, by.get(frontier.AUTO_LABEL))} |")
    return lines


def rule_table(results: Dict) -> List[str]:
    """Per rule (`RULE_LABELS`) and column (`RULE_COLUMNS`): fixed values / entropy, drop."""
    lines = ["| rule | " + " | ".join(heading for _, _, heading in RULE_COLUMNS) + " |",
             "|---" * (len(RULE_COLUMNS) + 1) + "|"]
    summaries = {name: {(r["rule"], r["delta"]): r for r in frontier.summarise(results[name])
                        if r["rule"]}
                 for name in {c[0] for c in RULE_COLUMNS} if name in results}
    for rule, label in RULE_LABELS.items():
        cells = []
        for name, delta, _ in RULE_COLUMNS:
            row = summaries.get(name, {}).get((rule, delta))
            cells.append("not run" if row is None or row["fixed_unique"] is None else
                         f"{row['fixed_unique']:.0f} / {row['fixed_entropy']:.2f}, {_drop(row)}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


TABLES = {"over-seeds": over_seeds_table, "rules": rule_table}


def update_readme(path: str, results: Dict) -> List[str]:
    """Rewrite each of `TABLES` between its markers in the README at ``path``; returns the names
    of the tables whose markers were found (a README without them is left as it is)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    found = []
    for name, build in TABLES.items():
        pattern = re.compile(rf"(<!-- frontier:{name} -->\n)(.*?)(<!-- /frontier:{name} -->)", re.S)
        if not pattern.search(text):
            continue
        table = "\n".join(build(results)) + "\n"
        text = pattern.sub(lambda m: m.group(1) + table + m.group(3), text)
        found.append(name)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return found
