"""Wall time of each pipeline step and of the whole pipeline, in-process, on a fresh store.

    python benchmarks/bench_pipeline.py [--trials N] [--cv-repeats N] [--rounds N]

Timing on shared machines is noisy: besides seconds, each step is reported as its share of
the pipeline measured in the same run, the figure to compare between machines.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import warnings
from pathlib import Path

from heart_mlops.pipeline import run_pipeline
from heart_mlops.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--cv-repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)

    rounds: list[dict[str, float]] = []
    for round_number in range(args.rounds):
        with tempfile.TemporaryDirectory() as home:
            settings = Settings(home=Path(home), tuning_trials=args.trials,
                                cv_repeats=args.cv_repeats)
            result = run_pipeline(settings, run_key=f"bench-{round_number}")
            rounds.append(result["timings"])
    steps = list(rounds[0])
    totals = [sum(r.values()) for r in rounds]
    print(f"pipeline: {args.trials} trials, {args.cv_repeats}x repeated 5-fold CV, "
          f"{args.rounds} round(s), median seconds\n")
    print("| step | seconds | share |\n| --- | ---: | ---: |")
    total = statistics.median(totals)
    for step in steps:
        seconds = statistics.median(r[step] for r in rounds)
        print(f"| {step} | {seconds:.2f} | {seconds / total:.1%} |")
    print(f"| **whole pipeline** | {total:.2f} | 100% |")


if __name__ == "__main__":
    main()
