"""TensorBoard event files of a run, written by the server with ``tf.summary`` each round.

:class:`TensorBoardLogging` is the round-end job (``[output] tensorboard``).
Written to ``<run>/tensorboard/``. Tags (the step is the round):

- ``<split>/<metric>``: pooled metrics, e.g. ``test/r2``, ``train/loss``,
  ``server/accuracy`` (region ``all`` of history.csv);
- ``regions/<split>/<metric>/<region>``: each region's metrics;
- ``weight_norm/<variable>`` and ``update_norm/<variable>``: the L2 norm of
  each global variable after the round, and of its change during the round;
- ``comm/bytes_sent``, ``comm/bytes_received``, ``comm/array_bytes_sent``,
  ``comm/array_bytes_received``, ``comm/messages_sent``, ``comm/messages_received``:
  bytes and messages of the round;
- ``time/round_seconds`` and, with ``[geo]``, ``time/sim_hours``: the round's
  wall time and its simulated end.

The norms, bytes and times are the metrics the callbacks before it returned
(:mod:`fedglobal.server.callbacks.norms`, :mod:`fedglobal.server.callbacks.system`).

``fedglobal tensorboard runs/`` (or ``tensorboard --logdir runs/``) shows every
run under ``runs/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedglobal.server.callbacks.base import RoundCallback, RoundOutcome, TrainRun
from fedglobal.server.history import HistoryRecorder

__all__ = [
    "TensorBoardLogging",
    "TensorBoardWriter",
    "launch_command",
    "read_scalars",
    "scalars_summary",
    "tag",
]

_UNSAFE = re.compile(r"[^\w./ ()=+-]")
SUBDIR = "tensorboard"
SCALARS_PLUGIN = "scalars"  # TensorBoard's scalar dashboard (tf.summary.scalar's plugin)


def tag(*parts: str) -> str:
    """A TensorBoard tag from parts, with unusual characters replaced by ``_``."""
    return "/".join(_UNSAFE.sub("_", str(p)) for p in parts)


class TensorBoardWriter:
    """Writes one run's scalars; create it at the start of the run, :meth:`close` at the end."""

    def __init__(self, run_dir: Path) -> None:
        import tensorflow as tf

        self._tf = tf
        self.logdir = Path(run_dir) / SUBDIR
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._writer = tf.summary.create_file_writer(str(self.logdir))

    def write_round(
        self,
        server_round: int,
        *,
        rows: Iterable[tuple[int, str, str, str, float]] = (),
        norms: Mapping[str, tuple[float, float | None]] | None = None,
        scalars: Mapping[str, float] | None = None,
    ) -> None:
        """Write the round's history rows, per-variable norms and other scalars.

        All of them go out as one ``Summary`` (one event), with the value and
        metadata ``tf.summary.scalar`` writes for each: one TensorFlow op a round
        rather than one per scalar (the quickstart's ~170 scalars a round took
        37 ms that way, 13% of its run).
        """
        values: list[tuple[str, float]] = []
        for _, region, split, metric, value in rows:
            name = tag(split, metric) if region == "all" else tag("regions", split, metric, region)
            values.append((name, float(value)))
        for variable, (weight_norm, update_norm) in (norms or {}).items():
            values.append((tag("weight_norm", variable), float(weight_norm)))
            if update_norm is not None:
                values.append((tag("update_norm", variable), float(update_norm)))
        values.extend((name, float(value)) for name, value in (scalars or {}).items())
        summary = scalars_summary(values)
        with self._writer.as_default(step=server_round):
            self._tf.summary.experimental.write_raw_pb(summary.SerializeToString())
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file (safe to call twice)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None  # type: ignore[assignment]


def scalars_summary(values: Iterable[tuple[str, float]]) -> Any:
    """A ``Summary`` proto of ``(tag, value)`` scalars, each as ``tf.summary.scalar``
    writes it: a float32 tensor (its bytes) with the ``scalars`` plugin's metadata."""
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    metadata = tf.compat.v1.SummaryMetadata(
        plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name=SCALARS_PLUGIN)
    )
    scalar = tensor_shape_pb2.TensorShapeProto()
    return tf.compat.v1.Summary(
        value=[
            tf.compat.v1.Summary.Value(
                tag=name,
                tensor=tensor_pb2.TensorProto(
                    dtype=types_pb2.DT_FLOAT,
                    tensor_shape=scalar,
                    tensor_content=np.float32(value).astype("<f4").tobytes(),
                ),
                metadata=metadata,
            )
            for name, value in values
        ]
    )


#: Metrics that are history rows too (written from the history, with each region's).
HISTORY_PREFIXES = ("train/", "test/", "server/")


class TensorBoardLogging(RoundCallback):
    """Writes each round's history rows and the metrics returned before it.

    Args:
        run_dir: the run folder (events go to ``<run>/tensorboard/``).
        recorder: the run's history.
    """

    def __init__(self, run_dir: Path, recorder: HistoryRecorder) -> None:
        self.run_dir = Path(run_dir)
        self.recorder = recorder
        self.writer: TensorBoardWriter | None = None

    def on_train_begin(self, run: TrainRun) -> None:
        self.writer = TensorBoardWriter(self.run_dir)

    def after_round(
        self, server_round: int, weights: Mapping[str, np.ndarray], metrics: Mapping[str, float]
    ) -> RoundOutcome | None:
        if self.writer is not None:
            self.writer.write_round(
                server_round,
                rows=self.recorder.round_rows(server_round),
                scalars={
                    tag(k): v for k, v in metrics.items() if not k.startswith(HISTORY_PREFIXES)
                },
            )
        return None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def launch_command(logdir: Path, *, host: str = "127.0.0.1", port: int = 6006) -> list[str]:
    """The command that starts TensorBoard on ``logdir`` (raises if it is not installed)."""
    import importlib.util
    import sys

    from fedglobal.errors import RunError

    if importlib.util.find_spec("tensorboard") is None:
        raise RunError("TensorBoard is not installed in this environment: pip install tensorboard")
    return [
        sys.executable,
        "-m",
        "tensorboard.main",
        "--logdir",
        str(logdir),
        "--host",
        host,
        "--port",
        str(port),
    ]


def read_scalars(logdir: Path) -> dict[str, dict[int, float]]:
    """Every scalar under ``logdir`` as ``{tag: {step: value}}`` (for tests and reports)."""
    import tensorflow as tf

    out: dict[str, dict[int, float]] = {}
    for path in sorted(Path(logdir).rglob("events.out.tfevents.*")):
        for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
            event = tf.compat.v1.Event.FromString(raw)
            for value in event.summary.value:
                number: Any = tf.make_ndarray(value.tensor) if value.HasField("tensor") else None
                if number is None:
                    number = value.simple_value
                out.setdefault(value.tag, {})[int(event.step)] = float(number)
    return out
