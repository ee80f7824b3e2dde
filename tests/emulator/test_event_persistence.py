"""The built-in endpoint's events in ``--state-dir``: they survive a restart with their sequence numbers,
offsets and enqueued times, readers resume across it over AMQP, and retention applies on disk too."""

from __future__ import annotations

import contextlib
import datetime
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from proton import Message

import aioiothub
from aioiothub.emulator import Emulator
from aioiothub.emulator.hub.event_log import EventLog
from aioiothub.emulator.hub.telemetry import TelemetryRecord
from aioiothub.emulator.storage.event_store import EVENTS_DATABASE_NAME, EventStore
from tests.emulator.amqp_client import authorized_client, partition_address

pytestmark = pytest.mark.anyio

ALL = ("DeviceMessages", "TwinChangeEvents", "DeviceLifecycleEvents")


def rows(directory: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(directory / EVENTS_DATABASE_NAME) as db:
        return db.execute("SELECT key & 281474976710655, offset, source, body FROM events ORDER BY key").fetchall()


def record(body: bytes, *, age: datetime.timedelta = datetime.timedelta(0), device: str = "dev1") -> TelemetryRecord:
    when = datetime.datetime.now(datetime.UTC) - age
    return TelemetryRecord(device, None, body, {"k": 'v "ü"\\\n', "empty": None}, {"$.mid": body.decode()}, when)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    opened = EventStore(tmp_path)
    yield opened
    opened.close()


def props(message: Message) -> dict[str, Any]:
    return dict(message.properties or {})


def payload(message: Message) -> bytes:
    assert isinstance(message.body, bytes | memoryview)
    return bytes(message.body)


def marks(message: Message) -> tuple[int, str, Any]:
    annotations = {str(key): value for key, value in (message.annotations or {}).items()}
    return annotations["x-opt-sequence-number"], annotations["x-opt-offset"], annotations["x-opt-enqueued-time"]


async def read(hub: Emulator, selector: str, count: int) -> list[Message]:
    reader = await authorized_client(hub)
    partition = hub.core.events.partition_for("dev1").identifier
    link = await reader.attach_receiver(partition_address(hub, partition), selector=selector, credit=100)
    await reader.until(lambda: len(reader.messages_on(link)) >= count)
    messages = reader.messages_on(link)
    await reader.aclose()
    return messages


async def test_events_survive_a_restart_and_readers_resume_across_it(transport: str, tmp_path: Path) -> None:
    options: dict[str, Any] = {"state_dir": tmp_path, "amqp_port": None, "amqp_plain_port": 0}
    async with Emulator(event_sources=ALL, **options) as hub:
        device = hub.add_device("dev1")
        async with aioiothub.IoTHubDeviceClient.from_connection_string(
            device.connection_string, port=hub.port, ssl_context=hub.client_ssl_context()
        ) as client:
            for index in range(4):
                await client.send_message(f"m{index}")
            await client.update_reported_properties({"fw": "1"})
        before = await read(hub, "amqp.annotation.x-opt-offset > '-1'", 6)
    assert [marks(message)[0] for message in before] == list(range(6))
    assert len(rows(tmp_path)) == 6

    # The same state directory, without the twin and lifecycle routes: what was kept is read back as it was.
    async with Emulator(**options) as hub:
        after_sequence = await read(hub, "amqp.annotation.x-opt-sequence-number > '2'", 3)
        assert [marks(message) for message in after_sequence] == [marks(message) for message in before[3:]]
        assert [payload(message) for message in after_sequence[:2]] == [b"m2", b"m3"]
        assert props(after_sequence[2])["opType"] == "updateTwin"
        checkpoint = marks(before[1])[1]
        after_offset = await read(hub, f"amqp.annotation.x-opt-offset > '{checkpoint}'", 4)
        assert [marks(message)[0] for message in after_offset] == [2, 3, 4, 5]
        assert payload(after_offset[0]) == b"m1"
        async with aioiothub.IoTHubDeviceClient.from_connection_string(
            hub.identity("dev1").connection_string, port=hub.port, ssl_context=hub.client_ssl_context()
        ) as client:
            await client.send_message("after the restart")
        newest = await read(hub, "amqp.annotation.x-opt-sequence-number > '5'", 1)
        assert marks(newest[0])[0] == 6
        assert int(marks(newest[0])[1]) > int(marks(before[-1])[1])
    assert [row[0] for row in rows(tmp_path)] == list(range(7))


async def test_expired_events_are_not_restored_and_the_numbers_go_on(tmp_path: Path) -> None:
    options: dict[str, Any] = {"state_dir": tmp_path, "amqp_port": None, "amqp_plain_port": 0, "websocket_port": None}
    async with Emulator(**options) as hub:
        log = hub.core.events
        log.append(record(b"old", age=datetime.timedelta(days=2)))  # past the log's one day of retention
        log.appended()
    assert [row[3] for row in rows(tmp_path)] == [b"old"]
    async with Emulator(**options) as hub:
        partition = hub.core.events.partition_for("dev1")
        assert partition.first is None
        assert partition.next_sequence_number == 1
        assert rows(tmp_path) == []  # deleted on disk too
        device = hub.add_device("dev1")
        async with aioiothub.IoTHubDeviceClient.from_connection_string(
            device.connection_string, port=hub.port, ssl_context=hub.client_ssl_context(), transport="native"
        ) as client:
            await client.send_message("new")
        (message,) = await read(hub, "amqp.annotation.x-opt-offset > '-1'", 1)
        assert (payload(message), marks(message)[0], marks(message)[1]) == (b"new", 1, "3")


def test_retention_in_events_prunes_the_file_and_applies_again_on_restore(store: EventStore, tmp_path: Path) -> None:
    log = EventLog(partition_count=1, retention_events=3)
    assert store.restore(log) == 0
    for index in range(5):
        log.append(record(f"e{index}".encode()))
    assert store.flush() == 3  # e0 and e1 left the log before a batch took them
    assert [row[0] for row in rows(tmp_path)] == [2, 3, 4]
    for index in range(5, 7):
        log.append(record(f"e{index}".encode()))
    store.flush()
    assert [row[0] for row in rows(tmp_path)] == [4, 5, 6]

    smaller = EventLog(partition_count=1, retention_events=2)
    with contextlib.closing(EventStore(tmp_path)) as again:
        assert again.restore(smaller) == 2
    kept = list(smaller.partitions[0].events_from(0, 10))
    assert [(event.sequence_number, event.record.body) for event in kept] == [(5, b"e5"), (6, b"e6")]
    assert dict(kept[0].record.properties) == {"k": 'v "ü"\\\n', "empty": None}
    assert kept[0].record.system_properties["$.mid"] == "e5"
    assert [row[0] for row in rows(tmp_path)] == [5, 6]
    assert smaller.created_at == log.created_at
    assert smaller.append(record(b"e7")).sequence_number == 7


def test_a_killed_process_loses_the_last_unflushed_batch_only(store: EventStore, tmp_path: Path) -> None:
    log = EventLog(partition_count=2)
    store.restore(log)
    written = [log.append(record(f"w{index}".encode(), device="dev1")) for index in range(2)]
    store.flush()
    log.append(record(b"never written", device="dev1"))  # the process dies before the next batch
    restored = EventLog(partition_count=2)
    with contextlib.closing(EventStore(tmp_path)) as again:
        assert again.restore(restored) == 2
    back = list(restored.partition_for("dev1").events_from(0, 10))
    assert [(event.sequence_number, event.offset, event.enqueued_time) for event in back] == [
        (event.sequence_number, event.offset, event.enqueued_time) for event in written
    ]
    assert restored.partition_for("dev1").next_sequence_number == 2


async def test_the_writer_writes_batches_as_they_gather(tmp_path: Path) -> None:
    log = EventLog(partition_count=1)
    with contextlib.closing(EventStore(tmp_path, interval=0.05)) as store:
        store.restore(log)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(store.run)
            for index in range(3):
                log.append(record(f"b{index}".encode()))
            log.appended()
            with anyio.fail_after(5):
                while len(rows(tmp_path)) < 3:  # noqa: ASYNC110 - another connection's file: no event to await
                    await anyio.sleep(0.02)
            log.append(record(b"later"))
            log.appended()
            with anyio.fail_after(5):
                while len(rows(tmp_path)) < 4:  # noqa: ASYNC110 - another connection's file: no event to await
                    await anyio.sleep(0.02)
            tasks.cancel_scope.cancel()
        assert store.flush() == 0

