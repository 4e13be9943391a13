"""What the strategy tests share: a Grid that only lists nodes, and array records."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.serverapp import Grid


class NodesOnlyGrid(Grid):
    """Implements only Grid.get_node_ids: sampling is all the strategies ask of it."""

    def __init__(self, node_ids):
        self.node_ids = list(node_ids)

    def get_node_ids(self):
        return list(self.node_ids)

    def set_run(self, run):
        raise NotImplementedError

    @property
    def run(self):
        raise NotImplementedError

    def create_message(self, *args, **kwargs):
        raise NotImplementedError

    def push_messages(self, messages):
        raise NotImplementedError

    def pull_messages(self, message_ids):
        raise NotImplementedError

    def send_and_receive(self, messages, *, timeout=None):
        raise NotImplementedError


class RegionGrid(NodesOnlyGrid):
    """Also names each node's region (``r<node>``), as the server's Grid does."""

    def region_of(self, node):
        return f"r{node}"


def f32(*values):
    return np.array(values, dtype=np.float32)


def to_record(arrays):
    return ArrayRecord({name: Array(np.asarray(v)) for name, v in arrays.items()})


def numpy(record):
    return {name: array.numpy() for name, array in record.items()}
