"""The outbox file under bad input and faults: each gives a typed error, and what was committed stays."""

from __future__ import annotations

import os
import sqlite3
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

import aioiothub
from aioiothub._outbox.store import SCHEMA_VERSION

pytestmark = pytest.mark.anyio

TOPIC = "devices/d/messages/events/"


async def _put(path: Path, count: int, identity: str = "d") -> None:
    async with aioiothub.Outbox(path) as outbox:
        queue = await outbox.queue(identity)
        for number in range(count):
            await queue.put(TOPIC, b"%d" % number, False)
        await queue.release()


async def _pending(path: Path, identity: str = "d") -> list[bytes]:
    async with aioiothub.Outbox(path) as outbox:
        queue = await outbox.queue(identity)
        messages, _ = await queue.fetch(0, 1_000_000)
        await queue.release()
    return [message.payload for message in messages]


async def test_a_file_that_is_not_a_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"not an outbox at all\n" * 200)
    with pytest.raises(aioiothub.OutboxCorruptError, match="not an outbox"):
        await aioiothub.Outbox(path).open()
    assert path.read_bytes() == b"not an outbox at all\n" * 200


async def test_another_application_s_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE inventory (item TEXT)")
    before = path.read_bytes()
    with pytest.raises(aioiothub.OutboxCorruptError, match="another application"):
        await aioiothub.Outbox(path).open()
    assert path.read_bytes() == before


async def test_a_damaged_outbox_is_refused_without_touching_it(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    await _put(path, 10)
    damaged = bytearray(path.read_bytes())
    damaged[:16] = b"\xff" * 16  # the header
    path.write_bytes(bytes(damaged))
    with pytest.raises(aioiothub.OutboxCorruptError):
        await aioiothub.Outbox(path).open()
    assert path.read_bytes() == bytes(damaged)


async def test_a_file_from_a_newer_version_is_refused_and_kept_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    await _put(path, 5)
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(aioiothub.OutboxSchemaError) as raised:
        await aioiothub.Outbox(path).open()
    assert (raised.value.version, raised.value.supported) == (SCHEMA_VERSION + 1, SCHEMA_VERSION)
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    assert await _pending(path) == [b"%d" % number for number in range(5)]


async def test_an_empty_file_is_brought_to_the_current_schema_and_kept_across_opens(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    path.touch()
    await _put(path, 3)
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    await _put(path, 2)
    assert await _pending(path) == [b"0", b"1", b"2", b"0", b"1"]


async def test_a_read_only_path_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    await _put(path, 4)
    if os.geteuid() == 0:  # permissions do not stop root: a read-only mount does
        mount = tmp_path / "mount"
        mount.mkdir()
        await anyio.run_process(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)])
        try:
            (mount / "outbox.db").write_bytes(path.read_bytes())
            await anyio.run_process(["mount", "-o", "remount,ro", str(mount)])
            with pytest.raises(aioiothub.OutboxStorageError, match=r"read-only|cannot be opened"):
                await aioiothub.Outbox(mount / "outbox.db").open()
        finally:
            await anyio.run_process(["umount", str(mount)])
    else:
        os.chmod(path, 0o444)
        os.chmod(tmp_path, 0o555)
        try:
            with pytest.raises(aioiothub.OutboxStorageError, match=r"read-only|cannot be opened"):
                await aioiothub.Outbox(path).open()
        finally:
            os.chmod(tmp_path, 0o755)
            os.chmod(path, 0o644)
    assert await _pending(path) == [b"0", b"1", b"2", b"3"]


async def test_a_missing_directory_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(aioiothub.OutboxStorageError):
        await aioiothub.Outbox(tmp_path / "missing" / "outbox.db").open()


_FILL_UNTIL_FULL = textwrap.dedent(
    """
    import asyncio, resource, signal, sys
    import aioiothub

    async def main(path):
        async with aioiothub.Outbox(path) as outbox:
            queue = await outbox.queue("d")
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, resource.RLIM_INFINITY))
            stored = 0
            try:
                while True:
                    await queue.put("devices/d/messages/events/", b"%08d" % stored + b"x" * 2000, False)
                    stored += 1
            except aioiothub.OutboxStorageError as exc:
                print(stored, type(exc).__name__, exc, flush=True)
            resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            await queue.put("devices/d/messages/events/", b"%08d" % stored + b" once there is room", False)
            print("stored again", flush=True)
            await queue.release()

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_a_full_disk_fails_the_send_with_a_storage_error_and_keeps_what_was_committed(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with anyio.fail_after(120):
        result = await anyio.run_process([sys.executable, "-c", _FILL_UNTIL_FULL, str(path)])
    first, second = result.stdout.decode().splitlines()
    stored = int(first.split()[0])
    assert "OutboxStorageError" in first
    assert "what was committed before is kept" in first
    assert second == "stored again"
    assert stored > 50
    pending = await _pending(path)
    # Every message whose put returned, in order, then the one sent once there was room again.
    assert [payload[:8] for payload in pending] == [b"%08d" % number for number in range(stored + 1)]
    assert pending[-1].endswith(b"once there is room")


_HOLD = textwrap.dedent(
    """
    import asyncio, sys
    import aioiothub

    async def main(path):
        async with aioiothub.Outbox(path) as outbox:
            await outbox.queue("held")
            print("holding", flush=True)
            sys.stdin.readline()

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_an_identity_delivered_by_another_process_is_refused_and_free_once_it_ends(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    async with await anyio.open_process([sys.executable, "-c", _HOLD, str(path)]) as child:
        try:
            assert child.stdout is not None
            with anyio.fail_after(30):
                assert (await child.stdout.receive()).strip() == b"holding"
            async with aioiothub.Outbox(path) as outbox:
                with pytest.raises(aioiothub.OutboxInUseError, match="another process"):
                    await outbox.queue("held")
                other = await outbox.queue("other")  # other identities of the file are free
                await other.release()
        finally:
            child.kill()
    assert await _pending(path, "held") == []  # claimable again once the holder is gone
