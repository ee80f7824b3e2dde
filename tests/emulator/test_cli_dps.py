"""``python -m aioiothub.emulator --enrollment-group NAME``: the printed id scope and key provision a device."""

from __future__ import annotations

import signal

import anyio
import pytest

import aioiothub
from aioiothub.emulator.__main__ import main
from aioiothub.emulator.certs import client_ssl_context
from tests.emulator.cli_helpers import banner_field, running_cli, stop_cli


@pytest.mark.anyio
async def test_cli_enrollment_group_provisions_a_device() -> None:
    arguments = ("--port", "0", "--no-websocket", "--id-scope", "0neCLI00001", "--enrollment-group", "factory")
    async with running_cli(*arguments) as (process, banner):
        port = int(banner_field(r"^  port:\s+(\d+)", banner))
        ca_pem = await anyio.Path(banner_field(r"^  CA file:\s+(\S+)", banner)).read_bytes()
        id_scope = banner_field(r"^  DPS id scope:\s+(\S+) \(provisioning host localhost, port \d+\)", banner)
        key = banner_field(r"^  enrollment group factory: key (\S+)", banner)
        assert id_scope == "0neCLI00001"
        provisioning = aioiothub.ProvisioningClient.from_enrollment_group_key(
            provisioning_host="localhost", id_scope=id_scope, registration_id="cli-sensor", group_key=key,
            port=port, ssl_context=client_ssl_context(ca_pem),
        )
        async with await aioiothub.IoTHubDeviceClient.from_provisioning(provisioning) as client:
            await client.send_message(b"provisioned from the CLI")
        assert await stop_cli(process, signal.SIGINT) == 0


def test_bad_id_scope_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--port", "0", "--no-websocket", "--id-scope", "0ne/bad"])
    assert caught.value.code == 2
    assert "id_scope" in capsys.readouterr().err
