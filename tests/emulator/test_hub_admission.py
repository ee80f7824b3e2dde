"""How the hub decides on a CONNECT: usernames, client ids, SAS tokens and certificates."""

from __future__ import annotations

import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from aioiothub.emulator import Hub, Identity
from aioiothub.emulator.certs import CertificateAuthority, generate_self_signed_certificate
from aioiothub.protocol.connect import client_id, username
from aioiothub.protocol.mqtt import Connect
from aioiothub.protocol.sas import device_resource_uri, generate_sas_token

NOW = 1_800_000_000.0
HOST = "myhub.example"


def _connect(
    identity: Identity,
    password: str | bytes | None,
    *,
    client: str | None = None,
    user: str | None = None,
) -> Connect:
    return Connect(
        client_id=client if client is not None else client_id(identity.device_id, identity.module_id),
        username=user if user is not None else username(HOST, identity.device_id, identity.module_id),
        password=password.encode() if isinstance(password, str) else password,
        keepalive=60,
        clean_session=False,
        will=None,
        protocol_level=4,
    )


def _token(
    identity: Identity, *, key: str | None = None, expiry: float = NOW + 3600, resource: str | None = None
) -> str:
    signing_key = key if key is not None else identity.primary_key
    assert signing_key is not None
    uri = resource if resource is not None else device_resource_uri(HOST, identity.device_id, identity.module_id)
    return generate_sas_token(uri, signing_key, int(expiry))


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


@pytest.fixture
def hub() -> Hub:
    hub = Hub(hostname=HOST)
    hub.add_device("dev1")
    hub.add_device("dev2")
    hub.add_module("dev1", "mod1")
    return hub


def test_primary_and_secondary_keys_are_accepted(hub: Hub) -> None:
    device = hub.identity("dev1")
    for key in (device.primary_key, device.secondary_key):
        admission = hub.core.admit(_connect(device, _token(device, key=key)), None, now=NOW)
        assert admission.return_code == 0, admission.reason
        assert admission.identity is device
        assert admission.token_expiry == int(NOW + 3600)


def test_module_token_is_accepted(hub: Hub) -> None:
    module = hub.identity("dev1", "mod1")
    admission = hub.core.admit(_connect(module, _token(module)), None, now=NOW)
    assert admission.return_code == 0, admission.reason
    assert admission.identity is module


@pytest.mark.parametrize(
    ("case", "expected_code", "reason"),
    [
        ("forged signature", 5, "signature"),
        ("expired", 5, "expired"),
        ("another device's scope", 5, "scope"),
        ("another device's key", 5, "signature"),
        ("no password", 5, "no SAS token"),
        ("garbage password", 5, "SAS token refused"),
        ("not utf-8", 5, "UTF-8"),
        ("wrong host name", 5, "host name"),
        ("malformed username", 5, "username"),
        ("no username", 5, "no username"),
        ("client id mismatch", 2, "client id"),
        ("unknown device", 5, "not registered"),
    ],
)
def test_refusals(hub: Hub, case: str, expected_code: int, reason: str) -> None:
    device = hub.identity("dev1")
    other = hub.identity("dev2")
    connect = _connect(device, _token(device))
    if case == "forged signature":
        good = _token(device)
        connect = _connect(device, good.replace("sig=", "sig=AAAA", 1))
    elif case == "expired":
        connect = _connect(device, _token(device, expiry=NOW - 1))
    elif case == "another device's scope":
        connect = _connect(device, _token(device, resource=device_resource_uri(HOST, "dev2")))
    elif case == "another device's key":
        connect = _connect(device, _token(device, key=other.primary_key))
    elif case == "no password":
        connect = _connect(device, None)
    elif case == "garbage password":
        connect = _connect(device, "hello")
    elif case == "not utf-8":
        connect = _connect(device, b"\xff\xfe")
    elif case == "wrong host name":
        connect = _connect(device, _token(device), user=username("other.example", "dev1"))
    elif case == "malformed username":
        connect = _connect(device, _token(device), user="dev1")
    elif case == "no username":
        connect = Connect("dev1", None, None, 60, True, None, 4)
    elif case == "client id mismatch":
        connect = _connect(device, _token(device), client="dev2")
    elif case == "unknown device":
        ghost = Hub(hostname=HOST).add_device("ghost")
        connect = _connect(ghost, _token(ghost))
    admission = hub.core.admit(connect, None, now=NOW)
    assert admission.return_code == expected_code
    assert admission.identity is None
    assert reason in admission.reason


def test_reasons_never_contain_the_signature(hub: Hub) -> None:
    device = hub.identity("dev1")
    token = _token(device, expiry=NOW - 10)
    admission = hub.core.admit(_connect(device, token), None, now=NOW)
    signature = token.split("sig=")[1].split("&")[0]
    assert signature not in admission.reason


def test_module_client_id_must_match_the_module_username(hub: Hub) -> None:
    module = hub.identity("dev1", "mod1")
    admission = hub.core.admit(_connect(module, _token(module), client="dev1"), None, now=NOW)
    assert admission.return_code == 2


def test_disabled_device_and_its_modules_get_code_3(hub: Hub) -> None:
    hub.set_device_status("dev1", enabled=False)
    device = hub.identity("dev1")
    module = hub.identity("dev1", "mod1")
    assert hub.core.admit(_connect(device, _token(device)), None, now=NOW).return_code == 3
    assert hub.core.admit(_connect(module, _token(module)), None, now=NOW).return_code == 3


def test_model_id_and_product_info_are_recorded_on_the_identity(hub: Hub) -> None:
    device = hub.identity("dev1")
    user = username(HOST, "dev1", product_info="azsdk-c/1.6.0", model_id="dtmi:com:example:Thermostat;1")
    admission = hub.core.admit(_connect(device, _token(device), user=user), None, now=NOW)
    assert admission.return_code == 0, admission.reason
    assert device.model_id == "dtmi:com:example:Thermostat;1"
    assert device.product_info == "azsdk-c/1.6.0"


def test_refuse_connects_answers_the_next_n_connects_with_the_given_code(hub: Hub) -> None:
    device = hub.identity("dev1")
    hub.refuse_connects(2, return_code=3)
    codes = [hub.core.admit(_connect(device, _token(device)), None, now=NOW).return_code for _ in range(3)]
    assert codes == [3, 3, 0]


def test_faults_are_grouped_under_hub_faults_and_the_hub_calls_forward_there(hub: Hub) -> None:
    device = hub.identity("dev1")
    hub.faults.refuse_connects(1)
    assert hub.core.admit(_connect(device, _token(device)), None, now=NOW).return_code == 3
    hub.delay_pubacks(0.5)
    assert hub.faults.puback_delay == hub.core.puback_delay == 0.5
    hub.faults.delay_pubacks(0)
    assert hub.core.puback_delay == 0.0


def test_x509_thumbprint_device(hub: Hub) -> None:
    device = hub.add_device("cert1", authentication="x509")
    assert device.certificate_pem is not None
    accepted = hub.core.admit(_connect(device, None), _der(device.certificate_pem), now=NOW)
    assert accepted.return_code == 0, accepted.reason
    assert accepted.token_expiry is None
    other_pem, _ = generate_self_signed_certificate("cert1")
    refused = hub.core.admit(_connect(device, None), _der(other_pem), now=NOW)
    assert (refused.return_code, "thumbprint" in refused.reason) == (5, True)
    no_certificate = hub.core.admit(_connect(device, None), None, now=NOW)
    assert no_certificate.return_code == 5
    with_password = hub.core.admit(
        _connect(device, "SharedAccessSignature sr=x"), _der(device.certificate_pem), now=NOW
    )
    assert with_password.return_code == 5


def test_x509_ca_device_needs_the_hub_ca_and_its_own_common_name(hub: Hub) -> None:
    device = hub.add_device("cert2", authentication="x509_ca")
    assert device.certificate_pem is not None
    assert hub.core.admit(_connect(device, None), _der(device.certificate_pem), now=NOW).return_code == 0
    wrong_name, _ = hub.certificate_authority.issue_client_certificate("someone-else")
    refused = hub.core.admit(_connect(device, None), _der(wrong_name), now=NOW)
    assert (refused.return_code, "common name" in refused.reason) == (5, True)
    foreign, _ = CertificateAuthority.generate().issue_client_certificate("cert2")
    refused = hub.core.admit(_connect(device, None), _der(foreign), now=NOW)
    assert (refused.return_code, "not issued by the hub CA" in refused.reason) == (5, True)


def test_x509_ca_module_certificate_names_device_and_module(hub: Hub) -> None:
    module = hub.add_module("dev1", "cam", authentication="x509_ca")
    assert module.certificate_pem is not None
    assert hub.core.admit(_connect(module, None), _der(module.certificate_pem), now=NOW).return_code == 0


def test_sas_device_presenting_a_certificate_still_needs_its_token(hub: Hub) -> None:
    device = hub.identity("dev1")
    pem, _ = generate_self_signed_certificate("dev1")
    assert hub.core.admit(_connect(device, None), _der(pem), now=NOW).return_code == 5
    assert hub.core.admit(_connect(device, _token(device)), _der(pem), now=NOW).return_code == 0


def test_real_clock_tokens_work() -> None:
    hub = Hub(hostname=HOST)
    device = hub.add_device("dev1")
    admission = hub.core.admit(_connect(device, _token(device, expiry=time.time() + 60)), None, now=time.time())
    assert admission.return_code == 0
