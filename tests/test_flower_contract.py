"""Pins the Flower internals fedglobal relies on (fails loudly if flwr moves them).

fedglobal allows a range of flwr versions (pyproject.toml). It uses a few of
Flower's internals, outside its public ``flwr.app`` / ``flwr.serverapp`` API:

- ``TaskIdentity`` (``flwr.supercore.task_identity``): a ``Message`` can only be
  built once it is set; the in-process engines set it for the ServerApp's task
  (fedglobal/engines/inprocess.py) and the ClientApp worker for each task.
- ``Message`` construction and its private ``_message_id`` (the Grids assign ids).
- serde (``flwr.common.serde``): the worker pool ships messages as protobuf bytes;
  checkpoints store client state as a serialized RecordDict.
- SuperNode runtime helpers (``flwr.supernode.runtime.run_clientapp``,
  ``flwr.supercore.runtime``, heartbeat, interceptors, object pulls): the
  persistent ClientApp process (fedglobal/engines/clientapp_worker.py) speaks the
  SuperNode's Runtime API with them.

These tests pin the names, the signatures fedglobal calls them with, and their
behaviour, not a version number: a Flower release that keeps them passes, one
that moves any of them fails here with the name of what moved.
"""

from __future__ import annotations

import importlib
import inspect

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

#: module -> names fedglobal imports from it (grep "from flwr" in fedglobal/, clients/).
IMPORTED = {
    "flwr.supercore.task_identity": ["TaskIdentity"],
    "flwr.supercore.run": ["Run"],
    "flwr.common.constant": ["SUPERLINK_NODE_ID", "ErrorCode", "SubStatus"],
    "flwr.common.config": ["get_fab_config"],
    "flwr.common.serde": [
        "message_to_proto",
        "message_from_proto",
        "recorddict_to_proto",
        "recorddict_from_proto",
        "context_from_proto",
        "context_to_proto",
        "run_from_proto",
        "run_to_proto",
        "fab_from_proto",
        "fab_to_proto",
    ],
    "flwr.proto.message_pb2": ["Message"],
    "flwr.proto.recorddict_pb2": ["RecordDict"],
    "flwr.proto.node_pb2": ["Node"],
    "flwr.proto.runtime_pb2": [
        "AcquireTaskRequest",
        "PullAppMessagesRequest",
        "PullTaskInputRequest",
        "SendTaskHeartbeatRequest",
    ],
    "flwr.supercore.app_utils": ["start_parent_process_monitor"],
    "flwr.supercore.constant": ["TaskType"],
    "flwr.supercore.heartbeat": ["HeartbeatSender"],
    "flwr.supercore.inflatable.inflatable_protobuf_utils": [
        "make_confirm_message_received_fn_protobuf",
        "make_pull_object_fn_protobuf",
    ],
    "flwr.supercore.inflatable.inflatable_utils": ["pull_and_inflate_object_from_tree"],
    "flwr.supercore.interceptors": ["RuntimeTokenHttpInterceptor", "RuntimeVersionHttpInterceptor"],
    "flwr.supercore.retry": ["make_simple_http_retry_invoker"],
    "flwr.supercore.runtime": ["RuntimeHttpClient"],
    "flwr.supernode.runtime.run_clientapp": ["push_message", "push_task_output"],
    "flwr.supernode.cli": ["flower_supernode"],
    "flwr.client.mod.utils": ["make_ffn"],
    "flwr.clientapp.typing": ["ClientAppCallable"],
    "flwr.clientapp.mod": ["fixedclipping_mod"],
}


@pytest.mark.parametrize("module", sorted(IMPORTED))
def test_the_internals_fedglobal_imports_still_exist(module):
    mod = importlib.import_module(module)
    missing = [name for name in IMPORTED[module] if not hasattr(mod, name)]
    assert not missing, f"flwr moved {module}.{missing}: fedglobal imports them"


def _params(func) -> list[str]:
    return [p for p in inspect.signature(func).parameters if p not in ("self", "cls")]


#: (where, the parameters fedglobal passes, by name or position, in this order).
SIGNATURES = [
    ("flwr.supernode.runtime.run_clientapp:push_message", ["client", "message", "context"]),
    (
        "flwr.supernode.runtime.run_clientapp:push_task_output",
        ["client", "context", "sub_status", "details"],
    ),
    (
        "flwr.supercore.runtime:RuntimeHttpClient.from_server_address",
        ["server_address", "insecure", "root_certificates", "interceptors", "retry_invoker"],
    ),
    (
        "flwr.supercore.inflatable.inflatable_utils:pull_and_inflate_object_from_tree",
        [
            "object_tree",
            "pull_object_fn",
            "confirm_object_received_fn",
            "return_type",
            "initial_backoff",
            "backoff_cap",
        ],
    ),
    (
        "flwr.supercore.inflatable.inflatable_protobuf_utils:make_pull_object_fn_protobuf",
        ["pull_object_protobuf", "node", "run_id"],
    ),
    (
        "flwr.supercore.inflatable.inflatable_protobuf_utils:"
        "make_confirm_message_received_fn_protobuf",
        ["confirm_message_received_protobuf", "node", "run_id"],
    ),
    ("flwr.supercore.heartbeat:HeartbeatSender.__init__", ["heartbeat_fn"]),
    ("flwr.supercore.app_utils:start_parent_process_monitor", ["parent_pid"]),
    ("flwr.supercore.interceptors:RuntimeTokenHttpInterceptor.__init__", ["token"]),
    ("flwr.supercore.interceptors:RuntimeVersionHttpInterceptor.__init__", ["component_name"]),
    ("flwr.client.mod.utils:make_ffn", ["ffn", "mods"]),
    ("flwr.supercore.run:Run.create_empty", ["run_id"]),
    ("flwr.common.config:get_fab_config", ["fab_file"]),
]


def _resolve(where: str):
    module, _, qualname = where.partition(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("where,expected", SIGNATURES, ids=[w for w, _ in SIGNATURES])
def test_the_helpers_fedglobal_calls_keep_their_parameters(where, expected):
    params = _params(_resolve(where))
    got = [p for p in params if p in expected]
    assert got == expected, f"flwr changed {where}{inspect.signature(_resolve(where))}"


def test_the_runtime_client_still_speaks_the_calls_the_clientapp_worker_makes():
    from flwr.supercore.runtime import RuntimeHttpClient

    calls = [
        "AcquireTask",
        "PullTaskInput",
        "PullMessages",
        "PullObject",
        "ConfirmMessageReceived",
        "PushMessages",
        "PushObject",
        "PushTaskOutput",
        "SendTaskHeartbeat",
    ]
    missing = [c for c in calls if not callable(getattr(RuntimeHttpClient, c, None))]
    assert not missing, f"flwr's RuntimeHttpClient lost {missing}"
    from flwr.common.constant import SubStatus
    from flwr.supercore.constant import TaskType

    assert {SubStatus.COMPLETED, SubStatus.FAILED} <= set(vars(SubStatus).values())
    assert TaskType.CLIENT_APP


def test_heartbeat_sender_starts_beats_and_stops():
    import threading

    from flwr.supercore.heartbeat import HeartbeatSender

    beat = threading.Event()
    sender = HeartbeatSender(lambda: beat.set() or True)
    sender.start()
    try:
        assert beat.wait(5.0), "HeartbeatSender never called its heartbeat function"
        assert sender.is_running
    finally:
        sender.stop()
    assert not sender.is_running


def _identity():
    return (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)


def test_message_needs_task_identity_and_uses_it():
    saved = _identity()
    try:
        TaskIdentity._run_id = TaskIdentity._node_id = TaskIdentity._task_id = None
        with pytest.raises(RuntimeError, match="TaskIdentity"):
            Message(RecordDict({"config": ConfigRecord({"a": 1})}), 7, "train")
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 11, 1, 3
        msg = Message(RecordDict({"config": ConfigRecord({"a": 1})}), 7, "train")
        assert (msg.metadata.run_id, msg.metadata.src_node_id, msg.metadata.dst_node_id) == (
            11,
            1,
            7,
        )
        assert msg.metadata.src_task_id == 3
        # keyword construction, as InProcessGrid.create_message builds it
        kw = Message(
            RecordDict({"config": ConfigRecord({"a": 1})}),
            7,
            "train",
            ttl=60.0,
            group_id="5",
        )
        assert (kw.metadata.group_id, kw.metadata.ttl) == ("5", 60.0)
        # the Grids assign message ids through the private attribute
        kw.metadata.__dict__["_message_id"] = "m1"
        assert kw.metadata.message_id == "m1"
        # an error reply, as the ClientApp worker and the pool build one
        TaskIdentity.node_id = 7
        err = Message(Error(code=3, reason="boom"), reply_to=kw)
        assert err.has_error() and err.error.reason == "boom"
        assert err.metadata.reply_to_message_id == "m1"
        assert err.metadata.dst_node_id == 1
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def test_serde_round_trips_what_the_pool_and_checkpoints_ship():
    from flwr.common.serde import (
        context_from_proto,
        context_to_proto,
        message_from_proto,
        message_to_proto,
        recorddict_from_proto,
        recorddict_to_proto,
        run_from_proto,
        run_to_proto,
    )
    from flwr.proto.message_pb2 import Message as ProtoMessage
    from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict
    from flwr.supercore.run import Run

    saved = _identity()
    try:
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 5, 1, 1
        weights = np.arange(6, dtype=np.float32).reshape(2, 3)
        content = RecordDict(
            {
                "arrays": ArrayRecord({"dense/kernel": Array(weights)}),
                "config": ConfigRecord({"server-round": 2, "lr": 0.1}),
            }
        )
        msg = Message(content, 1003, "train", group_id="2")
        msg.metadata.__dict__["_message_id"] = "m9"
        data = message_to_proto(msg).SerializeToString()
        back = message_from_proto(ProtoMessage.FromString(data))
        assert back.metadata.message_id == "m9"
        assert (back.metadata.dst_node_id, back.metadata.message_type) == (1003, "train")
        np.testing.assert_array_equal(back.content["arrays"]["dense/kernel"].numpy(), weights)
        assert back.content["config"]["server-round"] == 2

        state = recorddict_to_proto(content).SerializeToString()
        again = recorddict_from_proto(ProtoRecordDict.FromString(state))
        np.testing.assert_array_equal(again["arrays"]["dense/kernel"].numpy(), weights)

        ctx = Context(
            run_id=5, node_id=1003, node_config={"region": "Europe"}, state=content, run_config={}
        )
        ctx2 = context_from_proto(context_to_proto(ctx))
        assert (ctx2.run_id, ctx2.node_id, ctx2.node_config["region"]) == (5, 1003, "Europe")
        run = run_from_proto(run_to_proto(Run.create_empty(run_id=5)))
        assert run.run_id == 5
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def test_inprocess_engine_restores_task_identity(tmp_path):
    """The engine sets the identity for its run and puts the previous one back."""
    import fedglobal

    before = _identity()
    cfg = {
        "experiment": {"rounds": 1, "output_dir": str(tmp_path)},
        "data": {
            "source": "synthetic:fedprox",
            "task": "classification",
            "num_regions": 3,
            "partition": "column",
        },
        "model": {"name": "logistic"},
        "strategy": {"min_available_clients": 2},
    }
    fedglobal.simulate(cfg, quiet=True)
    assert _identity() == before


def test_flower_supernode_still_has_the_isolation_mode_the_deployment_engine_uses():
    from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode

    args = _parse_args_run_supernode().parse_args(
        ["--isolation", "process", "--node-config", "region='x'"]
    )
    assert args.isolation == "process"
