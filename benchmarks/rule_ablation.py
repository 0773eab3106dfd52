"""The fixing rules on ResNet-shaped weight pools, without training (pure numpy, seconds).

    python benchmarks/rule_ablation.py                  # writes benchmarks/rule_ablation.md

The pool is ResNet-20-shaped: He-normal 3x3 conv kernels (16/32/64 channels, fan-in scaled),
a dense head, and BatchNorm gammas near 1 and betas near 0 (what trained BatchNorms look like);
several seeds. Each rule runs the paper's ten stages (`core.fixing_stage` with the stage's distance,
earlier stages' palette offered) with no training in between, so this measures the rule alone:
unique values and entropy of the fixed pool, relative to the paper's rule. What the rules do to
accuracy needs training (issue 12's ablation on real photos).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tfmot_wfn.core import entropy_bits, fixing_rules, fixing_stage  # noqa: E402

#: Issue 12's rule target: at these deltas the default rule is within these ratios of the paper
#: rule's unique values and entropy (benchmarks/frontier.py judges the same on the trained ResNet).
SMALL_DELTAS, VALUES_TARGET, ENTROPY_TARGET = (0.0075, 0.015), 1.10, 1.02
FRACTIONS = (0.3, 0.6, 0.8, 0.9, 0.95, 0.975, 0.99, 0.9975, 0.999, 1.0)


def resnet20_pool(seed: int) -> np.ndarray:
    """Kernels, BatchNorm gammas/betas of a ResNet-20 shape, float32, one flat pool."""
    rng = np.random.default_rng(seed)
    parts = []
    channels_in = 3
    for channels in [16] * 7 + [32] * 6 + [64] * 6:
        fan_in = 9 * channels_in
        parts.append(rng.normal(0.0, np.sqrt(2.0 / fan_in), 9 * channels_in * channels))
        parts.append(1.0 + rng.normal(0.0, 0.05, channels))  # gammas
        parts.append(rng.normal(0.0, 0.05, channels))        # betas
        channels_in = channels
    parts.append(rng.normal(0.0, np.sqrt(1.0 / 64), 64 * 10))
    return np.concatenate(parts).astype(np.float32)


def run_schedule(pool: np.ndarray, delta: float, rule: str):
    """(unique values, entropy bits) after the ten stages with no training in between."""
    values, fixed, palette = pool.copy(), None, None
    n = len(FRACTIONS)
    for i, fraction in enumerate(FRACTIONS):
        result = fixing_stage(values, fixed, fraction, max(delta, delta * (n - i)), palette=palette,
                              **fixing_rules.stage_options(rule, fraction))
        values, fixed, palette = result.values, result.fixed, result.palette
    return int(np.unique(values + np.float32(0)).size), float(entropy_bits(values))


def table(deltas, seeds) -> str:
    lines = ["# Fixing rules on ResNet-20-shaped pools, no training", "",
             f"`python benchmarks/rule_ablation.py`: {len(seeds)} seeds, "
             f"{resnet20_pool(0).size:,} weights each (see the script's docstring). Mean over seeds; "
             "ratio = rule / paper (the paper's rule has the fewest values).", "",
             "| delta | rule | unique values | entropy bits | unique / paper | entropy / paper |",
             "|---:|---|---:|---:|---:|---:|"]
    targets = []
    default = fixing_rules.choose_rule(fixing_rules.DEFAULT_RULE, depthwise=False)
    for delta in deltas:
        rows = {}
        for rule in fixing_rules.RULES:
            runs = [run_schedule(resnet20_pool(s), delta, rule) for s in seeds]
            rows[rule] = (np.mean([r[0] for r in runs]), np.mean([r[1] for r in runs]))
        paper_u, paper_h = rows["paper"]
        for rule, (u, h) in rows.items():
            lines.append(f"| {delta:g} | {rule} | {u:.1f} | {h:.3f} | {u / paper_u:.2f}x | "
                         f"{h / paper_h:.3f}x |")
            if rule == default and delta in SMALL_DELTAS:
                met = u / paper_u <= VALUES_TARGET and h / paper_h <= ENTROPY_TARGET
                targets.append(f"* delta {delta:g}: the default (`rule=\"auto\"` picks `{rule}`: no "
                               f"depthwise kernels here) has {u / paper_u:.2f}x the "
                               f"paper rule's unique values and {h / paper_h:.3f}x its entropy "
                               f"(target: within {VALUES_TARGET:.2f}x and {ENTROPY_TARGET:.2f}x): "
                               f"{'met' if met else '**not met**'}.")
    if targets:
        lines += ["", "Issue 12's rule target on these pools:", ""] + targets
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deltas", type=float, nargs="+", default=[0.0075, 0.015, 0.03, 0.05])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--output", default=os.path.join(HERE, "rule_ablation.md"))
    args = parser.parse_args(argv)
    text = table(args.deltas, list(range(args.seeds)))
    with open(args.output, "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
