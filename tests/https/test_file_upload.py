"""File upload against the emulator over real sockets: the hub's endpoints and the embedded blob store."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest

import aioiothub
from aioiothub.emulator import Emulator
from tests.https.https_helpers import STEP, device

pytestmark = pytest.mark.anyio

CHUNK = 64 * 1024


def pattern(size: int) -> bytes:
    """``size`` bytes that differ from block to block, so a misplaced block shows."""
    return b"".join(index.to_bytes(4, "big") for index in range((size + 3) // 4))[:size]


async def test_small_bytes_go_in_one_put_and_are_notified(hub: Emulator) -> None:
    identity = hub.add_device("dev1")
    await device(hub, identity).upload_file("notes/today.txt", b"hello blob", content_type="text/plain")

    (record,) = hub.uploads("dev1")
    assert record.blob_name == "dev1/notes/today.txt"
    assert record.is_success
    assert record.status_code == 201
    assert record.blob_url == f"https://localhost:{hub.blob_port}/fileuploads/dev1/notes/today.txt"
    assert await hub.upload_content(record) == b"hello blob"
    assert hub.blob_store is not None
    blob = hub.blob_store.blob("fileuploads", "dev1/notes/today.txt")
    assert blob is not None
    assert blob.content_type == "text/plain"


async def test_large_bytes_go_in_blocks_with_progress(hub: Emulator) -> None:
    identity = hub.add_device("dev1")
    data = pattern(20 * CHUNK + 123)
    seen: list[tuple[int, int | None]] = []

    await device(hub, identity).upload_file(
        "big.bin", data, chunk_size=CHUNK, concurrency=3, progress=lambda done, total: seen.append((done, total))
    )

    (record,) = hub.uploads("dev1")
    assert await hub.upload_content(record) == data
    assert len(seen) == 21
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert seen[-1] == (len(data), len(data))


async def test_path_file_object_and_async_iterable_sources(hub: Emulator, tmp_path: Path) -> None:
    identity = hub.add_device("dev1")
    client = device(hub, identity)
    data = pattern(5 * CHUNK + 7)
    path = tmp_path / "data.bin"
    path.write_bytes(data)

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 1000):
            yield data[start : start + 1000]

    await client.upload_file("from-path", path, chunk_size=CHUNK)
    await client.upload_file("from-str-path", str(path), chunk_size=CHUNK)
    with path.open("rb") as file:
        await client.upload_file("from-file", file, chunk_size=CHUNK)
    await client.upload_file("from-bytesio", io.BytesIO(data), chunk_size=CHUNK)
    await client.upload_file("from-iterable", pieces(), chunk_size=CHUNK)
    await client.upload_file("empty", b"")

    records = {record.blob_name: record for record in hub.uploads("dev1")}
    for name in ("from-path", "from-str-path", "from-file", "from-bytesio", "from-iterable"):
        assert await hub.upload_content(records[f"dev1/{name}"]) == data, name
    assert await hub.upload_content(records["dev1/empty"]) == b""


async def test_memory_stays_within_chunks_times_concurrency(hub: Emulator) -> None:
    identity = hub.add_device("dev1")
    produced = 0
    uploaded = 0
    most_held = 0

    async def source() -> AsyncIterator[bytes]:
        nonlocal produced, most_held
        for _ in range(40):
            produced += CHUNK
            most_held = max(most_held, produced - uploaded)
            yield bytes(CHUNK)

    def progress(done: int, total: int | None) -> None:
        nonlocal uploaded
        uploaded = done

    await device(hub, identity).upload_file("stream", source(), chunk_size=CHUNK, concurrency=2, progress=progress)

    assert uploaded == 40 * CHUNK
    # Read but not yet stored: at most the blocks in flight plus the one being read.
    assert most_held <= CHUNK * (2 + 1)


async def test_x509_device_uploads(hub: Emulator, tmp_path: Path) -> None:
    identity = hub.add_device("cert-dev", authentication="x509_ca")
    await device(hub, identity, tmp_path).upload_file("x.txt", b"signed by certificate")

    (record,) = hub.uploads("cert-dev")
    assert await hub.upload_content(record) == b"signed by certificate"


async def test_storage_5xx_mid_upload_is_retried(hub: Emulator) -> None:
    identity = hub.add_device("dev1")
    data = pattern(6 * CHUNK)
    assert hub.blob_store is not None
    failed = 0

    def fail_once(done: int, total: int | None) -> None:
        nonlocal failed
        if failed == 0:  # after the first block is stored, the next two requests fail
            failed = 1
            assert hub.blob_store is not None
            hub.blob_store.fail_requests(2, status=503)

    await device(hub, identity).upload_file("retried.bin", data, chunk_size=CHUNK, concurrency=1, progress=fail_once)

    (record,) = hub.uploads("dev1")
    assert record.is_success
    assert await hub.upload_content(record) == data


async def test_storage_that_keeps_failing_is_notified_as_failed(hub: Emulator) -> None:
    identity = hub.add_device("dev1")
    assert hub.blob_store is not None
    hub.blob_store.fail_requests(10, status=500)

    with pytest.raises(aioiothub.ServiceError) as caught:
        await device(hub, identity).upload_file("doomed.bin", b"x" * 10)

    assert caught.value.status == 500
    (record,) = hub.uploads("dev1")
    assert not record.is_success
    assert record.status_code == 500
    with pytest.raises(LookupError):
        await hub.upload_content(record)


async def test_sas_refused_by_storage_is_403_not_retried(hub: Emulator) -> None:
    identity = hub.add_device("dev1")
    store = hub.blob_store
    assert store is not None

    def rotate_key(done: int, total: int | None) -> None:
        store.account_key = "b3RoZXIga2V5"  # the SAS the device holds no longer matches

    with pytest.raises(aioiothub.ServiceError) as caught:
        await device(hub, identity).upload_file(
            "refused.bin", pattern(3 * CHUNK), chunk_size=CHUNK, concurrency=1, progress=rotate_key
        )

    assert caught.value.status == 403
    assert "AuthenticationFailed" in str(caught.value)
    (record,) = hub.uploads("dev1")
    assert not record.is_success
    assert record.status_code == 403


async def test_tampered_or_read_only_sas_is_refused(hub: Emulator) -> None:
    identity = hub.add_device("dev1")
    info = await device(hub, identity).get_storage_info_for_blob("manual.bin")
    async with httpx.AsyncClient(verify=hub.client_ssl_context()) as http:
        headers = {"x-ms-blob-type": "BlockBlob", "x-ms-version": "2021-08-06"}
        tampered = info.sas_url.replace("sp=rcw", "sp=rcwd")
        refused = await http.put(tampered, content=b"x", headers=headers)
        accepted = await http.put(info.sas_url, content=b"x", headers=headers)
        unsigned = await http.put(info.sas_url.split("?")[0], content=b"x", headers=headers)

    assert refused.status_code == 403
    assert refused.headers["x-ms-error-code"] == "AuthenticationFailed"
    assert accepted.status_code == 201
    assert unsigned.status_code == 403


async def test_cancelled_upload_is_notified_as_failed(hub: Emulator) -> None:
    identity = hub.add_device("dev1")
    first_block_stored = anyio.Event()
    never = anyio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield bytes(CHUNK)
        yield bytes(CHUNK)
        await never.wait()
        yield b"unreachable"

    def progress(done: int, total: int | None) -> None:
        first_block_stored.set()

    async with anyio.create_task_group() as tasks:
        client = device(hub, identity)
        # One block at a time: the cancellation lands on a connection already set up. (httpcore 1.0.9
        # leaves the socket of a connection cancelled in mid TLS handshake for the garbage collector.)
        tasks.start_soon(
            lambda: client.upload_file("stalled", stalls(), chunk_size=CHUNK, concurrency=1, progress=progress)
        )
        with anyio.fail_after(STEP):
            await first_block_stored.wait()
        tasks.cancel_scope.cancel()

    (record,) = hub.uploads("dev1")
    assert not record.is_success
    assert record.status_description == "the upload was cancelled"


async def test_low_level_pair_for_own_storage_clients(hub: Emulator) -> None:
    identity = hub.add_device("dev1")
    client = device(hub, identity)
    info = await client.get_storage_info_for_blob("own.bin")
    assert info.blob_name == "dev1/own.bin"
    assert info.container_name == "fileuploads"
    assert info.sas_token.startswith("?")
    assert "redacted" in repr(info)
    assert info.sas_token not in repr(info)
    async with httpx.AsyncClient(verify=hub.client_ssl_context()) as http:
        put = await http.put(
            info.sas_url, content=b"mine", headers={"x-ms-blob-type": "BlockBlob", "x-ms-version": "2021-08-06"}
        )
        got = await http.get(info.sas_url, headers={"x-ms-range": "bytes=1-2"})
    assert put.status_code == 201
    assert got.status_code == 206
    assert got.content == b"in"

    await client.notify_blob_upload_status(info.correlation_id, True, 201, "done")

    (record,) = hub.uploads("dev1")
    assert (record.correlation_id, record.status_description) == (info.correlation_id, "done")
    with pytest.raises(aioiothub.ServiceError) as caught:  # a correlation id is good for one notification
        await client.notify_blob_upload_status(info.correlation_id, True, 201, "again")
    assert caught.value.status == 400


async def test_hub_refuses_bad_credentials_with_401(hub: Emulator) -> None:
    hub.add_device("dev1")
    other = hub.add_device("dev2")
    assert other.primary_key is not None
    impostor = aioiothub.IoTHubDeviceClient(
        hostname=hub.hostname, device_id="dev1", shared_access_key=other.primary_key, port=hub.websocket_port,
        websockets=True, ssl_context=hub.client_ssl_context(),
    )
    with pytest.raises(aioiothub.ServiceError) as caught:
        await impostor.upload_file("x", b"x")
    assert caught.value.status == 401
    assert hub.uploads() == []


async def test_bad_arguments_send_nothing(hub: Emulator, tmp_path: Path) -> None:
    identity = hub.add_device("dev1")
    client = device(hub, identity)
    with pytest.raises(TypeError, match="source"):
        await client.upload_file("x", 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="blob_name"):
        await client.upload_file("", b"x")
    with pytest.raises(FileNotFoundError):
        await client.upload_file("x", tmp_path / "missing.bin")
    with pytest.raises(ValueError, match="chunk_size"):
        await client.upload_file("x", b"x", chunk_size=0)
    # Nothing was asked of the hub: ten more uploads still fit the per-device limit.
    for index in range(10):
        await client.get_storage_info_for_blob(f"fits-{index}")
    with pytest.raises(aioiothub.ThrottledError):
        await client.get_storage_info_for_blob("one-too-many")


async def test_unreachable_hub_is_connect_error() -> None:
    async with Emulator() as stopped:
        identity = stopped.add_device("dev1")
        options = {"port": stopped.websocket_port, "websockets": True, "ssl_context": stopped.client_ssl_context()}
    client = aioiothub.IoTHubDeviceClient.from_connection_string(identity.connection_string, **options)
    with pytest.raises(aioiothub.ConnectError):
        await client.upload_file("x", b"x")
