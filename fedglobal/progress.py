"""One progress line per round with the key metrics (quiet under ``quiet``)."""

from __future__ import annotations

import sys
import time

from rich.console import Console

_KEY_METRICS = {"regression": ("loss", "mae", "r2"), "classification": ("loss", "accuracy", "f1")}


class RoundProgress:
    """Prints ``round r/R`` with train loss, pooled test metrics, regions and time."""

    def __init__(self, total_rounds: int, task: str, *, quiet: bool = False) -> None:
        self.total = total_rounds
        self.task = task
        self.quiet = quiet
        self.console = Console(file=sys.stderr, highlight=False, soft_wrap=True)
        self._start = time.perf_counter()
        self._last = self._start
        self._train_loss: float | None = None

    def __call__(self, server_round: int, split: str, pooled: dict, regions: list[str]) -> None:
        if split == "train":
            self._train_loss = pooled.get("loss")
            return
        now = time.perf_counter()
        if not self.quiet:
            parts = [f"round {server_round:>{len(str(self.total))}}/{self.total}"]
            if self._train_loss is not None and server_round > 0:
                parts.append(f"train loss {self._train_loss:.4g}")
            shown = " ".join(f"{m} {pooled[m]:.4g}" for m in _KEY_METRICS[self.task] if m in pooled)
            parts.append(f"test(all) {shown}")
            parts.append(f"{len(regions)} regions")
            parts.append(f"{now - self._last:.1f}s (total {now - self._start:.1f}s)")
            self.console.print(" | ".join(parts))
        self._last = now
