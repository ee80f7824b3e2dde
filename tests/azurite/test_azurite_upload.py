"""File upload to Azurite: the hub signs SAS tokens for a real storage implementation, blocks and all."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

import aioiothub
from aioiothub.emulator import Emulator
from tests.azurite.conftest import Azurite

pytestmark = [pytest.mark.azurite, pytest.mark.anyio]

SIZE = 20 * 1024 * 1024


@pytest.fixture
async def hub(azurite: Azurite) -> AsyncIterator[Emulator]:
    """An emulator whose uploads go to Azurite (the container is created at start)."""
    async with Emulator(
        storage_connection_string=azurite.connection_string,
        storage_container="device-uploads",
        certificate_authority=azurite.certificate_authority,
    ) as emulator:
        yield emulator


async def test_20_mib_file_in_chunks_reads_back_identical(hub: Emulator, tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    identity = hub.add_device("dev1")
    client = aioiothub.IoTHubDeviceClient.from_connection_string(
        identity.connection_string, port=hub.websocket_port, websockets=True, ssl_context=hub.client_ssl_context()
    )
    reported: list[int] = []

    await client.upload_file("big.bin", path, progress=lambda done, total: reported.append(done))

    (record,) = hub.uploads("dev1")
    assert record.is_success
    assert record.blob_url.startswith("https://127.0.0.1:")
    assert record.blob_url.endswith("/devstoreaccount1/device-uploads/dev1/big.bin")
    assert len(reported) == 5  # 4 MiB blocks
    assert reported[-1] == SIZE
    assert await hub.upload_content(record) == data
    # The notification for back ends has the size from the storage account (a HEAD, not a download).
    loan = hub.core.file_notifications.take(2)
    assert loan is not None
    (notification,) = loan.items
    assert (notification.blob_name, notification.blob_size_in_bytes) == ("dev1/big.bin", SIZE)


async def test_small_file_in_one_put(hub: Emulator) -> None:
    identity = hub.add_device("dev1")
    client = aioiothub.IoTHubDeviceClient.from_connection_string(
        identity.connection_string, port=hub.websocket_port, websockets=True, ssl_context=hub.client_ssl_context()
    )
    await client.upload_file("small.json", b'{"ok": true}', content_type="application/json")

    (record,) = hub.uploads("dev1")
    assert await hub.upload_content(record) == b'{"ok": true}'


async def test_tampered_sas_is_refused_by_azurite(hub: Emulator) -> None:
    identity = hub.add_device("dev1")
    client = aioiothub.IoTHubDeviceClient.from_connection_string(
        identity.connection_string, port=hub.websocket_port, websockets=True, ssl_context=hub.client_ssl_context()
    )
    info = await client.get_storage_info_for_blob("x.bin")
    async with httpx.AsyncClient(verify=hub.client_ssl_context()) as http:
        response = await http.put(
            info.sas_url.replace("sp=rcw", "sp=rw"),
            content=b"x",
            headers={"x-ms-blob-type": "BlockBlob", "x-ms-version": "2021-08-06"},
        )
    assert response.status_code == 403
