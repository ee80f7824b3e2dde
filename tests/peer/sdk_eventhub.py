"""A back end reading device telemetry from the emulator with ``azure-eventhub``, as a user's script would.

Runs under the Event Hubs peer venv's interpreter, never under pytest, so it imports nothing from
aioiothub. Arguments: the Event Hubs-compatible connection string, the CA file to verify the
emulator with (``-`` for a plain-AMQP ``UseDevelopmentEmulator=true`` string), how many events to
read, and a wrong key to try. Each step prints one JSON line ``{"step": …, …}``.

``sdk_eventhub.py notifications CONNECTION_STRING CA COUNT`` reads ``COUNT`` events from the start
and reports them with their content type, user id and body as JSON: a back end following twin
changes and device lifecycle events.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from typing import Any

from azure.eventhub import EventData, EventHubConsumerClient
from azure.eventhub.aio import EventHubConsumerClient as AsyncConsumerClient
from azure.eventhub.exceptions import EventHubError


def report(step: str, **values: Any) -> None:
    print(json.dumps({"step": step, **values}, default=str), flush=True)


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def describe(partition_id: str, event: EventData) -> dict[str, Any]:
    annotations = {_text(key): _text(value) for key, value in event.system_properties.items()}
    return {
        "partition": partition_id,
        "sequence_number": event.sequence_number,
        "offset": event.offset,
        "body": event.body_as_str(),
        "properties": {_text(key): _text(value) for key, value in (event.properties or {}).items()},
        "message_id": _text(annotations.get("message-id")),
        "correlation_id": _text(annotations.get("correlation-id")),
        "content_type": _text(annotations.get("content-type")),
        "content_encoding": _text(annotations.get("content-encoding")),
        "user_id": _text(annotations.get("user-id")),
        "annotations": {key: value for key, value in annotations.items() if key.startswith(("iothub-", "x-opt-"))},
    }


def read(client: EventHubConsumerClient, count: int, **options: Any) -> list[dict[str, Any]]:
    """Read ``count`` events from every partition (``options`` as for ``receive``), then stop."""
    events: list[dict[str, Any]] = []
    done = threading.Event()

    def on_event(context: Any, event: EventData | None) -> None:
        if event is not None:
            events.append(describe(context.partition_id, event))
            if len(events) >= count:
                done.set()

    worker = threading.Thread(target=client.receive, kwargs={"on_event": on_event, **options}, daemon=True)
    worker.start()
    done.wait(30)
    client.close()
    worker.join(30)
    return sorted(events, key=lambda event: (event["partition"], event["sequence_number"]))


async def read_async(connection_string: str, verify: dict[str, Any], partition: str, sequence: int) -> list[Any]:
    """Read one partition from a sequence number, inclusive, with the asyncio client."""
    client = AsyncConsumerClient.from_connection_string(connection_string, consumer_group="$Default", **verify)
    events: list[dict[str, Any]] = []
    finished = asyncio.Event()

    async def on_event(context: Any, event: EventData | None) -> None:
        if event is not None:
            events.append(describe(context.partition_id, event))
            finished.set()

    async with client:
        task = asyncio.create_task(
            client.receive(on_event=on_event, partition_id=partition, starting_position=sequence,
                           starting_position_inclusive=True)
        )
        await asyncio.wait_for(finished.wait(), 30)
        await asyncio.sleep(1)
        task.cancel()
    return events


def notifications(connection_string: str, ca_file: str, count: int) -> None:
    """Read ``count`` events from the start, as a back end replicating twins does: each body as JSON."""
    verify: dict[str, Any] = {} if ca_file == "-" else {"connection_verify": ca_file}
    client = EventHubConsumerClient.from_connection_string(connection_string, consumer_group="$Default", **verify)
    events = read(client, count, starting_position="-1")
    for event in events:
        event["json"] = json.loads(event["body"]) if event["content_type"] == "application/json" else None
    report("notifications", events=events)


def main() -> None:
    if sys.argv[1] == "notifications":
        notifications(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    connection_string, ca_file, count, wrong_key = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    verify: dict[str, Any] = {} if ca_file == "-" else {"connection_verify": ca_file}
    client = EventHubConsumerClient.from_connection_string(connection_string, consumer_group="$Default", **verify)
    properties = client.get_eventhub_properties()
    report("eventhub", name=properties["eventhub_name"], partition_ids=properties["partition_ids"])
    events = read(client, count, starting_position="-1")
    report("events", events=events)

    busiest = max({event["partition"] for event in events}, key=lambda p: sum(e["partition"] == p for e in events))
    client = EventHubConsumerClient.from_connection_string(connection_string, consumer_group="$Default", **verify)
    partition = client.get_partition_properties(busiest)
    report("partition", **{key: _text(value) for key, value in partition.items()})
    ours = [event for event in events if event["partition"] == busiest]
    checkpoint = ours[0]["offset"]
    resumed = read(client, len(ours) - 1, partition_id=busiest, starting_position=checkpoint)
    report("resumed", checkpoint=checkpoint, events=resumed)

    from_sequence = asyncio.run(read_async(connection_string, verify, busiest, ours[-1]["sequence_number"]))
    report("async", events=from_sequence)

    bad = connection_string.replace(connection_string.split("SharedAccessKey=")[1].split(";")[0], wrong_key)
    try:
        refused = EventHubConsumerClient.from_connection_string(bad, consumer_group="$Default", **verify)
        refused.get_eventhub_properties()
    except EventHubError as exc:
        report("wrong key", error=type(exc).__name__, message=str(exc)[:300])
    else:
        report("wrong key", error=None)


if __name__ == "__main__":
    main()
