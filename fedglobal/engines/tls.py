"""TLS certificates and SuperNode authentication keys (``fedglobal certs``, ``fedglobal keys``).

Made with the ``cryptography`` package, the same one Flower uses:

- :func:`make_certificates` writes a private certificate authority (``ca.crt``,
  ``ca.key``) and a server certificate signed by it (``server.crt``,
  ``server.key``) whose subject alternative names cover ``localhost``,
  ``127.0.0.1`` and the hosts and IPs you pass: the names the SuperNodes and
  ``fedglobal run`` use to reach the SuperLink. SuperNodes trust ``ca.crt``.
- :func:`make_auth_keys` writes one EC P-384 key pair per SuperNode, in the
  OpenSSH formats Flower reads: ``<name>`` (private, given to that SuperNode
  with ``--auth-key``) and ``<name>.pub`` (public, registered with the
  SuperLink). Only registered keys can connect when authentication is on.

The same files with openssl (for reference; fedglobal does not need it)::

    openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj /CN=fedglobal-ca \\
        -keyout ca.key -out ca.crt
    openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1' > san.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \\
        -extfile san.ext -out server.crt
    ssh-keygen -t ecdsa -b 384 -N "" -f keys/europe      # keys/europe + keys/europe.pub
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedglobal.errors import EngineError

__all__ = [
    "AuthKey",
    "TlsFiles",
    "find_tls_files",
    "make_auth_keys",
    "make_certificates",
    "public_keys_in",
]


@dataclass(frozen=True)
class TlsFiles:
    """The files of :func:`make_certificates` (``ca.crt`` is what clients trust)."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


@dataclass(frozen=True)
class AuthKey:
    """A SuperNode's key pair: ``private`` stays on the SuperNode, ``public`` is registered."""

    name: str
    private: Path
    public: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedglobal"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def make_certificates(
    out_dir: str | Path,
    *,
    hosts: Sequence[str] = (),
    days: int = 365,
) -> TlsFiles:
    """Write a CA and a server certificate for the SuperLink into ``out_dir``.

    ``hosts`` adds DNS names or IP addresses to the server certificate, besides
    ``localhost`` and ``127.0.0.1``.
    """
    if days < 1:
        raise EngineError(f"certificate validity must be at least 1 day, got {days}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(minutes=5)
    not_after = now + datetime.timedelta(days=days)

    ca_key = _rsa_key()
    ca_name = _name("fedglobal CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = _rsa_key()
    sans: list[x509.GeneralName] = []
    for host in ("localhost", "127.0.0.1", *hosts):
        try:
            entry: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            entry = x509.DNSName(host)
        if entry not in sans:
            sans.append(entry)
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0] if hosts else "localhost"))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    files = TlsFiles(out / "ca.crt", out / "server.crt", out / "server.key")
    _write(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write(out / "ca.key", _pem_key(ca_key), private=True)
    _write(files.server_cert, server_cert.public_bytes(serialization.Encoding.PEM))
    _write(files.server_key, _pem_key(server_key), private=True)
    return files


def find_tls_files(tls_dir: str | Path) -> TlsFiles:
    """The certificate files in ``tls_dir`` (as written by :func:`make_certificates`)."""
    root = Path(tls_dir)
    files = TlsFiles(root / "ca.crt", root / "server.crt", root / "server.key")
    paths = (files.ca_cert, files.server_cert, files.server_key)
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise EngineError(
            f"{root} lacks {', '.join(missing)}: create them with `fedglobal certs {root}`"
        )
    return files


def make_auth_keys(out_dir: str | Path, names: Iterable[str]) -> list[AuthKey]:
    """Write one EC P-384 key pair per name: ``<name>`` (private) and ``<name>.pub``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keys = []
    for name in names:
        if not name or "/" in name or name.startswith("."):
            raise EngineError(f"invalid key name {name!r}: use a plain file name such as 'europe'")
        key = ec.generate_private_key(ec.SECP384R1())
        private = out / name
        public = out / f"{name}.pub"
        _write(
            private,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            ),
            private=True,
        )
        _write(
            public,
            key.public_key().public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
            )
            + f" fedglobal-{name}\n".encode(),
        )
        keys.append(AuthKey(name=name, private=private, public=public))
    return keys


def public_keys_in(keys_dir: str | Path) -> list[Path]:
    """The ``*.pub`` files of a keys folder (the SuperNodes to register)."""
    root = Path(keys_dir)
    found = sorted(root.glob("*.pub"))
    if not found:
        raise EngineError(
            f"no public keys (*.pub) in {root}: "
            f"create them with `fedglobal keys {root} --names ...`"
        )
    return found
