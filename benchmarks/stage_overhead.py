"""One fixing stage through `fit` against `core.fixing_stage` alone, on ResNet-50's 25.6M weights.

    python benchmarks/stage_overhead.py              # ResNet-50 (weights=None), first stage
    python benchmarks/stage_overhead.py --quick      # a small CNN instead (seconds)

`fit` runs the stage inside `UpdateFixingStep` at the first batch of the stage: reading every
wrapper's weights and masks into one flat vector, `core.fixing_stage`, rounding for the compute
dtypes, writing values, masks and the palette back, refreshing the regulariser table. This times
that whole callback batch-begin (the training step itself excluded) against `core.fixing_stage`
alone on the same flat weights, both on the first stage (fraction 0.3, distance 10 delta), and
prints the ratio. Interleaved rounds; the median of each is reported.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _model(quick: bool):
    from tfmot_wfn.keras.compat import keras

    keras.utils.set_random_seed(0)
    if quick:
        from tfmot_wfn.apps.demo import build_cnn

        return build_cnn(keras), (8, 8, 1)
    return keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10), (64, 64, 3)


def measure(quick: bool, rounds: int) -> dict:
    import tfmot_wfn
    from tfmot_wfn.core import fixing_stage
    from tfmot_wfn.keras.network import FixingNetwork

    model, shape = _model(quick)
    schedule = tfmot_wfn.StagedFixing(steps_per_stage=1)
    distance = schedule.distance_multiplier(0) * tfmot_wfn.DEFAULT_DISTANCE
    fraction = schedule.fractions[0]
    through_fit, core_alone = [], []
    for _ in range(rounds):
        fixed = tfmot_wfn.fix_weights(model, fixing_schedule=schedule)
        fixed.build((None,) + shape)
        network = FixingNetwork.of(fixed)
        flat_w, flat_m = network.flat_weights()
        start = time.perf_counter()
        fixing_stage(flat_w, flat_m, fraction, distance, network.zero_distance, palette=network.palette())
        core_alone.append(time.perf_counter() - start)
        update = tfmot_wfn.UpdateFixingStep(verbose=0)
        update.set_model(fixed)
        update.on_train_begin()
        start = time.perf_counter()
        update.on_train_batch_begin(0)  # the first stage runs here, as in fit
        through_fit.append(time.perf_counter() - start)
        assert len(update.history) == 1
    fit_s, core_s = float(np.median(through_fit)), float(np.median(core_alone))
    return {"weights": int(network.size), "through_fit_s": fit_s, "core_alone_s": core_s,
            "ratio": fit_s / core_s, "rounds": rounds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small CNN instead of ResNet-50")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    r = measure(args.quick, args.rounds)
    print(f"{r['weights']:,} weights: one stage through fit {r['through_fit_s']:.2f} s, "
          f"core.fixing_stage alone {r['core_alone_s']:.2f} s: {r['ratio']:.2f}x "
          f"(median of {r['rounds']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
