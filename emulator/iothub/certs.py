"""The emulator's own certificate authority and TLS server certificate.

On first start :func:`ensure_certificates` makes a CA (basicConstraints CA:TRUE, keyUsage
keyCertSign/cRLSign) and a server certificate signed by it, with subjectAltNames for the host
served, ``localhost``, ``127.0.0.1`` and the loopback address served; both are written to the data
directory (``ca.pem``, ``ca.key``, ``server.pem``, ``server.key``) and reused afterwards. The
server certificate is made again (by the same CA) when its SANs do not cover the host or it is
about to expire, so clients that trust ``ca.pem`` keep working.

Keys are ECDSA P-256: fast to make and accepted by OpenSSL's default security level.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertificatePaths", "ensure_certificates", "server_ssl_context"]

_VALIDITY = timedelta(days=3650)
_RENEW_BEFORE = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class CertificatePaths:
    """Where the CA and the server certificate live."""

    ca_pem: Path
    ca_key: Path
    server_pem: Path
    server_key: Path


def ensure_certificates(data_dir: Path, host: str) -> CertificatePaths:
    """Make (or reuse) the CA and a server certificate covering ``host``.

    Args:
        data_dir: the emulator's data directory (created if missing).
        host: the host name or IP address the emulator serves.

    Returns:
        The paths of the four PEM files.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = CertificatePaths(
        ca_pem=data_dir / "ca.pem",
        ca_key=data_dir / "ca.key",
        server_pem=data_dir / "server.pem",
        server_key=data_dir / "server.key",
    )
    now = datetime.now(UTC)
    if paths.ca_pem.exists() and paths.ca_key.exists():
        ca_cert = x509.load_pem_x509_certificate(paths.ca_pem.read_bytes())
        ca_key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{paths.ca_key} is not an EC private key")
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _make_ca(ca_key, now)
        _write_private(paths.ca_key, ca_key)
        paths.ca_pem.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        paths.server_pem.unlink(missing_ok=True)
    if not _server_cert_ok(paths, ca_cert, host, now):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _make_server(key, ca_key, ca_cert, _sans(host), now)
        _write_private(paths.server_key, key)
        paths.server_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return paths


def server_ssl_context(paths: CertificatePaths) -> ssl.SSLContext:
    """A TLS server context presenting the server certificate (TLS 1.2 or later)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(paths.server_pem), str(paths.server_key))
    return context


def _make_ca(key: ec.EllipticCurvePrivateKey, now: datetime) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "IoT Hub emulator local CA")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + _VALIDITY)
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
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )


def _make_server(
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    sans: list[x509.GeneralName],
    now: datetime,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "IoT Hub emulator")])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def _sans(host: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    ips = {ipaddress.ip_address("127.0.0.1")}
    try:
        ips.add(ipaddress.ip_address(host))
    except ValueError:
        if host.lower() != "localhost":
            names.append(x509.DNSName(host))
    names.extend(x509.IPAddress(ip) for ip in sorted(ips, key=str))
    return names


def _server_cert_ok(
    paths: CertificatePaths, ca_cert: x509.Certificate, host: str, now: datetime
) -> bool:
    if not (paths.server_pem.exists() and paths.server_key.exists()):
        return False
    cert = x509.load_pem_x509_certificate(paths.server_pem.read_bytes())
    if cert.issuer != ca_cert.subject or cert.not_valid_after_utc - _RENEW_BEFORE < now:
        return False
    try:
        cert.verify_directly_issued_by(ca_cert)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except Exception:  # a bad signature, a missing extension: make a new one
        return False
    have = set(sans)
    return all(name in have for name in _sans(host))


def _write_private(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.touch(mode=0o600, exist_ok=True)
    path.write_bytes(data)
