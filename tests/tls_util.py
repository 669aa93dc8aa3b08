"""Throw-away certificates for TLS tests, made with the `cryptography` package: a CA, a
server certificate for localhost / 127.0.0.1, a client certificate, and a second CA
that nobody trusts (for "wrong client certificate" tests)."""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import pathlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclasses.dataclass(frozen=True)
class Certs:
    ca: str  # PEM CA certificate that signed server and client
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    rogue_cert: str  # client certificate signed by another CA
    rogue_key: str


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(directory: pathlib.Path, stem: str, cert: x509.Certificate, key) -> tuple[str, str]:
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def _certificate(subject: str, key, issuer: x509.Name, issuer_key, *, ca: bool, usage=None,
                 san: list | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer_key.public_key()), critical=False)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_certs(directory: pathlib.Path) -> Certs:
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    for ca_name in ("ca", "rogue-ca"):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _certificate(f"moe-avatar test {ca_name}", ca_key, _name(f"moe-avatar test {ca_name}"), ca_key,
                               ca=True)
        files[f"{ca_name}_cert"], _ = _write(directory, ca_name, ca_cert, ca_key)
        if ca_name == "ca":
            server_key = ec.generate_private_key(ec.SECP256R1())
            server = _certificate("localhost", server_key, ca_cert.subject, ca_key, ca=False,
                                  usage=[ExtendedKeyUsageOID.SERVER_AUTH],
                                  san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
            files["server_cert"], files["server_key"] = _write(directory, "server", server, server_key)
            client_stem = "client"
        else:
            client_stem = "rogue"
        client_key = ec.generate_private_key(ec.SECP256R1())
        client = _certificate(f"{client_stem} player", client_key, ca_cert.subject, ca_key, ca=False,
                              usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
        files[f"{client_stem}_cert"], files[f"{client_stem}_key"] = _write(directory, client_stem, client, client_key)
    return Certs(ca=files["ca_cert"], server_cert=files["server_cert"], server_key=files["server_key"],
                 client_cert=files["client_cert"], client_key=files["client_key"], rogue_cert=files["rogue_cert"],
                 rogue_key=files["rogue_key"])
