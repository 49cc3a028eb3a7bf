"""TLS certificates and keys on disk: made once with `cryptography`, the key readable by root only."""

from __future__ import annotations

import datetime
import hashlib
import os
import socket
import ssl
from pathlib import Path

from pincus.errors import HostError

VALID_DAYS = 3650


def _generate(common_name: str) -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pincus"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        # A CA that is its own leaf: peers trust exactly this certificate (pinned, not a chain).
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(key, hashes.SHA384())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def write_pair(crt: Path, key: Path, cert_pem: bytes, key_pem: bytes) -> None:
    """Write a certificate (0644) and its key (0600, created so: never readable by others)."""
    try:
        for path, data, mode in ((key, key_pem, 0o600), (crt, cert_pem, 0o644)):
            tmp = path.with_name(f".{path.name}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, mode)
            os.replace(tmp, path)
    except OSError as e:
        raise HostError(f"write certificate {crt}: {e.strerror or e}") from e


def ensure_pair(crt: Path, key: Path, common_name: str) -> None:
    """CRT and KEY as they are, or a new self-signed pair when either is missing."""
    if crt.exists() and key.exists():
        return
    write_pair(crt, key, *_generate(common_name))


def read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise HostError(f"read certificate {path}: {e.strerror or e}") from e


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the certificate's DER form, in hex: what a join token pins."""
    try:
        der = ssl.PEM_cert_to_DER_cert(cert_pem.decode())
    except ValueError as e:
        raise HostError(f"Not a PEM certificate: {e}") from e
    return hashlib.sha256(der).hexdigest()


def server_context(crt: Path, key: Path, trusted: Path | None) -> ssl.SSLContext:
    """TLS server side: a peer may present a certificate, and is trusted only if it is TRUSTED's."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(crt), str(key))
        if trusted is not None:
            ctx.load_verify_locations(str(trusted))
            ctx.verify_mode = ssl.CERT_OPTIONAL
    except (OSError, ssl.SSLError) as e:
        raise HostError(f"Cannot load TLS certificate {crt}: {e}") from e
    return ctx


def connect(
    address: tuple[str, int], fingerprint_pin: str, client: tuple[Path, Path] | None, timeout: float
) -> ssl.SSLSocket:
    """A TLS connection to ADDRESS whose certificate must have FINGERPRINT_PIN (no CA, no names:
    members know each other by the pinned cluster certificate); CLIENT's pair is presented if given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if client is not None:
        ctx.load_cert_chain(str(client[0]), str(client[1]))
    try:
        raw = socket.create_connection(address, timeout=timeout)
    except OSError as e:
        raise HostError(f"Cannot reach {address[0]}:{address[1]}: {e.strerror or e}") from e
    try:
        tls = ctx.wrap_socket(raw)
        der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as e:
        raw.close()
        raise HostError(f"TLS with {address[0]}:{address[1]} failed: {e}") from e
    if der is None or hashlib.sha256(der).hexdigest() != fingerprint_pin:
        tls.close()
        raise HostError(
            f"{address[0]}:{address[1]} presented a certificate that is not the cluster's"
            " (fingerprint mismatch)"
        )
    return tls
