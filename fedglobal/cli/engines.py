"""``fedglobal`` commands for Flower's engines: real regional clients, TLS, authentication.

fedglobal certs certs/ --host server.example.org       # CA + SuperLink certificate
fedglobal keys keys/ --names europe asia africa          # one SuperNode key pair per region
fedglobal superlink --port 9092 --tls-dir certs/ [--auth-keys keys/]
fedglobal client --region europe --data /data/europe.parquet --superlink HOST:9092 \\
    --tls-ca certs/ca.crt [--auth-key keys/europe]
fedglobal run experiments/quickstart.toml --superlink HOST:9092 --tls-ca certs/ca.crt
fedglobal deploy experiments/quickstart.toml [--tls] [--auth]   # all of it on loopback

Secure by default: ``superlink``, ``client`` and ``run`` refuse to start
without certificates unless ``--insecure`` is given (plain HTTP, with a
warning). ``deploy`` runs on 127.0.0.1 only and may stay plain HTTP there
(docs/engines.md says why); ``--tls`` / ``--auth`` turn on the same security.

Registered from :mod:`fedglobal.cli.main` (``add_commands`` and ``run_command``).
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from fedglobal.cli.options import add_overrides

__all__ = ["COMMANDS", "add_commands", "address", "port", "run_command"]

COMMANDS = ("certs", "keys", "superlink", "client", "run", "deploy")

LOOPBACK_PLAIN_WARNING = (
    "fedglobal deploy: warning: plain HTTP on 127.0.0.1 (no TLS, no SuperNode authentication). "
    "Every process listens on loopback only, on ports the OS chose, for this run only; "
    "other users of this machine could still reach those ports. "
    "Pass --tls (HTTPS) or --auth (HTTPS + SuperNode authentication) to secure them."
)


def port(text: str) -> int:
    """An argparse type: a TCP port number, 0 to 65535 (0: the OS picks one)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is out of range (0-65535)")
    return value


def address(text: str) -> str:
    """An argparse type: ``HOST:PORT`` (IPv6 as ``[::1]:9092``), port 1 to 65535."""
    host, sep, number = text.rpartition(":")
    if not sep or not host or "://" in text:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:9092, server.example.org:9092)"
        )
    try:
        value = int(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: port {number!r} is not a number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: port {value} is out of range (1-65535)")
    return text


def add_commands(sub: Any) -> None:
    """Add the engine subcommands to the CLI's subparsers."""
    p = sub.add_parser("certs", help="make a CA and a SuperLink TLS certificate")
    p.add_argument("out_dir", help="folder for ca.crt, ca.key, server.crt, server.key")
    p.add_argument(
        "--host",
        action="append",
        default=[],
        help="a DNS name or IP the SuperNodes use to reach the SuperLink (repeatable; "
        "localhost and 127.0.0.1 are always included)",
    )
    p.add_argument("--days", type=int, default=365, help="validity in days")

    p = sub.add_parser("keys", help="make SuperNode authentication key pairs")
    p.add_argument("out_dir", help="folder for <name> (private) and <name>.pub (public)")
    p.add_argument("--names", nargs="+", required=True, help="one key per name, e.g. regions")

    p = sub.add_parser("superlink", help="run a SuperLink for real regional clients (Ctrl-C stops)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=port, default=9092, help="the one port of all its APIs")
    p.add_argument("--tls-dir", default=None, help="folder from `fedglobal certs` (HTTPS only)")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="serve plain HTTP without certificates (only on a network you trust)",
    )
    p.add_argument(
        "--auth-keys",
        default=None,
        help="folder of SuperNode public keys (*.pub) to register; only they may connect",
    )
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for start-up")

    p = sub.add_parser("client", help="run one region's SuperNode and ClientApp (Ctrl-C stops)")
    p.add_argument("--region", required=True, help="the region this client holds")
    p.add_argument("--data", default=None, help="the region's own CSV or Parquet file")
    p.add_argument("--superlink", required=True, type=address, help="HOST:PORT of the SuperLink")
    p.add_argument("--tls-ca", default=None, help="CA certificate (ca.crt) to trust: HTTPS")
    p.add_argument("--auth-key", default=None, help="this SuperNode's private key file")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="connect over plain HTTP to a SuperLink started with --insecure",
    )
    p.add_argument(
        "--clientapp",
        choices=["persistent", "per-message"],
        default="persistent",
        help="one long-running ClientApp process (default) or Flower's one per message",
    )
    p.add_argument(
        "--max-wait-time",
        type=float,
        default=None,
        help="give up if the SuperLink cannot be reached for this many seconds",
    )

    p = sub.add_parser("run", help="submit an experiment to a running SuperLink")
    p.add_argument("experiment", help="experiment TOML file")
    add_overrides(p)
    p.add_argument("--superlink", required=True, type=address, help="HOST:PORT of the SuperLink")
    p.add_argument("--tls-ca", default=None, help="CA certificate (ca.crt) to trust: HTTPS")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="connect over plain HTTP to a SuperLink started with --insecure",
    )
    p.add_argument(
        "--regions",
        type=int,
        default=None,
        help="regional clients to wait for (default: the regions of the data, if readable here)",
    )
    p.add_argument("--output-dir", default=None, help="where the run folder goes")
    p.add_argument("--quiet", action="store_true", help="no progress lines")

    p = sub.add_parser(
        "deploy", help="SuperLink + one SuperNode per region on loopback, run, stop them"
    )
    p.add_argument("experiment", help="experiment TOML file")
    add_overrides(p)
    p.add_argument("--tls", action="store_true", help="HTTPS with a fresh CA and certificate")
    p.add_argument("--auth", action="store_true", help="SuperNode authentication (implies --tls)")
    p.add_argument("--clientapp", choices=["persistent", "per-message"], default=None)
    p.add_argument("--output-dir", default=None, help="where the run folder goes")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _sigterm_stops() -> None:
    """Let SIGTERM unwind like Ctrl-C, so every started process is stopped."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def run_command(args: argparse.Namespace) -> int:
    """Run one of :data:`COMMANDS`."""
    from fedglobal.engines import tls

    if args.command == "certs":
        files = tls.make_certificates(args.out_dir, hosts=args.host, days=args.days)
        print(f"CA certificate (give to clients): {files.ca_cert}")
        print(f"SuperLink certificate and key:    {files.server_cert}, {files.server_key}")
        return 0
    if args.command == "keys":
        for key in tls.make_auth_keys(args.out_dir, args.names):
            print(f"{key.name}: private {key.private} (for its SuperNode), public {key.public}")
        return 0
    _sigterm_stops()
    from fedglobal.engines import deployment

    if args.command == "superlink":
        return deployment.serve_superlink(
            host=args.host,
            port=args.port,
            tls_dir=args.tls_dir,
            auth_keys=args.auth_keys,
            insecure=args.insecure,
            timeout=args.timeout,
        )
    if args.command == "client":
        return deployment.serve_client(
            region=args.region,
            superlink=args.superlink,
            data=args.data,
            ca_cert=args.tls_ca,
            auth_key=args.auth_key,
            insecure=args.insecure,
            clientapp=args.clientapp,
            max_wait_time=args.max_wait_time,
        )
    if args.command == "run":
        return _run(args)
    return _deploy(args)


def _deploy(args: argparse.Namespace) -> int:
    from fedglobal import data
    from fedglobal.config import load_config
    from fedglobal.engines.deployment import run_deployment
    from fedglobal.run.folder import new_run_dir
    from fedglobal.run.results import load_run
    from fedglobal.runtime.preflight import check_enough_regions, check_strategy_fits_model

    cfg = load_config(args.experiment, args.overrides).replace({"experiment.engine": "deployment"})
    check_strategy_fits_model(cfg)
    regions = data.list_regions(cfg)
    check_enough_regions(cfg, regions)
    if not (args.tls or args.auth):
        print(LOOPBACK_PLAIN_WARNING, file=sys.stderr)
    run_dir = new_run_dir(cfg, args.output_dir)
    run_deployment(
        cfg,
        regions,
        run_dir,
        quiet=args.quiet,
        tls=args.tls or args.auth,
        auth=args.auth,
        clientapp=args.clientapp,
    )
    _print_result(load_run(run_dir))
    return 0


def _run(args: argparse.Namespace) -> int:
    from fedglobal import data
    from fedglobal.config import load_config
    from fedglobal.engines.deployment import client_security, submit_remote
    from fedglobal.errors import EngineError, FedGlobalError
    from fedglobal.run.folder import new_run_dir
    from fedglobal.run.results import load_run
    from fedglobal.runtime.preflight import check_strategy_fits_model

    # refuse before anything is written (submit_remote prints the warnings)
    client_security("run", ca_cert=args.tls_ca, auth_key=None, insecure=args.insecure)
    cfg = load_config(args.experiment, args.overrides).replace({"experiment.engine": "deployment"})
    check_strategy_fits_model(cfg)
    expected = args.regions
    if expected is None:
        try:
            expected = len(data.list_regions(cfg))
        except FedGlobalError:
            expected = 0  # the data lives on the clients only: wait for the strategy's minimum
    run_dir = new_run_dir(cfg, args.output_dir)
    outcome = submit_remote(
        cfg,
        run_dir,
        superlink=args.superlink,
        ca_cert=args.tls_ca,
        insecure=args.insecure,
        expected_nodes=expected,
        quiet=args.quiet,
    )
    if not outcome.ok:
        raise EngineError(outcome.describe())
    if (run_dir / "summary.json").is_file():
        _print_result(load_run(run_dir))
    else:
        if run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
        print(f"run {outcome.run_id} completed; the ServerApp wrote its run folder on the "
              f"SuperLink's machine: {run_dir.resolve()}")  # fmt: skip
    return 0


def _print_result(result: Any) -> None:
    final = result.summary.get("final", {}).get("test/all", {})
    shown = ", ".join(f"{k} {v:.4g}" for k, v in final.items())
    print(f"run folder: {result.run_dir}")
    print(f"final test metrics (all regions pooled): {shown}")
    failed = result.summary.get("failed_replies", [])
    if failed:
        regions = sorted({str(f.get("region")) for f in failed})
        print(f"regions that failed during the run: {', '.join(regions)}", file=sys.stderr)
        for f in failed:
            print(
                f"  round {f.get('round')} {f.get('stage')}: {f.get('region')}: {f.get('reason')}",
                file=sys.stderr,
            )
