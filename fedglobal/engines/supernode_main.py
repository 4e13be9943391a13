"""``flower-supernode``, with its shutdown made safe against a second SIGINT.

Flower 1.41's SuperNode shuts itself down by sending itself SIGINT when the
SuperLink refuses it (HTTP 401, e.g. after the SuperLink restarted and forgot
its registrations). More than one of its threads can be refused: the node
heartbeat and every retried Fleet call (``fleet_http_connection`` and
``supercore.retry.http_retry``), so two SIGINTs can arrive a moment apart.
Flower's handler (``supercore.exit.register_signal_handlers``) resets SIGINT
to the handler that was there before it, Python's ``KeyboardInterrupt``, and
then runs ``flwr_exit``. The second SIGINT then raises ``KeyboardInterrupt``
in the middle of ``flwr_exit``: the process ends with -2 instead of 0, or, if
it is interrupted before ``flwr_exit`` stops the Runtime API's HTTP server and
starts its force-exit timer, it never exits (seen in CI: a test waited 120 s
for a refused SuperNode to exit).

Here SIGINT is set, before Flower registers its own handler, to one that
leaves a shutdown under way alone. So the handler Flower restores makes a later
SIGINT harmless: the first ``flwr_exit`` runs to its end, with its own
force-exit timer. In case the exit still stalls, the later SIGINT also arms a
backstop that ends the process (code 1) after :data:`BACKSTOP_SECONDS`. Once
Flower's exit reaches ``sys.exit``, SIGINT is ignored (Python would otherwise
restore the default action while it finalizes, and a late SIGINT would turn a
finished exit's 0 into -2).
Nothing else of Flower's SuperNode changes: this runs its console script's
function with the same arguments.

Our SuperNodes run in their own sessions (:class:`fedglobal.engines.processes.Supervisor`),
so a terminal's Ctrl-C never reaches them; they are stopped by SIGTERM, by pid.

    python -m fedglobal.engines.supernode_main --superlink HOST:PORT ...
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from types import FrameType

#: Seconds a SuperNode may still take to exit after a repeated SIGINT (Flower forces
#: its own exit 5 s after the first).
BACKSTOP_SECONDS = 20.0

_backstop_armed = threading.Event()


def _end_after(seconds: float) -> None:
    time.sleep(seconds)
    print(
        f"[fedglobal supernode] the shutdown had not finished {seconds:g} s after a "
        "repeated SIGINT: exiting now",
        file=sys.stderr,
        flush=True,
    )
    os._exit(1)


def shutdown_under_way(signum: int, frame: FrameType | None) -> None:
    """SIGINT after Flower's own handler ran once: let its exit finish, and arm the backstop."""
    if _backstop_armed.is_set():
        return
    _backstop_armed.set()
    threading.Thread(
        target=_end_after, args=(BACKSTOP_SECONDS,), name="exit-backstop", daemon=True
    ).start()


def main() -> None:
    """Run Flower's ``flower-supernode`` entry point under :func:`shutdown_under_way`."""
    signal.signal(signal.SIGINT, shutdown_under_way)
    from flwr.supernode.cli import flower_supernode

    sys.argv[0] = "flower-supernode"  # Flower's usage text and exit telemetry read it
    try:
        sys.exit(flower_supernode())
    finally:
        # Python resets handlers to SIG_DFL while it finalizes; a SIGINT then would end
        # an exit that already finished with -2. Ignored ones stay ignored.
        signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":
    main()
