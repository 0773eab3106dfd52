"""Command line: ``tfmot-wfn demo`` (more subcommands follow)."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfmot-wfn",
        description="Weight Fixing Networks for Keras: few unique weights, low entropy, "
                    "powers of two, no accuracy loss.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="train a small CNN on scikit-learn digits and fix its weights",
        description="Train a small CNN with BatchNorm on scikit-learn's digits, run the "
                    "paper's ten-stage WFN schedule, print accuracy, unique values, entropy "
                    "and the palette, and write fixed_model.keras and report.json.")
    demo.add_argument("--output", default="wfn_demo_output", help="output folder (default: %(default)s)")
    demo.add_argument("--distance", type=_positive_float, default=None,
                      help="delta, the allowed relative distance (default: tfmot_wfn.DEFAULT_DISTANCE)")
    demo.add_argument("--float-epochs", type=_positive_int, default=30,
                      help="epochs of float training (default: %(default)s)")
    demo.add_argument("--epochs-per-stage", type=_positive_int, default=2,
                      help="re-training epochs between fixing stages (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    demo.add_argument("--quiet", action="store_true", help="print nothing")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from tfmot_wfn.demo import run_demo

        run_demo(output_dir=args.output, distance=args.distance, float_epochs=args.float_epochs,
                 epochs_per_stage=args.epochs_per_stage, seed=args.seed,
                 verbose=0 if args.quiet else 1)
        return 0
    return 2  # pragma: no cover - argparse enforces a command


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
