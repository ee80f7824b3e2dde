"""The official ``azure-eventhub`` reader of the emulator's Event Hubs-compatible endpoint (``emulator_capacity.py``).

Runs under the Event Hubs peer venv's interpreter (``.peer-venv-eventhub``), so it imports nothing
from aioiothub. It reads as a back end does: ``EventHubConsumerClient.receive_batch`` (batches of
up to 300, the SDK's default prefetch of 300), one partition or all of them, from the sequence
numbers given (inclusive). Prints ``{"ready": true}`` once every partition's consumer is set up,
then, when ``count`` events have arrived from every partition, one JSON line: ``received`` (per
partition), ``first`` and ``last`` (``time.monotonic()`` of the first and last event, system-wide
on Linux), ``cpu`` (this process's CPU seconds, all threads, between them) and ``last_sequence``
(per partition).

Arguments: connection string, CA file (``-`` for plain AMQP), count (per partition), then
``partition:sequence`` for each partition to read.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

from azure.eventhub import EventHubConsumerClient

DEADLINE = 600.0


def main() -> None:
    """Read ``count`` events from each of the partitions given (see the module docstring)."""
    connection_string, ca_file, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    starts = {start.split(":")[0]: int(start.split(":")[1]) for start in sys.argv[4:]}
    verify: dict[str, Any] = {} if ca_file == "-" else {"connection_verify": ca_file}
    client = EventHubConsumerClient.from_connection_string(connection_string, consumer_group="$Default", **verify)
    received = dict.fromkeys(starts, 0)
    last_sequence: dict[str, int] = {}
    marks = {"first": 0.0, "first_cpu": 0.0, "last": 0.0, "cpu": 0.0}
    initialized: set[str] = set()
    lock = threading.Lock()
    done = threading.Event()

    def on_partition_initialize(context: Any) -> None:
        with lock:
            if initialized >= set(starts):
                return  # ready was said; a consumer set up again after a reconnection says nothing
            initialized.add(context.partition_id)
            if initialized >= set(starts):
                print(json.dumps({"ready": True}), flush=True)

    def on_event_batch(context: Any, events: list[Any]) -> None:
        if not events:
            return
        with lock:
            if not marks["first"]:
                marks["first"], marks["first_cpu"] = time.monotonic(), time.process_time()
            received[context.partition_id] += len(events)
            last_sequence[context.partition_id] = events[-1].sequence_number
            if min(received.values()) >= count and not done.is_set():
                marks["last"], marks["cpu"] = time.monotonic(), time.process_time() - marks["first_cpu"]
                done.set()

    options: dict[str, Any] = {
        "on_event_batch": on_event_batch,
        "on_partition_initialize": on_partition_initialize,
        "starting_position": starts,
        "starting_position_inclusive": True,
        "max_batch_size": 300,
        "prefetch": 300,
    }
    if len(starts) == 1:
        options["partition_id"] = next(iter(starts))
    worker = threading.Thread(target=client.receive_batch, kwargs=options, daemon=True)
    worker.start()
    finished = done.wait(DEADLINE)
    client.close()
    worker.join(30)
    if not finished:
        raise SystemExit(f"read {received} of {count} events per partition within {DEADLINE:.0f} s")
    result = {"received": received, "first": marks["first"], "last": marks["last"], "cpu": marks["cpu"],
              "last_sequence": last_sequence}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
