"""TLS and mutual TLS from PEM files, for the gRPC port and the HTTP bridge.

    --tls-cert server.pem --tls-key server.key                  # TLS
    --tls-cert server.pem --tls-key server.key --tls-client-ca ca.pem   # + client certificates

With `--tls-client-ca`, a client must present a certificate signed by that CA or the
handshake fails (the call never reaches the service). The files are checked once at
start with Python's `ssl` module (cert and key must match), so a wrong file fails with
a message naming the flag instead of an opaque handshake error later.
"""

from __future__ import annotations

import pathlib
import ssl

import grpc


class TLSConfigError(ValueError):
    """A certificate or key file is unusable; the message names the flag."""


def enabled(config) -> bool:
    return bool(getattr(config, "tls_cert", "") and getattr(config, "tls_key", ""))


def _read(flag: str, path: str) -> bytes:
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as e:
        raise TLSConfigError(f"{flag} {path}: cannot read: {e.strerror or e}") from e


def ssl_context(config) -> ssl.SSLContext | None:
    """A server-side SSLContext (TLS 1.2+) for the HTTP bridge; None when TLS is off.
    With --tls-client-ca the context requires and verifies client certificates."""
    if not enabled(config):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (ssl.SSLError, OSError) as e:
        raise TLSConfigError(f"--tls-cert {config.tls_cert} / --tls-key {config.tls_key}: not a matching PEM "
                             f"certificate and private key ({e})") from e
    if config.tls_client_ca:
        try:
            context.load_verify_locations(cafile=config.tls_client_ca)
        except (ssl.SSLError, OSError) as e:
            raise TLSConfigError(f"--tls-client-ca {config.tls_client_ca}: not a PEM CA certificate ({e})") from e
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def server_credentials(config) -> grpc.ServerCredentials | None:
    """gRPC server credentials (mTLS when --tls-client-ca is set); None when TLS is off."""
    if ssl_context(config) is None:  # validates the files, naming the flag on failure
        return None
    key, cert = _read("--tls-key", config.tls_key), _read("--tls-cert", config.tls_cert)
    client_ca = _read("--tls-client-ca", config.tls_client_ca) if config.tls_client_ca else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)
