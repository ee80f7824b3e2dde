"""The built-in endpoint's event log: partitions by device, sequence numbers, offsets, selectors, retention."""

from __future__ import annotations

import datetime

import pytest

from aioiothub.emulator.hub.event_log import EventLog, PartitionStart, parse_selector
from aioiothub.emulator.hub.telemetry import TelemetryRecord

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def record(device: str, body: bytes, seconds: float = 0) -> TelemetryRecord:
    return TelemetryRecord(device, None, body, {}, {}, T0 + datetime.timedelta(seconds=seconds))


@pytest.mark.parametrize(
    ("selector", "start"),
    [
        (None, PartitionStart("latest")),
        ("@latest", PartitionStart("latest")),
        ("amqp.annotation.x-opt-offset > '-1'", PartitionStart("offset", -1)),
        ("amqp.annotation.x-opt-offset >= '14'", PartitionStart("offset", 14, inclusive=True)),
        ("amqp.annotation.x-opt-sequence-number > '3'", PartitionStart("sequence-number", 3)),
        ("amqp.annotation.x-opt-enqueued-time > '1767225600000'", PartitionStart("enqueued-time", 1767225600000)),
        ("amqp.annotation.x-opt-offset > '@latest'", PartitionStart("latest")),
    ],
)
def test_selectors_as_azure_eventhub_writes_them(selector: str | None, start: PartitionStart) -> None:
    assert parse_selector(selector) == start


@pytest.mark.parametrize(
    "selector", ["x-opt-offset > '1'", "amqp.annotation.x-opt-offset < '1'", "amqp.annotation.x-opt-offset > 'a'"]
)
def test_other_selectors_are_refused(selector: str) -> None:
    with pytest.raises(ValueError, match="selector"):
        parse_selector(selector)


def test_one_device_keeps_one_partition_with_sequence_numbers_and_offsets() -> None:
    log = EventLog(partition_count=4)
    events = [log.append(record("dev1", body)) for body in (b"a" * 7, b"b" * 3, b"c")]
    assert [(event.sequence_number, event.offset) for event in events] == [(0, 0), (1, 7), (2, 10)]
    partition = log.partition_for("dev1")
    assert partition.start(parse_selector("amqp.annotation.x-opt-offset > '-1'")) == 0
    assert partition.start(parse_selector("amqp.annotation.x-opt-offset > '7'")) == 2
    assert partition.start(parse_selector("amqp.annotation.x-opt-offset >= '7'")) == 1
    assert partition.start(parse_selector("amqp.annotation.x-opt-sequence-number >= '2'")) == 2
    assert partition.start(parse_selector("@latest")) == 3
    assert [event.record.body for event in partition.events_from(1, 5)] == [b"bbb", b"c"]


def test_devices_spread_over_partitions_by_a_stable_hash() -> None:
    log = EventLog(partition_count=4)
    assert log.partition_for("dev1") is log.partition_for("dev1")
    used = {log.partition_for(f"device-{index}").identifier for index in range(40)}
    assert used == {"0", "1", "2", "3"}


def test_retention_drops_the_oldest_by_count_and_by_age_and_numbers_never_move() -> None:
    log = EventLog(partition_count=1, retention_events=2, retention=datetime.timedelta(seconds=60))
    for index in range(3):
        log.append(record("dev", bytes([index]), seconds=index))
    partition = log.partitions[0]
    assert [event.sequence_number for event in partition.events_from(0, 10)] == [1, 2]
    log.append(record("dev", b"late", seconds=120))
    assert [event.sequence_number for event in partition.events_from(0, 10)] == [3]
    assert partition.start(parse_selector("amqp.annotation.x-opt-offset > '-1'")) == 3


@pytest.mark.parametrize(
    ("options", "argument"),
    [({"partition_count": 0}, "partition_count"), ({"partition_count": 33}, "partition_count"),
     ({"retention_events": 0}, "retention_events"), ({"retention": datetime.timedelta(0)}, "retention"),
     ({"consumer_groups": ["bad/name"]}, "consumer group")],
)
def test_bad_options_are_refused_naming_them(options: dict[str, object], argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        EventLog(**options)  # type: ignore[arg-type]


def test_partition_ids_and_consumer_groups() -> None:
    log = EventLog(partition_count=2, consumer_groups=["analytics"])
    assert log.partition_ids == ["0", "1"]
    assert log.consumer_groups == {"$Default", "analytics"}
    assert log.partition("2") is None
    assert log.partition("01") is None


def test_events_since_reads_the_newest_and_restore_numbers_on() -> None:
    log = EventLog(partition_count=1, retention_events=3)
    for index in range(5):
        log.append(record("dev", bytes([index]) * (index + 1)))
    partition = log.partitions[0]
    assert partition.first_kept == 2
    assert [event.sequence_number for event in partition.events_since(0)] == [2, 3, 4]
    assert [event.sequence_number for event in partition.events_since(4)] == [4]
    assert partition.events_since(5) == []
    kept = partition.events_since(0)
    restored = EventLog(partition_count=1, retention_events=3)
    again = restored.partitions[0]
    again.restore(kept, next_sequence=partition.next_sequence_number, next_offset=partition.next_offset)
    assert [event.offset for event in again.events_from(0, 10)] == [3, 6, 10]
    event = restored.append(record("dev", b"x"))
    assert (event.sequence_number, event.offset) == (5, 15)
    with pytest.raises(RuntimeError, match="restore"):
        again.restore([], next_sequence=0, next_offset=0)
    empty = EventLog(partition_count=1).partitions[0]
    assert empty.first_kept == 0
    empty.restore([], next_sequence=7, next_offset=70)
    assert (empty.first_kept, empty.start(parse_selector("amqp.annotation.x-opt-offset > '-1'"))) == (7, 7)
