from __future__ import annotations

import datetime
import hashlib
import ssl
import typing
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from aioiothub._auth import credentials as auth
from aioiothub._auth.credentials import (
    Credential,
    SasTokenCredential,
    SasTokenGrant,
    SharedAccessKeyCredential,
    TokenCredential,
    X509Credential,
)
from aioiothub.exceptions import CredentialError
from aioiothub.protocol import connection_string, sas

KEY = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg="
URI = "myhub.azure-devices.net/devices/dev1"


def test_reexports() -> None:
    assert auth.ConnectionString is connection_string.ConnectionString
    assert auth.generate_sas_token is sas.generate_sas_token
    assert auth.parse_sas_token is sas.parse_sas_token
    assert auth.verify_sas_token is sas.verify_sas_token
    assert auth.derive_device_key is sas.derive_device_key
    assert auth.SasToken is sas.SasToken
    assert set(typing.get_args(Credential)) == {TokenCredential, X509Credential}
    # Both token credentials satisfy the protocol the session relies on (checked by mypy too).
    key_credential: TokenCredential = SharedAccessKeyCredential(KEY)
    token_credential: TokenCredential = SasTokenCredential(_token(2000))
    assert key_credential.renewable
    assert not token_credential.renewable


def test_grant_repr_redacts_token() -> None:
    grant = SasTokenGrant("SharedAccessSignature sr=a&sig=secret&se=5", 5)
    assert "secret" not in repr(grant)
    assert repr(grant) == "SasTokenGrant(token='<redacted>', expiry=5)"


# --- SharedAccessKeyCredential --------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["not base64!", "", "QUJ"])
def test_key_credential_rejects_invalid_key(key: str) -> None:
    with pytest.raises(CredentialError, match="shared access key"):
        SharedAccessKeyCredential(key)


@pytest.mark.parametrize("ttl", [0, -1, 1.5, True, "60", None])
def test_key_credential_rejects_invalid_ttl(ttl: object) -> None:
    with pytest.raises(ValueError, match="ttl"):
        SharedAccessKeyCredential(KEY, ttl=ttl)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_key_credential_token_is_valid_until_now_plus_ttl() -> None:
    credential = SharedAccessKeyCredential(KEY, ttl=600)
    grant = await credential.get_token(URI, now=1_700_000_000.9)
    assert grant.expiry == 1_700_000_600
    parsed = sas.verify_sas_token(grant.token, KEY, resource_uri=URI, now=1_700_000_599)
    assert parsed.expiry == grant.expiry
    assert parsed.policy_name is None
    with pytest.raises(CredentialError, match="expired"):
        sas.verify_sas_token(grant.token, KEY, resource_uri=URI, now=grant.expiry)
    assert credential.renewable is True
    assert credential.ttl == 600


@pytest.mark.anyio
async def test_key_credential_default_ttl_and_policy_name() -> None:
    credential = SharedAccessKeyCredential(KEY, policy_name="registration")
    grant = await credential.get_token("scope/registrations/r1", now=100)
    assert grant.expiry == 3700
    assert sas.parse_sas_token(grant.token).policy_name == "registration"
    assert credential.policy_name == "registration"


@pytest.mark.anyio
async def test_key_credential_signs_a_fresh_token_each_time() -> None:
    credential = SharedAccessKeyCredential(KEY, ttl=60)
    first = await credential.get_token(URI, now=1000)
    second = await credential.get_token(URI, now=2000)
    assert (first.expiry, second.expiry) == (1060, 2060)
    assert first.token != second.token


def test_key_credential_repr_redacts_key() -> None:
    text = repr(SharedAccessKeyCredential(KEY, ttl=60))
    assert KEY not in text
    assert text == "SharedAccessKeyCredential(key='<redacted>', ttl=60, policy_name=None)"


# --- SasTokenCredential ---------------------------------------------------------------------------------


def _token(expiry: int) -> str:
    return sas.generate_sas_token(URI, KEY, expiry)


def test_token_credential_rejects_malformed_token() -> None:
    with pytest.raises(CredentialError, match="malformed"):
        SasTokenCredential("SharedAccessSignature sr=x&se=1")


def test_token_credential_rejects_non_callable_renew() -> None:
    with pytest.raises(TypeError, match="renew"):
        SasTokenCredential(_token(100), renew="token")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_token_credential_returns_the_token_while_valid() -> None:
    calls: list[int] = []

    def renew() -> str:
        calls.append(1)
        return _token(10_000)

    token = _token(2000)
    credential = SasTokenCredential(token, renew=renew)
    grant = await credential.get_token(URI, now=1999.5)
    assert grant == SasTokenGrant(token, 2000)
    assert calls == []
    assert credential.expiry == 2000
    assert credential.renewable is True


@pytest.mark.anyio
async def test_token_credential_renews_ahead_of_expiry_when_asked_for_a_fresh_token() -> None:
    renewed = _token(9000)
    calls: list[int] = []

    def renew() -> str:
        calls.append(1)
        return renewed

    credential = SasTokenCredential(_token(2000), renew=renew)
    # Still valid for 100 s: a renewal reconnect asks for a fresh token and gets the new one.
    assert await credential.get_token(URI, now=1900, fresh=True) == SasTokenGrant(renewed, 9000)
    assert calls == [1]


@pytest.mark.anyio
async def test_token_credential_without_renew_returns_the_current_token_when_asked_for_a_fresh_one() -> None:
    token = _token(2000)
    credential = SasTokenCredential(token)
    assert await credential.get_token(URI, now=1900, fresh=True) == SasTokenGrant(token, 2000)


@pytest.mark.anyio
async def test_token_credential_expired_without_renew() -> None:
    token = _token(2000)
    credential = SasTokenCredential(token)
    assert credential.renewable is False
    with pytest.raises(CredentialError) as excinfo:
        await credential.get_token(URI, now=2000)
    message = str(excinfo.value)
    assert token not in message
    # ISO-8601 UTC, and the option the client takes (renew_sas_token=), not the credential's renew=.
    assert "expired at 1970-01-01T00:33:20Z (se=2000) and no renewal was given" in message
    assert "renew_sas_token=" in message


@pytest.mark.anyio
async def test_token_credential_calls_sync_renew_once_expired() -> None:
    renewed = _token(9000)
    calls: list[int] = []

    def renew() -> str:
        calls.append(1)
        return renewed

    credential = SasTokenCredential(_token(2000), renew=renew)
    assert await credential.get_token(URI, now=2500) == SasTokenGrant(renewed, 9000)
    # The renewed token is kept and used until it expires in turn.
    assert await credential.get_token(URI, now=8999) == SasTokenGrant(renewed, 9000)
    assert calls == [1]
    assert credential.expiry == 9000


@pytest.mark.anyio
async def test_token_credential_awaits_async_renew() -> None:
    renewed = _token(9000)

    async def renew() -> str:
        return renewed

    credential = SasTokenCredential(_token(2000), renew=renew)
    grant = await credential.get_token(URI, now=3000)
    assert grant == SasTokenGrant(renewed, 9000)
    sas.verify_sas_token(grant.token, KEY, resource_uri=URI, now=3000)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("result", "reason"),
    [
        ("garbage", "renew() returned an invalid token: malformed SAS token"),
        (None, "renew() returned NoneType"),
        (b"SharedAccessSignature", "renew() returned bytes"),
        ("EXPIRED", "renew() returned a token that expired at 1970-01-01T00:41:40Z (se=2500)"),
    ],
)
async def test_token_credential_rejects_bad_renewal(result: object, reason: str) -> None:
    value = _token(2500) if result == "EXPIRED" else result
    credential = SasTokenCredential(_token(2000), renew=lambda: value)  # type: ignore[arg-type,return-value]
    with pytest.raises(CredentialError) as excinfo:
        await credential.get_token(URI, now=3000)
    assert reason in str(excinfo.value)
    # The failed renewal does not replace the current token.
    assert credential.expiry == 2000


@pytest.mark.anyio
async def test_token_credential_renew_errors_propagate_unchanged() -> None:
    class Boom(Exception):
        pass

    def renew() -> str:
        raise Boom

    credential = SasTokenCredential(_token(2000), renew=renew)
    with pytest.raises(Boom):
        await credential.get_token(URI, now=3000)


def test_token_credential_repr_redacts_token() -> None:
    token = _token(2000)
    text = repr(SasTokenCredential(token))
    assert sas.parse_sas_token(token).signature not in text
    assert text == "SasTokenCredential(token='<redacted>', expiry=2000, renewable=False)"


# --- X509Credential -------------------------------------------------------------------------------------


_NOW = datetime.datetime.now(datetime.UTC)


def _certificate(key: CertificateIssuerPrivateKeyTypes, common_name: str | None = "dev1") -> x509.Certificate:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
    attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, "aioiothub tests"))
    name = x509.Name(attributes)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOW - datetime.timedelta(days=1))
        .not_valid_after(_NOW + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, passphrase: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


class Files(typing.NamedTuple):
    certificate: Path
    key: Path
    encrypted_key: Path
    other_key: Path
    der: bytes


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    directory = tmp_path_factory.mktemp("x509")
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _certificate(key)
    paths = Files(
        certificate=directory / "dev1.pem",
        key=directory / "dev1.key",
        encrypted_key=directory / "dev1-encrypted.key",
        other_key=directory / "other.key",
        der=certificate.public_bytes(serialization.Encoding.DER),
    )
    paths.certificate.write_bytes(_pem(certificate))
    paths.key.write_bytes(_key_pem(key))
    paths.encrypted_key.write_bytes(_key_pem(key, b"s3cret"))
    paths.other_key.write_bytes(_key_pem(ec.generate_private_key(ec.SECP256R1())))
    return paths


def test_x509_loads_certificate_and_key(files: Files) -> None:
    credential = X509Credential(files.certificate, files.key)
    assert credential.thumbprint_sha1 == hashlib.sha1(files.der).hexdigest().upper()
    assert credential.thumbprint_sha256 == hashlib.sha256(files.der).hexdigest().upper()
    assert len(credential.thumbprint_sha256) == 64
    assert credential.common_name == "dev1"
    assert credential.certificate.public_bytes(serialization.Encoding.DER) == files.der
    assert credential.certificate_file == str(files.certificate)
    assert credential.key_file == str(files.key)


def test_x509_accepts_str_paths(files: Files) -> None:
    credential = X509Credential(str(files.certificate), str(files.key))
    assert credential.common_name == "dev1"


@pytest.mark.parametrize("passphrase", ["s3cret", b"s3cret"])
def test_x509_encrypted_key(files: Files, passphrase: str | bytes) -> None:
    credential = X509Credential(files.certificate, files.encrypted_key, passphrase)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    credential.load_into(context)


def test_x509_wrong_passphrase(files: Files) -> None:
    with pytest.raises(CredentialError, match="wrong passphrase") as excinfo:
        X509Credential(files.certificate, files.encrypted_key, "nope")
    assert str(files.encrypted_key) in str(excinfo.value)
    assert "nope" not in str(excinfo.value)


def test_x509_missing_passphrase(files: Files) -> None:
    with pytest.raises(CredentialError, match="encrypted and no passphrase") as excinfo:
        X509Credential(files.certificate, files.encrypted_key)
    assert str(files.encrypted_key) in str(excinfo.value)


def test_x509_passphrase_for_plain_key_is_ignored(files: Files) -> None:
    assert X509Credential(files.certificate, files.key, "unused").common_name == "dev1"


def test_x509_missing_certificate_file(files: Files, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(CredentialError, match="cannot read certificate file") as excinfo:
        X509Credential(missing, files.key)
    assert str(missing) in str(excinfo.value)


def test_x509_missing_key_file(files: Files, tmp_path: Path) -> None:
    missing = tmp_path / "missing.key"
    with pytest.raises(CredentialError, match="cannot read key file") as excinfo:
        X509Credential(files.certificate, missing)
    assert str(missing) in str(excinfo.value)


def test_x509_garbage_certificate(files: Files, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"this is not a certificate\n")
    with pytest.raises(CredentialError, match="does not contain a PEM certificate") as excinfo:
        X509Credential(garbage, files.key)
    assert str(garbage) in str(excinfo.value)


def test_x509_key_given_as_certificate(files: Files) -> None:
    with pytest.raises(CredentialError, match="certificate file"):
        X509Credential(files.key, files.key)


@pytest.mark.parametrize(
    "content", [b"garbage\n", b"", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"]
)
def test_x509_garbage_key(files: Files, tmp_path: Path, content: bytes) -> None:
    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(content)
    with pytest.raises(CredentialError, match="key file") as excinfo:
        X509Credential(files.certificate, garbage)
    assert str(garbage) in str(excinfo.value)


def test_x509_certificate_given_as_key(files: Files) -> None:
    with pytest.raises(CredentialError, match="does not contain a PEM private key"):
        X509Credential(files.certificate, files.certificate)


def test_x509_mismatched_key(files: Files) -> None:
    with pytest.raises(CredentialError, match="does not match") as excinfo:
        X509Credential(files.certificate, files.other_key)
    assert str(files.other_key) in str(excinfo.value)
    assert str(files.certificate) in str(excinfo.value)


def test_x509_rsa_and_chain_file(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = _certificate(key, "rsa-device")
    issuer = _certificate(ec.generate_private_key(ec.SECP256R1()), "intermediate")
    chain = tmp_path / "chain.pem"
    chain.write_bytes(_pem(leaf) + _pem(issuer))
    key_file = tmp_path / "rsa.key"
    key_file.write_bytes(_key_pem(key))
    credential = X509Credential(chain, key_file)
    assert credential.common_name == "rsa-device"
    assert credential.thumbprint_sha1 == leaf.fingerprint(hashes.SHA1()).hex().upper()
    credential.load_into(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))


def test_x509_without_common_name(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "c.pem").write_bytes(_pem(_certificate(key, None)))
    (tmp_path / "c.key").write_bytes(_key_pem(key))
    assert X509Credential(tmp_path / "c.pem", tmp_path / "c.key").common_name is None


def test_x509_load_into_passes_files_and_passphrase(files: Files) -> None:
    calls: list[tuple[object, ...]] = []

    class RecordingContext:
        def load_cert_chain(self, certfile: object, keyfile: object = None, password: object = None) -> None:
            calls.append((certfile, keyfile, password))

    credential = X509Credential(files.certificate, files.encrypted_key, "s3cret")
    credential.load_into(RecordingContext())  # type: ignore[arg-type]
    assert calls == [(str(files.certificate), str(files.encrypted_key), "s3cret")]


def test_x509_load_into_real_context(files: Files) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    X509Credential(files.certificate, files.key).load_into(context)


def test_x509_repr_hides_passphrase(files: Files) -> None:
    text = repr(X509Credential(files.certificate, files.encrypted_key, "s3cret"))
    assert "s3cret" not in text
    assert "dev1" in text
    assert str(files.certificate) in text
