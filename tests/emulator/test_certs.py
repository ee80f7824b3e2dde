from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import ssl
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aioiothub.emulator.certs import (
    CertificateAuthority,
    certificate_common_name,
    certificate_thumbprints,
    client_ssl_context,
    generate_self_signed_certificate,
    server_ssl_context,
    trust_client_certificate,
)


@pytest.fixture(scope="module")
def authority() -> CertificateAuthority:
    return CertificateAuthority.generate()


def load(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def test_authority_is_a_p256_ca(authority: CertificateAuthority) -> None:
    certificate = load(authority.certificate_pem)
    assert certificate.subject == certificate.issuer
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "aioiothub emulator CA"
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert certificate.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    public_key = certificate.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert public_key.curve.name == "secp256r1"
    certificate.verify_directly_issued_by(certificate)


def test_authority_common_name_is_checked() -> None:
    assert certificate_common_name(CertificateAuthority.generate("Test CA").certificate_pem) == "Test CA"
    with pytest.raises(ValueError, match="common_name"):
        CertificateAuthority.generate("")
    with pytest.raises(ValueError, match="common_name"):
        CertificateAuthority.generate("x" * 65)


def test_authority_round_trips_through_pem(authority: CertificateAuthority) -> None:
    loaded = CertificateAuthority.load(authority.certificate_pem, authority.key_pem)
    assert loaded.certificate_pem == authority.certificate_pem
    cert_pem, _ = loaded.issue_client_certificate("device")
    load(cert_pem).verify_directly_issued_by(load(authority.certificate_pem))
    other = CertificateAuthority.generate()
    with pytest.raises(ValueError, match="key does not match"):
        CertificateAuthority.load(authority.certificate_pem, other.key_pem)
    with pytest.raises(ValueError, match="key_pem"):
        CertificateAuthority.load(authority.certificate_pem, b"not a key")


def test_server_certificate(authority: CertificateAuthority) -> None:
    cert_pem, key_pem = authority.issue_server_certificate(["localhost", "127.0.0.1", "::1", "hub.example"])
    certificate = load(cert_pem)
    certificate.verify_directly_issued_by(load(authority.certificate_pem))
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "hub.example"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert certificate_common_name(cert_pem) == "localhost"
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key() == certificate.public_key()


def test_server_certificate_arguments(authority: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="hostnames"):
        authority.issue_server_certificate([])
    with pytest.raises(ValueError, match=r"hostnames\[1\]"):
        authority.issue_server_certificate(["localhost", ""])
    with pytest.raises(TypeError, match="hostnames"):
        authority.issue_server_certificate("localhost")


def test_client_certificate(authority: CertificateAuthority) -> None:
    cert_pem, _ = authority.issue_client_certificate("my-device")
    certificate = load(cert_pem)
    certificate.verify_directly_issued_by(load(authority.certificate_pem))
    usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert certificate_common_name(cert_pem) == "my-device"


def test_self_signed_certificate() -> None:
    cert_pem, key_pem = generate_self_signed_certificate("x509-device")
    certificate = load(cert_pem)
    assert certificate.subject == certificate.issuer
    certificate.verify_directly_issued_by(certificate)
    assert certificate_common_name(cert_pem) == "x509-device"
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key() == certificate.public_key()
    # Two devices never share a certificate.
    assert generate_self_signed_certificate("x509-device")[0] != cert_pem


def test_thumbprints_from_pem_and_der() -> None:
    cert_pem, _ = generate_self_signed_certificate("device")
    der = load(cert_pem).public_bytes(serialization.Encoding.DER)
    sha1, sha256 = certificate_thumbprints(cert_pem)
    assert sha1 == hashlib.sha1(der).hexdigest().upper()
    assert sha256 == hashlib.sha256(der).hexdigest().upper()
    assert len(sha1) == 40
    assert len(sha256) == 64
    assert certificate_thumbprints(der) == (sha1, sha256)
    assert certificate_common_name(der) == "device"


def test_bad_certificates_are_value_errors() -> None:
    with pytest.raises(ValueError, match="cert"):
        certificate_thumbprints(b"garbage")
    with pytest.raises(ValueError, match="cert"):
        certificate_common_name(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(TypeError, match="cert"):
        certificate_thumbprints("text")  # type: ignore[arg-type]


def test_common_name_missing() -> None:
    _, key_pem = generate_self_signed_certificate("x")
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "no cn")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(ValueError, match="no subject common name"):
        certificate_common_name(certificate.public_bytes(serialization.Encoding.PEM))


def test_server_context(authority: CertificateAuthority) -> None:
    context = server_ssl_context(*authority.issue_server_certificate(["localhost"]))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_OPTIONAL
    assert not context.check_hostname


def test_server_context_leaves_no_key_on_disk(
    authority: CertificateAuthority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    server_ssl_context(*authority.issue_server_certificate(["localhost"]))
    assert os.listdir(tmp_path) == []


def test_server_context_rejects_mismatched_pair(authority: CertificateAuthority) -> None:
    cert_pem, _ = authority.issue_server_certificate(["localhost"])
    _, other_key = authority.issue_server_certificate(["localhost"])
    with pytest.raises(ValueError, match="cert_pem and key_pem"):
        server_ssl_context(cert_pem, other_key)


def test_trust_client_certificate_counts_authorities(authority: CertificateAuthority) -> None:
    context = server_ssl_context(*authority.issue_server_certificate(["localhost"]))
    assert context.cert_store_stats()["x509"] == 0
    trust_client_certificate(context, generate_self_signed_certificate("device")[0])
    trust_client_certificate(context, authority.certificate_pem)
    assert context.cert_store_stats()["x509"] == 2
    with pytest.raises(ValueError, match="cert_pem"):
        trust_client_certificate(context, b"nope")


def test_client_context(authority: CertificateAuthority) -> None:
    context = client_ssl_context(authority.certificate_pem)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    # Only the given CA: no system roots.
    assert context.cert_store_stats()["x509_ca"] == 1
    with pytest.raises(ValueError, match="ca_pem"):
        client_ssl_context(b"nope")
