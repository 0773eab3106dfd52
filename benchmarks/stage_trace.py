"""Test accuracy stage by stage while WFN fixes a benchmark model: where is the accuracy lost?

    python benchmarks/stage_trace.py --model mobilenetv2 --seed 1 --rules late_third gentle
    python benchmarks/stage_trace.py --model cnn --delta 0.05 --float-cache ~/wfn_floats

For each rule: the float model of the seed (`run.cached_float_model`, the same float models as
frontier.py when given the same ``--float-cache``), then `fix_weights` with the paper's ten
stages, ``--epochs-per-stage`` epochs each, fine-tuned as `run.fix_with_wfn` does (a fresh
optimizer each stage), and the test accuracy measured twice per stage: after the stage's first
training step (the fixing itself, barely trained) and at the end of the stage's last epoch
(after fine-tuning). Prints one markdown table per rule and, with ``--output``, writes them to a
file.
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for p in (ROOT, HERE):
    if p not in sys.path:
        sys.path.insert(0, p)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import models  # noqa: E402
import run  # noqa: E402


def trace(name: str, seed: int, rule: str, delta: float, epochs_per_stage: int, float_cache):
    """``(float accuracy, rows, final accuracy)``: one row per stage with its fraction,
    allowed distance, palette size and the two accuracies."""
    import keras

    data = models.dataset(name, 0)
    _, x_test, _, y_test = data
    spec = models.MODELS[name]
    base, _ = run.cached_float_model(name, data, spec["float_epochs"], seed, float_cache)
    float_accuracy = run.accuracy(base, x_test, y_test)
    after_fixing, at_end, history = [], [], []

    def probe(update):
        """Test accuracy one step into each stage (its first epoch) and at its last epoch's end."""
        history.append(update.history)

        class Probe(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if batch == 0 and len(after_fixing) < len(update.history):
                    after_fixing.append(run.accuracy(self.model, x_test, y_test))

            def on_epoch_end(self, epoch, logs=None):
                if (epoch + 1) % epochs_per_stage == 0 or epoch + 1 == self.params["epochs"]:
                    at_end.append(run.accuracy(self.model, x_test, y_test))

        return [Probe()]

    final_model, _, _ = run.fix_with_wfn(name, base, data, delta, epochs_per_stage, seed,
                                         run.FINE_TUNE_LR[name], callbacks=probe, rule=rule)
    rows = [(s.fraction, s.distance, s.palette_size, first, end)
            for s, first, end in zip(history[0], after_fixing, at_end)]
    final = run.accuracy(final_model, x_test, y_test)
    return float_accuracy, rows, final


def table(name, seed, rule, delta, float_accuracy, rows, final) -> str:
    lines = [f"### {name}, seed {seed}, rule {rule}, delta {delta:g}: float {float_accuracy:.4f}, "
             f"fixed {final:.4f} ({100 * (float_accuracy - final):+.2f} points)", "",
             "| stage | fraction | allowed distance | palette | acc after fixing (1 step) | acc at stage end |",
             "|---:|---:|---:|---:|---:|---:|"]
    for i, (fraction, distance, palette, first, end) in enumerate(rows):
        lines.append(f"| {i + 1} | {fraction:g} | {distance:.4g} | {palette} | {first:.4f} | {end:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenetv2", choices=sorted(models.MODELS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rules", nargs="+", default=["auto"])
    parser.add_argument("--delta", type=float, default=0.015)
    parser.add_argument("--epochs-per-stage", type=int, default=1)
    parser.add_argument("--float-cache", default=None, metavar="DIR")
    parser.add_argument("--output", default=None, help="also write the tables to this file")
    args = parser.parse_args(argv)
    out = []
    for rule in args.rules:
        text = table(args.model, args.seed, rule, args.delta,
                     *trace(args.model, args.seed, rule, args.delta, args.epochs_per_stage, args.float_cache))
        print(text, flush=True)
        out.append(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
