"""Reporting on finished runs: plots (PNG), HTML reports, MLflow logging.

- :mod:`fedglobal.run.plots`: the metric against rounds, the spread
  across regions, the final metric by region.
- :mod:`fedglobal.run.report`: ``write_report(runs, "report.html")``, a
  self-contained HTML file comparing runs.
- :mod:`fedglobal.run.tracking`: optional MLflow logging.
"""

from __future__ import annotations

__all__ = ["write_report", "write_run_plots"]


def __getattr__(name: str):  # lazy: matplotlib is imported only when used
    if name == "write_report":
        from fedglobal.run.report import write_report

        return write_report
    if name == "write_run_plots":
        from fedglobal.run.plots import write_run_plots

        return write_run_plots
    raise AttributeError(f"module 'fedglobal.run' has no attribute {name!r}")
