"""Peer tests: the official provisioning SDKs (Python and Node.js) against the emulator's DPS.

Each scenario registers with an unmodified SDK on port 8883 (neither SDK has a port option), then
connects that SDK's own device client to the assigned hub and sends telemetry; it checks what the
SDK reported and what the emulator recorded. Where they disagree, protocol.md and the SDKs decide.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from aioiothub.emulator import Emulator
from aioiothub.emulator.hub.dps import RegistrationRecord
from aioiothub.protocol.sas import derive_device_key
from tests.peer.npm_packages import node_executable
from tests.peer.test_official_sdk import SDK_PORT, SdkPeer

pytestmark = [pytest.mark.peer, pytest.mark.anyio]

HERE = Path(__file__).resolve().parent
PYTHON_DRIVER = HERE / "sdk_provisioning.py"
NODE_DRIVER = HERE / "node_provisioning.js"
MODEL_ID = "dtmi:com:example:Thermostat;1"


@pytest.fixture
async def hub() -> AsyncIterator[Emulator]:
    """The emulator, hub and DPS, on the SDKs' fixed port."""
    async with Emulator(hostname="localhost", host="127.0.0.1", port=SDK_PORT, websocket_port=None) as emulator:
        yield emulator


@asynccontextmanager
async def driver(command: list[str], log_path: Path, env: dict[str, str] | None = None) -> AsyncIterator[SdkPeer]:
    """Start a driver process, wait for its greeting, and shut it down (checked) at the end."""
    with log_path.open("wb") as log:
        process = await anyio.open_process(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env)
    peer = SdkPeer(process, log_path)
    try:
        await peer.wait_ready()
        yield peer
        assert await peer.shutdown() == {"unexpected_disconnects": 0, "background_errors": []}
    except Exception:
        print(f"--- driver log {log_path} (tail) ---\n{peer.log_tail()}")
        raise
    finally:
        await peer.stop()


def python_driver(peer_python: Path, tmp_path: Path) -> Any:
    return driver([str(peer_python), str(PYTHON_DRIVER)], tmp_path / "python-provisioning.log")


def record_of(hub: Emulator, registration_id: str) -> RegistrationRecord:
    (record,) = [record for record in hub.dps.registrations() if record.registration_id == registration_id]
    return record


def dps_arguments(hub: Emulator, registration_id: str) -> dict[str, Any]:
    return {
        "provisioning_host": hub.hostname,
        "id_scope": hub.dps.id_scope,
        "registration_id": registration_id,
        "ca_pem": hub.ca_pem.decode("ascii"),
    }


async def send_through_the_hub(peer: SdkPeer, hub: Emulator, result: dict[str, Any], body: str) -> None:
    connected = await peer.call(
        "connect_hub", hostname=result["assigned_hub"], device_id=result["device_id"], ca_pem=hub.ca_pem.decode()
    )
    assert connected == {"connected": True}
    await peer.call("send_message", body=body)
    records = await hub.wait_for_telemetry(1, device_id=result["device_id"], timeout=10)
    assert [record.body for record in records] == [body.encode()]


# --- Python azure-iot-device ------------------------------------------------------------------------


async def test_python_sdk_individual_symmetric_key(hub: Emulator, peer_python: Path, tmp_path: Path) -> None:
    enrollment = hub.dps.add_enrollment("py-individual")
    async with python_driver(peer_python, tmp_path) as peer:
        result = await peer.call(
            "register",
            symmetric_key=enrollment.primary_key,
            payload={"modelId": MODEL_ID},
            **dps_arguments(hub, "py-individual"),
        )
        assert result["status"] == "assigned"
        assert (result["device_id"], result["assigned_hub"], result["sub_status"]) == (
            "py-individual", "localhost", "initialAssignment")
        record = record_of(hub, "py-individual")
        assert record.operation_id == result["operation_id"]
        assert record.etag == result["etag"]
        assert record.request_payload == {"modelId": MODEL_ID}
        assert record.client_version is not None
        assert record.client_version.startswith("azure-iot-device-provisioning-py/")
        assert record.polls >= 1
        await send_through_the_hub(peer, hub, result, "individual")
    assert hub.identity("py-individual").primary_key == enrollment.primary_key


async def test_python_sdk_group_key_through_throttling(hub: Emulator, peer_python: Path, tmp_path: Path) -> None:
    group = hub.dps.add_enrollment_group("py-fleet", initial_twin={"properties": {"desired": {"interval": 30}}})
    hub.dps.fail_requests(1, 429, retry_after=1)
    async with python_driver(peer_python, tmp_path) as peer:
        result = await peer.call("register", group_key=group.primary_key, **dps_arguments(hub, "py-member"))
        assert (result["status"], result["device_id"]) == ("assigned", "py-member")
        assert record_of(hub, "py-member").enrollment_group == "py-fleet"
        await send_through_the_hub(peer, hub, result, "group member")
    assert group.primary_key is not None
    assert hub.identity("py-member").primary_key == derive_device_key(group.primary_key, "py-member")
    assert hub.twin("py-member")["desired"]["interval"] == 30


async def test_python_sdk_x509_individual(hub: Emulator, peer_python: Path, tmp_path: Path) -> None:
    enrollment = hub.dps.add_enrollment("py-x509", attestation="x509")
    assert enrollment.certificate_pem is not None
    assert enrollment.private_key_pem is not None
    cert_file, key_file = tmp_path / "py-x509.cert.pem", tmp_path / "py-x509.key.pem"
    cert_file.write_bytes(enrollment.certificate_pem)
    key_file.write_bytes(enrollment.private_key_pem)
    async with python_driver(peer_python, tmp_path) as peer:
        result = await peer.call(
            "register", cert_file=str(cert_file), key_file=str(key_file), **dps_arguments(hub, "py-x509")
        )
        assert (result["status"], result["device_id"]) == ("assigned", "py-x509")
        assert record_of(hub, "py-x509").attestation == "x509"
        await send_through_the_hub(peer, hub, result, "x509")
    assert hub.identity("py-x509").authentication == "x509"


async def test_python_sdk_sees_a_disabled_enrollment_fail(hub: Emulator, peer_python: Path, tmp_path: Path) -> None:
    enrollment = hub.dps.add_enrollment("py-off", enabled=False)
    async with python_driver(peer_python, tmp_path) as peer:
        result = await peer.call(
            "register", symmetric_key=enrollment.primary_key, allow_error=True, **dps_arguments(hub, "py-off")
        )
    assert "ServiceError" in result["error"]
    assert "disabled" in result["error"]
    assert record_of(hub, "py-off").status == "disabled"
    assert hub.identities() == []


# --- Node.js azure-iot-provisioning-device ----------------------------------------------------------


async def test_node_sdk_group_key_then_device_client(hub: Emulator, node_sdk: Path, tmp_path: Path) -> None:
    group = hub.dps.add_enrollment_group("node-fleet")
    environment = {**os.environ, "NODE_PATH": str(node_sdk), "NODE_EXTRA_CA_CERTS": str(hub.ca_file)}
    command = [node_executable(), str(NODE_DRIVER)]
    async with driver(command, tmp_path / "node-provisioning.log", environment) as peer:
        versions = peer.hello["sdk_version"]
        assert versions["azure-iot-provisioning-device-mqtt"].startswith("1.")
        result = await peer.call(
            "register_group",
            group_key=group.primary_key,
            payload={"modelId": MODEL_ID},
            **{key: value for key, value in dps_arguments(hub, "node-member").items() if key != "ca_pem"},
        )
        assert (result["status"], result["device_id"], result["assigned_hub"]) == (
            "assigned", "node-member", "localhost")
        record = record_of(hub, "node-member")
        assert (record.enrollment_group, record.request_payload) == ("node-fleet", {"modelId": MODEL_ID})
        assert record.client_version is not None
        assert record.client_version.startswith("azure-iot-provisioning-device/")
        assert record.etag == result["etag"]
        await send_through_the_hub(peer, hub, result, "from node")
    assert group.primary_key is not None
    assert hub.identity("node-member").primary_key == derive_device_key(group.primary_key, "node-member")
