"""Delivering an identity's outbox: its pending messages, in order, at least once, across reconnects.

Theory of operation
-------------------
One loop per client reads the queue from the file in order (a batch at a time, so a backlog of any
size streams from disk) and publishes each message once on the live connection, keeping up to
``max_in_flight`` of them unacknowledged. PUBACKs are taken in order from the head of that window;
each one tells the queue to remove everything up to it (the removals are batched on the disk thread).

Messages are first sent in queue order, and only ever sent again after that: when the connection
drops or the head's PUBACK is overdue (``request_timeout``), every unacknowledged message is sent
again, in order, on the next connection (or the same one), before anything newer -- except what
was dropped from the file meanwhile (``drop_oldest``), which stays dropped. So the hub sees
each message first in enqueue order, and a message is seen twice only when it was in flight when a
connection, or the process, ended.

While there is no connection, messages past their time to live are swept every so often, so that
expiry is counted and reported while the hub is away.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque

from aioiothub._outbox.outbox import OutboxQueue, StoredMessage
from aioiothub._session.background_errors import OutboxDeliveryFailed
from aioiothub._session.session import HubSession
from aioiothub.exceptions import ConnectionLostError, OutboxError
from aioiothub.protocol.device import OutboundPublish
from aioiothub.transports.base import Transport

__all__ = ["deliver_outbox", "new_message_id"]

#: Messages read from the file at a time.
READ_BATCH = 512
#: Longest pause between two sweeps for expired messages while disconnected, in seconds.
SWEEP_INTERVAL = 30.0

#: Random message ids made at a time: one read of the system's random source for many sends.
_IDS_PER_READ = 256
_random_hex: list[str] = []


def new_message_id() -> str:
    """A random (version 4) UUID as text, the message id of an outbox message without one.

    As random as :func:`uuid.uuid4` (the same source), read for many ids at once: a durable send
    does not make a system call of its own for its id.
    """
    if not _random_hex:
        text = os.urandom(16 * _IDS_PER_READ).hex()
        _random_hex.extend(text[start : start + 32] for start in range(0, len(text), 32))
    bits = _random_hex.pop()
    variant = "89ab"[int(bits[16], 16) & 3]
    return f"{bits[:8]}-{bits[8:12]}-4{bits[13:16]}-{variant}{bits[17:20]}-{bits[20:]}"


def _forget(future: asyncio.Future[None]) -> None:
    """An acknowledgement nobody waits for any more (its message is sent again): retrieve its outcome."""
    if not future.cancelled():
        future.exception()


async def deliver_outbox(queue: OutboxQueue, session: HubSession) -> None:
    """Deliver ``queue`` over ``session`` until cancelled."""
    window = session.settings.max_in_flight
    unacknowledged: deque[StoredMessage] = deque()  # sent at least once, in queue order
    ahead: deque[StoredMessage] = deque()  # read from the file, never sent
    read_through = 0  # the highest sequence number read from the file
    failures = 0
    while True:
        try:
            connection = await _connection(session, queue, read_through)
        except RuntimeError:
            return  # the client is closing: what is pending stays in the file
        acknowledgements: deque[asyncio.Future[None]] = deque()
        # What was dropped from the file meanwhile (full, expired) is not sent again.
        while unacknowledged and not queue.is_pending(unacknowledged[0].seq):
            unacknowledged.popleft()
        while ahead and not queue.is_pending(ahead[0].seq):
            ahead.popleft()
        try:
            for message in unacknowledged:
                acknowledgements.append(_send(session, connection, message))
            while True:
                while len(unacknowledged) < window:
                    if not ahead:
                        if not queue.has_more(read_through):
                            if unacknowledged:
                                break
                            await queue.wait_for_more(read_through)
                        messages, read_through = await queue.fetch(read_through, READ_BATCH)
                        ahead.extend(messages)
                        if not ahead:
                            continue
                    message = ahead[0]
                    acknowledgements.append(_send(session, connection, message))  # raises: it stays ahead
                    unacknowledged.append(ahead.popleft())
                failures = 0
                await acknowledgements[0]
                last = 0
                while acknowledgements and acknowledgements[0].done():
                    acknowledgements[0].result()  # raises for a lost or overdue acknowledgement
                    acknowledgements.popleft()
                    last = unacknowledged.popleft().seq
                queue.acknowledge(last)
        except (ConnectionLostError, TimeoutError):
            pass  # sent again, in order, on the next connection (or this one, if it is still up)
        except OutboxError as exc:
            failures += 1
            delay = session.settings.retry_delay(failures)
            session.supervisor.report(OutboxDeliveryFailed(exc, delay))
            await asyncio.sleep(delay)
        finally:
            for acknowledgement in acknowledgements:
                acknowledgement.add_done_callback(_forget)


def _send(session: HubSession, connection: Transport, message: StoredMessage) -> asyncio.Future[None]:
    return session.send_on(connection, OutboundPublish(message.topic, message.payload, 1, message.retain))


async def _connection(session: HubSession, queue: OutboxQueue, read_through: int) -> Transport:
    """The live connection; meanwhile, expired messages are swept now and then."""
    ttl = queue.outbox.limits.ttl
    while True:
        if session.connected or ttl is None:
            return await session.current()
        try:
            return await asyncio.wait_for(session.current(), min(ttl / 2, SWEEP_INTERVAL))
        except TimeoutError:
            await queue.fetch(read_through, 1)
