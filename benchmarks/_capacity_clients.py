"""Load generators for ``emulator_capacity.py``, run as child processes so they do not share its CPU.

``flood``: one blocking TLS connection; CONNECT, then QoS 1 telemetry with up to ``--window``
unacknowledged messages, each with its own ``$.mid`` (so no two topics are alike); prints the rate
once every PUBACK is in. Byte-level on purpose: a client library would be the bottleneck, not the
emulator.

``many``: opens ``--count`` TLS connections (``--parallel`` handshakes at a time) with the
credentials read from stdin (user name and password, one line each, per connection), prints
``connected <seconds>``, waits for a line on stdin, then pings every connection, checks each answer
and prints ``pinged <count>``.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import ssl
import sys
import time

from aioiothub.protocol.mqtt import encode_connect, encode_pingreq, encode_publish

CONNACK_ACCEPTED = b"\x20\x02\x00\x00"
PINGRESP = b"\xd0\x00"
PUBACK_SIZE = 4
BATCH = 200


def flood(port: int, ca_file: str, user: str, password: str, count: int, window: int) -> float:
    """Send ``count`` QoS 1 messages and return messages per second until the last PUBACK."""
    context = ssl.create_default_context(cafile=ca_file)
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        sock.sendall(encode_connect("dev1", user, password, 60, True))
        if sock.recv(4) != CONNACK_ACCEPTED:
            raise SystemExit("the emulator refused the connection")
        topic = "devices/dev1/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8&alert=1&%24.mid="
        body = b'{"temperature": 21.5, "humidity": 40}'
        packets = [encode_publish(f"{topic}{index}", body, 1, index % 65535 + 1) for index in range(count)]
        started = time.perf_counter()
        sent = acknowledged = 0
        pending = b""
        while acknowledged < count:
            if sent < count and sent - acknowledged < window:
                batch = min(BATCH, count - sent, window - (sent - acknowledged))
                sock.sendall(b"".join(packets[sent : sent + batch]))
                sent += batch
                continue
            data = sock.recv(65536)
            if not data:
                raise SystemExit("the emulator closed the connection")
            pending += data
            acknowledged += len(pending) // PUBACK_SIZE
            pending = pending[len(pending) // PUBACK_SIZE * PUBACK_SIZE :]
        return count / (time.perf_counter() - started)


async def many(port: int, ca_file: str, count: int, parallel: int) -> None:
    """Hold ``count`` connections, ping them all when told to, then close them."""
    credentials = [sys.stdin.readline().rstrip("\n") for _ in range(2 * count)]
    context = ssl.create_default_context(cafile=ca_file)
    limit = asyncio.Semaphore(parallel)

    async def connect(index: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with limit:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
            writer.write(encode_connect(f"d{index}", credentials[2 * index], credentials[2 * index + 1], 0, True))
            if await reader.readexactly(4) != CONNACK_ACCEPTED:
                raise RuntimeError(f"connection {index} was refused")
            return reader, writer

    started = time.perf_counter()
    connections = await asyncio.gather(*(connect(index) for index in range(count)))
    print(f"connected {time.perf_counter() - started:.3f}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for _, writer in connections:
        writer.write(encode_pingreq())
    for reader, _ in connections:
        if await reader.readexactly(2) != PINGRESP:
            raise RuntimeError("a connection answered a PINGREQ with something else")
    print(f"pinged {len(connections)}", flush=True)
    for _, writer in connections:
        writer.close()


def main() -> None:
    """Parse the command line and run one load generator."""
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = arguments.add_subparsers(dest="command", required=True)
    flood_command = commands.add_parser("flood")
    flood_command.add_argument("port", type=int)
    flood_command.add_argument("ca_file")
    flood_command.add_argument("user")
    flood_command.add_argument("password")
    flood_command.add_argument("count", type=int)
    flood_command.add_argument("--window", type=int, default=2000)
    many_command = commands.add_parser("many")
    many_command.add_argument("port", type=int)
    many_command.add_argument("ca_file")
    many_command.add_argument("count", type=int)
    many_command.add_argument("--parallel", type=int, default=200)
    parsed = arguments.parse_args()
    if parsed.command == "flood":
        print(flood(parsed.port, parsed.ca_file, parsed.user, parsed.password, parsed.count, parsed.window))
    else:
        asyncio.run(many(parsed.port, parsed.ca_file, parsed.count, parsed.parallel))


if __name__ == "__main__":
    main()
