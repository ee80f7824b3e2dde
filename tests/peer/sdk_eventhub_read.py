"""A back end that reads the events devices sent, with ``azure-eventhub``, as an end-to-end test's verifier.

Runs under the Event Hubs peer venv's interpreter, never under pytest. Arguments: the Event
Hubs-compatible connection string, the CA file, and how many events to wait for (read from the
start of every partition). Prints one JSON line ``{"step": "events", "events": [...]}`` in
partition and sequence order (see ``sdk_eventhub.describe``).
"""

from __future__ import annotations

import sys

from azure.eventhub import EventHubConsumerClient
from sdk_eventhub import read, report


def main() -> None:
    connection_string, ca_file, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = EventHubConsumerClient.from_connection_string(
        connection_string, consumer_group="$Default", connection_verify=ca_file
    )
    report("events", events=read(client, count, starting_position="-1"))


if __name__ == "__main__":
    main()
