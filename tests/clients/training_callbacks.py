"""Keras callbacks that tests name in ``[client] callbacks`` (as ``<this file>.py:RecordFit``).

They run in the client process, so they report through a file: one JSON line
per epoch and one per fit.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import keras

REFERENCE = f"{Path(__file__).resolve()}:RecordFit"


class RecordFit(keras.callbacks.Callback):
    """Appends ``{"event": "epoch" | "fit", region, round, ...}`` lines to ``path``.

    ``region`` and ``server_round`` are declared, so fedglobal passes them.
    """

    def __init__(self, path: str, region: str, server_round: int) -> None:
        super().__init__()
        self.path = Path(path)
        self.region = region
        self.server_round = server_round
        self.batches = 0
        self.batch_losses: list[float] = []

    def _write(self, **row: Any) -> None:
        row = {"region": self.region, "round": self.server_round, **row}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.batches += 1
        self.batch_losses.append(float((logs or {}).get("loss", math.nan)))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        loss = float((logs or {}).get("loss", math.nan))
        self._write(event="epoch", epoch=epoch, loss=loss)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._write(event="fit", batches=self.batches, batch_losses=self.batch_losses)


def read(path: Path) -> list[dict]:
    """The lines a :class:`RecordFit` wrote (none if it never ran)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
