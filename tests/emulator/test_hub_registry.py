"""The hub's registry, twins, queues and fault settings, without any network."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import anyio
import pytest

from aioiothub.emulator import DeviceIdentity, Hub, ModuleIdentity
from aioiothub.emulator.certs import certificate_common_name, certificate_thumbprints
from aioiothub.exceptions import ServiceError
from aioiothub.protocol.connection_string import ConnectionString


def test_add_device_generates_two_distinct_keys_and_a_connection_string() -> None:
    hub = Hub(hostname="myhub.example")
    device = hub.add_device("dev1")
    assert isinstance(device, DeviceIdentity)
    assert device.module_id is None
    assert device.primary_key
    assert device.secondary_key
    assert device.primary_key != device.secondary_key
    assert len(base64.b64decode(device.primary_key)) == 32
    parsed = ConnectionString.parse(device.connection_string)
    assert (parsed.host_name, parsed.device_id, parsed.shared_access_key) == (
        "myhub.example",
        "dev1",
        device.primary_key,
    )
    assert device.connection_string == f"HostName=myhub.example;DeviceId=dev1;SharedAccessKey={device.primary_key}"


def test_keys_never_appear_in_the_repr() -> None:
    device = Hub().add_device("dev1")
    assert device.primary_key is not None
    assert device.primary_key not in repr(device)
    assert device.secondary_key is not None
    assert device.secondary_key not in repr(device)


def test_add_module_has_module_id_in_its_connection_string() -> None:
    hub = Hub()
    hub.add_device("dev1")
    module = hub.add_module("dev1", "mod1")
    assert isinstance(module, ModuleIdentity)
    assert module.module_id == "mod1"
    assert ";ModuleId=mod1;SharedAccessKey=" in module.connection_string
    assert hub.identity("dev1", "mod1") is module
    assert [identity.module_id for identity in hub.identities()] == [None, "mod1"]


def test_label_is_the_client_id() -> None:
    hub = Hub()
    device = hub.add_device("dev1")
    module = hub.add_module("dev1", "mod1")
    assert (device.label, module.label) == ("dev1", "dev1/mod1")
    with pytest.raises(ValueError, match="'dev1/mod2' is not registered"):
        hub.identity("dev1", "mod2")


def test_given_keys_are_used() -> None:
    key = base64.b64encode(b"k" * 32).decode()
    device = Hub().add_device("dev1", primary_key=key)
    assert device.primary_key == key


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda hub: hub.add_device("dev1"), "device_id"),
        (lambda hub: hub.add_device("bad/id"), "device_id"),
        (lambda hub: hub.add_device(""), "device_id"),
        (lambda hub: hub.add_module("nope", "mod1"), "device_id"),
        (lambda hub: hub.add_module("dev1", "a b"), "module_id"),
        (lambda hub: hub.add_device("dev9", primary_key="not base64!"), "primary_key"),
        (lambda hub: hub.add_device("dev9", authentication="x509", primary_key="a2V5"), "primary_key"),
        (lambda hub: hub.add_device("dev9", authentication="password"), "authentication"),
    ],
)
def test_invalid_registrations_name_the_argument(call: object, argument: str) -> None:
    hub = Hub()
    hub.add_device("dev1")
    with pytest.raises(ValueError, match=argument):
        call(hub)  # type: ignore[operator]


def test_x509_device_gets_a_self_signed_certificate_with_registered_thumbprints(tmp_path: Path) -> None:
    device = Hub().add_device("dev2", authentication="x509")
    assert device.connection_string.endswith(";x509=true")
    assert device.primary_key is None
    assert device.certificate_pem is not None
    assert certificate_common_name(device.certificate_pem) == "dev2"
    assert set(certificate_thumbprints(device.certificate_pem)) == device.thumbprints
    cert_path, key_path = device.write_certificate_files(tmp_path)
    assert cert_path.read_bytes() == device.certificate_pem
    assert key_path.read_bytes() == device.private_key_pem
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_x509_ca_device_certificate_is_issued_by_the_hub_ca() -> None:
    hub = Hub()
    device = hub.add_device("dev3", authentication="x509_ca")
    assert device.certificate_pem is not None
    assert certificate_common_name(device.certificate_pem) == "dev3"
    assert device.certificate_pem != hub.certificate_authority.certificate_pem


def test_sas_identity_has_no_certificate_to_write(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no certificate"):
        Hub().add_device("dev1").write_certificate_files(tmp_path)


def test_set_device_status() -> None:
    hub = Hub()
    hub.add_device("dev1")
    hub.set_device_status("dev1", enabled=False)
    assert not hub.identity("dev1").enabled
    hub.set_device_status("dev1", enabled=True)
    assert hub.identity("dev1").enabled
    with pytest.raises(ValueError, match="device_id"):
        hub.set_device_status("nope", enabled=False)


def test_new_twin_has_version_one_in_both_sections_and_is_a_copy() -> None:
    hub = Hub()
    hub.add_device("dev1")
    twin = hub.twin("dev1")
    assert twin == {"desired": {"$version": 1}, "reported": {"$version": 1}}
    twin["desired"]["x"] = 1
    assert hub.twin("dev1")["desired"] == {"$version": 1}


@pytest.mark.anyio
async def test_update_desired_merges_and_bumps_the_version_offline() -> None:
    hub = Hub()
    hub.add_device("dev1")
    assert await hub.update_desired("dev1", {"a": 1, "b": {"c": 2}}) == 2
    assert await hub.update_desired("dev1", {"a": None, "b": {"d": 3}}) == 3
    assert hub.twin("dev1")["desired"] == {"b": {"c": 2, "d": 3}, "$version": 3}


@pytest.mark.anyio
async def test_update_desired_rejects_invalid_patches_and_leaves_the_twin_alone() -> None:
    hub = Hub()
    hub.add_device("dev1")
    with pytest.raises(ValueError, match=r"a\.b"):
        await hub.update_desired("dev1", {"a.b": 1})
    deep: dict[str, object] = {"leaf": 1}
    for _ in range(12):
        deep = {"n": deep}
    with pytest.raises(ValueError, match="deeper"):
        await hub.update_desired("dev1", deep)
    with pytest.raises(ValueError, match="patch"):
        await hub.update_desired("dev1", {f"k{i}": "x" * 4000 for i in range(10)})
    assert hub.twin("dev1")["desired"] == {"$version": 1}


@pytest.mark.anyio
async def test_module_twin_is_separate_from_the_device_twin() -> None:
    hub = Hub()
    hub.add_device("dev1")
    hub.add_module("dev1", "mod1")
    await hub.update_desired("dev1", {"m": True}, module_id="mod1")
    assert hub.twin("dev1", "mod1")["desired"] == {"m": True, "$version": 2}
    assert hub.twin("dev1")["desired"] == {"$version": 1}


@pytest.mark.anyio
async def test_c2d_queue_holds_fifty_messages_then_reports_queue_full() -> None:
    hub = Hub()
    hub.add_device("dev1")
    for index in range(50):
        await hub.send_c2d("dev1", f"m{index}")
    assert hub.c2d_queue_length("dev1") == 50
    with pytest.raises(ServiceError, match="queue full") as caught:
        await hub.send_c2d("dev1", b"one too many")
    assert caught.value.status == 403
    assert hub.c2d_queue_length("dev1") == 50


@pytest.mark.anyio
async def test_c2d_messages_expire_after_their_ttl() -> None:
    hub = Hub()
    hub.add_device("dev1")
    await hub.send_c2d("dev1", b"short", ttl=0.05)
    await hub.send_c2d("dev1", b"long", ttl=60)
    assert hub.c2d_queue_length("dev1") == 2
    # Time passing is the event under test here.
    await anyio.sleep(0.1)
    assert hub.c2d_queue_length("dev1") == 1


@pytest.mark.anyio
async def test_send_c2d_checks_its_arguments() -> None:
    hub = Hub()
    hub.add_device("dev1")
    with pytest.raises(ValueError, match="body"):
        await hub.send_c2d("dev1", b"x" * (64 * 1024 + 1))
    with pytest.raises(ValueError, match="ack"):
        await hub.send_c2d("dev1", b"x", ack="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl"):
        await hub.send_c2d("dev1", b"x", ttl=0)
    with pytest.raises(ValueError, match=r"properties\['\$\.mid'\]"):
        await hub.send_c2d("dev1", b"x", properties={"$.mid": "1"})
    with pytest.raises(ValueError, match="device_id"):
        await hub.send_c2d("nope", b"x")
    with pytest.raises(ValueError, match="module_id"):
        await hub.send_to_input("dev1", "nope", "input1", b"x")
    assert hub.c2d_queue_length("dev1") == 0


@pytest.mark.anyio
async def test_invoke_method_on_an_offline_device_is_404() -> None:
    hub = Hub()
    hub.add_device("dev1")
    result = await hub.invoke_method("dev1", "reboot", {"delay": 1}, timeout=1)
    assert result.status == 404


@pytest.mark.anyio
async def test_invoke_method_rejects_oversize_payloads_and_bad_names() -> None:
    hub = Hub()
    hub.add_device("dev1")
    with pytest.raises(ValueError, match="payload"):
        await hub.invoke_method("dev1", "big", "x" * (128 * 1024))
    with pytest.raises(TypeError, match="payload"):
        await hub.invoke_method("dev1", "odd", {1, 2})
    with pytest.raises(ValueError, match="timeout"):
        await hub.invoke_method("dev1", "m", timeout=0)


def test_fault_settings_are_validated() -> None:
    hub = Hub()
    with pytest.raises(ValueError, match="count"):
        hub.refuse_connects(-1)
    with pytest.raises(ValueError, match="return_code"):
        hub.refuse_connects(1, return_code=0)
    with pytest.raises(ValueError, match="status"):
        hub.fail_twin_operations(1, status=200)
    with pytest.raises(ValueError, match="seconds"):
        hub.delay_pubacks(-1)
    hub.delay_pubacks(0.25)
    assert hub.core.puback_delay == 0.25


@pytest.mark.anyio
async def test_wait_for_telemetry_and_wait_connected_time_out() -> None:
    hub = Hub()
    hub.add_device("dev1")
    with pytest.raises(TimeoutError):
        await hub.wait_for_telemetry(1, timeout=0.05)
    with pytest.raises(TimeoutError):
        await hub.wait_connected("dev1", timeout=0.05)
    assert not hub.is_connected("dev1")
    assert not hub.drop_connection("dev1")


def test_hub_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="hostname"):
        Hub(hostname="")
    with pytest.raises(ValueError, match="telemetry_limit"):
        Hub(telemetry_limit=0)
