"""Constructor options, argument checks and lifecycle misuse of the device and module clients.

Checks that need no hub build clients without opening them. Checks on an open client run against
the module's emulator and confirm on the hub's side that a refused call sent nothing.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

import aioiothub
from aioiothub.emulator import Emulator, Hub
from aioiothub.protocol.limits import MAX_TELEMETRY_BYTES
from aioiothub.protocol.topics import METHODS_SUBSCRIPTION
from tests.client.client_helpers import STEP, TCP_SAS, device_client, module_client, new_id, wait_subscribed

pytestmark = pytest.mark.anyio

# A valid base64 key (the protocol document's test vector key).
KEY = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg="
HOST = "example.azure-devices.net"
DEVICE_STRING = f"HostName={HOST};DeviceId=dev1;SharedAccessKey={KEY}"
MODULE_STRING = f"HostName={HOST};DeviceId=dev1;ModuleId=mod1;SharedAccessKey={KEY}"


def token() -> str:
    """A SAS token for dev1 on HOST, valid for an hour."""
    return aioiothub.generate_sas_token(f"{HOST}/devices/dev1", KEY, int(time.time()) + 3600)


def device_options(**changes: Any) -> dict[str, Any]:
    """Valid device client options with ``changes`` applied (a ``None`` value removes the option)."""
    options: dict[str, Any] = {"hostname": HOST, "device_id": "dev1", "shared_access_key": KEY, **changes}
    return {name: value for name, value in options.items() if value is not None}


def nested(depth: int) -> dict[str, Any]:
    """A patch whose deepest object sits ``depth`` containers below the section (the twin rule's depth)."""
    value: dict[str, Any] = {"leaf": 1}
    for level in range(depth):
        value = {f"level{level}": value}
    return value


def _option_id(value: object) -> str:
    if isinstance(value, dict):
        return ",".join(f"{name}={'<callable>' if callable(v) else v!r}" for name, v in value.items())
    if isinstance(value, str):
        return value
    errors = value if isinstance(value, tuple) else (value,)
    return "|".join(error.__name__ for error in errors)


# ------------------------------------------------------------------------------- constructor checks


def test_valid_options_build_a_client() -> None:
    aioiothub.IoTHubDeviceClient(**device_options())
    aioiothub.IoTHubDeviceClient(**device_options(shared_access_key=None, sas_token=token()))
    aioiothub.IoTHubDeviceClient.from_connection_string(DEVICE_STRING, keepalive=1177, request_timeout=0.5)
    aioiothub.IoTHubModuleClient.from_connection_string(MODULE_STRING, max_in_flight=1, port=65535)


@pytest.mark.parametrize(
    ("changes", "error", "argument"),
    [
        ({"port": 0}, ValueError, "port"),
        ({"port": 65536}, ValueError, "port"),
        ({"port": -1}, ValueError, "port"),
        ({"port": "8883"}, (ValueError, TypeError), "port"),
        ({"port": True}, (ValueError, TypeError), "port"),
        ({"keepalive": 0}, ValueError, "keepalive"),
        ({"keepalive": 2000}, ValueError, "keepalive"),
        ({"keepalive": 1178}, ValueError, "keepalive"),
        ({"keepalive": 1.5}, (ValueError, TypeError), "keepalive"),
        ({"request_timeout": -1}, ValueError, "request_timeout"),
        ({"request_timeout": 0}, ValueError, "request_timeout"),
        ({"request_timeout": math.nan}, ValueError, "request_timeout"),
        ({"request_timeout": math.inf}, ValueError, "request_timeout"),
        ({"request_timeout": "30"}, (ValueError, TypeError), "request_timeout"),
        ({"max_in_flight": 0}, ValueError, "max_in_flight"),
        ({"max_in_flight": 65536}, ValueError, "max_in_flight"),
        ({"inbound_buffer_size": 0}, ValueError, "inbound_buffer_size"),
        ({"sas_ttl": 0}, ValueError, "sas_ttl"),
        ({"model_id": "com:example:Thermostat;1"}, ValueError, "model_id"),
        ({"model_id": ""}, ValueError, "model_id"),
        ({"product_info": 7}, (ValueError, TypeError), "product_info"),
        ({"gateway_hostname": ""}, ValueError, "gateway_hostname"),
        ({"hostname": ""}, ValueError, "hostname"),
        ({"device_id": ""}, ValueError, "device_id"),
        ({"device_id": "dev/1"}, ValueError, "device_id"),
        ({"websockets": "yes"}, (ValueError, TypeError), "websockets"),
        ({"ssl_context": "verify"}, (ValueError, TypeError), "ssl_context"),
        ({"reconnect": "always"}, (ValueError, TypeError), "reconnect"),
        ({"proxy": ("http", "proxy", 3128)}, (ValueError, TypeError), "proxy"),
        ({"shared_access_key": "not base64!"}, ValueError, "key"),
        ({"renew_sas_token": lambda: token()}, ValueError, "renew_sas_token"),
        ({"module_id": "mod1"}, ValueError, "module_id"),
    ],
    ids=lambda value: _option_id(value),
)
def test_bad_device_option_is_refused_naming_it(
    changes: dict[str, Any], error: type[Exception] | tuple[type[Exception], ...], argument: str
) -> None:
    with pytest.raises(error, match=argument):
        aioiothub.IoTHubDeviceClient(**device_options(**changes))


def test_two_credentials_are_refused_naming_both(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shared_access_key") as caught:
        aioiothub.IoTHubDeviceClient(**device_options(sas_token=token()))
    assert "sas_token" in str(caught.value)

    identity = Hub(hostname=HOST).add_device("dev1", authentication="x509")
    certificate_file, key_file = identity.write_certificate_files(tmp_path)
    credential = aioiothub.X509Credential(certificate_file, key_file)
    with pytest.raises(ValueError, match="x509") as caught:
        aioiothub.IoTHubDeviceClient(**device_options(x509=credential))
    assert "shared_access_key" in str(caught.value)


def test_no_credential_is_refused() -> None:
    with pytest.raises(ValueError, match=r"shared_access_key.*sas_token.*x509"):
        aioiothub.IoTHubDeviceClient(**device_options(shared_access_key=None))


def test_renew_sas_token_must_be_callable() -> None:
    with pytest.raises(TypeError, match="renew_sas_token"):
        aioiothub.IoTHubDeviceClient(
            **device_options(shared_access_key=None, sas_token=token(), renew_sas_token="token")
        )


def test_malformed_sas_token_is_refused() -> None:
    with pytest.raises(ValueError, match=r"SAS token|SharedAccessSignature|token"):
        aioiothub.IoTHubDeviceClient(**device_options(shared_access_key=None, sas_token="not a token"))


def test_x509_must_be_a_credential_object(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="x509"):
        aioiothub.IoTHubDeviceClient(
            **device_options(shared_access_key=None, x509=(tmp_path / "c", tmp_path / "k"))
        )


def test_module_client_needs_a_module_id() -> None:
    with pytest.raises(ValueError, match="module_id"):
        aioiothub.IoTHubModuleClient(**device_options())


# ------------------------------------------------------------------------------ connection strings


@pytest.mark.parametrize(
    ("connection_string", "named"),
    [
        (f"{DEVICE_STRING};Bogus=1", "unknown key"),
        (f"HostName={HOST};deviceid=dev1;SharedAccessKey={KEY}", "DeviceId"),
        (f"HostName={HOST};SharedAccessKey={KEY}", "DeviceId"),
        (f"DeviceId=dev1;SharedAccessKey={KEY}", "HostName"),
        (f"HostName={HOST};DeviceId=dev1", "credential"),
        (f"HostName={HOST};DeviceId=dev1;DeviceId=dev2;SharedAccessKey={KEY}", "DeviceId"),
        ("", "empty"),
    ],
)
def test_bad_connection_string_is_refused_naming_the_problem(connection_string: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        aioiothub.IoTHubDeviceClient.from_connection_string(connection_string)


def test_unknown_key_is_refused_without_echoing_what_may_be_a_secret() -> None:
    secret_looking = "c2VjcmV0LXBhcnQtb2YtYS1rZXk="
    with pytest.raises(ValueError, match="unknown key") as caught:
        aioiothub.IoTHubDeviceClient.from_connection_string(f"{DEVICE_STRING};{secret_looking}x=1")
    assert secret_looking not in str(caught.value)


@pytest.mark.parametrize(
    "connection_string",
    [
        # What the portal shows for the hub's iothubowner policy.
        f"HostName={HOST};SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}",
        f"HostName={HOST};DeviceId=dev1;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}",
    ],
    ids=["hub-policy", "with-device-id"],
)
def test_service_connection_string_is_refused_naming_the_policy_key(connection_string: str) -> None:
    with pytest.raises(ValueError, match="SharedAccessKeyName"):
        aioiothub.IoTHubDeviceClient.from_connection_string(connection_string)


def test_device_connection_string_is_refused_by_the_module_client() -> None:
    with pytest.raises(ValueError, match="ModuleId"):
        aioiothub.IoTHubModuleClient.from_connection_string(DEVICE_STRING)


def test_module_connection_string_is_refused_by_the_device_client() -> None:
    with pytest.raises(ValueError, match="module"):
        aioiothub.IoTHubDeviceClient.from_connection_string(MODULE_STRING)


def test_x509_connection_string_needs_the_x509_option() -> None:
    with pytest.raises(ValueError, match="x509"):
        aioiothub.IoTHubDeviceClient.from_connection_string(f"HostName={HOST};DeviceId=dev1;x509=true")


@pytest.mark.parametrize("name", ["hostname", "device_id", "module_id", "shared_access_key", "sas_token"])
def test_options_that_the_connection_string_sets_cannot_be_given_again(name: str) -> None:
    with pytest.raises(TypeError, match=name):
        aioiothub.IoTHubModuleClient.from_connection_string(MODULE_STRING, **{name: "x"})


# ----------------------------------------------------------------------------------------- lifecycle


async def test_using_a_client_outside_async_with_raises_runtime_error(hub: Emulator, tmp_path: Path) -> None:
    device = hub.add_device(new_id("closed"))
    client = device_client(hub, device, TCP_SAS, tmp_path)

    async def check_closed() -> None:
        with pytest.raises(RuntimeError, match="async with"):
            await client.send_message(b"x")
        with pytest.raises(RuntimeError, match="async with"):
            await client.get_twin()
        with pytest.raises(RuntimeError, match="async with"):
            await client.update_reported_properties({"a": 1})
        with pytest.raises(RuntimeError, match="async with"):
            await client.wait_connected()
        for iterate in (client.cloud_messages, client.method_requests, client.desired_property_patches):
            with pytest.raises(RuntimeError, match="async with"):
                await anext(aiter(iterate()))
        assert not client.connected

    await check_closed()
    async with client:
        assert client.connected
        with pytest.raises(RuntimeError, match="already open"):
            await client.__aenter__()
        await client.send_message(b"inside")
    await check_closed()
    assert [record.body for record in hub.telemetry(device.device_id)] == [b"inside"]


async def test_module_input_messages_outside_async_with_raises_runtime_error(
    hub: Emulator, tmp_path: Path
) -> None:
    device = hub.add_device(new_id("closed"))
    module = hub.add_module(device.device_id, new_id("module"))
    client = module_client(hub, module, TCP_SAS, tmp_path)
    with pytest.raises(RuntimeError, match="async with"):
        await anext(aiter(client.input_messages()))
    with pytest.raises(RuntimeError, match="async with"):
        await client.send_message_to_output(b"x", "output1")


# ------------------------------------------------------------------------------ checks on an open client


async def test_send_message_with_an_unsupported_type_raises_type_error(hub: Emulator, tmp_path: Path) -> None:
    device = hub.add_device(new_id("types"))
    async with device_client(hub, device, TCP_SAS, tmp_path) as client:
        for value in (42, 1.5, None, [1, 2], {1, 2}, object()):
            with pytest.raises(TypeError, match="message"):
                await client.send_message(value)  # type: ignore[arg-type]
        await client.send_message(b"marker")
    assert [record.body for record in hub.telemetry(device.device_id)] == [b"marker"]


async def test_message_over_256_kib_is_refused_before_sending(hub: Emulator, tmp_path: Path) -> None:
    device = hub.add_device(new_id("size"))
    at_limit = b"a" * MAX_TELEMETRY_BYTES
    async with device_client(hub, device, TCP_SAS, tmp_path) as client:
        with pytest.raises(ValueError, match=str(MAX_TELEMETRY_BYTES)):
            await client.send_message(at_limit + b"a")
        # Property names and values count too: 4 + 1 + 2 bytes over.
        with pytest.raises(ValueError, match=str(MAX_TELEMETRY_BYTES)):
            await client.send_message(aioiothub.Message(at_limit[:-4], properties={"name": "vv"}))
        with pytest.raises(ValueError, match=str(MAX_TELEMETRY_BYTES)):
            await client.send_message(aioiothub.Message(at_limit, message_id="m"))
        await client.send_message(at_limit)
        await client.send_message(b"marker")
        assert client.connected
    assert [record.body for record in hub.telemetry(device.device_id)] == [at_limit, b"marker"]


async def test_qos_2_is_refused_and_nothing_is_sent(hub: Emulator, tmp_path: Path) -> None:
    device = hub.add_device(new_id("qos"))
    async with device_client(hub, device, TCP_SAS, tmp_path) as client:
        for qos in (2, -1):
            with pytest.raises(ValueError, match="qos"):
                await client.send_message(b"never", qos=qos)
        await client.send_message(b"marker")
        assert client.connected
    assert [record.body for record in hub.telemetry(device.device_id)] == [b"marker"]


async def test_reported_patch_breaking_twin_rules_is_refused_naming_the_key(
    hub: Emulator, tmp_path: Path
) -> None:
    device = hub.add_device(new_id("twin-rules"))
    async with device_client(hub, device, TCP_SAS, tmp_path) as client:
        with pytest.raises(ValueError, match="nested deeper"):
            await client.update_reported_properties(nested(11))
        with pytest.raises(ValueError, match=r"bad\$key"):
            await client.update_reported_properties({"ok": 1, "bad$key": 1})
        with pytest.raises(ValueError, match=r"'outer'.*'in\.ner'"):
            await client.update_reported_properties({"outer": {"in.ner": 1}})
        with pytest.raises(ValueError, match="with space"):
            await client.update_reported_properties({"with space": 1})
        with pytest.raises(TypeError, match="patch"):
            await client.update_reported_properties([("a", 1)])  # type: ignore[arg-type]
        assert hub.twin(device.device_id)["reported"] == {"$version": 1}, "a refused patch reached the hub"

        # The deepest patch the rules allow is accepted by both sides.
        version = await client.update_reported_properties(nested(10))
    assert hub.twin(device.device_id)["reported"] == {**nested(10), "$version": version}
    assert version == 2


async def test_method_request_respond_checks(hub: Emulator, tmp_path: Path) -> None:
    device = hub.add_device(new_id("respond"))
    checked: list[str] = []
    all_checked = anyio.Event()

    async def serve(client: aioiothub.IoTHubDeviceClient) -> None:
        async for request in client.method_requests():
            for bad_payload in ({1, 2}, object(), math.nan):
                with pytest.raises(TypeError, match="payload"):
                    await request.respond(200, bad_payload)
            with pytest.raises(TypeError, match="status"):
                await request.respond("200", {})  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="payload"):
                await request.respond(200, "x" * (128 * 1024))
            await request.respond(200, {"answered": "once"})
            with pytest.raises(RuntimeError, match="already answered"):
                await request.respond(500, {"answered": "twice"})
            checked.append(request.name)
            all_checked.set()

    async with device_client(hub, device, TCP_SAS, tmp_path) as client, anyio.create_task_group() as tasks:
        tasks.start_soon(serve, client)
        await wait_subscribed(hub, METHODS_SUBSCRIPTION, device.device_id)
        result = await hub.invoke_method(device.device_id, "check", {"n": 1}, timeout=STEP)
        with anyio.fail_after(STEP):
            await all_checked.wait()
        tasks.cancel_scope.cancel()
    assert (result.status, result.payload) == (200, {"answered": "once"})
    assert checked == ["check"]


# --------------------------------------------------------------------------------- what the hub is told


async def test_model_id_and_product_info_reach_the_hub(hub: Emulator, tmp_path: Path) -> None:
    plain = hub.add_device(new_id("plain"))
    announced = hub.add_device(new_id("pnp"))
    model_id = "dtmi:com:example:Thermostat;1"
    async with device_client(hub, plain, TCP_SAS, tmp_path):
        pass
    async with device_client(
        hub, announced, TCP_SAS, tmp_path, model_id=model_id, product_info="my-app/1.0 (x&y)"
    ):
        pass
    assert plain.model_id is None
    assert plain.product_info == f"aioiothub/{aioiothub.__version__}"
    assert announced.model_id == model_id
    assert announced.product_info == f"aioiothub/{aioiothub.__version__} my-app/1.0 (x&y)"


async def test_module_model_id_reaches_the_hub(hub: Emulator, tmp_path: Path) -> None:
    device = hub.add_device(new_id("pnp-edge"))
    module = hub.add_module(device.device_id, new_id("module"))
    async with module_client(hub, module, TCP_SAS, tmp_path, model_id="dtmi:com:example:Edge;2"):
        pass
    assert module.model_id == "dtmi:com:example:Edge;2"
    assert module.product_info == f"aioiothub/{aioiothub.__version__}"
