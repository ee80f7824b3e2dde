from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aioiothub.exceptions import CredentialError, IoTHubError
from aioiothub.protocol.sas import (
    SasToken,
    decode_key,
    derive_device_key,
    device_resource_uri,
    dps_resource_uri,
    generate_sas_token,
    parse_sas_token,
    sign,
    string_to_sign,
    verify_sas_token,
)

KEY = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg="
OTHER_KEY = base64.b64encode(b"another key of thirty-two bytes!").decode()
HOST = "myiothub.azure-devices.net"
DEVICE_URI = f"{HOST}/devices/my_device"
ENCODED_DEVICE_URI = "myiothub.azure-devices.net%2Fdevices%2Fmy_device"
EXPIRY = 1578941692
VECTOR_SIG = "dIMMdDDBGFR8eqAfYkiMxoOphaFMPtMgj7Wg/YB1AvU="


def _token(**fields: str) -> str:
    return "SharedAccessSignature " + "&".join(f"{name}={value}" for name, value in fields.items())


# --- vectors from protocol.md section 1 -------------------------------------------------------------


def test_sign_vector() -> None:
    assert sign(KEY, "sign this message") == "8NJRMT83CcplGrAGaUVIUM/md5914KpWVNngSVoF9/M="


def test_string_to_sign_vector() -> None:
    assert string_to_sign(ENCODED_DEVICE_URI, EXPIRY) == (
        "myiothub.azure-devices.net%2Fdevices%2Fmy_device\n1578941692"
    )


def test_signature_vector_for_sr_and_se() -> None:
    assert sign(KEY, string_to_sign(ENCODED_DEVICE_URI, EXPIRY)) == VECTOR_SIG


def test_generate_sas_token_vector() -> None:
    token = generate_sas_token(DEVICE_URI, KEY, EXPIRY)
    assert token == (
        "SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device"
        "&sig=dIMMdDDBGFR8eqAfYkiMxoOphaFMPtMgj7Wg%2FYB1AvU%3D&se=1578941692"
    )


def test_generate_sas_token_with_policy_name() -> None:
    token = generate_sas_token("0neFEEDC0DE/registrations/reg1", KEY, 100, policy_name="registration")
    assert token.endswith("&se=100&skn=registration")
    assert parse_sas_token(token).policy_name == "registration"


def test_resource_uris() -> None:
    assert device_resource_uri(HOST, "my_device") == DEVICE_URI
    assert device_resource_uri(HOST, "d", "m") == f"{HOST}/devices/d/modules/m"
    assert dps_resource_uri("0neFEEDC0DE", "myRegistrationId") == "0neFEEDC0DE/registrations/myRegistrationId"


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: device_resource_uri("", "d"), "hostname"),
        (lambda: device_resource_uri(HOST, ""), "device_id"),
        (lambda: device_resource_uri(HOST, "d", ""), "module_id"),
        (lambda: dps_resource_uri("", "r"), "id_scope"),
        (lambda: generate_sas_token("", KEY, 1), "resource_uri"),
        (lambda: generate_sas_token(DEVICE_URI, KEY, -1), "expiry"),
    ],
)
def test_invalid_arguments_name_the_argument(call: object, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        call()  # type: ignore[operator]


@pytest.mark.parametrize("expiry", [1.5, True, "100"])
def test_generate_sas_token_rejects_non_int_expiry(expiry: object) -> None:
    with pytest.raises(TypeError, match="expiry"):
        generate_sas_token(DEVICE_URI, KEY, expiry)  # type: ignore[arg-type]


# --- keys ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_key", ["not base64!", "abc", "", "é===", "QUJD\n"])
def test_bad_key_is_credential_error_without_the_key(bad_key: str) -> None:
    with pytest.raises(CredentialError) as excinfo:
        sign(bad_key, "x")
    assert isinstance(excinfo.value, ValueError)
    assert isinstance(excinfo.value, IoTHubError)
    if bad_key:
        assert bad_key not in str(excinfo.value)


def test_decode_key_returns_raw_bytes() -> None:
    assert decode_key(base64.b64encode(b"\x00\x01key").decode()) == b"\x00\x01key"


def test_decode_key_rejects_non_str() -> None:
    with pytest.raises(TypeError, match="key"):
        decode_key(b"QUJD")  # type: ignore[arg-type]


# --- DPS group key derivation ---------------------------------------------------------------------------


def test_derive_device_key_matches_independent_hmac() -> None:
    group_key = base64.b64encode(bytes(range(64))).decode()
    expected = base64.b64encode(
        hmac.new(bytes(range(64)), b"myRegistrationId", hashlib.sha256).digest()
    ).decode()
    assert derive_device_key(group_key, "myRegistrationId") == expected
    # Fixed vector with the protocol.md key, so that a change to the derivation cannot go unnoticed.
    assert derive_device_key(KEY, "sign this message") == "8NJRMT83CcplGrAGaUVIUM/md5914KpWVNngSVoF9/M="


def test_derived_key_signs_verifiable_dps_tokens() -> None:
    device_key = derive_device_key(KEY, "reg-ü1")
    uri = dps_resource_uri("0neFEEDC0DE", "reg-ü1")
    token = generate_sas_token(uri, device_key, 2000, policy_name="registration")
    parsed = verify_sas_token(token, device_key, resource_uri=uri, now=1000)
    assert parsed.resource_uri == uri
    assert parsed.policy_name == "registration"
    with pytest.raises(CredentialError, match="signature does not match"):
        verify_sas_token(token, KEY, resource_uri=uri, now=1000)


def test_derive_device_key_rejects_bad_group_key() -> None:
    with pytest.raises(CredentialError):
        derive_device_key("%%%", "reg")


# --- parsing ---------------------------------------------------------------------------------------------


def test_parse_fields_in_any_order() -> None:
    sig = quote(VECTOR_SIG, safe="")
    orders = [
        _token(sr=ENCODED_DEVICE_URI, sig=sig, se=str(EXPIRY)),
        _token(sig=sig, se=str(EXPIRY), sr=ENCODED_DEVICE_URI),
        _token(se=str(EXPIRY), sr=ENCODED_DEVICE_URI, sig=sig),
    ]
    parsed = {parse_sas_token(text) for text in orders}
    assert parsed == {SasToken(DEVICE_URI, ENCODED_DEVICE_URI, VECTOR_SIG, EXPIRY, None)}


def test_parse_accepts_unencoded_signature() -> None:
    token = _token(sr=ENCODED_DEVICE_URI, sig=VECTOR_SIG, se=str(EXPIRY))
    assert parse_sas_token(token).signature == VECTOR_SIG
    assert verify_sas_token(token, KEY, resource_uri=DEVICE_URI, now=0).expiry == EXPIRY


def test_parse_ignores_unknown_fields() -> None:
    token = _token(sr=ENCODED_DEVICE_URI, sig=quote(VECTOR_SIG, safe=""), se=str(EXPIRY), extra="1")
    assert parse_sas_token(token).expiry == EXPIRY


_SIG = quote(VECTOR_SIG, safe="")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "does not start with"),
        (f"sr={ENCODED_DEVICE_URI}&sig={_SIG}&se=1", "does not start with"),
        (f"sharedaccesssignature sr={ENCODED_DEVICE_URI}&sig={_SIG}&se=1", "does not start with"),
        (f"SharedAccessSignature  sr={ENCODED_DEVICE_URI}&sig={_SIG}&se=1", "sr is missing"),
        (_token(sig=_SIG, se="1"), "sr is missing"),
        (_token(sr=ENCODED_DEVICE_URI, se="1"), "sig is missing"),
        (_token(sr=ENCODED_DEVICE_URI, sig=_SIG), "se is missing"),
        (_token(sr=ENCODED_DEVICE_URI, sig=_SIG, se="soon"), "not an integer"),
        (_token(sr=ENCODED_DEVICE_URI, sig=_SIG, se="-5"), "not an integer"),
        (_token(sr=ENCODED_DEVICE_URI, sig=_SIG, se="1.5"), "not an integer"),
        (_token(sr=ENCODED_DEVICE_URI, sig=_SIG, se=" 5"), "not an integer"),
        (_token(sr=ENCODED_DEVICE_URI, sig=_SIG, se="1_000"), "not an integer"),
        (_token(sr=ENCODED_DEVICE_URI, sig=_SIG, se=""), "se is empty"),
        (_token(sr="", sig=_SIG, se="1"), "sr is empty"),
        (_token(sr=ENCODED_DEVICE_URI, sig="%%%", se="1"), "sig is not valid base64"),
        (_token(sr="%FF", sig=_SIG, se="1"), "sr is not valid percent-encoded UTF-8"),
        (f"{_token(sr=ENCODED_DEVICE_URI, sig=_SIG, se='1')}&se=2", "se appears more than once"),
        (f"{_token(sr=ENCODED_DEVICE_URI, sig=_SIG, se='1')}&sig={_SIG}", "sig appears more than once"),
        (f"{_token(sr=ENCODED_DEVICE_URI, sig=_SIG, se='1')}&", "has no '='"),
    ],
)
def test_parse_malformed(text: str, reason: str) -> None:
    with pytest.raises(CredentialError, match="malformed SAS token") as excinfo:
        parse_sas_token(text)
    message = str(excinfo.value)
    assert reason in message
    assert _SIG not in message
    assert VECTOR_SIG not in message


def test_parse_rejects_non_str() -> None:
    with pytest.raises(TypeError, match="token"):
        parse_sas_token(b"SharedAccessSignature sr=a&sig=b&se=1")  # type: ignore[arg-type]


def test_repr_redacts_signature() -> None:
    parsed = parse_sas_token(generate_sas_token(DEVICE_URI, KEY, EXPIRY))
    assert VECTOR_SIG not in repr(parsed)
    assert "<redacted>" in repr(parsed)
    assert DEVICE_URI in repr(parsed)


# --- verification ------------------------------------------------------------------------------------------


def test_verify_accepts_valid_token() -> None:
    token = generate_sas_token(DEVICE_URI, KEY, EXPIRY)
    parsed = verify_sas_token(token, KEY, resource_uri=DEVICE_URI, now=EXPIRY - 1)
    assert parsed.expiry == EXPIRY
    assert parsed.resource_uri == DEVICE_URI
    # A parsed token is accepted as well as its text.
    assert verify_sas_token(parsed, KEY, resource_uri=DEVICE_URI, now=0) == parsed


def test_verify_signature_over_sr_exactly_as_sent() -> None:
    lower = "myiothub.azure-devices.net%2fdevices%2fmy_device"
    signature = sign(KEY, f"{lower}\n{EXPIRY}")
    assert signature != VECTOR_SIG
    token = _token(sr=lower, sig=quote(signature, safe=""), se=str(EXPIRY))
    assert verify_sas_token(token, KEY, resource_uri=DEVICE_URI, now=0).encoded_resource == lower
    re_encoded = _token(sr=ENCODED_DEVICE_URI, sig=quote(signature, safe=""), se=str(EXPIRY))
    with pytest.raises(CredentialError, match="signature does not match"):
        verify_sas_token(re_encoded, KEY, resource_uri=DEVICE_URI, now=0)


def test_verify_wrong_key() -> None:
    token = generate_sas_token(DEVICE_URI, OTHER_KEY, EXPIRY)
    with pytest.raises(CredentialError, match="signature does not match") as excinfo:
        verify_sas_token(token, KEY, resource_uri=DEVICE_URI, now=0)
    assert KEY not in str(excinfo.value)
    assert OTHER_KEY not in str(excinfo.value)


def test_verify_tampered_expiry() -> None:
    token = generate_sas_token(DEVICE_URI, KEY, EXPIRY).replace(f"se={EXPIRY}", f"se={EXPIRY + 3600}")
    with pytest.raises(CredentialError, match="signature does not match"):
        verify_sas_token(token, KEY, resource_uri=DEVICE_URI, now=0)


@pytest.mark.parametrize("now", [EXPIRY, EXPIRY + 0.5, EXPIRY + 10_000])
def test_verify_expired(now: float) -> None:
    token = generate_sas_token(DEVICE_URI, KEY, EXPIRY)
    with pytest.raises(CredentialError, match="expired"):
        verify_sas_token(token, KEY, resource_uri=DEVICE_URI, now=now)


def test_verify_just_before_expiry() -> None:
    token = generate_sas_token(DEVICE_URI, KEY, EXPIRY)
    assert verify_sas_token(token, KEY, resource_uri=DEVICE_URI, now=EXPIRY - 0.001).expiry == EXPIRY


def test_verify_token_for_another_device() -> None:
    token = generate_sas_token(f"{HOST}/devices/other", KEY, EXPIRY)
    with pytest.raises(CredentialError, match=r"scope .* does not cover"):
        verify_sas_token(token, KEY, resource_uri=DEVICE_URI, now=0)


def test_verify_device_name_prefix_is_not_a_scope() -> None:
    token = generate_sas_token(f"{HOST}/devices/my_dev", KEY, EXPIRY)
    with pytest.raises(CredentialError, match="does not cover"):
        verify_sas_token(token, KEY, resource_uri=DEVICE_URI, now=0)


def test_verify_module_token_does_not_cover_device() -> None:
    token = generate_sas_token(f"{DEVICE_URI}/modules/m1", KEY, EXPIRY)
    with pytest.raises(CredentialError, match="does not cover"):
        verify_sas_token(token, KEY, resource_uri=DEVICE_URI, now=0)


def test_verify_device_token_covers_its_module() -> None:
    token = generate_sas_token(DEVICE_URI, KEY, EXPIRY)
    module_uri = f"{DEVICE_URI}/modules/m1"
    assert verify_sas_token(token, KEY, resource_uri=module_uri, now=0).resource_uri == DEVICE_URI


def test_verify_scope_is_case_insensitive() -> None:
    token = generate_sas_token(DEVICE_URI.upper(), KEY, EXPIRY)
    assert verify_sas_token(token, KEY, resource_uri=DEVICE_URI, now=0).expiry == EXPIRY


def test_verify_rejects_malformed_text() -> None:
    with pytest.raises(CredentialError, match="malformed"):
        verify_sas_token("SharedAccessSignature sr=x", KEY, resource_uri=DEVICE_URI, now=0)


def test_a_scope_of_only_slashes_is_refused() -> None:
    with pytest.raises(ValueError, match="resource_uri must name a resource"):
        generate_sas_token("//", KEY, 1)


@given(
    resource=st.text(min_size=1, max_size=60).filter(lambda resource: resource.strip("/")),
    expiry=st.integers(min_value=1, max_value=2**40),
    raw_key=st.binary(min_size=1, max_size=64),
    policy=st.none() | st.text(min_size=1, max_size=20),
)
def test_generate_parse_verify_round_trip(
    resource: str, expiry: int, raw_key: bytes, policy: str | None
) -> None:
    key = base64.b64encode(raw_key).decode()
    token = generate_sas_token(resource, key, expiry, policy)
    parsed = parse_sas_token(token)
    assert parsed.resource_uri == resource
    assert parsed.expiry == expiry
    assert parsed.policy_name == policy
    assert verify_sas_token(token, key, resource_uri=resource, now=expiry - 1) == parsed
