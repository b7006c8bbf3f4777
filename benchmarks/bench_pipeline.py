"""Wall time of each pipeline step and of the whole pipeline, in-process, on a fresh store.

    python benchmarks/bench_pipeline.py [--trials N] [--cv-repeats N] [--rounds N]
                                        [--tuning-cv-repeats N [N ...]]

Timing on shared machines is noisy: besides seconds, each step is reported as its share of
the pipeline measured in the same run, the figure to compare between machines. With several
--tuning-cv-repeats values, each round runs one pipeline per value (in turn) and a second table
compares them: tuning and whole-pipeline time as a ratio to the first value, and the chosen
model's CV score on the fresh re-scoring folds.
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
    parser.add_argument(
        "--tuning-cv-repeats",
        type=int,
        nargs="+",
        default=[Settings.model_fields["tuning_cv_repeats"].default],
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)

    runs: dict[int, list] = {value: [] for value in args.tuning_cv_repeats}
    for round_number in range(args.rounds):
        for value in args.tuning_cv_repeats:
            with tempfile.TemporaryDirectory() as home:
                settings = Settings(
                    home=Path(home),
                    tuning_trials=args.trials,
                    cv_repeats=args.cv_repeats,
                    tuning_cv_repeats=value,
                )
                runs[value].append(run_pipeline(settings, run_key=f"bench-{round_number}"))

    first = args.tuning_cv_repeats[0]
    rounds = [result.timings for result in runs[first]]
    total = statistics.median(sum(r.values()) for r in rounds)
    print(
        f"pipeline: {args.trials} trials ({first} CV repeat(s) each), {args.cv_repeats}x "
        f"repeated 5-fold CV, {args.rounds} round(s), median seconds\n"
    )
    print("| step | seconds | share |\n| --- | ---: | ---: |")
    for step in rounds[0]:
        seconds = statistics.median(r[step] for r in rounds)
        print(f"| {step} | {seconds:.2f} | {seconds / total:.1%} |")
    print(f"| **whole pipeline** | {total:.2f} | 100% |")
    if len(runs) > 1:
        _compare(runs, first)


def _compare(runs: dict[int, list], first: int) -> None:
    def median(value: int, pick) -> float:
        return statistics.median(pick(result) for result in runs[value])

    def tune(result):
        return result.timings["tune_best_model"]

    def whole(result):
        return sum(result.timings.values())

    metric = f"cv_{runs[first][0].tuned.selection_metric}_mean"
    print(
        f"\n| CV repeats per trial | tune s | tune vs {first} | whole vs {first} | chosen | "
        f"{metric} (fresh folds) |\n| ---: | ---: | ---: | ---: | --- | ---: |"
    )
    for value, results in runs.items():
        chosen = ", ".join(sorted({f"{r.tuned.name} {r.tuned.label}" for r in results}))
        print(
            f"| {value} | {median(value, tune):.1f} | "
            f"{median(value, tune) / median(first, tune):.2f} | "
            f"{median(value, whole) / median(first, whole):.2f} | {chosen} | "
            f"{median(value, lambda r: r.tuned.cv[metric]):.4f} |"
        )


if __name__ == "__main__":
    main()
