"""Unit tests of the engine helpers: process supervision, ports, certificates, keys, Flower pins."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys

import pytest

from fedglobal.engines.processes import (
    OWNER_ENV,
    Supervisor,
    descendants,
    free_port,
    is_alive,
    owned_by,
    wait_until,
)
from fedglobal.engines.tls import find_tls_files, make_auth_keys, make_certificates
from fedglobal.errors import EngineError
from tests.engines.engine_helpers import FEDGLOBAL, run_cli

# A process that starts a child in a new session (as Flower's SuperLink starts its
# SuperExec) and a grandchild that ignores SIGTERM, then waits.
_TREE = """
import os, signal, subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
subprocess.Popen([sys.executable, "-c", "import signal, time; "
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); print('armed', flush=True); time.sleep(600)"])
print("ready", flush=True)
time.sleep(600)
"""


def test_supervisor_stops_a_whole_tree_even_detached_and_stubborn(tmp_path):
    sup = Supervisor(log_dir=tmp_path)
    try:
        proc = sup.start("tree", [sys.executable, "-c", _TREE])
        wait_until(
            lambda: "armed" in (tmp_path / "tree.log").read_text(),
            timeout=30,
            what="the tree to start",
            watch=[proc],
        )
        wait_until(lambda: len(owned_by(sup.token)) == 3, timeout=10, what="three processes")
        pids = owned_by(sup.token)
        assert set(descendants(proc.pid)) | {proc.pid} == set(pids)
        os.kill(proc.pid, 0)
        env = open(f"/proc/{pids[-1]}/environ", "rb").read().split(b"\0")
        assert f"{OWNER_ENV}={sup.token}".encode() in env
    finally:
        sup.stop_all(timeout=2)  # SIGTERM, then SIGKILL for the one that ignores it
    assert not any(is_alive(p) for p in pids)
    assert owned_by(sup.token) == []


def test_supervisor_sweeps_orphans_by_token(tmp_path):
    sup = Supervisor(log_dir=tmp_path)
    parent = sup.start("parent", [sys.executable, "-c", _TREE])
    wait_until(
        lambda: "armed" in (tmp_path / "parent.log").read_text(), timeout=30, what="the tree"
    )
    os.kill(parent.pid, signal.SIGKILL)  # only the parent dies: its children are re-parented
    parent.popen.wait(timeout=10)
    orphans = owned_by(sup.token)
    assert len(orphans) == 2 and parent.pid not in orphans
    assert not set(orphans) & set(descendants(os.getpid()))
    sup.stop_all(timeout=2)
    assert owned_by(sup.token) == []
    assert not any(is_alive(p) for p in orphans)


def test_processes_die_when_their_starter_is_killed_outright(tmp_path):
    """SIGKILL leaves no finally and no atexit: PR_SET_PDEATHSIG still stops the children."""
    script = (
        "import sys, time\n"
        "from fedglobal.engines.processes import Supervisor\n"
        f"sup = Supervisor(log_dir={str(tmp_path)!r})\n"
        "p = sup.start('sleeper', [sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    starter = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    child = int(starter.stdout.readline())
    assert is_alive(child)
    starter.kill()
    starter.wait(timeout=10)
    starter.stdout.close()
    wait_until(lambda: not is_alive(child), timeout=10, what="the orphan to be stopped")


def test_supervisor_refuses_to_start_after_stop_all(tmp_path):
    sup = Supervisor(log_dir=tmp_path)
    sup.stop_all()
    with pytest.raises(EngineError, match="already stopped"):
        sup.start("late", [sys.executable, "-c", "pass"])


def test_wait_until_names_the_dead_process_and_quotes_its_log(tmp_path):
    with Supervisor(log_dir=tmp_path) as sup:
        proc = sup.start("crash", [sys.executable, "-c", "print('boom: bad flag'); exit(3)"])
        with pytest.raises(EngineError, match=r"crash exited with code 3(.|\n)*boom: bad flag"):
            wait_until(lambda: False, timeout=30, what="Godot", watch=[proc])
    with pytest.raises(EngineError, match=r"timed out after 0.2s waiting for Godot"):
        wait_until(lambda: False, timeout=0.2, what="Godot")


def test_free_port_is_bindable():
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_certificates_chain_and_cover_loopback_and_given_hosts(tmp_path):
    from cryptography import x509

    files = make_certificates(tmp_path, hosts=["link.example.org", "10.1.2.3"])
    assert find_tls_files(tmp_path) == files
    cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"localhost", "link.example.org"}
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1",
        "10.1.2.3",
    }
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    context = ssl.create_default_context(cafile=str(files.ca_cert))
    context.load_cert_chain(files.server_cert, files.server_key)  # key matches the cert
    assert oct((tmp_path / "server.key").stat().st_mode)[-3:] == "600"


def test_missing_certificates_say_how_to_make_them(tmp_path):
    with pytest.raises(EngineError, match="fedglobal certs"):
        find_tls_files(tmp_path)


def test_auth_keys_are_ec_openssh_pairs_flower_accepts(tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import (
        load_ssh_private_key,
        load_ssh_public_key,
    )
    from flwr.supercore.primitives.asymmetric import uses_nist_ec_curve

    (key,) = make_auth_keys(tmp_path, ["europe"])
    private = load_ssh_private_key(key.private.read_bytes(), None)
    public = load_ssh_public_key(key.public.read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey) and uses_nist_ec_curve(public)
    assert private.public_key().public_numbers() == public.public_numbers()
    with pytest.raises(EngineError, match="invalid key name"):
        make_auth_keys(tmp_path, ["../x"])


def test_cli_makes_certificates_and_keys(tmp_path):
    proc = run_cli("certs", str(tmp_path / "certs"), "--host", "10.0.0.5", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ca.crt" in proc.stdout
    proc = run_cli("keys", str(tmp_path / "keys"), "--names", "europe", "asia", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == [
        "asia",
        "asia.pub",
        "europe",
        "europe.pub",
    ]
    assert os.path.exists(FEDGLOBAL)
