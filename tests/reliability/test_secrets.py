"""No key, token or signature reaches a log line, a repr or an error message, whatever happens."""

from __future__ import annotations

import logging
import time

import anyio
import pytest

import aioiothub
from aioiothub.emulator import Emulator
from aioiothub.protocol.sas import device_resource_uri, parse_sas_token
from tests.client.client_helpers import STEP, device_client, new_id, reconnect_seen_by_hub, take

pytestmark = pytest.mark.anyio


def _secrets_in(text: str, secrets: list[str]) -> list[str]:
    found = [secret for secret in secrets if secret and secret in text]
    if "sig=" in text:
        found.append("sig=")
    return found


async def test_nothing_secret_is_logged_through_a_whole_client_life(
    hub: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: the client's, the transport's, paho's, the emulator's
    device = hub.add_device(new_id("secret"))
    key = device.primary_key
    assert key is not None
    resource = device_resource_uri(hub.hostname, device.device_id)
    tokens: list[str] = []

    def issue(lifetime: int) -> str:
        tokens.append(aioiothub.generate_sas_token(resource, key or "", int(time.time()) + lifetime))
        return tokens[-1]

    # A token client that renews (every ~0.5 s here), and a key client: both kinds of credential.
    token_client = aioiothub.IoTHubDeviceClient(
        hostname=hub.hostname,
        device_id=device.device_id,
        sas_token=issue(3),
        renew_sas_token=lambda: issue(3600),
        port=hub.port,
        ssl_context=hub.client_ssl_context(),
    )
    async with token_client:
        await reconnect_seen_by_hub(hub, device.device_id, timeout=3 + STEP)  # renewed
        await token_client.send_message({"t": 1})
        await token_client.update_reported_properties({"fw": "1"})
        await token_client.get_twin()
    other = hub.add_device(new_id("secret-key"))
    async with device_client(hub, other) as key_client, anyio.create_task_group() as tasks:

        async def answer() -> None:
            async for request in key_client.method_requests():
                await request.respond(200, {"ok": True})

        tasks.start_soon(answer)
        await hub.wait_subscribed(other.device_id, "$iothub/methods/POST/#", timeout=STEP)
        await hub.invoke_method(other.device_id, "m", {"x": 1}, timeout=STEP)
        states = key_client.connection_states()
        hub.drop_connection(other.device_id)
        assert await take(states, 3) == [True, False, True]
        tasks.cancel_scope.cancel()
    wrong = aioiothub.IoTHubDeviceClient(
        hostname=hub.hostname,
        device_id=device.device_id,
        shared_access_key="d3Jvbmcgd3Jvbmcgd3Jvbmcgd3Jvbmcgd3Jvbmc=",
        port=hub.port,
        ssl_context=hub.client_ssl_context(),
    )
    with pytest.raises(aioiothub.AuthenticationError) as refused:
        async with wrong:
            pytest.fail("connected with a wrong key")

    secrets = [key, other.primary_key or "", *tokens, *(parse_sas_token(token).signature for token in tokens)]
    logged = "\n".join(record.getMessage() + (record.exc_text or "") for record in caplog.records)
    assert len(caplog.records) > 20  # the run was logged at DEBUG, not silently
    assert _secrets_in(logged, secrets) == []
    assert _secrets_in(str(refused.value) + repr(refused.value), secrets) == []


def test_reprs_and_strings_redact_secrets(tmp_path: object) -> None:
    key = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg="
    token = aioiothub.generate_sas_token("h.example.net/devices/d", key, 2_000_000_000)
    signature = parse_sas_token(token).signature
    secrets = [key, token, signature]
    things: list[object] = [
        aioiothub.SharedAccessKeyCredential(key),
        aioiothub.SasTokenCredential(token),
        aioiothub.ConnectionString.parse(f"HostName=h.example.net;DeviceId=d;SharedAccessKey={key}"),
        aioiothub.ConnectionString.parse(f"HostName=h.example.net;DeviceId=d;SharedAccessSignature={token}"),
        aioiothub.ProxyOptions("http", "proxy", 3128, "user", key),
        aioiothub.IoTHubDeviceClient(hostname="h.example.net", device_id="d", shared_access_key=key),
        aioiothub.IoTHubDeviceClient(hostname="h.example.net", device_id="d", sas_token=token),
        Emulator().add_device("d", primary_key=key),
    ]
    for thing in things:
        assert _secrets_in(repr(thing) + str(thing), secrets) == [], type(thing).__name__
