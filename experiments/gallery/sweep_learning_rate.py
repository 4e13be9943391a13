"""Sweep one parameter from Python: the quickstart at several client learning rates.

    .venv/bin/python experiments/gallery/sweep_learning_rate.py
    .venv/bin/python experiments/gallery/sweep_learning_rate.py --rounds 5 --rates 0.001 0.01
    .venv/bin/python experiments/gallery/sweep_learning_rate.py --set 'client.cohort="auto"'

Each value is one run of ``fedglobal.simulate`` (same seed, so the runs differ only
in the learning rate). The results API gives each run's pooled test R² by round
(``Result.metric``) and its final value (``Result.final``); the script prints a
table and plots R² against rounds, one line per learning rate, into
``runs/sweep_learning_rate.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import fedglobal
from fedglobal.runtime.quiet import quiet_environment

quiet_environment()  # TensorFlow's C++ logs off, as in the fedglobal commands

HERE = Path(__file__).resolve().parent
QUICKSTART = HERE.parent / "quickstart.toml"


def sweep(
    rates: list[float], rounds: int, output_dir: Path, overrides: list[str] = ()
) -> dict[float, fedglobal.Result]:
    """One quickstart run per learning rate (plus ``overrides``); the Results by rate."""
    results = {}
    for rate in rates:
        results[rate] = fedglobal.simulate(
            QUICKSTART,
            overrides=[
                *overrides,
                f"client.learning_rate={rate!r}",
                f"experiment.rounds={rounds}",
                f'experiment.name="sweep-lr-{rate:g}"',
            ],
            output_dir=output_dir,
            quiet=True,
        )
    return results


def plot(results: dict[float, fedglobal.Result], path: Path) -> Path:
    """Pooled test R² against rounds, one line per learning rate."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for rate, result in results.items():
        r2 = result.metric("r2")
        ax.plot(r2.index, r2.to_numpy(), marker=".", label=f"learning rate {rate:g}")
    ax.set_xlabel("round")
    ax.set_ylabel("test R² (all regions pooled)")
    ax.set_title("Quickstart: client learning rate sweep")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.001, 0.003, 0.01])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--output-dir", type=Path, default=Path("runs"))
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE"
    )
    args = parser.parse_args(argv)
    results = sweep(args.rates, args.rounds, args.output_dir, args.overrides)
    print("learning rate | final pooled test R² | run folder")
    for rate, result in results.items():
        print(f"{rate:>13g} | {result.final('r2'):>20.4f} | {result.run_dir}")
    print(f"plot: {plot(results, args.output_dir / 'sweep_learning_rate.png')}")


if __name__ == "__main__":
    main()
