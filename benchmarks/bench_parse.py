"""The hot path's body parsing in-process: validation alone against `body.parse` (validation
plus the repeated-key check), in alternating rounds; prints the best round of each, in µs.

    python benchmarks/bench_parse.py [--rounds 30] [--number 5000]
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from heart_mlops.api import schemas  # noqa: E402
from heart_mlops.api.body import parse  # noqa: E402

SEED = [63, 1, 3, 145, 233, 1, 0, 150, 0, 2.3, 0, 0, 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--number", type=int, default=5000, help="calls per round")
    args = parser.parse_args()
    adapter = schemas.PREDICT_REQUEST
    bodies = {
        "features": json.dumps({"features": SEED}).encode(),
        "patient": json.dumps({"patient": dict(zip(schemas.FEATURES, SEED, strict=True))}).encode(),
    }
    print("| body | validation alone µs | parse µs | added µs |\n| --- | ---: | ---: | ---: |")
    for name, body in bodies.items():
        alone, full = [], []
        for _ in range(args.rounds):
            alone.append(timeit.timeit(lambda b=body: adapter.validate_json(b), number=args.number))
            full.append(
                timeit.timeit(lambda b=body: parse(adapter, b, max_rows=1), number=args.number)
            )
        best_alone, best_full = (min(t) / args.number * 1e6 for t in (alone, full))
        print(f"| {name} | {best_alone:.2f} | {best_full:.2f} | {best_full - best_alone:.2f} |")


if __name__ == "__main__":
    main()
