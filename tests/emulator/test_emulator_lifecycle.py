"""The emulator's lifetime: ports, CA file, shutdown, and nothing left running afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import pytest

from aioiothub.emulator import Emulator
from aioiothub.emulator.certs import CertificateAuthority, certificate_common_name
from tests.emulator.emulator_helpers import STEP, mqtt_client, raw_client

pytestmark = pytest.mark.anyio


async def test_ports_ca_file_and_ca_pem() -> None:
    emulator = Emulator(hostname="hub.test")
    with pytest.raises(RuntimeError, match="port"):
        _ = emulator.port
    async with emulator as hub:
        assert hub.port > 0
        assert hub.websocket_port is not None
        assert hub.websocket_port not in (0, hub.port)
        assert hub.hostname == "hub.test"
        ca_file = hub.ca_file
        assert ca_file.read_bytes() == hub.ca_pem
        assert certificate_common_name(hub.ca_pem) == "aioiothub emulator CA"
    assert not ca_file.exists()
    with pytest.raises(RuntimeError):
        _ = emulator.ca_file


async def test_websocket_listener_can_be_disabled() -> None:
    async with Emulator(websocket_port=None) as hub:
        assert hub.websocket_port is None


async def test_custom_hostname_is_in_the_server_certificate_and_the_username() -> None:
    async with Emulator(hostname="myhub.azure-devices.net", websocket_port=None) as hub:
        device = hub.add_device("dev1")
        assert device.connection_string.startswith("HostName=myhub.azure-devices.net;")
        async with mqtt_client(hub, device):
            await hub.wait_connected("dev1", timeout=STEP)


async def test_exit_closes_every_connection_and_leaves_no_task_behind() -> None:
    tasks_before = len(asyncio.all_tasks())
    async with contextlib.AsyncExitStack() as clients:
        async with Emulator() as hub:
            devices = [hub.add_device(f"dev{index}") for index in range(2)]
            first = await clients.enter_async_context(raw_client(hub, devices[0]))
            second = await clients.enter_async_context(raw_client(hub, devices[1]))
            assert len(asyncio.all_tasks()) > tasks_before
        assert await first.expect_closed() == []
        assert await second.expect_closed() == []
        assert len(asyncio.all_tasks()) == tasks_before


async def test_the_callers_exception_is_not_wrapped() -> None:
    with pytest.raises(KeyError, match="mine"):
        async with Emulator(websocket_port=None):
            raise KeyError("mine")


async def test_an_emulator_can_be_restarted_and_keeps_its_registry() -> None:
    hub = Emulator(websocket_port=None)
    device = hub.add_device("dev1")
    async with hub:
        with pytest.raises(RuntimeError, match="already running"):
            await hub.__aenter__()
    async with hub, mqtt_client(hub, device):
        await hub.wait_connected("dev1", timeout=STEP)


async def test_a_busy_port_raises_oserror_and_cleans_up() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        hub = Emulator(port=busy.getsockname()[1], websocket_port=None)
        with pytest.raises(OSError, match="in use"):
            await hub.__aenter__()
        with pytest.raises(RuntimeError):
            _ = hub.port


async def test_given_certificate_and_key_files(tmp_path: Path) -> None:
    authority = CertificateAuthority.generate("outside CA")
    cert_pem, key_pem = authority.issue_server_certificate(["localhost"])
    cert_file = tmp_path / "server.pem"
    key_file = tmp_path / "server.key"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(key_pem)
    async with Emulator(certfile=cert_file, keyfile=key_file, websocket_port=None) as hub:
        assert hub.ca_pem == cert_pem
        device = hub.add_device("dev1")
        async with mqtt_client(hub, device):
            await hub.wait_connected("dev1", timeout=STEP)
        x509_device = hub.add_device("dev2", authentication="x509_ca")
        context = hub.client_ssl_context()
        device_cert, device_key = tmp_path / "d.pem", tmp_path / "d.key"
        assert x509_device.certificate_pem is not None
        assert x509_device.private_key_pem is not None
        device_cert.write_bytes(x509_device.certificate_pem)
        device_key.write_bytes(x509_device.private_key_pem)
        context.load_cert_chain(device_cert, device_key)
        async with mqtt_client(hub, x509_device, tls_context=context):
            await hub.wait_connected("dev2", timeout=STEP)


def test_constructor_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="port"):
        Emulator(port=70000)
    with pytest.raises(ValueError, match="websocket_port"):
        Emulator(websocket_port=-1)
    with pytest.raises(ValueError, match="certfile"):
        Emulator(certfile="cert.pem")
