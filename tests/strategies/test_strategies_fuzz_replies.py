"""Fuzz: any client reply is aggregated, or rejected and logged; nothing else escapes.

Replies with wrong keys, shapes, dtypes, NaN/inf, missing records, and any
num-examples (negative, zero, NaN, absurd, non-numeric) go through the real
FedAvg and Layerwise strategies with real Flower Messages.
"""

from itertools import count

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strategies import FedAvg, Layerwise
from strategies.errors import StrategyError

_ids = count(1)
REFERENCE = {"dense/kernel": np.zeros((3, 2), np.float32), "dense/bias": np.zeros(2, np.float32)}


class Nodes(Grid):
    def __init__(self, ids):
        self.ids = list(ids)

    def get_node_ids(self):
        return list(self.ids)

    def set_run(self, run): ...

    @property
    def run(self): ...

    def create_message(self, *a, **k): ...

    def push_messages(self, messages): ...

    def pull_messages(self, ids): ...

    def send_and_receive(self, messages, *, timeout=None): ...


@pytest.fixture(autouse=True, scope="module")
def task_identity():
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 3, 1, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
shapes = st.sampled_from([(3, 2), (2,), (2, 3), (3, 2, 1), (), (1000, 2)])
dtypes = st.sampled_from([np.float32, np.float64, np.int32, np.float16])
arrays = st.builds(
    lambda shape, dtype, fill: np.full(shape, fill).astype(dtype),
    shapes,
    dtypes,
    floats,
)
names = st.sampled_from(["dense/kernel", "dense/bias", "other/kernel", ""])
num_examples = st.one_of(
    st.integers(min_value=-5, max_value=10**13),
    floats,
    st.text(max_size=3),
    st.booleans(),
)


@st.composite
def replies(draw):
    good = draw(st.booleans())
    if good:
        content = {
            k: np.full(v.shape, draw(st.floats(-1, 1)), np.float32) for k, v in REFERENCE.items()
        }
    else:
        content = draw(st.dictionaries(names.filter(bool), arrays, max_size=3))
    parts = {}
    if draw(st.booleans()) or good:
        parts["arrays"] = ArrayRecord({k: Array(v) for k, v in content.items()})
    weight = draw(num_examples) if not good else draw(st.integers(1, 1000))
    metrics = {"loss": 0.5}
    if isinstance(weight, int | float) and not isinstance(weight, bool):
        metrics["num-examples"] = weight
    else:
        parts["meta"] = ConfigRecord({"region": "odd", "num": str(weight)})
    if draw(st.booleans()) or good:
        parts["metrics"] = MetricRecord(metrics)
    parts.setdefault("meta", ConfigRecord({"region": "r"}))
    return good, RecordDict(parts)


@pytest.mark.filterwarnings("ignore:.*encountered in cast:RuntimeWarning")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(replies(), min_size=1, max_size=5), st.sampled_from(["fedavg", "layerwise"]))
def test_replies_are_aggregated_or_rejected(batch, kind):
    mins = {"min_train_clients": 1, "min_available_clients": 1, "wait_timeout": 0}
    if kind == "fedavg":
        strategy = FedAvg(**mins)
    else:
        strategy = Layerwise(layers=[{"match": "dense/bias", "rule": "uniform"}], **mins)
    sent = ArrayRecord({k: Array(v) for k, v in REFERENCE.items()})
    msgs = list(strategy.configure_train(1, sent, ConfigRecord(), Nodes(range(1, len(batch) + 1))))
    out = []
    for msg, (_, content) in zip(msgs, batch, strict=False):
        msg.metadata.__dict__["_message_id"] = f"m{next(_ids)}"
        out.append(Message(content, reply_to=msg))
    try:
        arrays, _ = strategy.aggregate_train(1, out)
    except StrategyError:
        return  # typed, e.g. every accepted weight summing to zero
    assert len(msgs) == len(batch)
    good = sum(1 for g, _ in batch if g)
    if arrays is None:
        assert good == 0
    else:
        for name, value in arrays.items():
            v = value.numpy()
            assert v.shape == REFERENCE[name].shape and np.isfinite(v).all()
    lucky = sum(1 for g, c in batch if not g and _acceptable(c))
    assert len(strategy.rejected) == len(out) - good - lucky


def _acceptable(content: RecordDict) -> bool:
    """A 'random' reply that happens to be valid (right keys, shapes, finite, weight ok)."""
    try:
        record = content["arrays"]
        metrics = content["metrics"]
        weight = metrics["num-examples"]
    except KeyError:
        return False
    if isinstance(weight, bool) or not (0 < float(weight) <= 1e9):
        return False
    if set(record.keys()) != set(REFERENCE):
        return False
    for name, array in record.items():
        v = array.numpy()
        if v.shape != REFERENCE[name].shape or v.dtype.kind != "f" or not np.isfinite(v).all():
            return False
    return True
