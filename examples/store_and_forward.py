"""Store and forward: a device keeps measuring while the hub is away, and nothing is lost.

Each reading is committed to an outbox file (``outbox=``): ``send_message`` returns at once, even
with no connection, and the client delivers what is pending, in order, once the hub is back -- also
after a restart of the process, from the same file. Run it with no arguments: the embedded emulator
is stopped for a while and started again on the same port, and the device drains its backlog.
"""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import anyio
import anyio.abc

import aioiothub
from aioiothub.emulator import Emulator

READINGS = 60


async def serve(hub: Emulator, stop: anyio.Event, *, task_status: anyio.abc.TaskStatus[None]) -> None:
    async with hub:
        task_status.started()
        await stop.wait()


async def main() -> None:
    with socket.socket() as probe:  # a free port the emulator keeps across its restart
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hub = Emulator(port=port, websocket_port=None)
    device = hub.add_device("sensor")
    with tempfile.TemporaryDirectory() as directory:
        outbox = aioiothub.Outbox(Path(directory) / "readings.db", max_messages=100_000, when_full="drop_oldest")
        async with anyio.create_task_group() as tasks:
            stop = anyio.Event()
            await tasks.start(serve, hub, stop)
            client = aioiothub.IoTHubDeviceClient.from_connection_string(
                device.connection_string,
                port=port,
                ssl_context=hub.client_ssl_context(),
                outbox=outbox,
                reconnect=aioiothub.ReconnectPolicy(initial_delay=0.05, max_delay=0.5),
            )
            async with client:
                for number in range(READINGS):
                    if number == 20:
                        stop.set()  # the hub goes away ...
                        await anyio.sleep(0.2)
                        print("hub stopped; still measuring")
                    if number == 40:
                        print("pending while the hub was away:", client.outbox.statistics().pending)
                        stop = anyio.Event()
                        await tasks.start(serve, hub, stop)  # ... and comes back on the same port
                        print("hub started again")
                    await client.send_message({"n": number, "temperature": 20 + number / 10})
                    await anyio.sleep(0.01)
                await client.outbox.flush(timeout=60)  # everything so far acknowledged by the hub
                print("outbox:", client.outbox.statistics())
            received = [record.json()["n"] for record in hub.telemetry("sensor")]
            in_order = list(dict.fromkeys(received)) == list(range(READINGS))
            print(f"the emulator received {len(set(received))} of {READINGS} readings, in order: {in_order}")
            stop.set()


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
