"""Hierarchical federated averaging: HierFAVG (Liu et al. 2020).

Liu, Zhang, Song and Letaief 2020, "Client-Edge-Cloud Hierarchical Federated
Learning" (IEEE ICC, https://arxiv.org/abs/1905.06641). Regions are grouped
(each group has its own *group server*, the paper's edge server); every round
each group averages its regions' models at its group server, and every
``cloud_every`` rounds (the paper's kappa_2) the cloud averages the group
models, weighted by their examples, and sends the result back to every group.
Between cloud rounds each group trains on from its own model, so only the
group servers' models cross the wide-area links to the cloud, once every
``cloud_every`` rounds, instead of every region's model every round.

The global model (what the round loop evaluates and checkpoints) is the
cloud's: it changes on cloud rounds only. The group models are the
strategy's state (:meth:`HierFAVG.state_dict`).

Wide-area bytes: the strategy counts the array bytes of the model (the sum
of the arrays' ``nbytes``) that cross group <-> cloud links (one upload and
one download per group and cloud round), and what flat FedAvg would have
sent over the same wide-area links for the same rounds (every train message
and reply between a region and the server), in :meth:`HierFAVG.report`.

With one group and ``cloud_every = 1`` it is FedAvg: the group's average is
FedAvg's, and the cloud's average of one group model is that model.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.supercore import log

from .aggregate import Update, weighted_average
from .errors import InvalidParameterError, StateDictError, StrategyError
from .fedavg import FedAvg

__all__ = ["GROUP_BY", "HierFAVG"]

#: How fedglobal's ServerApp finds the groups (``group_by``): the continent of
#: each region's place, the ``[geo] groups`` table, or ``column:NAME``, a
#: categorical data column that is constant within each region.
GROUP_BY = ("continent", "geo", "column:NAME")


class HierFAVG(FedAvg):
    """Client-edge-cloud hierarchical FedAvg (Liu et al. 2020, see the module docstring).

    Args:
        cloud_every: the cloud aggregates the groups every this many rounds (>= 1).
        group_by: how the server groups the regions: ``"continent"``, ``"geo"``
            or ``"column:NAME"`` (see :data:`GROUP_BY`); fedglobal's ServerApp
            resolves it and calls :meth:`set_groups`.
        **kwargs: the :class:`~strategies.fedavg.FedAvg` parameters.
    """

    def __init__(self, *, cloud_every: int = 2, group_by: str = "continent", **kwargs: Any) -> None:
        if (
            isinstance(cloud_every, bool)
            or not isinstance(cloud_every, numbers.Integral)
            or cloud_every < 1
        ):
            raise InvalidParameterError(f"cloud_every must be an int >= 1, got {cloud_every!r}")
        if not isinstance(group_by, str) or not (
            group_by in ("continent", "geo")
            or (group_by.startswith("column:") and len(group_by) > 7)
        ):
            raise InvalidParameterError(
                f"group_by must be 'continent', 'geo' or 'column:NAME', got {group_by!r}"
            )
        super().__init__(**kwargs)
        self.cloud_every = int(cloud_every)
        self.group_by = group_by
        self._params.update(cloud_every=cloud_every, group_by=group_by)
        self.groups: dict[str, str] = {}  # region -> group
        self._models: dict[str, dict[str, np.ndarray]] = {}  # group -> its model
        self._examples: dict[str, float] = {}  # group -> examples of its last average
        #: group -> [lat, lon] of its group server (set by fedglobal's clock, with [geo]).
        self.group_servers: dict[str, list[float]] = {}
        self.wan_bytes = 0
        self.wan_bytes_flat = 0
        self._sent = 0

    def set_groups(self, groups: Mapping[str, str]) -> None:
        """Region -> group name (every region that trains needs one)."""
        self.groups = {str(r): str(g) for r, g in groups.items()}

    def is_cloud_round(self, server_round: int) -> bool:
        """Whether the cloud aggregates the groups at the end of ``server_round``."""
        return server_round % self.cloud_every == 0

    def summary(self) -> None:
        """Log the strategy's configuration."""
        log(
            INFO,
            "\t├──> HierFAVG: %d group(s) by %s, cloud every %d round(s)",
            len(set(self.groups.values())),
            self.group_by,
            self.cloud_every,
        )
        super().summary()

    # ---- state -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """FedAvg's state plus the group models, their examples and the byte counters."""
        return {
            **super().state_dict(),
            "group_models": {
                g: {k: np.array(v, copy=True) for k, v in m.items()}
                for g, m in sorted(self._models.items())
            },
            "group_examples": dict(sorted(self._examples.items())),
            "wan_bytes": [int(self.wan_bytes), int(self.wan_bytes_flat)],
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        super()._load_state(state)
        models, examples = state["group_models"], state["group_examples"]
        if not isinstance(models, dict) or not isinstance(examples, dict):
            raise StateDictError("state 'group_models' / 'group_examples' must be dicts")
        self._models = {str(g): {k: np.asarray(v) for k, v in m.items()} for g, m in models.items()}
        self._examples = {str(g): float(n) for g, n in examples.items()}
        self.wan_bytes, self.wan_bytes_flat = (int(v) for v in state["wan_bytes"])

    # ---- configure -------------------------------------------------------------
    def _group_of(self, region: str) -> str:
        try:
            return self.groups[region]
        except KeyError:
            raise StrategyError(
                f"hierfavg: region {region!r} is in no group (groups: "
                f"{', '.join(sorted(set(self.groups.values()))) or 'none set'})"
            ) from None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's train messages, each region sent its group's model."""
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self._sent = len(messages)
        region_of = getattr(grid, "region_of", None)
        if not self._models or region_of is None:
            return messages
        records = {
            g: ArrayRecord({k: Array(v) for k, v in m.items()}) for g, m in self._models.items()
        }
        out = []
        for message in messages:
            group = self._group_of(str(region_of(message.metadata.dst_node_id)))
            if group not in records:
                out.append(message)
                continue
            content = RecordDict(dict(message.content.items()))
            content[self.arrayrecord_key] = records[group]
            out.append(
                Message(
                    content=content,
                    message_type=MessageType.TRAIN,
                    dst_node_id=message.metadata.dst_node_id,
                )
            )
        return out

    # ---- aggregate -------------------------------------------------------------
    def _aggregate_arrays(
        self, server_round: int, updates: Iterable[Update]
    ) -> dict[str, np.ndarray]:
        by_group: dict[str, list[Update]] = {}
        for label, arrays, weight in updates:
            by_group.setdefault(self._group_of(label), []).append((label, arrays, weight))
        replies = sum(len(u) for u in by_group.values())
        for group, members in sorted(by_group.items()):  # the group servers' averages
            self._models[group] = weighted_average(
                members, reference=self._reference, validate=False
            )
            self._examples[group] = float(sum(float(w) for _, _, w in members))  # type: ignore[arg-type]
        model_bytes = sum(
            int(np.asarray(v).nbytes) for v in next(iter(self._models.values())).values()
        )
        self.wan_bytes_flat += (self._sent + replies) * model_bytes
        if len(self._models) == 1:
            (cloud,) = self._models.values()  # the average of one model is that model
        else:
            cloud = weighted_average(
                ((g, m, self._examples[g]) for g, m in sorted(self._models.items())),
                reference=self._reference,
                validate=False,
            )
        if not self.is_cloud_round(server_round):
            return cloud  # what the cloud would hold: aggregate_train does not return it
        self.wan_bytes += 2 * len(self._models) * model_bytes  # each group: up, then down
        for group in self._models:
            self._models[group] = {k: np.array(v, copy=True) for k, v in cloud.items()}
        return cloud

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The groups average; on cloud rounds the cloud too, and its model is returned."""
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None or self.is_cloud_round(server_round):
            return arrays, metrics
        return None, metrics  # the global (cloud) model is unchanged until the next cloud round

    def report(self) -> dict[str, Any]:
        """summary.json: the groups and the wide-area bytes against flat FedAvg."""
        members: dict[str, list[str]] = {}
        for region, group in sorted(self.groups.items()):
            members.setdefault(group, []).append(region)
        return {
            "hierarchy": {
                "group_by": self.group_by,
                "cloud_every": self.cloud_every,
                "groups": members,
                **({"group_servers": dict(self.group_servers)} if self.group_servers else {}),
                "wan_bytes": int(self.wan_bytes),
                "wan_bytes_flat_fedavg": int(self.wan_bytes_flat),
                "wan_bytes_ratio": (
                    round(self.wan_bytes / self.wan_bytes_flat, 6) if self.wan_bytes_flat else None
                ),
            }
        }
