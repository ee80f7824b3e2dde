"""A lean reader of the emulator's Event Hubs-compatible endpoint, on python-qpid-proton's engine.

Run by ``emulator_capacity.py`` as a child process with the project's interpreter, beside the
official ``azure-eventhub`` reader (``_eventhub_sdk_consumer.py``), to tell the emulator's limit
from the SDK's: it does the least a reader can do -- one connection, one link per partition, a
blocking socket, each transfer taken as bytes and counted, credit topped up (and written at once)
when half of it is used -- so that the figure it reaches is the emulator's. Once the links are
attached it leaves proton's Python classes for its C binding (``cproton``): an event and a
delivery object per transfer would make it the slower side. That binding is proton's own and
private: the project pins python-qpid-proton to 0.40 (``pyproject.toml``), and the benchmarks'
smoke test in CI runs this reader, so a proton that changes it fails there at once. The last event
of each partition is decoded, and its sequence number checked.

Arguments: see ``--help``. Prints one JSON line ``{"ready": true}`` once every link is attached,
then, when ``--count`` events have arrived on every partition, one line with the result (see
:func:`main`).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import socket
import ssl
import time
import urllib.parse
from typing import Any

import cproton
from proton import Collector, Connection, Data, Described, Link, Message, Transport, symbol

SELECTOR = symbol("apache.org:selector-filter:string")
RECEIVE_SIZE = 1 << 20


def token(audience: str, policy: str, key: str) -> str:
    """A token as azure-eventhub signs it: HMAC keyed with the key's text, ``sr`` the audience."""
    expiry = int(time.time()) + 3600
    signed = f"{urllib.parse.quote_plus(audience)}\n{expiry}".encode()
    signature = base64.b64encode(hmac.new(key.encode(), signed, hashlib.sha256).digest())
    return "SharedAccessSignature " + urllib.parse.urlencode(
        {"sr": audience, "sig": signature, "se": str(expiry), "skn": policy}
    )


class Reader:
    """One connection on a blocking socket, driven by hand."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.transport = Transport()
        self.transport.sasl().allowed_mechs("ANONYMOUS")
        self.connection = Connection()
        self.collector = Collector()
        self.connection.collect(self.collector)
        self.transport.bind(self.connection)
        self.connection.hostname = "localhost"
        self.connection.open()
        self.session = self.connection.session()
        self.session.open()
        self.replies: list[Message] = []
        self.counts: dict[str, int] = {}
        self.last: dict[str, bytes] = {}
        self.first_at = 0.0
        self.last_at = 0.0
        self.first_cpu = 0.0
        self.credit = 0
        self.fast: list[tuple[Any, str]] = []

    def write(self) -> None:
        transport = self.transport
        output = bytearray()
        while (pending := transport.pending()) > 0:
            output += transport.peek(pending) or b""
            transport.pop(pending)
        if output:
            self.sock.sendall(output)

    def step(self) -> None:
        """Write what is pending, read once, push it in and handle the engine's events."""
        self.write()
        data = self.sock.recv(RECEIVE_SIZE)
        if not data:
            raise SystemExit("the emulator closed the connection")
        view = memoryview(data)
        while view:
            taken = self.transport.capacity()
            if taken <= 0:
                raise SystemExit("the engine takes no more input")
            self.transport.push(bytes(view[:taken]))
            view = view[taken:]
        if self.fast:
            for link, name in self.fast:
                self.take(link, name)
        else:
            self.events()

    def go_fast(self, links: list[Link]) -> None:
        """From now on, read transfers off the links directly: no collector, no wrappers."""
        cproton.pn_connection_collect(self.connection._impl, cproton.ffi.NULL)
        self.fast = [(link._impl, link.name) for link in links]

    def take(self, link: Any, name: str) -> None:
        received = 0
        while (delivery := cproton.pn_link_current(link)) and not cproton.pn_delivery_partial(delivery):
            _, data = cproton.pn_link_recv(link, cproton.pn_delivery_pending(delivery))
            cproton.pn_link_advance(link)
            cproton.pn_delivery_settle(delivery)
            received += 1
            self.last[name] = data
            if cproton.pn_link_credit(link) < self.credit // 2:
                cproton.pn_link_flow(link, self.credit - cproton.pn_link_credit(link))
                self.write()  # now, not after the rest of this read: the emulator works meanwhile
        if received:
            if not self.first_at:
                self.first_at = time.monotonic()
                self.first_cpu = time.process_time()
            self.counts[name] += received
            self.last_at = time.monotonic()

    def events(self) -> None:
        collector = self.collector
        while (event := collector.peek()) is not None:
            if event.type == event.DELIVERY:
                link = event.link
                if link is not None and link.is_receiver:
                    self.deliveries(link)
            collector.pop()

    def deliveries(self, link: Link) -> None:
        # One DELIVERY event may stand for several transfers: take every whole one the link holds.
        name = link.name
        while (delivery := link.current) is not None and delivery.readable and not delivery.partial:
            data = link.recv(delivery.pending) or b""
            link.advance()
            if not delivery.settled:
                delivery.settle()
            if name in self.counts:
                if not self.first_at:
                    self.first_at = time.monotonic()
                    self.first_cpu = time.process_time()
                self.counts[name] += 1
                self.last[name] = data
                self.last_at = time.monotonic()
            else:
                message = Message()
                message.decode(data)
                self.replies.append(message)
        if name in self.counts and link.credit < self.credit // 2:
            link.flow(self.credit - link.credit)

    def until(self, condition: Any) -> None:
        while not condition():
            self.step()
        self.write()

    def put_token(self, audience: str, signed: str) -> None:
        sender = self.session.sender("cbs-sender")
        sender.target.address = "$cbs"
        sender.open()
        receiver = self.session.receiver("cbs-receiver")
        receiver.source.address = "$cbs"
        receiver.target.address = "cbs-reply"
        receiver.open()
        receiver.flow(1)
        self.until(lambda: sender.credit > 0)
        request = Message(body=signed, id="put-token-1", reply_to="cbs-reply")
        request.properties = {"operation": "put-token", "type": "servicebus.windows.net:sastoken", "name": audience,
                              "expiration": int(time.time()) + 3600}
        sender.delivery("put-token")
        sender.send(request.encode())
        sender.advance()
        self.until(lambda: bool(self.replies))
        status = (self.replies[0].properties or {}).get("status-code")
        if status != 200:
            raise SystemExit(f"put-token answered {status}")

    def attach(self, address: str, start: int, credit: int) -> Link:
        receiver = self.session.receiver(address)
        self.counts[address] = 0
        receiver.source.address = address
        filters = Data()
        selector = f"amqp.annotation.x-opt-sequence-number >= '{start}'"
        filters.put_object({SELECTOR: Described(SELECTOR, selector)})
        receiver.source.filter.copy(filters)
        receiver.open()
        receiver.flow(credit)
        self.credit = credit
        return receiver


def main() -> None:
    """Read ``--count`` events from each of the partitions, from the starting sequence numbers given.

    The result line: ``received`` (per partition), ``first``/``last`` (``time.monotonic()`` of the
    first and last event, system-wide on Linux, so comparable with the parent's clock), ``cpu``
    (this process's CPU seconds between them) and ``last_sequence`` (per partition, decoded).
    """
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--port", type=int, required=True)
    options.add_argument("--ca", help="CA file: connect with TLS (default: plain AMQP)")
    options.add_argument("--hostname", required=True)
    options.add_argument("--event-hub", required=True)
    options.add_argument("--key", required=True, help="the 'service' policy's key")
    options.add_argument("--start", action="append", required=True, metavar="PARTITION:SEQUENCE")
    options.add_argument("--count", type=int, required=True, help="events to read from each partition")
    options.add_argument("--credit", type=int, default=1000)
    arguments = options.parse_args()
    raw = socket.create_connection(("127.0.0.1", arguments.port))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock = raw
    if arguments.ca:
        sock = ssl.create_default_context(cafile=arguments.ca).wrap_socket(raw, server_hostname="localhost")
    reader = Reader(sock)
    audience = f"sb://{arguments.hostname}/{arguments.event_hub}"
    reader.put_token(audience, token(audience, "service", arguments.key))
    links = []
    for start in arguments.start:
        partition, sequence = start.split(":")
        address = f"amqps://{arguments.hostname}/{arguments.event_hub}/ConsumerGroups/$Default/Partitions/{partition}"
        links.append(reader.attach(address, int(sequence), arguments.credit))
    reader.until(lambda: all(link.state & Link.REMOTE_ACTIVE for link in links))
    reader.go_fast(links)
    print(json.dumps({"ready": True}), flush=True)
    reader.until(lambda: min(reader.counts.values()) >= arguments.count)
    cpu = time.process_time() - reader.first_cpu
    last_sequence = {}
    for address, data in reader.last.items():
        message = Message()
        message.decode(data)
        last_sequence[address.rsplit("/", 1)[1]] = (message.annotations or {}).get("x-opt-sequence-number")
    result = {
        "received": {address.rsplit("/", 1)[1]: count for address, count in reader.counts.items()},
        "first": reader.first_at,
        "last": reader.last_at,
        "cpu": cpu,
        "last_sequence": last_sequence,
    }
    print(json.dumps(result), flush=True)
    sock.close()


if __name__ == "__main__":
    main()
