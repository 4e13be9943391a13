"""Evaluation metrics from sufficient statistics.

A client reports *sums* over its test rows (squared error, absolute error,
sum of targets, per-class true/false positives...), never the rows. From
these sums the server computes each region's metrics and, by adding the sums,
the exact metrics of all regions' rows pooled (region ``all``), which an
average of per-region R² or F1 could not give.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

STAT_PREFIX = "stat/"

REGRESSION_METRICS = ("loss", "mae", "rmse", "r2")
CLASSIFICATION_METRICS = ("loss", "accuracy", "precision", "recall", "f1")


def regression_stats(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Sums from which MSE, MAE, RMSE and R² of any union of regions follow."""
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    err = p - y
    return {
        "n": float(y.size),
        "sse": float(err @ err),
        "sae": float(np.abs(err).sum()),
        "sum_y": float(y.sum()),
        "sum_y2": float(y @ y),
    }


def classification_stats(
    y_true: np.ndarray, probs: np.ndarray, num_classes: int
) -> dict[str, float]:
    """Sums from which loss, accuracy and macro precision/recall/F1 follow."""
    y = np.asarray(y_true).reshape(-1).astype(np.int64)
    p = np.asarray(probs, dtype=np.float64).reshape(len(y), num_classes)
    pred = p.argmax(axis=1)
    picked = np.clip(p[np.arange(len(y)), y], 1e-7, 1.0)
    stats = {
        "n": float(len(y)),
        "sum_ce": float(-np.log(picked).sum()),
        "correct": float((pred == y).sum()),
    }
    tp = np.bincount(y[pred == y], minlength=num_classes)
    predicted = np.bincount(pred, minlength=num_classes)
    actual = np.bincount(y, minlength=num_classes)
    for c in range(num_classes):
        stats[f"tp_{c}"] = float(tp[c])
        stats[f"fp_{c}"] = float(predicted[c] - tp[c])
        stats[f"fn_{c}"] = float(actual[c] - tp[c])
    return stats


def pool(stats: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Add sufficient statistics of several regions (the pooled rows' statistics)."""
    total: dict[str, float] = {}
    for s in stats:
        for key, value in s.items():
            total[key] = total.get(key, 0.0) + float(value)
    return total


def finalize(stats: Mapping[str, float], task: str) -> dict[str, float]:
    """Named metrics (lowercase, as in history.csv) from sufficient statistics."""
    n = stats.get("n", 0.0)
    if n <= 0:
        return {}
    if task == "regression":
        sst = stats["sum_y2"] - stats["sum_y"] ** 2 / n
        return {
            "loss": stats["sse"] / n,
            "mae": stats["sae"] / n,
            "rmse": float(np.sqrt(stats["sse"] / n)),
            "r2": 1.0 - stats["sse"] / sst if sst > 0 else float("nan"),
        }
    classes = sorted(int(k[3:]) for k in stats if k.startswith("tp_"))
    precisions, recalls, f1s = [], [], []
    for c in classes:
        tp, fp, fn = stats[f"tp_{c}"], stats[f"fp_{c}"], stats[f"fn_{c}"]
        if tp + fp + fn == 0:
            continue  # class absent from these rows and never predicted
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        precisions.append(precision)
        recalls.append(recall)
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return {
        "loss": stats["sum_ce"] / n,
        "accuracy": stats["correct"] / n,
        "precision": float(np.mean(precisions)) if precisions else 0.0,
        "recall": float(np.mean(recalls)) if recalls else 0.0,
        "f1": float(np.mean(f1s)) if f1s else 0.0,
    }


def to_record_values(stats: Mapping[str, float]) -> dict[str, float]:
    """Prefix statistic names for a MetricRecord (``stat/sse``...)."""
    return {STAT_PREFIX + k: float(v) for k, v in stats.items()}


def from_record_values(values: Mapping[str, float]) -> dict[str, float]:
    """The statistics carried in a MetricRecord, without their prefix."""
    return {k[len(STAT_PREFIX) :]: float(v) for k, v in values.items() if k.startswith(STAT_PREFIX)}


#: The per-region test metric that ``fairness`` summarises, by task (higher is better).
FAIRNESS_METRIC = {"regression": "r2", "classification": "accuracy"}


def fairness(history: Any, task: str) -> dict[str, Any] | None:
    """How the worst-served regions fare: summary.json's ``fairness``.

    From the last round with per-region test rows of ``history`` (round, region,
    split, metric, value): the task's metric (R² for regression, accuracy for
    classification) of every region, its worst region (name and value), 10th
    percentile, median, best, and spread (best minus worst). An average hides the
    worst-served region, which is what a geographic deployment is judged by
    (Li et al. 2020, "Fair Resource Allocation in Federated Learning", ICLR,
    report the same distribution statistics). None when no region was evaluated.
    """
    metric = FAIRNESS_METRIC.get(task)
    if metric is None or history is None or len(history) == 0:
        return None
    rows = history[
        (history["split"] == "test") & (history["metric"] == metric) & (history["region"] != "all")
    ]
    if rows.empty:
        return None
    last = rows[rows["round"] == rows["round"].max()]
    values = dict(zip(last["region"].astype(str), last["value"].astype(float), strict=True))
    finite = {k: v for k, v in values.items() if np.isfinite(v)}
    if not finite:
        return None
    ordered = sorted(finite.items(), key=lambda kv: (kv[1], kv[0]))
    array = np.array([v for _, v in ordered])
    worst, best = ordered[0], ordered[-1]
    return {
        "metric": metric,
        "round": int(last["round"].iloc[0]),
        "regions": len(ordered),
        "worst_region": {"name": worst[0], "value": worst[1]},
        "best_region": {"name": best[0], "value": best[1]},
        "p10": float(np.percentile(array, 10)),
        "median": float(np.median(array)),
        "spread": float(best[1] - worst[1]),
    }
