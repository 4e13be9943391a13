"""Reporting on finished runs: plots (PNG), HTML reports, MLflow logging.

- :mod:`fedglobal.reporting.plots`: the metric against rounds, the spread
  across regions, the final metric by region.
- :mod:`fedglobal.reporting.report`: ``write_report(runs, "report.html")``, a
  self-contained HTML file comparing runs.
- :mod:`fedglobal.reporting.tracking`: optional MLflow logging.
"""

from __future__ import annotations

__all__ = ["write_report", "write_run_plots"]


def __getattr__(name: str):  # lazy: matplotlib is imported only when used
    if name == "write_report":
        from fedglobal.reporting.report import write_report

        return write_report
    if name == "write_run_plots":
        from fedglobal.reporting.plots import write_run_plots

        return write_run_plots
    raise AttributeError(f"module 'fedglobal.reporting' has no attribute {name!r}")
