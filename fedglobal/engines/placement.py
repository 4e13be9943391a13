"""Where each region trained: ``summary.json``'s ``placement``.

A ClientApp's train reply carries, in its ``meta`` record, where it ran
(:func:`here`): the host name, the process id and, in a Ray worker, the Ray
node id. Facts about the process, not about the data. The server keeps each
region's latest and :func:`describe` turns it into the summary's entry:

- ``ray`` and ``cluster`` engines: the Ray node (its id and IP address), so a run
  attached to a Ray cluster shows which nodes trained which regions;
- ``deployment``: the SuperNode (its Flower node id) and its host;
- ``inprocess``: the process (this one, or a worker of the pool) and its host.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from typing import Any

from fedglobal.protocol import HOST_KEY, PID_KEY, PLACEMENT_KEYS, RAY_IP_KEY, RAY_NODE_KEY

__all__ = ["HOST_KEY", "PID_KEY", "RAY_IP_KEY", "RAY_NODE_KEY", "describe", "here"]

KEYS = PLACEMENT_KEYS


def here() -> dict[str, str | int]:
    """This process: host name, pid, and the Ray node id and IP in a Ray worker."""
    out: dict[str, str | int] = {HOST_KEY: socket.gethostname(), PID_KEY: os.getpid()}
    ray = sys.modules.get("ray")  # never imported here: only a Ray worker has it loaded
    if ray is not None and ray.is_initialized():
        try:
            out[RAY_NODE_KEY] = str(ray.get_runtime_context().get_node_id())
            out[RAY_IP_KEY] = str(ray.util.get_node_ip_address())
        except Exception:  # a driver being torn down: the process is still named
            pass
    return out


def describe(info: Mapping[str, Any], engine: str, node_id: int) -> dict[str, Any]:
    """The summary entry of a region that trained where ``info`` (from :func:`here`)
    says, on ``engine``, as Flower node ``node_id``."""
    host, pid = str(info.get(HOST_KEY, "?")), int(info.get(PID_KEY, 0))
    if RAY_NODE_KEY in info:
        return {
            "node": f"ray {info[RAY_NODE_KEY]}",
            "ray_node_id": str(info[RAY_NODE_KEY]),
            "host": str(info.get(RAY_IP_KEY, host)),
            "pid": pid,
        }
    if engine == "deployment":
        return {"node": f"supernode {node_id}", "host": host, "pid": pid}
    return {"node": f"process {pid}", "host": host, "pid": pid}
