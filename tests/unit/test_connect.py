"""Tests for client ids, usernames and identifier rules (protocol.md sections 1, 3 and 5)."""

from __future__ import annotations

import contextlib
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aioiothub._version import __version__
from aioiothub.exceptions import ProtocolError
from aioiothub.protocol.connect import (
    API_VERSION,
    DEFAULT_PRODUCT_INFO,
    DPS_API_VERSION,
    DpsUsername,
    IdentityUsername,
    client_id,
    dps_username,
    parse_dps_username,
    parse_username,
    product_info_string,
    username,
    validate_identity,
)

IDENTITY_ALPHABET = string.ascii_letters + string.digits + "-.+%_#*?!(),=@;$':"
HOST = "myiothub.azure-devices.net"

identities = st.text(alphabet=IDENTITY_ALPHABET, min_size=1, max_size=128)
hostnames = st.from_regex(r"[a-z0-9][a-z0-9.-]{0,40}(:[0-9]{1,5})?", fullmatch=True)
optional_text = st.none() | st.text(min_size=1)


def test_api_versions() -> None:
    assert API_VERSION == "2021-04-12"
    assert DPS_API_VERSION == "2019-03-31"


# --- protocol.md section 5 vectors (azure-sdk-for-c) --------------------------------------------


def test_client_id_vectors() -> None:
    assert client_id("my_device") == "my_device"
    assert client_id("my_device", "my_module_id") == "my_device/my_module_id"


def test_username_vector_device_with_client_type() -> None:
    expected = f"{HOST}/my_device/?api-version=2020-09-30&DeviceClientType=azsdk-c%2F1.6.0-beta.1"
    built = username(HOST, "my_device", api_version="2020-09-30", product_info="azsdk-c/1.6.0-beta.1")
    assert built == expected
    assert parse_username(expected) == IdentityUsername(
        hostname=HOST,
        device_id="my_device",
        module_id=None,
        api_version="2020-09-30",
        product_info="azsdk-c/1.6.0-beta.1",
        model_id=None,
    )


def test_username_vector_module_with_model_id() -> None:
    expected = (
        f"{HOST}/my_device/my_module_id/?api-version=2020-09-30&DeviceClientType=azrtos"
        "&model-id=dtmi%3AYOUR_COMPANY_NAME_HERE%3Asample_device%3B1"
    )
    built = username(
        HOST,
        "my_device",
        "my_module_id",
        api_version="2020-09-30",
        product_info="azrtos",
        model_id="dtmi:YOUR_COMPANY_NAME_HERE:sample_device;1",
    )
    assert built == expected
    assert parse_username(expected) == IdentityUsername(
        hostname=HOST,
        device_id="my_device",
        module_id="my_module_id",
        api_version="2020-09-30",
        product_info="azrtos",
        model_id="dtmi:YOUR_COMPANY_NAME_HERE:sample_device;1",
    )


# --- protocol.md section 1 ----------------------------------------------------------------------


def test_username_section_1_forms() -> None:
    assert username(HOST, "dev") == f"{HOST}/dev/?api-version=2021-04-12"
    assert username(HOST, "dev", "mod") == f"{HOST}/dev/mod/?api-version=2021-04-12"
    assert parse_username(f"{HOST}/dev/?api-version=2021-04-12") == IdentityUsername(
        HOST, "dev", None, "2021-04-12", None, None
    )
    assert parse_username(f"{HOST}/dev/mod/?api-version=2021-04-12") == IdentityUsername(
        HOST, "dev", "mod", "2021-04-12", None, None
    )


def test_identifiers_are_never_percent_encoded() -> None:
    odd = "a+b%c#d*e?f!(g),=@;$'h:i.j-k_l"
    assert client_id(odd, odd) == f"{odd}/{odd}"
    assert username(HOST, odd, odd) == f"{HOST}/{odd}/{odd}/?api-version=2021-04-12"
    assert parse_username(f"{HOST}/{odd}/{odd}/?api-version=2021-04-12").module_id == odd


def test_parse_username_parameters_in_any_order_and_unknown_ignored() -> None:
    parsed = parse_username(f"{HOST}/dev/?model-id=dtmi%3Ax%3B1&other=1&flag&api-version=2021-04-12")
    assert parsed == IdentityUsername(HOST, "dev", None, "2021-04-12", None, "dtmi:x;1")


def test_parse_username_without_parameters() -> None:
    assert parse_username(f"{HOST}/dev/?") == IdentityUsername(HOST, "dev", None, None, None, None)


def test_parse_username_ids_that_start_with_a_question_mark() -> None:
    assert parse_username(f"{HOST}/?dev/?api-version=1").device_id == "?dev"
    parsed = parse_username(f"{HOST}/dev/?mod/?api-version=1")
    assert (parsed.device_id, parsed.module_id, parsed.api_version) == ("dev", "?mod", "1")


def test_parse_username_tolerates_an_unencoded_slash_in_a_device_query() -> None:
    parsed = parse_username(f"{HOST}/dev/?api-version=1&DeviceClientType=x/1")
    assert (parsed.module_id, parsed.product_info) == (None, "x/1")


@pytest.mark.parametrize(
    "text",
    [
        "",
        HOST,
        f"{HOST}/dev",
        f"{HOST}/dev/",
        f"{HOST}/dev/api-version=2021-04-12",
        f"{HOST}/dev/mod/api-version=2021-04-12",
        "/dev/?api-version=1",
        f"{HOST}//?api-version=1",
        f"{HOST}/dev//?api-version=1",
        f"{HOST}/de v/?api-version=1",
        f"{HOST}/dev/?api-version=%zz",
        f"{HOST}/dev/?&",
    ],
)
def test_parse_username_rejects_malformed_usernames(text: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_username(text)
    assert repr(text) in str(caught.value)


@given(
    hostname=hostnames,
    device_id=identities,
    module_id=st.none() | identities,
    product_info=optional_text,
    model_id=optional_text,
)
def test_username_round_trip(
    hostname: str, device_id: str, module_id: str | None, product_info: str | None, model_id: str | None
) -> None:
    text = username(hostname, device_id, module_id, product_info=product_info, model_id=model_id)
    assert parse_username(text) == IdentityUsername(
        hostname=hostname,
        device_id=device_id,
        module_id=module_id,
        api_version=API_VERSION,
        product_info=product_info,
        model_id=model_id,
    )


def test_username_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"^hostname: "):
        username("", "dev")
    with pytest.raises(ValueError, match=r"^hostname: "):
        username("hub/x", "dev")
    with pytest.raises(TypeError, match=r"^hostname: expected str"):
        username(b"hub", "dev")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^device_id: must not be empty"):
        username(HOST, "")
    with pytest.raises(ValueError, match=r"^module_id: .*'/'"):
        username(HOST, "dev", "a/b")
    with pytest.raises(ValueError, match=r"^api_version: must not be empty"):
        username(HOST, "dev", api_version="")
    with pytest.raises(ValueError, match=r"^product_info: must not be empty"):
        username(HOST, "dev", product_info="")
    with pytest.raises(TypeError, match=r"^model_id: expected str"):
        username(HOST, "dev", model_id=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^model_id: needs api_version 2020-09-30"):
        username(HOST, "dev", api_version="2019-10-01", model_id="dtmi:x;1")


# --- identifier rules ---------------------------------------------------------------------------


def test_validate_identity_accepts_every_allowed_character() -> None:
    validate_identity(IDENTITY_ALPHABET, "device_id")
    validate_identity("x" * 128, "device_id")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "^device_id: must not be empty$"),
        ("x" * 129, "^device_id: longer than 128 characters$"),
        ("a/b", "^device_id: 'a/b' contains '/'"),
        ("a b", "^device_id: 'a b' contains ' '"),
        ("caf\u00e9", "^device_id: 'café' contains 'é'"),
        ("a&b", "^device_id: 'a&b' contains '&'"),
        ("a\x00", r"^device_id: 'a\\x00' contains '\\x00'"),
    ],
)
def test_validate_identity_rejects_bad_identifiers(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_identity(value, "device_id")


@pytest.mark.parametrize("value", [None, 5, b"dev"])
def test_validate_identity_rejects_non_text(value: object) -> None:
    with pytest.raises(TypeError, match=r"^module_id: expected str"):
        validate_identity(value, "module_id")


def test_client_id_validates_both_ids() -> None:
    with pytest.raises(ValueError, match=r"^device_id: "):
        client_id("a/b")
    with pytest.raises(TypeError, match=r"^module_id: "):
        client_id("dev", 3)  # type: ignore[arg-type]


# --- product info -------------------------------------------------------------------------------


def test_product_info_string() -> None:
    assert f"aioiothub/{__version__}" == DEFAULT_PRODUCT_INFO
    assert product_info_string(None) == DEFAULT_PRODUCT_INFO
    assert product_info_string("") == DEFAULT_PRODUCT_INFO
    assert product_info_string("myapp/2.0") == f"{DEFAULT_PRODUCT_INFO} myapp/2.0"
    with pytest.raises(TypeError, match=r"^user_suffix: "):
        product_info_string(2)  # type: ignore[arg-type]


# --- DPS (protocol.md section 3) ----------------------------------------------------------------


def test_dps_vectors() -> None:
    expected = "0neFEEDC0DE/registrations/myRegistrationId/api-version=2019-03-31"
    assert dps_username("0neFEEDC0DE", "myRegistrationId") == expected
    assert client_id("myRegistrationId") == "myRegistrationId"
    assert parse_dps_username(expected) == DpsUsername("0neFEEDC0DE", "myRegistrationId", "2019-03-31", None)


def test_dps_username_with_client_version() -> None:
    text = dps_username("0ne00000001", "reg-1", client_version="aioiothub/0.1 (x; y)")
    assert (
        text == "0ne00000001/registrations/reg-1/api-version=2019-03-31&ClientVersion=aioiothub%2F0.1%20%28x%3B%20y%29"
    )
    assert parse_dps_username(text).client_version == "aioiothub/0.1 (x; y)"


def test_parse_dps_username_tolerates_a_question_mark_and_any_order() -> None:
    parsed = parse_dps_username("scope/registrations/reg/?ClientVersion=c&api-version=2019-03-31")
    assert parsed == DpsUsername("scope", "reg", "2019-03-31", "c")


@given(
    id_scope=st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=20),
    registration_id=identities,
    client_version=optional_text,
)
def test_dps_username_round_trip(id_scope: str, registration_id: str, client_version: str | None) -> None:
    text = dps_username(id_scope, registration_id, client_version=client_version)
    assert parse_dps_username(text) == DpsUsername(id_scope, registration_id, DPS_API_VERSION, client_version)


def test_dps_username_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"^id_scope: "):
        dps_username("0ne/1", "reg")
    with pytest.raises(ValueError, match=r"^id_scope: "):
        dps_username("", "reg")
    with pytest.raises(TypeError, match=r"^id_scope: "):
        dps_username(None, "reg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^registration_id: "):
        dps_username("scope", "a/b")
    with pytest.raises(ValueError, match=r"^client_version: "):
        dps_username("scope", "reg", client_version="")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "scope/registrations/reg",
        "scope/registration/reg/api-version=2019-03-31",
        "/registrations/reg/api-version=2019-03-31",
        "scope/registrations//api-version=2019-03-31",
        "scope/registrations/reg/api-version=%G1",
        "scope/registrations/reg/&",
    ],
)
def test_parse_dps_username_rejects_malformed_usernames(text: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_dps_username(text)
    assert repr(text) in str(caught.value)


# --- robustness ---------------------------------------------------------------------------------

username_like = st.text() | st.builds(
    lambda prefix, tail: prefix + tail,
    st.sampled_from([f"{HOST}/dev/?", f"{HOST}/dev/mod/?", "scope/registrations/reg/", f"{HOST}/"]),
    st.text(alphabet="?/&=%aF0 é"),
)


@given(username_like)
def test_username_parsers_raise_only_protocol_error(text: str) -> None:
    for parser in (parse_username, parse_dps_username):
        with contextlib.suppress(ProtocolError):
            parser(text)
