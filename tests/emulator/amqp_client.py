"""A small AMQP 1.0 client for the emulator's tests: python-qpid-proton's engine on a real socket.

Each call drives the engine until the answer it waits for has arrived, within a deadline: the
attach or detach of a link, the reply of a node, the next transfer. It speaks SASL ANONYMOUS as
azure-eventhub does, and sends ``$cbs`` put-token requests the way the SDKs do.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
from proton import Collector, Condition, Connection, Data, Delivery, Described, Link, Message, Transport, symbol

from aioiothub.emulator import Emulator

__all__ = ["AmqpTestClient", "authorized_client", "partition_address", "service_bus_token"]

STEP = 10.0


def service_bus_token(audience: str, policy: str, key: str, expiry: int | None = None) -> str:
    """A token as azure-eventhub signs it: HMAC keyed with the key's text, ``sr`` the audience."""
    import base64
    import hashlib
    import hmac
    import urllib.parse

    expiry = expiry if expiry is not None else int(time.time()) + 3600
    encoded = urllib.parse.quote_plus(audience)
    signature = base64.b64encode(hmac.new(key.encode(), f"{encoded}\n{expiry}".encode(), hashlib.sha256).digest())
    fields = {"sr": audience, "sig": signature, "se": str(expiry), "skn": policy}
    return "SharedAccessSignature " + urllib.parse.urlencode(fields)


class AmqpTestClient:
    """One client connection (see the module docstring)."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
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
        self.received: list[tuple[Link, Message]] = []
        self.deliveries: list[tuple[Link, Delivery]] = []
        #: Accept every message as it arrives; when false, :attr:`deliveries` holds them to settle.
        self.auto_accept = True
        self.closed = False

    @classmethod
    async def connect(cls, port: int) -> AmqpTestClient:
        return cls(await anyio.connect_tcp("127.0.0.1", port))

    async def _write(self) -> None:
        while (pending := self.transport.pending()) > 0:
            data = self.transport.peek(pending) or b""
            self.transport.pop(pending)
            await self.stream.send(bytes(data))

    def _drain_events(self) -> None:
        while (event := self.collector.peek()) is not None:
            if event.type == event.DELIVERY and event.link is not None and event.link.is_receiver:
                delivery = event.delivery
                if delivery is not None and delivery.readable and not delivery.partial:
                    data = event.link.recv(delivery.pending) or b""
                    event.link.advance()
                    message = Message()
                    message.decode(data)
                    if self.auto_accept:
                        delivery.update(Delivery.ACCEPTED)
                        delivery.settle()
                    else:
                        self.deliveries.append((event.link, delivery))
                    self.received.append((event.link, message))
            self.collector.pop()

    async def until(self, condition: Callable[[], bool], seconds: float = STEP) -> None:
        """Pump bytes both ways until ``condition()`` holds."""
        with anyio.fail_after(seconds):
            while True:
                await self._write()
                self._drain_events()
                if condition():
                    return
                try:
                    data = await self.stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    self.closed = True
                    self.transport.close_tail()
                    self._drain_events()
                    if condition():
                        return
                    raise
                while data:
                    capacity = self.transport.capacity()
                    if capacity <= 0:
                        raise anyio.BrokenResourceError("the client's engine takes no more input")
                    self.transport.push(data[:capacity])
                    data = data[capacity:]
                    self._drain_events()
                    await self._write()

    async def request(self, node: str, message: Message) -> Message:
        """Send ``message`` to a node (``$cbs``, ``$management``) and return its reply."""
        reply_to = f"{node}-reply-{uuid.uuid4().hex[:6]}"
        sender = self.session.sender(f"{node}-sender-{uuid.uuid4().hex[:6]}")
        sender.target.address = node
        sender.open()
        receiver = self.session.receiver(f"{node}-receiver-{uuid.uuid4().hex[:6]}")
        receiver.source.address = node
        receiver.target.address = reply_to
        receiver.open()
        receiver.flow(1)
        await self.until(lambda: sender.credit > 0)
        message.id = str(uuid.uuid4())
        message.reply_to = reply_to
        delivery = sender.delivery(str(uuid.uuid4()))
        sender.send(message.encode())
        sender.advance()
        await self.until(lambda: any(link.name == receiver.name for link, _ in self.received))
        reply = next(answer for link, answer in self.received if link.name == receiver.name)
        assert delivery is not None
        return reply

    async def put_token(self, audience: str, token: str) -> tuple[int, str]:
        request = Message(body=token)
        request.properties = {"operation": "put-token", "type": "servicebus.windows.net:sastoken", "name": audience,
                              "expiration": int(time.time()) + 3600}
        reply = await self.request("$cbs", request)
        properties: dict[Any, Any] = reply.properties or {}
        return int(properties["status-code"]), str(properties.get("status-description"))

    async def attach_receiver(
        self, address: str, *, selector: str | None = None, epoch: int | None = None, credit: int = 10
    ) -> Link:
        """Attach a receiving link and wait for the emulator's attach (then, maybe, its detach)."""
        receiver = self.session.receiver(f"receiver-{uuid.uuid4().hex[:6]}")
        receiver.source.address = address
        if selector is not None:
            filters = Data()
            filters.put_object({
                symbol("apache.org:selector-filter:string"): Described(
                    symbol("apache.org:selector-filter:string"), selector
                )
            })
            receiver.source.filter.copy(filters)
        if epoch is not None:
            receiver.properties = {symbol("com.microsoft:epoch"): epoch}
        receiver.open()
        receiver.flow(credit)
        await self.until(lambda: bool(receiver.state & Link.REMOTE_ACTIVE or receiver.state & Link.REMOTE_CLOSED))
        await self.until(lambda: True)
        return receiver

    async def attach_sender(self, address: str) -> Link:
        """Attach a sending link and wait for the emulator's attach (then, maybe, its detach)."""
        sender = self.session.sender(f"sender-{uuid.uuid4().hex[:6]}")
        sender.target.address = address
        sender.open()
        await self.until(lambda: bool(sender.state & Link.REMOTE_ACTIVE or sender.state & Link.REMOTE_CLOSED))
        await self.until(lambda: True)
        return sender

    async def send(self, sender: Link, message: Message) -> Delivery:
        """Send ``message`` once there is credit and wait for the emulator to settle it."""
        await self.until(lambda: sender.credit > 0)
        delivery = sender.delivery(str(uuid.uuid4()))
        sender.send(message.encode())
        sender.advance()
        await self.until(lambda: delivery.settled or delivery.remote_state != 0)
        return delivery

    def messages_on(self, link: Link) -> list[Message]:
        return [message for held, message in self.received if held.name == link.name]

    async def aclose(self) -> None:
        await self.stream.aclose()


def remote_error(link: Link) -> Condition | None:
    """The error the emulator detached ``link`` with, if it did."""
    return link.remote_condition


def partition_address(hub: Emulator, partition: str = "0", group: str = "$Default") -> str:
    """The address of one partition of ``hub``'s built-in endpoint, as azure-eventhub writes it."""
    return f"amqps://{hub.hostname}/{hub.amqp.event_hub_name}/ConsumerGroups/{group}/Partitions/{partition}"


async def authorized_client(hub: Emulator, policy: str = "service") -> AmqpTestClient:
    """A client on ``hub``'s plain-AMQP port holding a token of ``policy`` for the event hub."""
    assert hub.amqp.plain_port is not None
    client = await AmqpTestClient.connect(hub.amqp.plain_port)
    audience = f"sb://{hub.hostname}/{hub.amqp.event_hub_name}"
    key = next(each.primary_key for each in hub.policies if each.name == policy)
    status, description = await client.put_token(audience, service_bus_token(audience, policy, key))
    assert (status, description) == (200, "OK")
    return client
