"""DP-FedAvg (McMahan et al. 2018): clipping, seeded Gaussian noise, RDP accounting."""

from itertools import count

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

import strategies
from strategies import DPFedAvg, FedAvg
from strategies.dp import clip_update
from strategies.errors import InvalidParameterError

_ids = count(1)


pytestmark = pytest.mark.usefixtures("task_identity")


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


def _record(arrays):
    return ArrayRecord({k: Array(np.asarray(v, np.float32)) for k, v in arrays.items()})


def _round(strategy, server_round, current, updates, weights=None):
    nodes = list(range(1, len(updates) + 1))
    msgs = list(
        strategy.configure_train(server_round, _record(current), ConfigRecord(), Nodes(nodes))
    )
    replies = []
    for i, (msg, update) in enumerate(zip(msgs, updates, strict=True)):
        msg.metadata.__dict__["_message_id"] = f"m{next(_ids)}"
        content = RecordDict(
            {
                "arrays": _record(update),
                "metrics": MetricRecord({"num-examples": (weights or [1] * len(updates))[i]}),
                "meta": ConfigRecord({"region": f"r{i}"}),
            }
        )
        replies.append(Message(content, reply_to=msg))
    arrays, _ = strategy.aggregate_train(server_round, replies)
    return {k: v.numpy() for k, v in arrays.items()}, msgs


def test_clip_update_golden():
    current = {"a": np.zeros(2), "b": np.zeros(1)}
    arrays = {"a": np.array([3.0, 0.0], np.float32), "b": np.array([4.0], np.float32)}
    norm = clip_update(arrays, current, clipping_norm=1.0)  # ||(3, 0, 4)|| = 5
    assert norm == pytest.approx(5.0)
    np.testing.assert_allclose(arrays["a"], [0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(arrays["b"], [0.8], rtol=1e-6)
    small = {"a": np.array([0.1, 0.0], np.float32), "b": np.array([0.0], np.float32)}
    clip_update(small, current, clipping_norm=1.0)
    np.testing.assert_allclose(small["a"], [0.1, 0.0], rtol=1e-6)  # inside the ball: unchanged


def test_without_noise_it_is_the_uniform_mean_of_clipped_updates():
    # noise_multiplier tiny: the result is (clipped mean) to within 1e-9 * C
    dp = DPFedAvg(noise_multiplier=1e-9, clipping_norm=1.0, seed=1)
    current = {"w": [0.0, 0.0]}
    updates = [{"w": [3.0, 4.0]}, {"w": [0.3, 0.4]}]  # norms 5 (clipped to 1) and 0.5
    out, _ = _round(dp, 1, current, updates, weights=[100, 1])  # weights ignored: uniform
    np.testing.assert_allclose(out["w"], [(0.6 + 0.3) / 2, (0.8 + 0.4) / 2], atol=1e-6)
    assert dp.clipped == [{"round": 1, "region": "r0", "norm": pytest.approx(5.0)}]


def test_noise_is_seeded_and_scaled():
    current = {"w": np.zeros(20000)}
    updates = [{"w": np.zeros(20000)} for _ in range(4)]
    a, _ = _round(DPFedAvg(noise_multiplier=2.0, clipping_norm=0.5, seed=3), 1, current, updates)
    b, _ = _round(DPFedAvg(noise_multiplier=2.0, clipping_norm=0.5, seed=3), 1, current, updates)
    c, _ = _round(DPFedAvg(noise_multiplier=2.0, clipping_norm=0.5, seed=3), 2, current, updates)
    np.testing.assert_array_equal(a["w"], b["w"])
    assert not np.array_equal(a["w"], c["w"])
    assert np.std(a["w"]) == pytest.approx(2.0 * 0.5 / 4, rel=0.03)  # z * C / m


def test_epsilon_grows_with_rounds_and_shrinks_with_noise():
    def epsilon(z, rounds):
        dp = DPFedAvg(noise_multiplier=z, clipping_norm=1.0, seed=0)
        for r in range(1, rounds + 1):
            _round(dp, r, {"w": [0.0]}, [{"w": [0.1]}, {"w": [0.2]}])
        return dp.privacy_spent()

    one, five = epsilon(1.0, 1), epsilon(1.0, 5)
    assert 0 < one["epsilon"] < five["epsilon"]
    assert five["releases"] == 5 and five["delta"] == 1e-5
    assert epsilon(4.0, 5)["epsilon"] < five["epsilon"]
    assert DPFedAvg().privacy_spent()["epsilon"] == 0.0


def test_client_side_clipping_sends_the_norm_and_state_round_trips():
    dp = DPFedAvg(noise_multiplier=1.0, clipping_norm=0.7, clipping="client", seed=0)
    _, msgs = _round(dp, 1, {"w": [0.0]}, [{"w": [0.1]}, {"w": [0.2]}])
    assert all(m.content["config"][strategies.CLIPPING_NORM_KEY] == 0.7 for m in msgs)
    assert (
        "clipping_norm"
        not in _round(DPFedAvg(), 1, {"w": [0.0]}, [{"w": [1.0]}] * 2)[1][0].content["config"]
    )
    again = DPFedAvg(**{k: v for k, v in dp.get_config().items() if "aggr_fn" not in k})
    again.load_state_dict(dp.state_dict())
    _round(again, 2, {"w": [0.0]}, [{"w": [0.1]}, {"w": [0.2]}])
    _round(dp, 2, {"w": [0.0]}, [{"w": [0.1]}, {"w": [0.2]}])
    assert again.privacy_spent() == dp.privacy_spent()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"noise_multiplier": 0}, "noise_multiplier"),
        ({"clipping_norm": -1}, "clipping_norm"),
        ({"clipping": "both"}, "clipping must be 'server' or 'client'"),
        ({"target_delta": 1.5}, "target_delta"),
    ],
)
def test_bad_parameters(kwargs, message):
    with pytest.raises(InvalidParameterError, match=message):
        DPFedAvg(**kwargs)


def test_registered_and_a_fedavg():
    assert isinstance(strategies.get("dpfedavg", noise_multiplier=0.5), FedAvg)


def test_dp_run_end_to_end_reports_epsilon(tmp_path):
    """A real in-process run with client-side clipping writes epsilon to summary.json."""
    import fedglobal

    cfg = {
        "experiment": {"rounds": 2, "output_dir": str(tmp_path)},
        "data": {"source": "synthetic:fedprox", "task": "classification", "num_regions": 4},
        "model": {"name": "logistic"},
        "client": {"optimizer": "sgd", "learning_rate": 0.01, "batch_size": 10},
        "strategy": {
            "name": "dpfedavg",
            "noise_multiplier": 1.0,
            "clipping_norm": 0.5,
            "clipping": "client",
        },
    }
    result = fedglobal.simulate(cfg, quiet=True)
    privacy = result.summary["privacy"]
    assert privacy["releases"] == 2
    assert 0 < privacy["epsilon"] < float("inf")
    assert result.metric("accuracy").index.max() == 2
