"""A persistent ClientApp process for a SuperNode started with ``--isolation process``.

By default a Flower 1.41 SuperNode (``--isolation subprocess``) starts a
``flower-superexec`` that spawns a fresh ``flwr-clientapp`` process for every
message: Python starts, TensorFlow is imported, the region's data is read and
the Keras model is built and compiled again, every round (DESIGN decision 5
says a client builds its model once). With ``--isolation process`` the
SuperNode runs no executor of its own and serves the same Runtime API to an
outside process; this module is that process, a long-running one:

    python -m fedglobal.engines.clientapp_worker --runtime-api-address 127.0.0.1:PORT \\
        --parent-pid SUPERNODE_PID

It polls the SuperNode for a task (``AcquireTask``) and runs each one in this
process, exactly as ``flwr-clientapp`` runs one: pull the message and the
node's Context (``PullTaskInput``, ``PullMessages``), call the ClientApp named
by the run's FAB (``[tool.flwr.app.components] clientapp``, imported from this
environment), push the reply and the updated Context (``PushMessages``,
``PushTaskOutput``), with task heartbeats meanwhile. The ClientApp's caches
(the region's table, the compiled model) live on between messages. A ClientApp
exception becomes an error reply, as in ``flwr-clientapp``; the process keeps
serving. It exits when its SuperNode (``--parent-pid``) exits.

This speaks Flower's Runtime API through helpers of ``flwr.supernode.runtime``
(pinned by ``tests/test_flower_contract.py``).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import threading
import time
from typing import Any

import httpx
from flwr.app import Context, Error, Message
from flwr.common.config import get_fab_config
from flwr.common.constant import ErrorCode, SubStatus
from flwr.common.serde import context_from_proto, fab_from_proto, run_from_proto
from flwr.proto.node_pb2 import Node  # pylint: disable=E0611
from flwr.proto.runtime_pb2 import (  # pylint: disable=E0611
    AcquireTaskRequest,
    PullAppMessagesRequest,
    PullTaskInputRequest,
    SendTaskHeartbeatRequest,
)
from flwr.supercore.app_utils import start_parent_process_monitor
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender
from flwr.supercore.inflatable.inflatable_protobuf_utils import (
    make_confirm_message_received_fn_protobuf,
    make_pull_object_fn_protobuf,
)
from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.task_identity import TaskIdentity
from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

from fedglobal.engines import load_component

log = logging.getLogger("fedglobal.clientapp")

FAST_POLL = 0.05  # seconds between polls right after a task


@functools.lru_cache(maxsize=16)
def _client_app(reference: str) -> Any:
    return load_component(reference)


def _client(address: str, root_certificates: bytes | None, interceptors: list) -> RuntimeHttpClient:
    return RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=root_certificates is None,
        root_certificates=root_certificates,
        interceptors=interceptors,
        retry_invoker=make_simple_http_retry_invoker(),
    )


def pull_task_input(client: RuntimeHttpClient) -> tuple[Message, Context, Any, Any]:
    """Message, Context, Run and FAB of the acquired task (as ``flwr-clientapp`` pulls them).

    The same calls as ``flwr.supernode.runtime.run_clientapp.pull_task_input``,
    except that object pulls retry after 50 ms, not 1 s: this process acquires a
    task the moment the SuperNode creates it, while the SuperNode may still be
    pulling the message's objects from the SuperLink.
    """
    res = client.PullTaskInput(PullTaskInputRequest())
    TaskIdentity.task_id = res.task_id
    TaskIdentity.run_id = res.run.run_id
    TaskIdentity.node_id = res.context.node_id
    context = context_from_proto(res.context)
    run = run_from_proto(res.run)
    fab = fab_from_proto(res.fab)
    pulled = client.PullMessages(PullAppMessagesRequest())
    if not pulled.messages_list:
        raise RuntimeError("no message received from the SuperNode's Runtime API")
    node = Node(node_id=context.node_id)
    tree = pulled.message_object_trees[0]
    message = pull_and_inflate_object_from_tree(
        tree,
        make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
        make_confirm_message_received_fn_protobuf(
            client.ConfirmMessageReceived, node, context.run_id
        ),
        return_type=Message,
        initial_backoff=0.05,
        backoff_cap=1.0,
    )
    message.metadata.__dict__["_message_id"] = tree.object_id
    return message, context, run, fab


def run_task(address: str, token: str, root_certificates: bytes | None = None) -> str:
    """Run one acquired task in this process; return its status (completed or failed)."""
    client = _client(
        address,
        root_certificates,
        [
            RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
            RuntimeTokenHttpInterceptor(token),
        ],
    )

    def heartbeat() -> bool:
        try:
            client.SendTaskHeartbeat(SendTaskHeartbeatRequest())
        except httpx.HTTPError:
            return False
        return True

    beat = HeartbeatSender(heartbeat)
    beat.start()
    message: Message | None = None
    context: Context | None = None
    reply: Message | None = None
    status, details = SubStatus.FAILED, "ClientApp task failed"
    started = time.perf_counter()
    pulled = computed = 0.0
    try:
        message, context, _run, fab = pull_task_input(client)
        pulled = time.perf_counter()
        components = get_fab_config(fab.content)["tool"]["flwr"]["app"]["components"]
        reference = str(components["clientapp"])
        try:
            app = _client_app(reference)
        except Exception as exc:
            code = ErrorCode.LOAD_CLIENT_APP_EXCEPTION
            details = f"cannot load ClientApp {reference!r}: {exc}"
            reply = Message(Error(code=code, reason=details), reply_to=message)
        else:
            try:
                reply = app(message=message, context=context)
                status, details = SubStatus.COMPLETED, ""
                computed = time.perf_counter()
            except Exception as exc:
                log.exception("the ClientApp raised")
                details = f"{type(exc)}:<'{exc}'>"
                reply = Message(
                    Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details),
                    reply_to=message,
                )
    finally:
        try:
            if reply is not None and context is not None:
                push_message(client, reply, context)
        finally:
            if beat.is_running:
                beat.stop()
            push_task_output(client=client, context=context, sub_status=status, details=details)
            client.close()
    kind = message.metadata.message_type if message is not None else "?"
    end = time.perf_counter()
    steps = ""
    if computed:
        steps = (
            f" (pull {pulled - started:.3f}s, ClientApp {computed - pulled:.3f}s, "
            f"push {end - computed:.3f}s)"
        )
    print(
        f"[fedglobal clientapp] {kind} message: {status} in {end - started:.3f}s{steps}", flush=True
    )
    return status


#: Seconds between the SuperNode's exit and a hard exit of this process.
PARENT_EXIT_GRACE = 5.0


def _exit_with_parent(parent_pid: int) -> None:
    """Exit when the SuperNode ``parent_pid`` exits.

    Flower's ``start_parent_process_monitor`` raises SIGINT once; a task that is
    mid-way can then block in its ``finally`` (``push_task_output`` retries
    against the dead SuperNode forever). So SIGINT first, for a clean stop, and
    ``os._exit`` after :data:`PARENT_EXIT_GRACE` seconds if that did not end it.
    """
    start_parent_process_monitor(parent_pid)

    def hard_exit() -> None:
        while _pid_alive(parent_pid):
            time.sleep(0.2)
        time.sleep(PARENT_EXIT_GRACE)
        os._exit(1)

    threading.Thread(target=hard_exit, daemon=True, name="exit-with-parent").start()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def serve(
    address: str,
    *,
    root_certificates: bytes | None = None,
    parent_pid: int | None = None,
    poll_interval: float = 0.5,
    max_tasks: int | None = None,
    preload: str | None = None,
) -> None:
    """Acquire and run the SuperNode's ClientApp tasks until the SuperNode exits.

    Polling backs off from 50 ms to ``poll_interval`` while idle: each poll is an
    HTTP request to the SuperNode, and on a machine with many SuperNodes
    (``fedglobal deploy`` of 22 regions) fixed 50 ms polls alone kept both CPUs busy.

    ``preload`` names a ClientApp component to import before the first task
    (TensorFlow's import then overlaps the SuperLink's start instead of round 0).
    """
    if parent_pid is not None:
        _exit_with_parent(parent_pid)
    if preload:
        try:
            _client_app(preload)
        except Exception as exc:  # reported again, as an error reply, by the first task
            log.warning("cannot preload %s: %s", preload, exc)
    acquirer = _client(
        address, root_certificates, [RuntimeVersionHttpInterceptor(component_name="SuperExec")]
    )
    request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
    done = 0
    interval = FAST_POLL
    print(f"[fedglobal clientapp] serving the SuperNode at {address}", flush=True)
    try:
        while max_tasks is None or done < max_tasks:
            try:
                response = acquirer.AcquireTask(request)
            except httpx.TransportError:
                time.sleep(0.5)  # the SuperNode's Runtime API is not up yet
                continue
            if response.HasField("task") and response.token:
                try:
                    run_task(address, response.token, root_certificates)
                except Exception:  # the task failed outside the ClientApp; keep serving
                    log.exception("task %s failed", response.task.task_id)
                done += 1
                interval = FAST_POLL
            else:
                time.sleep(interval)
                interval = min(interval * 1.5, max(poll_interval, FAST_POLL))
    finally:
        acquirer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runtime-api-address", required=True, help="the SuperNode's HOST:PORT")
    parser.add_argument("--root-certificates", default=None, help="CA of a TLS Runtime API")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this pid exits")
    parser.add_argument(
        "--poll-interval", type=float, default=0.5, help="longest wait between idle polls (s)"
    )
    parser.add_argument("--preload", default=None, help="ClientApp to import at start-up")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    certificates = None
    if args.root_certificates:
        with open(args.root_certificates, "rb") as file:
            certificates = file.read()
    try:
        serve(
            args.runtime_api_address,
            root_certificates=certificates,
            parent_pid=args.parent_pid,
            poll_interval=args.poll_interval,
            preload=args.preload,
        )
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
