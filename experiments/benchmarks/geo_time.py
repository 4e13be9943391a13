"""Run the geo_time suite and print the simulated time to pooled R² 0.8 per policy.

    .venv/bin/python experiments/benchmarks/geo_time.py [--rounds N] [--out runs]

Reads each cell's summary.json (sim_time_to_target_s, sim_total_s and the split of
the kept regions' time into compute, transfer and waiting) and rounds.csv, and
prints a Markdown table (also written to <out>/bench-geo_time/geo_time.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from fedglobal.benchmark import run_benchmark
from fedglobal.benchmark.summary import markdown_table

SUITE = Path(__file__).with_name("geo_time.toml")


def table(result) -> pd.DataFrame:
    rows = []
    for cell in result.cells:
        if not cell.ok or cell.run_dir is None:
            rows.append({"condition": cell.cell.condition.label, "error": cell.error})
            continue
        summary = json.loads((cell.run_dir / "summary.json").read_text())
        rounds = pd.read_csv(cell.run_dir / "rounds.csv")
        split = summary["geo"]["time_split"]
        busy = split["compute_s"] + split["transfer_s"] + split["waiting_for_others_s"]
        reached = summary["sim_time_to_target_s"]
        lengths = (rounds.sim_end_s - rounds.sim_start_s)[rounds["round"] > 0]
        first = rounds[rounds.sim_end_s >= (reached or float("inf"))]["round"]
        rows.append(
            {
                "condition": cell.cell.condition.label,
                "seed": cell.cell.seed,
                "round reaching R² 0.8": int(first.iloc[0]) if reached is not None else None,
                "sim s to R² 0.8": reached,
                "sim h to R² 0.8": None if reached is None else reached / 3600,
                "mean round (sim s)": float(lengths.mean()),
                "final R²": summary["final"]["test/all"]["r2"],
                "compute %": 100 * split["compute_s"] / busy,
                "transfer %": 100 * split["transfer_s"] / busy,
                "waiting %": 100 * split["waiting_for_others_s"] / busy,
                "availability wait (sim h)": split["waiting_for_availability_s"] / 3600,
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--out", default="runs")
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    overrides = [f"experiment.rounds={args.rounds}"] if args.rounds else []
    result = run_benchmark(SUITE, overrides=overrides, output_dir=args.out, full=args.full)
    frame = table(result)
    text = markdown_table(frame)
    (result.out_dir / "geo_time.md").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
