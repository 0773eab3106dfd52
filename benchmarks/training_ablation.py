"""Training-side ablations of the fixing (issue 12, item 4): each option on/off from the same float weights.

    python benchmarks/training_ablation.py                 # benchmarks/training_ablation.md (+ .json), cnn + mlp, 3 seeds
    python benchmarks/training_ablation.py --models resnet20 --seeds 0 --deltas 0.03   # the real-photo ResNet-20
    python benchmarks/training_ablation.py --quick --output /tmp/t.md   # smoke: 1 seed, 1 delta, tiny epochs
    python benchmarks/training_ablation.py --report-only   # rewrite the .md from the .json

Variants, each against "today": the behaviour of tfmot_wfn 0.1 when this was measured (carried
optimizer state, flat-index zero pruning, fixed weights locked). Since then the fresh optimizer
is the default (`UpdateFixingStep(fresh_optimizer=True)`); every row sets it explicitly:

* ``fresh optimizer``: ``UpdateFixingStep(fresh_optimizer=True)``, a fresh Adam state after
  every stage, as the reference code does;
* ``zero order magnitude``: ``core.fixing_stage(zero_order="magnitude")``: when more weights
  sit below ``zero_distance`` than the stage's quota leaves room for, the smallest ``|w|``
  are pruned first across all layers instead of the earliest layers' weights;
* ``recluster``: every stage re-clusters ALL weights from scratch, as the reference code does
  (``fixing_stage(fixed=None)``: the weights fixed earlier sit on their centres, in the palette,
  and are captured again at distance 0 when their centre is chosen, or become free again).

``zero_order`` and ``recluster`` are not `fix_weights` arguments: this script substitutes the
stage function the network calls (`tfmot_wfn.keras.network.fixing_stage`) while a row runs.

For every model and seed the float model is trained once (`run.train_float`); every row
fine-tunes a copy of those float weights with the paper's 10-stage schedule (Adam at
`run.FINE_TUNE_LR`, clipnorm 0.5, a fit loop that mirrors `run.fix_with_wfn`). Drops are PAIRED
over the same test images: per seed ``mean(c_float - c_row)`` with the error
``std(c_float - c_row, ddof=1) / sqrt(n)``; over S seeds ``sqrt(sum SE^2) / S``. The column
"vs today" is the same statistic with today's row in place of the float model. Rows are saved
after each run, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from typing import Dict, List

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import paired_stats  # noqa: E402  (paired statistics, packed per-image results)
import models  # noqa: E402
import run  # noqa: E402  (training / measuring helpers; sets up sys.path)

#: label -> (UpdateFixingStep fresh_optimizer, fixing_stage zero_order, recluster)
VARIANTS = {
    "today": (False, "index", False),
    "fresh optimizer": (True, "index", False),
    "zero order magnitude": (False, "magnitude", False),
    "recluster": (False, "index", True),
}
DEFAULT_MODELS = ("cnn", "mlp")
DEFAULT_DELTAS = (0.015, 0.03, 0.05)
#: Epochs per stage (the frontier's settings: 2 on the digit models, 1 on the photo models).
EPOCHS_PER_STAGE = {"cnn": 2, "mlp": 2, "resnet20": 1, "mobilenetv2_cifar": 1}


@contextlib.contextmanager
def stage_function(zero_order: str = "index", recluster: bool = False):
    """While inside, the network's fixing stages run with `zero_order` and, with `recluster`,
    with nothing fixed at the start (ALL weights clustered from scratch)."""
    from tfmot_wfn.keras import network

    original = network.fixing_stage

    def stage(weights, fixed, *args, **kwargs):
        return original(weights, None if recluster else fixed, *args, zero_order=zero_order, **kwargs)

    network.fixing_stage = stage
    try:
        yield
    finally:
        network.fixing_stage = original


def fix_row(name, base, data, delta, seed, variant):
    """One fixing run of `variant` (a `VARIANTS` label) from the float model `base`:
    ``(stripped model, seconds, info)``, as `run.fix_with_wfn` returns them."""
    import keras

    import tfmot_wfn

    fresh, zero_order, recluster = VARIANTS[variant]
    spec = models.MODELS[name]
    x_train, _, y_train, _ = data
    eps = EPOCHS_PER_STAGE.get(name, 1)
    keras.utils.set_random_seed(seed)
    steps_per_epoch = int(np.ceil(len(x_train) / spec["batch"]))
    schedule = tfmot_wfn.StagedFixing(steps_per_stage=eps * steps_per_epoch)
    epochs = (len(schedule.fractions) - 1) * eps + 1
    with stage_function(zero_order, recluster):
        fixed = tfmot_wfn.fix_weights(base, fixing_schedule=schedule, distance=delta)
        run.compile_model(fixed, run.FINE_TUNE_LR[name])
        update = tfmot_wfn.UpdateFixingStep(verbose=0, fresh_optimizer=fresh)
        start = time.perf_counter()
        fixed.fit(**run.fine_tune_inputs(name, x_train, y_train, seed), epochs=epochs, verbose=0,
                  callbacks=[update])
        seconds = time.perf_counter() - start
    final = tfmot_wfn.strip_fixing(fixed)
    rep = tfmot_wfn.report(final)
    kernels = np.concatenate([k.ravel() for k in models.kernel_arrays(final, keras)])
    info = {"epochs": epochs, "stages": len(update.history), "fixable_unique": rep.unique_values,
            "fixable_entropy": rep.entropy_bits, "fixable_weights": rep.total_weights,
            "kernel_zero_fraction": float(np.mean(kernels == 0)),
            "fixed_per_stage": [h.fixed for h in update.history]}
    return final, seconds, info


def measure_model(name, seeds, deltas, variants, results, save, quick, cache) -> None:
    data = models.dataset(name, 0)
    spec = models.MODELS[name]
    per_model = results.setdefault(name, {"title": spec["title"], "test_images": int(len(data[1])),
                                          "train_images": int(len(data[0])), "seeds": {}})
    planned = [(f"{v} delta={d:g}", v, d) for d in deltas for v in variants]
    for seed in seeds:
        done = per_model["seeds"].setdefault(str(seed), {})
        if all(label in done for label, _, _ in planned):
            continue
        epochs = 2 if quick else spec["float_epochs"]
        base, seconds = run.cached_float_model(name, data, epochs, seed, cache)
        row = run.scored_row(base, data)
        if "float" in done and done["float"]["correct"] != row["correct"]:
            if seconds is None:
                raise SystemExit(f"{name} seed {seed}: the cached float weights in {cache} do not give "
                                 "the saved float row: delete them and the .json to start again")
            run.say(f"[{name} seed {seed}] a new float model: its earlier rows are dropped")
            done.clear()
        if "float" not in done:
            done["float"] = {**row, "seconds": seconds}
        save()
        for label, variant, delta in planned:
            if label in done:
                continue
            final, seconds, info = fix_row(name, base, data, delta, seed, variant)
            done[label] = {**run.scored_row(final, data), "variant": variant, "delta": delta,
                           "wfn": info, "seconds": seconds}
            row = done[label]
            run.say(f"[{name} seed {seed}] {label:<30s} acc {row['accuracy']:.4f} fixed unique "
                    f"{info['fixable_unique']} H {info['fixable_entropy']:.2f} {seconds:.0f}s")
            save()


# ------------------------------------------------------------------------------------ report
def summarise(per_model: Dict, deltas) -> List[Dict]:
    n = per_model["test_images"]
    out = []
    for delta in deltas:
        for variant in VARIANTS:
            label, today = f"{variant} delta={delta:g}", f"today delta={delta:g}"
            drops, errors, vs, vs_err, acc, uniq, ent, zeros = [], [], [], [], [], [], [], []
            for rows in per_model["seeds"].values():
                if label not in rows or "float" not in rows:
                    continue
                row, c = rows[label], paired_stats.unpack(rows[label]["correct"], n)
                d, se = paired_stats.paired_drop(paired_stats.unpack(rows["float"]["correct"], n), c)
                drops.append(d)
                errors.append(se)
                if today in rows and variant != "today":
                    d, se = paired_stats.paired_drop(paired_stats.unpack(rows[today]["correct"], n), c)
                    vs.append(d)
                    vs_err.append(se)
                acc.append(row["accuracy"])
                uniq.append(row["wfn"]["fixable_unique"])
                ent.append(row["wfn"]["fixable_entropy"])
                zeros.append(row["wfn"]["kernel_zero_fraction"])
            if not drops:
                continue
            vs_today = paired_stats.combine_seeds(vs, vs_err) if vs else None
            out.append({"variant": variant, "delta": delta, "accuracy": float(np.mean(acc)),
                        **paired_stats.combine_seeds(drops, errors), "vs_today": vs_today,
                        "unique": float(np.mean(uniq)), "unique_min": int(np.min(uniq)),
                        "unique_max": int(np.max(uniq)), "entropy": float(np.mean(ent)),
                        "zeros": float(np.mean(zeros))})
    return out


def model_table(name: str, per_model: Dict, deltas) -> List[str]:
    floats = [r["float"]["accuracy"] for r in per_model["seeds"].values() if "float" in r]
    lines = [f"### {name}: {per_model['title']}", "",
             f"{per_model['train_images']:,} training / {per_model['test_images']:,} test images "
             f"(one image = {100 / per_model['test_images']:.2f} points); {len(floats)} seed(s), "
             f"float accuracy {100 * np.mean(floats):.2f}% (seeds {', '.join(f'{100 * a:.2f}' for a in floats)}); "
             f"{EPOCHS_PER_STAGE.get(name, 1)} epoch(s) a stage.", "",
             "| delta | variant | accuracy | drop vs float (points, ± paired SE) [seed range] | "
             "vs today (points, ± paired SE) | fixed unique values (range) | entropy (bits) | "
             "kernel zeros |",
             "|---|---|---|---|---|---|---|---|"]
    for r in summarise(per_model, deltas):
        vs = r["vs_today"]
        vs_text = "" if vs is None else f"{vs['drop']:+.2f} ± {vs['se']:.2f}"
        lines.append(
            f"| {r['delta']:g} | {r['variant']} | {100 * r['accuracy']:.2f}% | "
            f"{r['drop']:+.2f} ± {r['se']:.2f} [{r['min']:+.2f}, {r['max']:+.2f}] | {vs_text} | "
            f"{r['unique']:.1f} ({r['unique_min']}-{r['unique_max']}) | {r['entropy']:.3f} | "
            f"{100 * r['zeros']:.1f}% |")
    return lines + [""]


def overview(results: Dict, deltas) -> List[str]:
    """One row per model and variant: its differences to today's rows, averaged over the deltas."""
    lines = ["## Overview: each variant minus today, averaged over the deltas measured", "",
             "(The deltas share seeds and test images: the paired errors are in the tables below.)", "",
             "| model | variant | deltas | accuracy vs today (points; + = lost) | fixed unique values "
             "vs today | entropy vs today (bits) |", "|---|---|---|---|---|---|"]
    for name, per_model in results.items():
        rows = {(r["variant"], r["delta"]): r for r in summarise(per_model, deltas)}
        for variant in VARIANTS:
            pairs = [(rows[(variant, d)], rows[("today", d)]) for d in deltas
                     if (variant, d) in rows and ("today", d) in rows and variant != "today"]
            if not pairs:
                continue
            lost = np.mean([r["vs_today"]["drop"] for r, _ in pairs])
            lines.append(
                f"| {name} | {variant} | {len(pairs)} | {lost:+.2f} | "
                f"{np.mean([r['unique'] - t['unique'] for r, t in pairs]):+.1f} | "
                f"{np.mean([r['entropy'] - t['entropy'] for r, t in pairs]):+.3f} |")
    return lines + [""]


def write_report(results: Dict, deltas, output: str) -> str:
    lines = ["# Training-side ablations of the fixing", "",
             "Generated by `benchmarks/training_ablation.py` (see its docstring for the method). "
             "A positive drop is accuracy lost; \"vs today\" > 0 means the variant lost accuracy "
             "against \"today\" (tfmot_wfn 0.1's behaviour when measured: carried optimizer state, "
             "index zero order, locking; the fresh optimizer has since become the default) on the "
             "same images and seeds. Fixed unique values and "
             "entropy: `tfmot_wfn.report(model)` over the fixable weights.", ""]
    lines += overview(results, deltas)
    for name, per_model in results.items():
        if name.startswith("_"):
            continue
        lines += model_table(name, per_model, deltas)
    text = "\n".join(lines)
    with open(output, "w") as f:
        f.write(text + "\n")
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=sorted(models.MODELS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--deltas", nargs="+", type=float, default=list(DEFAULT_DELTAS))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--output", default=os.path.join(HERE, "training_ablation.md"))
    p.add_argument("--quick", action="store_true", help="2 float epochs and 1 epoch a stage")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    if "today" not in args.variants:
        args.variants.insert(0, "today")
    path = os.path.splitext(args.output)[0] + ".json"
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    results = json.load(open(path)) if os.path.exists(path) else {}
    all_deltas = sorted(set(args.deltas) | {r["delta"] for m in results.values() if isinstance(m, dict)
                                           for rows in m.get("seeds", {}).values()
                                           for r in rows.values() if "delta" in r})

    def save():
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
        write_report(results, all_deltas, args.output)

    if not args.report_only:
        if args.quick:
            EPOCHS_PER_STAGE.update({m: 1 for m in args.models})
        for name in args.models:
            measure_model(name, args.seeds, args.deltas, args.variants, results, save, args.quick,
                          cache=os.path.join(tempfile.gettempdir(), "wfn_training_ablation",
                                             os.path.basename(os.path.splitext(args.output)[0])))
    save()
    print(open(args.output).read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
