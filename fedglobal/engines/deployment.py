"""The ``deployment`` engine: Flower's Deployment Engine, one SuperNode per region.

A SuperNode's node config names its region and the path of its local data
(``region``, ``data-path``); its ClientApp loads only that file
(``fedglobal.data.load_region(..., data_path=...)``). Only weights, counts and
scalar metrics cross the wire.

Building blocks (also behind ``fedglobal superlink``, ``fedglobal client`` and
``fedglobal run``), in :mod:`fedglobal.engines.flower`; here:

- :class:`LoopbackDeployment`: a whole federation on 127.0.0.1 (``fedglobal
  deploy`` and ``simulate(engine="deployment")``): a SuperLink, optionally
  with TLS (a fresh CA and server certificate) and SuperNode authentication
  (one registered key per region), each region's rows exported to its own
  Parquet file, one SuperNode per region, then ``flwr run``; every process is
  stopped at the end;
- :func:`serve_superlink`, :func:`serve_client`, :func:`submit_remote`: the
  pieces for real machines.

ClientApp processes: ``[engine] clientapp = "persistent"`` (default) runs each
SuperNode with ``--isolation process`` and one long-running ClientApp process
(:mod:`fedglobal.engines.clientapp_worker`); ``"per-message"`` keeps Flower's
default, a fresh ``flwr-clientapp`` process per message (docs/engines.md has
the measured difference).
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from fedglobal.config import ExperimentConfig
from fedglobal.engines.flower import (
    FlowerHome,
    RunOutcome,
    SuperLink,
    SuperNode,
    register_supernodes,
    run_config_for,
    start_superlink,
    start_supernode,
    submit_run,
)
from fedglobal.engines.processes import Supervisor
from fedglobal.engines.ray import run_timeout
from fedglobal.engines.tls import (
    AuthKey,
    TlsFiles,
    find_tls_files,
    make_auth_keys,
    make_certificates,
    public_keys_in,
)
from fedglobal.errors import EngineError


def key_name(region: str) -> str:
    """A file-name-safe name for a region's key and logs."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", region).strip("._") or "region"


def export_region_files(
    cfg: ExperimentConfig, regions: Sequence[str], out_dir: str | Path
) -> dict[str, Path] | None:
    """Write each region's own rows of ``data.source`` to ``<out_dir>/<region>.parquet``.

    This stands in for the regional data centres' local files on a loopback
    deployment. Only for ``partition = "column"`` sources (the rows of a
    region are those whose region column names it); otherwise ``None`` and the
    clients read ``data.source`` themselves.
    """
    from fedglobal.data._util import canonical_label
    from fedglobal.data.sources import read_source

    column = cfg.data.region
    if cfg.data.partition != "column" or not column or cfg.data.source.startswith("synthetic:"):
        return None
    table = read_source(cfg)
    if column not in table.columns:
        return None
    labels = table[column].map(lambda v: canonical_label(v) if v == v else None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for region in regions:
        path = out / f"{key_name(region)}.parquet"
        table[labels == region].to_parquet(path, index=False)
        files[region] = path
    return files


class LoopbackDeployment:
    """A federation on 127.0.0.1: SuperLink + one SuperNode per region (context manager).

    ``tls`` makes a CA and server certificate and serves HTTPS only; ``auth``
    (needs ``tls``) enables SuperNode authentication and registers one key per
    region. Tests reach in through ``supervisor``, ``home``, ``superlink`` and
    ``supernodes``; :meth:`run` submits the experiment.
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        regions: Sequence[str],
        *,
        tls: bool = False,
        auth: bool = False,
        clientapp: str | None = None,
        workdir: str | Path | None = None,
        export_data: bool = True,
    ) -> None:
        if auth and not tls:
            raise EngineError("SuperNode authentication needs TLS: use tls=True with auth=True")
        self.cfg = cfg
        self.regions = list(regions)
        self.use_tls = tls
        self.use_auth = auth
        self.clientapp = clientapp or cfg.engine.clientapp
        self.export_data = export_data
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._workdir = Path(workdir) if workdir is not None else None
        self.supervisor: Supervisor | None = None
        self.home: FlowerHome | None = None
        self.superlink: SuperLink | None = None
        self.tls: TlsFiles | None = None
        self.keys: dict[str, AuthKey] = {}
        self.supernodes: dict[str, SuperNode] = {}
        self.data_files: dict[str, Path] | None = None
        self.started_s: float | None = None

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise EngineError("the deployment is not started")
        return self._workdir

    def start(self, *, supernodes: bool = True) -> LoopbackDeployment:
        """Start the SuperLink and the SuperNodes (returns at once; clients connect meanwhile).

        ``supernodes=False`` starts none (call :meth:`add_supernode` for each).
        """
        t0 = time.perf_counter()
        if self._workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fedglobal-deploy-")
            self._workdir = Path(self._tmp.name)
        self.supervisor = Supervisor(log_dir=self.workdir / "logs")
        try:
            self.home = FlowerHome(self.workdir / "flwr-home")
            if self.use_tls:
                self.tls = make_certificates(self.workdir / "certs")
            self.superlink = start_superlink(
                self.supervisor,
                self.home,
                tls=self.tls,
                auth=self.use_auth,
                timeout=self.cfg.engine.connect_timeout,
            )
            if self.use_auth:
                names = [key_name(r) for r in self.regions]
                made = make_auth_keys(self.workdir / "keys", names)
                self.keys = dict(zip(self.regions, made, strict=True))
                register_supernodes(self.supervisor, self.home, [k.public for k in made])
            if self.export_data:
                self.data_files = export_region_files(self.cfg, self.regions, self.workdir / "data")
            for region in self.regions if supernodes else ():
                self.add_supernode(region)
        except BaseException:
            self.stop()
            raise
        self.started_s = time.perf_counter() - t0
        return self

    def add_supernode(
        self,
        region: str,
        *,
        auth_key: str | Path | None = None,
        ca_cert: str | Path | None = None,
        insecure: bool = False,
        max_wait_time: float | None = None,
        name: str | None = None,
        superlink_address: str | None = None,
    ) -> SuperNode:
        """Start a SuperNode for ``region`` (also intruders: another key, no TLS, a proxy...)."""
        assert self.supervisor is not None and self.home is not None and self.superlink
        key = auth_key
        if key is None and region in self.keys:
            key = self.keys[region].private
        ca = None if insecure else (ca_cert or self.superlink.ca_cert)
        node = start_supernode(
            self.supervisor,
            self.home,
            superlink=superlink_address or self.superlink.address,
            region=region,
            data_path=(self.data_files or {}).get(region),
            ca_cert=ca,
            auth_key=key,
            clientapp=self.clientapp,
            name=name or key_name(region),
            max_wait_time=max_wait_time,
        )
        self.supernodes.setdefault(name or region, node)
        return node

    def run(
        self,
        run_dir: str | Path,
        *,
        quiet: bool = False,
        out: TextIO | None = None,
        engine: str = "deployment",
    ) -> RunOutcome:
        """Submit the experiment (``flwr run``) and stream it until it ends."""
        assert self.supervisor is not None and self.home is not None and self.superlink
        out = out or sys.stderr
        if not quiet:
            security = "TLS" if self.superlink.ca_cert else "no TLS"
            if self.use_auth:
                security += ", SuperNode authentication"
            out.write(
                f"deployment: SuperLink {self.superlink.url} ({security}); "
                f"{len(self.supernodes)} SuperNodes; ClientApp processes: {self.clientapp}\n"
            )
        run_config = run_config_for(
            self.cfg.to_toml(),
            base_dir=self.cfg.base_dir,
            run_dir=run_dir,
            engine=engine,
            expected_nodes=len(self.regions),
            quiet=quiet,
        )
        return submit_run(
            self.supervisor,
            self.home,
            run_config,
            timeout=run_timeout(self.cfg),
            quiet=quiet,
            out=out,
            superlink=self.superlink,
        )

    def stop(self) -> None:
        """Stop every process (SuperNodes, ClientApps, SuperLink, ...) and remove temp files."""
        try:
            if self.supervisor is not None:
                self.supervisor.stop_all()
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None
                self._workdir = None

    def __enter__(self) -> LoopbackDeployment:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def run_deployment(
    cfg: ExperimentConfig,
    regions: Sequence[str],
    run_dir: Path,
    *,
    quiet: bool = False,
    tls: bool = False,
    auth: bool = False,
    clientapp: str | None = None,
    out: TextIO | None = None,
) -> RunOutcome:
    """Run ``cfg`` on a loopback deployment (one SuperNode per region); stop everything after."""
    with LoopbackDeployment(cfg, regions, tls=tls, auth=auth, clientapp=clientapp) as deployment:
        outcome = deployment.run(run_dir, quiet=quiet, out=out)
        if not outcome.ok:
            dead = [r for r, n in deployment.supernodes.items() if not n.running()]
            hint = f" (SuperNodes that exited: {', '.join(dead)})" if dead else ""
            raise EngineError(f"the deployment engine failed: {outcome.describe()}{hint}")
        return outcome


# -- real machines ---------------------------------------------------------------------------


def _say(text: str) -> None:
    print(text, flush=True)


def _warn(text: str) -> None:
    print(f"fedglobal: warning: {text}", file=sys.stderr, flush=True)


def superlink_security(
    *, tls_dir: str | Path | None, auth_keys: str | Path | None, insecure: bool
) -> list[str]:
    """Check ``fedglobal superlink``'s security options; return the warnings to print.

    TLS is on when certificates are given (``--tls-dir``), SuperNode
    authentication when keys are given (``--auth-keys``, needs TLS). Without
    certificates it refuses to start unless ``--insecure``. ``{where}`` in a
    warning stands for the address.
    """
    if insecure and tls_dir:
        raise EngineError(
            f"superlink: --insecure and --tls-dir {tls_dir} contradict each other: "
            "pass --tls-dir for HTTPS, or --insecure without --tls-dir for plain HTTP"
        )
    if auth_keys and not tls_dir:
        raise EngineError(
            f"superlink: --auth-keys {auth_keys} needs --tls-dir: Flower allows SuperNode "
            "authentication only over TLS. Make the certificates with "
            "`fedglobal certs certs/ --host <name or IP the clients use>` and pass --tls-dir certs/"
        )
    if not tls_dir and not insecure:
        raise EngineError(
            "superlink: no certificates given (--tls-dir). The SuperLink serves HTTPS by "
            "default: make them with `fedglobal certs certs/ --host <name or IP the clients "
            "use>` and pass --tls-dir certs/; add --auth-keys keys/ (from `fedglobal keys keys/ "
            "--names <regions>`) so that only registered SuperNodes may connect. "
            "Or pass --insecure to serve plain HTTP, on a network you trust"
        )
    if insecure:
        return [
            "--insecure: the SuperLink serves plain HTTP on {where}. Model weights, metrics "
            "and submitted runs cross the network unencrypted, and any SuperNode that reaches "
            "this port can join. Outside a trusted network use --tls-dir (`fedglobal certs`) "
            "and --auth-keys (`fedglobal keys`)"
        ]
    if not auth_keys:
        return [
            "SuperNode authentication is off: any SuperNode that trusts the CA certificate can "
            "join. Pass --auth-keys DIR (`fedglobal keys DIR --names <regions>`) to admit only "
            "registered SuperNodes"
        ]
    return []


def client_security(
    command: str, *, ca_cert: str | Path | None, auth_key: str | Path | None, insecure: bool
) -> list[str]:
    """Check the security options of ``fedglobal client`` or ``run``; return the warnings.

    HTTPS when the SuperLink's CA certificate is given (``--tls-ca``); without
    it they refuse to start unless ``--insecure``.
    """
    if insecure and ca_cert:
        raise EngineError(
            f"{command}: --insecure and --tls-ca {ca_cert} contradict each other: "
            "pass --tls-ca for HTTPS, or --insecure without --tls-ca for plain HTTP"
        )
    if auth_key and not ca_cert:
        raise EngineError(
            f"{command}: --auth-key {auth_key} needs --tls-ca: Flower allows SuperNode "
            "authentication only over TLS. Pass --tls-ca with the SuperLink's ca.crt "
            "(from `fedglobal certs`)"
        )
    if ca_cert is not None and not Path(ca_cert).expanduser().is_file():
        raise EngineError(
            f"{command}: --tls-ca {ca_cert}: no such file; it is the ca.crt that "
            "`fedglobal certs` wrote on the SuperLink's machine"
        )
    if not ca_cert and not insecure:
        who = "A SuperNode" if command == "client" else "`fedglobal run`"
        extra = (
            " and, if the SuperLink authenticates SuperNodes, --auth-key <this region's "
            "private key from `fedglobal keys`>"
            if command == "client"
            else ""
        )
        raise EngineError(
            f"{command}: no CA certificate given (--tls-ca). {who} connects over HTTPS by "
            "default: pass --tls-ca ca.crt (the SuperLink's CA certificate, made with "
            f"`fedglobal certs certs/ --host <SuperLink host>`){extra}. Or pass --insecure to "
            "connect over plain HTTP to a SuperLink started with --insecure"
        )
    if insecure:
        return [
            "--insecure: plain HTTP to the SuperLink at {where}. What is sent is not "
            "encrypted, and the SuperLink's identity is not checked. Outside a trusted "
            "network use --tls-ca (`fedglobal certs`)"
        ]
    return []


def _block_until_exit(
    sup: Supervisor,
    watched: Sequence,
    what: str,
    *,
    ready: Callable[[], bool] | None = None,
    on_ready: Callable[[], None] | None = None,
    hint: Callable[[], str] | None = None,
) -> int:
    """Wait while every watched process runs (Ctrl-C stops); return the first exit code.

    ``hint`` adds a sentence to the message when one exits (e.g. what to do).
    """
    try:
        while all(p.running() for p in watched):
            if ready is not None and on_ready is not None and ready():
                on_ready()
                ready = None
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    first = next(p for p in watched if not p.running())
    extra = hint() if hint is not None else ""
    print(
        f"fedglobal: {what} {first.name} exited with code {first.returncode}"
        f"{'; ' + extra if extra else ''}. Its log ends with:\n{first.log_tail()}",
        file=sys.stderr,
    )
    return int(first.returncode or 1)


def serve_superlink(
    *,
    host: str = "0.0.0.0",
    port: int = 9092,
    tls_dir: str | Path | None = None,
    auth_keys: str | Path | None = None,
    insecure: bool = False,
    timeout: float = 120.0,
    log: Callable[[str], None] | None = None,
) -> int:
    """``fedglobal superlink``: run a SuperLink (TLS, registered SuperNode keys) until Ctrl-C.

    Secure by default: without ``tls_dir`` it refuses to start unless
    ``insecure`` (plain HTTP, with a warning); see :func:`superlink_security`.
    """
    log = log or _say
    for line in superlink_security(tls_dir=tls_dir, auth_keys=auth_keys, insecure=insecure):
        _warn(line.format(where=f"{host}:{port}"))
    tls = find_tls_files(tls_dir) if tls_dir else None
    keys = public_keys_in(auth_keys) if auth_keys else []
    with tempfile.TemporaryDirectory(prefix="fedglobal-superlink-") as tmp:
        home = FlowerHome(Path(tmp) / "flwr-home")
        with Supervisor(log_dir=Path(tmp) / "logs") as sup:
            link = start_superlink(
                sup, home, host=host, port=port, tls=tls, auth=bool(keys), timeout=timeout
            )
            node_ids = register_supernodes(sup, home, keys) if keys else []
            scheme = "HTTPS (TLS)" if tls else "plain HTTP (no TLS)"
            log(f"SuperLink serving on {host}:{link.port}, {scheme}; pid {link.process.pid}")
            if keys:
                log(f"SuperNode authentication on: {len(node_ids)} registered key(s)")
            log(f"log: {link.process.log_path}; Ctrl-C stops it")
            return _block_until_exit(sup, [link.process], "the SuperLink")


def serve_client(
    *,
    region: str,
    superlink: str,
    data: str | Path | None = None,
    ca_cert: str | Path | None = None,
    auth_key: str | Path | None = None,
    insecure: bool = False,
    clientapp: str = "persistent",
    max_wait_time: float | None = None,
    log: Callable[[str], None] | None = None,
) -> int:
    """``fedglobal client``: run one region's SuperNode (and its ClientApp) until Ctrl-C.

    Secure by default: without ``ca_cert`` it refuses to start unless
    ``insecure`` (plain HTTP, with a warning); see :func:`client_security`.
    """
    log = log or _say
    warnings = client_security("client", ca_cert=ca_cert, auth_key=auth_key, insecure=insecure)
    if data is not None and not Path(data).expanduser().is_file():
        raise EngineError(f"--data {data}: no such file")
    for line in warnings:
        _warn(line.format(where=superlink))
    with tempfile.TemporaryDirectory(prefix="fedglobal-client-") as tmp:
        home = FlowerHome(Path(tmp) / "flwr-home")
        with Supervisor(log_dir=Path(tmp) / "logs") as sup:
            node = start_supernode(
                sup,
                home,
                superlink=superlink,
                region=region,
                data_path=data,
                ca_cert=ca_cert,
                auth_key=auth_key,
                clientapp=clientapp,
                max_wait_time=max_wait_time,
            )
            log(
                f"SuperNode for region {region!r} connecting to {superlink} "
                f"({'TLS' if ca_cert else 'no TLS'}{', authenticated' if auth_key else ''}); "
                f"ClientApp: {clientapp}; Ctrl-C stops it"
            )
            return _block_until_exit(
                sup,
                node.processes,
                "the SuperNode process",
                ready=node.ready,
                on_ready=lambda: log(f"ready: region {region!r} is connected and loaded"),
                hint=lambda: _lost_superlink_hint(node, superlink),
            )


def _lost_superlink_hint(node: SuperNode, superlink: str) -> str:
    """Why a SuperNode that had lost its SuperLink exited, and what to do."""
    if not node.supernode.log_contains("Connection attempt failed"):
        return ""
    return (
        f"it had lost the SuperLink at {superlink}. If that SuperLink was restarted, it no "
        "longer knows this SuperNode (Flower 1.41 keeps SuperNode registrations in memory "
        "and does not re-register): start `fedglobal client` again"
    )


def submit_remote(
    cfg: ExperimentConfig,
    run_dir: Path,
    *,
    superlink: str,
    ca_cert: str | Path | None = None,
    insecure: bool = False,
    expected_nodes: int = 0,
    quiet: bool = False,
    out: TextIO | None = None,
    extra: Mapping[str, object] | None = None,
) -> RunOutcome:
    """``fedglobal run``: submit ``cfg`` to a running SuperLink and stream it until it ends.

    The ServerApp runs on the SuperLink's machine and writes ``run_dir`` there.
    Secure by default: without ``ca_cert`` it refuses unless ``insecure``.
    """
    for line in client_security("run", ca_cert=ca_cert, auth_key=None, insecure=insecure):
        _warn(line.format(where=superlink))
    with tempfile.TemporaryDirectory(prefix="fedglobal-run-") as tmp:
        home = FlowerHome(Path(tmp) / "flwr-home")
        home.connect(superlink, ca_cert=ca_cert)
        with Supervisor(log_dir=Path(tmp) / "logs") as sup:
            run_config = run_config_for(
                cfg.to_toml(),
                base_dir=cfg.base_dir,
                run_dir=run_dir,
                engine="deployment",
                expected_nodes=expected_nodes,
                quiet=quiet,
            )
            run_config.update(extra or {})
            return submit_run(sup, home, run_config, timeout=run_timeout(cfg), quiet=quiet, out=out)
