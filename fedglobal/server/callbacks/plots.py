"""Plots: the run's figures, drawn once the run folder is written (``[output] plots``).

:class:`Plots` saves :func:`fedglobal.run.plots.write_run_plots` (the key
metric by round, its spread over regions, the final metric by region) and,
with ``[geo]``, :func:`fedglobal.geo.outputs.write_geo_plots` (the regions'
map, the metric against simulated hours) in ``<run>/plots/``; summary.json's
``plots`` lists the files, relative to the run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from fedglobal.config import ExperimentConfig
from fedglobal.server.callbacks.base import RoundCallback
from fedglobal.server.callbacks.geo import GeoOutputs
from fedglobal.server.callbacks.system import SystemMetrics

__all__ = ["Plots"]


class Plots(RoundCallback):
    """The run's PNGs (see the module docstring).

    Args:
        cfg: the experiment (its task picks the key metric).
        run_dir: the run folder.
        system: rounds.csv's rows (the geo plots' round spans).
        geo: the simulated clock's outputs.
    """

    def __init__(
        self, cfg: ExperimentConfig, run_dir: Path, system: SystemMetrics, geo: GeoOutputs
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.system = system
        self.geo = geo

    def on_run_end(self, history: pd.DataFrame) -> dict[str, Any]:
        from fedglobal.run.plots import key_metric, write_run_plots

        out = self.run_dir / "plots"
        files = write_run_plots(history, self.cfg.data.task, out)
        if self.geo.geo is not None:
            from fedglobal.geo.outputs import write_geo_plots

            metric = key_metric(self.cfg.data.task)
            rounds = pd.DataFrame(self.system.rows)
            files += write_geo_plots(self.geo.geo.clock, rounds, history, metric, out)
        return {"plots": [str(p.relative_to(self.run_dir)) for p in files]}
