"""``python -m aioiothub.emulator``: prints what a device needs, serves it, stops cleanly on a signal."""

from __future__ import annotations

import re
import signal
import sqlite3
import time
from pathlib import Path

import aiomqtt
import anyio
import pytest

from aioiothub.emulator.__main__ import main
from aioiothub.emulator.certs import client_ssl_context
from aioiothub.protocol.connect import username
from aioiothub.protocol.connection_string import ConnectionString
from aioiothub.protocol.sas import device_resource_uri, generate_sas_token
from tests.emulator.cli_helpers import running_cli, stop_cli


@pytest.mark.anyio
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
async def test_cli_serves_the_printed_device_and_stops_cleanly(stop_signal: signal.Signals) -> None:
    arguments = ("--port", "0", "--websocket-port", "0", "--device", "d1", "--module", "d1/m1")
    async with running_cli(*arguments) as (process, banner):
        port = int(re.search(r"^  port:\s+(\d+)", banner, re.MULTILINE)[1])  # type: ignore[index]
        assert re.search(r"^  websocket port:\s+\d+", banner, re.MULTILINE)
        ca_file = anyio.Path(re.search(r"^  CA file:\s+(\S+)", banner, re.MULTILINE)[1])  # type: ignore[index]
        ca_pem = await ca_file.read_bytes()
        connection_string = ConnectionString.parse(
            re.search(r"^  device d1: (\S+)", banner, re.MULTILINE)[1]  # type: ignore[index]
        )
        assert re.search(r"^  module d1/m1: HostName=localhost;DeviceId=d1;ModuleId=m1;", banner, re.MULTILINE)
        assert connection_string.shared_access_key is not None
        token = generate_sas_token(
            device_resource_uri(connection_string.host_name, "d1"),
            connection_string.shared_access_key,
            int(time.time()) + 600,
        )
        async with aiomqtt.Client(
            connection_string.host_name,
            port,
            identifier="d1",
            username=username(connection_string.host_name, "d1"),
            password=token,
            tls_context=client_ssl_context(ca_pem),
            protocol=aiomqtt.ProtocolVersion.V311,
        ) as client:
            await client.publish("devices/d1/messages/events/", b"from the CLI test", qos=1)
        assert await stop_cli(process, stop_signal) == 0
        assert not await ca_file.exists()


def test_bad_module_argument_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--port", "0", "--no-websocket", "--module", "just-a-device"])
    assert caught.value.code == 2
    assert "DEVICE/MODULE" in capsys.readouterr().err


@pytest.mark.anyio
async def test_cli_routes_the_sources_named_and_keeps_the_events_in_the_state_dir(tmp_path: Path) -> None:
    arguments = (
        "--port", "0", "--no-websocket", "--amqp-port", "0", "--device", "d1", "--state-dir", str(tmp_path),
        "--route-source", "DeviceLifecycleEvents", "--route-source", "DeviceMessages",
    )
    async with running_cli(*arguments) as (process, banner):
        assert re.search(r"^  routed there:\s+DeviceMessages, DeviceLifecycleEvents \(--route-source\)$", banner,
                         re.MULTILINE), banner
        port = int(re.search(r"^  port:\s+(\d+)", banner, re.MULTILINE)[1])  # type: ignore[index]
        connection_string = ConnectionString.parse(
            re.search(r"^  device d1: (\S+)", banner, re.MULTILINE)[1]  # type: ignore[index]
        )
        assert connection_string.shared_access_key is not None
        token = generate_sas_token(
            device_resource_uri("localhost", "d1"), connection_string.shared_access_key, int(time.time()) + 600
        )
        async with aiomqtt.Client(
            "localhost", port, identifier="d1", username=username("localhost", "d1"), password=token,
            tls_context=client_ssl_context((tmp_path / "ca.pem").read_bytes()),
            protocol=aiomqtt.ProtocolVersion.V311,
        ) as client:
            await client.publish("devices/d1/messages/events/", b"kept", qos=1)
        assert await stop_cli(process, signal.SIGTERM) == 0
    # A clean stop wrote the last batch: the lifecycle event of d1's registration, then its message.
    with sqlite3.connect(tmp_path / "events.sqlite3") as db:
        stored = db.execute("SELECT source, body FROM events ORDER BY key").fetchall()
    assert [source for source, _ in stored] == ["deviceLifecycleEvents", "Telemetry"]
    assert stored[1][1] == b"kept"


def test_an_unknown_route_source_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--port", "0", "--no-websocket", "--route-source", "Telemetry"])
    assert caught.value.code == 2
    assert "invalid choice: 'Telemetry'" in capsys.readouterr().err
