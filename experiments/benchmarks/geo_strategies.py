"""Run the geo_strategies suite and print its table and the papers' qualitative claims.

    .venv/bin/python experiments/benchmarks/geo_strategies.py [--rounds N] [--out runs]

For each strategy, from its run folder: simulated seconds to pooled R² 0.8
(summary.json ``sim_time_to_target_s``) and in all, model bytes over wide-area
links, the final pooled and worst-region test R² (``fairness``). Model bytes
over the wide area: for flat strategies every region talks to the server, so it
is all array bytes sent and received (rounds.csv); for HierFAVG it is the group
servers' traffic with the cloud (``hierarchy.wan_bytes``), next to what flat
FedAvg would have sent for the same rounds (``hierarchy.wan_bytes_flat_fedavg``).
Writes <out>/bench-geo_strategies/geo_strategies.md too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from fedglobal.benchmark import run_benchmark
from fedglobal.benchmark.summary import markdown_table

SUITE = Path(__file__).with_name("geo_strategies.toml")


def _row(cell) -> dict:
    label = cell.cell.strategy.label
    if not cell.ok or cell.run_dir is None:
        return {"strategy": label, "error": cell.error}
    summary = json.loads((cell.run_dir / "summary.json").read_text())
    rounds = pd.read_csv(cell.run_dir / "rounds.csv")
    hierarchy = summary.get("hierarchy")
    arrays = int(rounds.array_bytes_sent.sum() + rounds.array_bytes_received.sum())
    wan = int(hierarchy["wan_bytes"]) if hierarchy else arrays
    fairness = summary.get("fairness") or {}
    reached = summary.get("sim_time_to_target_s")
    return {
        "strategy": label,
        "sim s to R² 0.8": reached,
        "sim s in all": summary["sim_total_s"],
        "WAN MB": wan / 1e6,
        "flat FedAvg WAN MB (same rounds)": (
            int(hierarchy["wan_bytes_flat_fedavg"]) / 1e6 if hierarchy else None
        ),
        "pooled R²": summary["final"]["test/all"]["r2"],
        "worst region": (fairness.get("worst_region") or {}).get("name"),
        "worst-region R²": (fairness.get("worst_region") or {}).get("value"),
        "p10 R²": fairness.get("p10"),
        "median R²": fairness.get("median"),
    }


def table(result) -> pd.DataFrame:
    return pd.DataFrame([_row(cell) for cell in result.cells])


def claims(frame: pd.DataFrame) -> list[str]:
    """Each paper's qualitative claim, checked against this run (where both rows exist)."""
    rows = {
        r["strategy"]: r for r in frame.to_dict("records") if not isinstance(r.get("error"), str)
    }
    base = rows.get("FedAvg")
    out: list[str] = []

    def get(prefix: str) -> dict | None:
        return next((r for k, r in rows.items() if k.startswith(prefix)), None)

    if base is None:
        return ["FedAvg did not run: no comparison"]

    def num(value) -> float:
        return float("nan") if value is None else float(value)

    buff = get("FedBuff")
    if buff:
        a, b = num(base["sim s to R² 0.8"]), num(buff["sim s to R² 0.8"])
        out.append(
            "FedBuff (Nguyen et al. 2022: asynchronous buffered aggregation reaches a target "
            "sooner than synchronous rounds, 3.3x in their setting): "
            + (
                f"{a / b:.2f}x less simulated time to R² 0.8 than FedAvg"
                if a == a and b == b
                else "the target was not reached by both"
            )
        )
    hier = get("HierFAVG")
    if hier:
        ratio = hier["WAN MB"] / hier["flat FedAvg WAN MB (same rounds)"]
        out.append(
            "HierFAVG (Liu et al. 2020: edge aggregation cuts the traffic to the cloud): "
            f"{ratio:.3f} of flat FedAvg's wide-area model bytes for the same rounds; "
            f"pooled R² {hier['pooled R²']:.3f} vs FedAvg {base['pooled R²']:.3f}"
        )
    qffl = get("q-FFL")
    if qffl:
        out.append(
            "q-FFL (Li et al. 2020: a more uniform accuracy across devices at a small cost in "
            f"the average): worst region R² {qffl['worst-region R²']:.3f} vs FedAvg "
            f"{base['worst-region R²']:.3f}; p10 {qffl['p10 R²']:.3f} vs {base['p10 R²']:.3f}; "
            f"pooled {qffl['pooled R²']:.3f} vs {base['pooled R²']:.3f}"
        )
    scaffold = get("SCAFFOLD")
    if scaffold:
        out.append(
            "SCAFFOLD (Karimireddy et al. 2020: control variates correct client drift on "
            f"non-IID data): pooled R² {scaffold['pooled R²']:.3f} vs FedAvg "
            f"{base['pooled R²']:.3f}; simulated s to R² 0.8 "
            f"{num(scaffold['sim s to R² 0.8']):.3g} vs {num(base['sim s to R² 0.8']):.3g}"
        )
    ditto = get("Ditto")
    if ditto:
        out.append(
            "Ditto (Li et al. 2021: personalised models serve every region better, the "
            f"worst ones most): worst region R² {ditto['worst-region R²']:.3f} vs FedAvg "
            f"{base['worst-region R²']:.3f}; median {ditto['median R²']:.3f} vs "
            f"{base['median R²']:.3f}"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--out", default="runs")
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    overrides = [f"experiment.rounds={args.rounds}"] if args.rounds else []
    result = run_benchmark(SUITE, overrides=overrides, output_dir=args.out, full=args.full)
    frame = table(result)
    text = markdown_table(frame) + "\n\n" + "\n".join(f"- {line}" for line in claims(frame))
    (result.out_dir / "geo_strategies.md").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
