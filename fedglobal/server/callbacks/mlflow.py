"""MLflow: the finished run, logged by :func:`fedglobal.run.tracking.log_run`.

With ``[output] mlflow = true``, :class:`MLflowLogging` checks that MLflow is
installed when the run is set up (a clear error, before any round) and, once
the run folder and its plots are written, logs the params, the pooled metrics
by round, the bytes per round (rounds.csv) and the files. summary.json's
``mlflow`` holds the run's id and tracking URI. A tracking server that fails
must not lose the run: the error is logged and recorded in ``mlflow.error``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from fedglobal.config import ExperimentConfig
from fedglobal.run import tracking
from fedglobal.server.callbacks.base import RoundCallback
from fedglobal.server.callbacks.system import SystemMetrics

__all__ = ["MLflowLogging"]

log = logging.getLogger(__name__)


class MLflowLogging(RoundCallback):
    """Logs the run to MLflow at its end (see the module docstring).

    Args:
        cfg: the experiment (``[output] mlflow_*``, the engine tag).
        run_dir: the run folder.
        system: rounds.csv's rows (bytes per round).

    Raises:
        ConfigError: MLflow is asked for and not installed.
    """

    def __init__(self, cfg: ExperimentConfig, run_dir: Path, system: SystemMetrics) -> None:
        tracking.check_available(cfg)
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.system = system

    def on_run_end(self, history: pd.DataFrame) -> dict[str, Any]:
        try:
            info = tracking.log_run(
                self.cfg,
                self.run_dir,
                history,
                system=pd.DataFrame(self.system.rows),
                tags={"fedglobal.engine": self.cfg.experiment.engine},
            )
        except Exception as exc:  # a tracking server being down must not lose the run
            log.warning("MLflow logging failed: %s", exc)
            info = {"error": f"{type(exc).__name__}: {exc}"}
        return {"mlflow": info}
