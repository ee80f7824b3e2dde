"""Options added for wills, CleanSession, retained and output telemetry, SAS tokens and methods.

These need no hub: clients are built and not opened, and the settings they produce are checked.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

import aioiothub
from aioiothub._client.settings import identity_from_sas_token
from aioiothub._session.session import SessionSettings
from aioiothub.exceptions import CredentialError
from aioiothub.protocol.limits import MAX_TELEMETRY_BYTES
from aioiothub.transports.base import WillMessage

KEY = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg="
HOST = "example.azure-devices.net"


def token(scope: str = f"{HOST}/devices/dev1", lifetime: int = 3600) -> str:
    return aioiothub.generate_sas_token(scope, KEY, int(time.time()) + lifetime)


def settings(client: aioiothub.IoTHubDeviceClient | aioiothub.IoTHubModuleClient) -> SessionSettings:
    return client._settings


def device(**options: Any) -> aioiothub.IoTHubDeviceClient:
    return aioiothub.IoTHubDeviceClient(hostname=HOST, device_id="dev1", shared_access_key=KEY, **options)


def test_a_will_is_sent_as_telemetry_of_the_identity() -> None:
    will = aioiothub.Message.json({"state": "offline"}, properties={"reason": "lost"})
    assert settings(device(will=will)).will == WillMessage(
        "devices/dev1/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8&reason=lost",
        b'{"state":"offline"}',
        1,
        False,
    )
    module = aioiothub.IoTHubModuleClient(
        hostname=HOST, device_id="dev1", module_id="mod1", shared_access_key=KEY, will=aioiothub.Message(b"bye")
    )
    assert settings(module).will == WillMessage("devices/dev1/modules/mod1/messages/events/", b"bye", 1, False)
    assert settings(device()).will is None


def test_a_will_must_be_a_message_within_the_size_limit() -> None:
    with pytest.raises(TypeError, match=r"will must be an aioiothub\.Message, not dict"):
        device(will={"state": "offline"})
    with pytest.raises(ValueError, match="will: message is 262145 bytes on the wire"):
        device(will=aioiothub.Message(b"x" * (MAX_TELEMETRY_BYTES + 1)))


def test_clean_session_is_off_unless_asked_for() -> None:
    assert settings(device()).clean_session is False
    assert settings(device(clean_session=True)).clean_session is True
    with pytest.raises(TypeError, match="clean_session must be True or False"):
        device(clean_session=1)


def test_the_identity_comes_from_the_token_s_scope() -> None:
    assert identity_from_sas_token(token()) == (HOST, "dev1", None)
    assert identity_from_sas_token(token(f"{HOST}/devices/dev1/modules/mod1")) == (HOST, "dev1", "mod1")
    client = aioiothub.IoTHubDeviceClient.from_sas_token(token(), keepalive=30)
    assert (settings(client).hostname, settings(client).device_id, settings(client).keepalive) == (HOST, "dev1", 30)
    module = aioiothub.IoTHubModuleClient.from_sas_token(token(f"{HOST}/devices/dev1/modules/mod1"))
    assert (settings(module).device_id, settings(module).module_id) == ("dev1", "mod1")


@pytest.mark.parametrize(
    "scope", ["0ne00000001/registrations/dev1", HOST, f"{HOST}/devices", f"{HOST}/devices/dev1/other/x", "/devices/d"]
)
def test_a_token_whose_scope_names_no_device_is_refused(scope: str) -> None:
    with pytest.raises(CredentialError, match="does not name a device or module"):
        aioiothub.IoTHubDeviceClient.from_sas_token(token(scope))


def test_device_and_module_tokens_go_to_their_own_client() -> None:
    with pytest.raises(ValueError, match=r"scoped to a module: use IoTHubModuleClient\.from_sas_token"):
        aioiothub.IoTHubDeviceClient.from_sas_token(token(f"{HOST}/devices/dev1/modules/mod1"))
    with pytest.raises(ValueError, match=r"scoped to a device: use IoTHubDeviceClient\.from_sas_token"):
        aioiothub.IoTHubModuleClient.from_sas_token(token())
    with pytest.raises(CredentialError, match="malformed SAS token"):
        aioiothub.IoTHubDeviceClient.from_sas_token("not a token")
    with pytest.raises(TypeError, match="hostname comes from the SAS token; do not pass it as well"):
        aioiothub.IoTHubDeviceClient.from_sas_token(token(), hostname=HOST)  # type: ignore[call-arg]


def test_iterator_arguments_are_checked_before_anything_runs() -> None:
    client = device()
    with pytest.raises(ValueError, match="ack must be 'auto' or 'manual', not 'later'"):
        client.cloud_messages(ack="later")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method_name must be a non-empty string or None"):
        client.method_requests("")
    with pytest.raises(TypeError, match="components must be a collection"):
        client.writable_property_requests(components="thermostat1")
    # Valid arguments on a client that is not open: the usual lifecycle error.
    for call in (
        lambda: client.cloud_messages(ack="manual"),
        lambda: client.method_requests("reboot"),
        lambda: client.writable_property_requests(components={"thermostat1"}),
        client.errors,
    ):
        with pytest.raises(RuntimeError, match="the client is not open"):
            call()


@pytest.mark.anyio
async def test_an_error_caused_by_the_one_that_ended_the_client_is_left_out_when_unwrapping() -> None:
    from aioiothub.exceptions import unwrap_group

    refused = aioiothub.AuthenticationError("not authorized", return_code=5)
    fatal = ExceptionGroup("the session's task group", [refused])
    consequence = aioiothub.ConnectionLostError("the client is no longer connected")
    consequence.__cause__ = refused
    group = ExceptionGroup("the client's task group", [fatal, consequence])
    assert unwrap_group(group) is refused
    assert unwrap_group(group, fatal=refused) is refused
    unrelated = aioiothub.ConnectionLostError("lost on its own")
    assert isinstance(unwrap_group(ExceptionGroup("the client's task group", [fatal, unrelated])), ExceptionGroup)
