from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aioiothub.protocol.connection_string import ConnectionString

KEY = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg="
TOKEN = "SharedAccessSignature sr=h%2Fdevices%2Fd&sig=abc%3D&se=1700000000"
HOST = "myhub.azure-devices.net"


def test_device_with_key() -> None:
    cs = ConnectionString.parse(f"HostName={HOST};DeviceId=dev1;SharedAccessKey={KEY}")
    assert cs == ConnectionString(host_name=HOST, device_id="dev1", shared_access_key=KEY)
    # The key ends in '=': only the first '=' of a segment separates key from value.
    assert cs.shared_access_key == KEY
    assert cs.module_id is None
    assert cs.x509 is False


def test_every_key() -> None:
    cs = ConnectionString.parse(
        f"HostName={HOST};DeviceId=dev1;ModuleId=mod1;SharedAccessKeyName=policy;"
        f"SharedAccessKey={KEY};GatewayHostName=edge.local"
    )
    assert cs == ConnectionString(
        host_name=HOST,
        device_id="dev1",
        module_id="mod1",
        shared_access_key=KEY,
        shared_access_key_name="policy",
        gateway_host_name="edge.local",
    )


def test_shared_access_signature_keeps_its_equals_and_spaces() -> None:
    cs = ConnectionString.parse(f"HostName={HOST};DeviceId=d;SharedAccessSignature={TOKEN}")
    assert cs.shared_access_signature == TOKEN
    assert cs.shared_access_key is None


@pytest.mark.parametrize("flag", ["true", "True", "TRUE", "tRuE"])
def test_x509_true_any_case(flag: str) -> None:
    cs = ConnectionString.parse(f"HostName={HOST};DeviceId=d;x509={flag}")
    assert cs.x509 is True
    assert str(cs) == f"HostName={HOST};DeviceId=d;x509=true"


def test_x509_false_is_no_credential() -> None:
    with pytest.raises(ValueError, match="no credential"):
        ConnectionString.parse(f"HostName={HOST};DeviceId=d;x509=false")
    cs = ConnectionString.parse(f"HostName={HOST};DeviceId=d;SharedAccessKey={KEY};x509=False")
    assert cs.x509 is False


def test_fields_in_any_order_and_trailing_semicolon() -> None:
    cs = ConnectionString.parse(f"SharedAccessKey={KEY};DeviceId=dev1;HostName={HOST};")
    assert cs == ConnectionString(host_name=HOST, device_id="dev1", shared_access_key=KEY)


def test_surrounding_whitespace_is_ignored() -> None:
    cs = ConnectionString.parse(f"  HostName={HOST};DeviceId=dev1;SharedAccessKey={KEY}\n")
    assert cs.shared_access_key == KEY


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        (";", "empty"),
        ("garbage", "segment 1 is not of the form Key=Value"),
        (f"HostName={HOST};garbage;DeviceId=d;SharedAccessKey={KEY}", "segment 2 is not of the form"),
        (f"HostName={HOST};;DeviceId=d;SharedAccessKey={KEY}", "segment 2 is not of the form"),
        (f"HostName={HOST};DeviceId=d;DeviceId=e;SharedAccessKey={KEY}", "DeviceId more than once"),
        (f"HostName={HOST};DeviceId=d;SharedAccessKey={KEY};Foo=bar", "segment 4 has an unknown key"),
        (f"hostname={HOST};DeviceId=d;SharedAccessKey={KEY}", "unknown key 'hostname' (key names are case"),
        (f"HostName={HOST};deviceid=d;SharedAccessKey={KEY}", "unknown key 'deviceid' (key names are case"),
        (f"HostName={HOST};DeviceId=d;X509=true", "unknown key 'X509' (key names are case-sensitive: x509)"),
        (f"DeviceId=d;SharedAccessKey={KEY}", "no HostName"),
        (f"HostName={HOST};SharedAccessKey={KEY}", "no DeviceId"),
        (f"HostName={HOST};SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}", "no DeviceId"),
        (f"HostName={HOST};DeviceId=d", "no credential"),
        (f"HostName={HOST};DeviceId=d;ModuleId=m;GatewayHostName=g", "no credential"),
        (f"HostName={HOST};DeviceId=d;SharedAccessKey={KEY};x509=true", "SharedAccessKey and x509=true"),
        (
            f"HostName={HOST};DeviceId=d;SharedAccessKey={KEY};SharedAccessSignature={TOKEN}",
            "SharedAccessKey and SharedAccessSignature",
        ),
        (f"HostName={HOST};DeviceId=d;SharedAccessSignature={TOKEN};x509=true", "mixes credentials"),
        (f"HostName={HOST};DeviceId=d;x509=yes", "x509 must be 'true' or 'false'"),
        (f"HostName={HOST};DeviceId=;SharedAccessKey={KEY}", "DeviceId is empty"),
        (f"HostName={HOST};DeviceId=d;SharedAccessKey=", "SharedAccessKey is empty"),
        (f"HostName={HOST};DeviceId=d;SharedAccessKeyName=p;x509=true", "SharedAccessKeyName without"),
    ],
)
def test_invalid(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match="connection string") as excinfo:
        ConnectionString.parse(text)
    assert reason in str(excinfo.value)
    # Secrets never appear in the error.
    assert KEY not in str(excinfo.value)
    assert "sig=abc" not in str(excinfo.value)


@pytest.mark.parametrize("segment", [KEY, "MDEyMzQ1Njc4OWFiY2RlZg==", "NMgJDvdKTxjLi"])
def test_pasted_secret_is_not_echoed(segment: str) -> None:
    with pytest.raises(ValueError, match="segment 3") as excinfo:
        ConnectionString.parse(f"HostName={HOST};DeviceId=d;{segment}")
    assert segment.rstrip("=") not in str(excinfo.value)


def test_parse_rejects_non_str() -> None:
    with pytest.raises(TypeError, match="connection string"):
        ConnectionString.parse(b"HostName=h;DeviceId=d;x509=true")  # type: ignore[arg-type]


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ValueError, match="no credential"):
        ConnectionString(host_name=HOST, device_id="d")
    with pytest.raises(ValueError, match=";"):
        ConnectionString(host_name=HOST, device_id="a;b", x509=True)
    with pytest.raises(TypeError, match="device_id"):
        ConnectionString(host_name=HOST, device_id=5, x509=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="x509"):
        ConnectionString(host_name=HOST, device_id="d", x509="true")  # type: ignore[arg-type]


def test_repr_redacts_secrets() -> None:
    with_key = ConnectionString.parse(f"HostName={HOST};DeviceId=d;SharedAccessKey={KEY}")
    with_token = ConnectionString.parse(f"HostName={HOST};DeviceId=d;SharedAccessSignature={TOKEN}")
    assert repr(with_key) == (
        f"ConnectionString(host_name='{HOST}', device_id='d', shared_access_key='<redacted>')"
    )
    assert KEY not in repr(with_key)
    assert repr(with_token) == (
        f"ConnectionString(host_name='{HOST}', device_id='d', shared_access_signature='<redacted>')"
    )
    assert "sig=" not in repr(with_token)
    x509 = ConnectionString.parse(f"HostName={HOST};DeviceId=d;ModuleId=m;x509=true")
    assert repr(x509) == f"ConnectionString(host_name='{HOST}', device_id='d', module_id='m', x509=True)"


def test_to_text_with_secrets_revealed_gives_back_the_connection_string() -> None:
    text = (
        f"HostName={HOST};DeviceId=d;ModuleId=m;SharedAccessKeyName=p;SharedAccessKey={KEY};"
        "GatewayHostName=gw"
    )
    assert ConnectionString.parse(text).to_text(reveal_secrets=True) == text


def test_str_and_f_strings_redact_the_key_and_the_token() -> None:
    cs = ConnectionString.parse(f"HostName={HOST};DeviceId=d;SharedAccessKey={KEY}")
    assert str(cs) == f"HostName={HOST};DeviceId=d;SharedAccessKey=<redacted>"
    assert KEY not in f"connecting with {cs}"
    token = "SharedAccessSignature sr=x&sig=c2lnbmF0dXJl&se=1"
    signed = ConnectionString.parse(f"HostName={HOST};DeviceId=d;SharedAccessSignature={token}")
    assert "c2lnbmF0dXJl" not in str(signed)
    assert signed.to_text(reveal_secrets=True).endswith(token)


def test_frozen() -> None:
    cs = ConnectionString(host_name=HOST, device_id="d", x509=True)
    with pytest.raises(AttributeError):
        cs.device_id = "e"  # type: ignore[misc]


# Values: anything without ';' that survives the whitespace trim at the ends.
_values = st.text(
    alphabet=st.characters(exclude_characters=";", exclude_categories=["Cs"]), min_size=1, max_size=30
).filter(lambda value: value == value.strip())


@st.composite
def _connection_strings(draw: st.DrawFn) -> tuple[str, dict[str, object]]:
    segments: dict[str, str] = {"HostName": draw(_values), "DeviceId": draw(_values)}
    expected: dict[str, object] = {"host_name": segments["HostName"], "device_id": segments["DeviceId"]}
    if draw(st.booleans()):
        segments["ModuleId"] = expected["module_id"] = draw(_values)
    if draw(st.booleans()):
        segments["GatewayHostName"] = expected["gateway_host_name"] = draw(_values)
    credential = draw(st.sampled_from(["key", "key+name", "signature", "x509"]))
    if credential.startswith("key"):
        segments["SharedAccessKey"] = expected["shared_access_key"] = draw(_values)
        if credential == "key+name":
            segments["SharedAccessKeyName"] = expected["shared_access_key_name"] = draw(_values)
    elif credential == "signature":
        segments["SharedAccessSignature"] = expected["shared_access_signature"] = draw(_values)
    else:
        segments["x509"] = draw(st.sampled_from(["true", "True", "TRUE"]))
        expected["x509"] = True
    order = draw(st.permutations(list(segments)))
    text = ";".join(f"{key}={segments[key]}" for key in order)
    if draw(st.booleans()):
        text += ";"
    return text, expected


@given(_connection_strings())
def test_round_trip(case: tuple[str, dict[str, object]]) -> None:
    text, expected = case
    cs = ConnectionString.parse(text)
    assert cs == ConnectionString(**expected)  # type: ignore[arg-type]
    assert ConnectionString.parse(cs.to_text(reveal_secrets=True)) == cs
    assert "<redacted>" in repr(cs) or cs.x509
