"""The paper's claim measured through the service's own comparisons: AdamP vs AdamW and
SGDP vs SGD on ``mnist1d-cnn``, each tuned with the same budget, then re-trained on fresh
seeds, with the comparison report's tests.

    python -m benchmarks.compare_optimizers [--trials 20 --seeds 5 --epochs 20]

Starts ``adamp-tune serve`` on a fresh SQLite database (a 2-CPU local Ray), submits one
comparison per pair, waits, and writes each report to
``benchmarks/results/compare-<pair>-seed<seed>.json`` and the tables (Markdown) to stdout.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import running_service
from service.client import Client
from service.comparisons.tables import comparison_tables

RESULTS = Path(__file__).parent / "results"
PAIRS = (("adamp", "adamw"), ("sgdp", "sgd"))


def body(pair: tuple[str, str], args: argparse.Namespace) -> dict[str, Any]:
    return {
        "name": f"mnist1d-{pair[0]}-vs-{pair[1]}",
        "workload": "mnist1d-cnn",
        "fixed": {"epochs": args.epochs},
        "optimizers": list(pair),
        "n_trials": args.trials,
        "seeds": args.seeds,
        "max_concurrent": 1,
        "resources": {"cpus": 1},
        "seed": args.seed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=3 * 3600)
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, running_service(Path(tmp)) as url:
        client = Client(url, timeout=120)
        start = time.monotonic()
        ids = {pair: client.compare(body(pair, args))["id"] for pair in PAIRS}
        done = {
            pair: client.wait_comparison(cid, timeout_s=args.timeout_s) for pair, cid in ids.items()
        }
        took = time.monotonic() - start
    print(
        f"mnist1d-cnn, {args.trials} tuning trials per optimizer (TPE, median pruner), "
        f"{args.seeds} evaluation seeds, {args.epochs} epochs; both comparisons at once on a "
        f"2-CPU local Ray, in {took / 60:.0f} min\n"
    )
    for pair, comparison in done.items():
        path = RESULTS / f"compare-{pair[0]}-vs-{pair[1]}-seed{args.seed}.json"
        path.write_text(json.dumps(comparison, indent=1, default=str) + "\n")
        print(f"## {pair[0]} vs {pair[1]}: {comparison['status']} ({path.name})\n")
        if comparison["report"] is not None:
            print(comparison_tables(comparison))
        print()


if __name__ == "__main__":
    main()
