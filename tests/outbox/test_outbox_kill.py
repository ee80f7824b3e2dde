"""A device killed with SIGKILL at random moments, again and again, on one outbox file, while its connection drops.

A child process sends numbered messages through an outbox, printing each number once its
``send_message`` returned; the test kills it (seeded random moments), drops its connection in
between, and starts it again on the same file each time. Then: every returned message reached the
hub; the first arrivals are in enqueue order; duplicates are only of messages that were in flight
at a kill or a drop; and after an acknowledged flush, nothing arrives twice.
"""

from __future__ import annotations

import json
import random
import sys
import textwrap
from pathlib import Path

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from tests.outbox.outbox_helpers import RestartableHub

pytestmark = pytest.mark.anyio

KILLS = 20
MAX_IN_FLIGHT = 8

_CHILD = textwrap.dedent(
    """
    import asyncio, ssl, sys
    import aioiothub

    async def main(connection_string, port, ca_file, path, generation, transport, mode):
        context = ssl.create_default_context(cafile=ca_file)
        client = aioiothub.IoTHubDeviceClient.from_connection_string(
            connection_string, port=int(port), ssl_context=context, outbox=path, transport=transport,
            max_in_flight=MAX_IN_FLIGHT, request_timeout=1,
            reconnect=aioiothub.ReconnectPolicy(initial_delay=0.02, max_delay=0.1, jitter=0),
        )
        async with client:
            print("ready", flush=True)
            count = 10 if mode == "final" else 10**9
            for number in range(count):
                await client.send_message({"g": int(generation), "i": number})
                print(number, flush=True)
            await client.outbox.flush(timeout=60)
            print("flushed", flush=True)

    asyncio.run(main(*sys.argv[1:]))
    """
).replace("MAX_IN_FLIGHT", str(MAX_IN_FLIGHT))


async def _start(hub: RestartableHub, path: Path, generation: int, transport: str, mode: str) -> anyio.abc.Process:
    identity = hub.emulator.identity("killed")
    return await anyio.open_process(
        [
            sys.executable,
            "-c",
            _CHILD,
            identity.connection_string,
            str(hub.port),
            str(hub.emulator.ca_file),
            str(path),
            str(generation),
            transport,
            mode,
        ]
    )


async def _lines_until(lines: BufferedByteReceiveStream, last: bytes, into: list[bytes]) -> None:
    while True:
        line = await lines.receive_until(b"\n", 1 << 16)
        into.append(line)
        if line == last:
            return


async def _rest(lines: BufferedByteReceiveStream) -> bytes:
    chunks = []
    while True:
        try:
            chunks.append(await lines.receive())
        except anyio.EndOfStream:
            return b"".join(chunks)


async def test_every_returned_send_survives_sigkill_in_order_and_an_acknowledged_flush_is_final(
    restartable_hub: RestartableHub, tmp_path: Path, transport: str
) -> None:
    rng = random.Random(2024)
    path = tmp_path / "outbox.db"
    returned: set[tuple[int, int]] = set()
    drops = 0
    async with restartable_hub.running() as hub:
        hub.emulator.add_device("killed")
        for generation in range(KILLS):
            async with await _start(hub, path, generation, transport, "run") as child:
                assert child.stdout is not None
                lines = BufferedByteReceiveStream(child.stdout)
                with anyio.fail_after(30):
                    assert await lines.receive_until(b"\n", 1 << 16) == b"ready"
                printed: list[bytes] = []
                with anyio.move_on_after(rng.uniform(0.1, 0.6)):
                    await _lines_until(lines, b"never", printed)
                if rng.random() < 0.5 and hub.emulator.drop_connection("killed"):
                    drops += 1
                    with anyio.move_on_after(rng.uniform(0.05, 0.3)):
                        await _lines_until(lines, b"never", printed)
                child.kill()
                await child.wait()
                # What the child printed before it died: each is a send that returned.
                with anyio.fail_after(10):
                    rest = await _rest(lines)
            # Only whole lines count: a number cut short by the kill was not printed.
            complete = rest.split(b"\n")[:-1]
            printed_numbers = [int(line) for line in [*printed, *complete] if line.isdigit()]
            returned.update((generation, number) for number in printed_numbers)
        # One last run that sends ten more and waits for the hub to acknowledge everything.
        async with await _start(hub, path, KILLS, transport, "final") as child:
            assert child.stdout is not None
            printed = []
            with anyio.fail_after(120):
                await _lines_until(BufferedByteReceiveStream(child.stdout), b"flushed", printed)
                await child.wait()
        returned.update((KILLS, number) for number in range(10))
        flushed_at = len(hub.emulator.telemetry("killed"))
        # And one more on the file: nothing acknowledged before that flush may come again.
        async with await _start(hub, path, KILLS + 1, transport, "final") as child:
            assert child.stdout is not None
            with anyio.fail_after(120):
                await _lines_until(BufferedByteReceiveStream(child.stdout), b"flushed", [])
                await child.wait()

    arrivals = [tuple(json.loads(record.body).values()) for record in hub.emulator.telemetry("killed")]
    assert len(returned) > KILLS * 5, "the children hardly sent anything: the test proves little"
    assert returned <= set(arrivals), sorted(returned - set(arrivals))[:10]
    first = list(dict.fromkeys(arrivals))
    assert first == sorted(first), "the first arrivals are not in enqueue order"
    duplicates = len(arrivals) - len(first)
    # Only messages in flight (at most max_in_flight) when a connection or the process ended come twice.
    assert duplicates <= (KILLS + drops + 2) * MAX_IN_FLIGHT
    after_flush = arrivals[flushed_at:]
    assert all(generation == KILLS + 1 for generation, _ in after_flush), after_flush[:5]
    assert len(after_flush) == 10
