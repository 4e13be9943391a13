"""The round-end jobs of the ServerApp: one small callback per job.

:class:`~fedglobal.server.monitor.RunMonitor` runs them in this fixed order
after round 0 (the initial model) and every round
(:class:`~fedglobal.server.callbacks.base.RoundCallback`: each sees the
metrics the ones before it returned):

=====================  =================================================================
``evaluation``         server-side evaluation: ``[server] eval_source`` and hooks' ``evaluate``
``norms``              weight and update norms (layer_norms.csv)
``system``             bytes, messages, wall time, training path, simulated span (rounds.csv)
``tensorboard``        TensorBoard scalars (``[output] tensorboard``)
``hooks``              your hooks' ``on_round_end``, then early stopping (``early_stopping``)
``personal_layers``    each region's local layers after the run (``[output] personal_models``)
``geo``                the simulated clock's sim_times.csv and summary fields (``[geo]``)
``plots``              the run's figures (``[output] plots``)
``mlflow``             the run logged to MLflow (``[output] mlflow``)
=====================  =================================================================

Your code on the server is a hook (:mod:`fedglobal.server.callbacks.hooks`);
this package exports the hook API:

>>> from fedglobal.server.callbacks import EarlyStopping, ServerHook, StopRun
"""

from fedglobal.server.callbacks.base import RoundCallback, RoundOutcome, StopRun, TrainRun
from fedglobal.server.callbacks.early_stopping import EarlyStopping
from fedglobal.server.callbacks.hooks import FunctionHook, ServerHook, active, as_hooks, current

__all__ = [
    "EarlyStopping",
    "FunctionHook",
    "RoundCallback",
    "RoundOutcome",
    "ServerHook",
    "StopRun",
    "TrainRun",
    "active",
    "as_hooks",
    "current",
]
