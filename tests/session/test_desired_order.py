"""Desired patches never go backwards: a property of the session over randomized interleavings.

A scripted hub writes desired properties in bursts, answers twin GETs with the document as it is
when it processes them, delivers what it sent on each connection in order, and drops connections;
the application consumes slowly from a small buffer. Whatever the interleaving, the patches the
application sees carry strictly increasing ``$version`` values, and once everything has settled
their merge equals the hub's document.
"""

from __future__ import annotations

import itertools
import json
import random
from collections import deque
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from aioiothub.protocol import topics
from aioiothub.protocol.twin import merge_patch
from tests.fakes import FakeConnection, FakeNetwork
from tests.session.session_helpers import make_session, request_id, running, twin_requests

pytestmark = pytest.mark.anyio

SEEDS = range(60)
STEPS = 160


class ScriptedHub:
    """The hub's side: one desired document, and what each connection has yet to carry, in order."""

    def __init__(self, network: FakeNetwork, rng: random.Random) -> None:
        self.network = network
        self.rng = rng
        self.document: dict[str, Any] = {"k0": 0}
        self.version = 1
        self.outbox: dict[int, deque[tuple[str, bytes]]] = {}
        self.answered: set[tuple[int, str]] = set()

    def _outbox(self, connection: FakeConnection) -> deque[tuple[str, bytes]]:
        return self.outbox.setdefault(id(connection), deque())

    @staticmethod
    def _subscribed_to_desired(connection: FakeConnection) -> bool:
        return any(name == topics.TWIN_DESIRED_SUBSCRIPTION for batch in connection.subscriptions for name, _ in batch)

    def write(self) -> None:
        """The back end writes the desired section: a key set or deleted."""
        key = f"k{self.rng.randint(0, 4)}"
        value = None if self.rng.random() < 0.2 else self.rng.randint(0, 1000)
        patch = {key: value}
        self.document = merge_patch(self.document, patch)
        self.version += 1
        connection = self.network.current
        if connection.connected and self._subscribed_to_desired(connection):
            body = json.dumps({**patch, "$version": self.version}).encode()
            self._outbox(connection).append((topics.twin_desired_topic(self.version), body))

    def process_gets(self) -> None:
        """Answer every twin GET the current connection carried, with the document as it is now."""
        connection = self.network.current
        if not connection.connected:
            return
        for sent in twin_requests(connection):
            rid = request_id(sent)
            if (id(connection), rid) in self.answered:
                continue
            self.answered.add((id(connection), rid))
            body = json.dumps({"desired": {**self.document, "$version": self.version}, "reported": {"$version": 1}})
            self._outbox(connection).append((topics.twin_response_topic(200, rid), body.encode()))

    def deliver_one(self) -> bool:
        """Deliver the oldest thing the current connection has yet to carry."""
        connection = self.network.current
        queue = self._outbox(connection)
        if not connection.connected or not queue:
            return False
        topic, payload = queue.popleft()
        connection.deliver(topic, payload)
        return True

    def drop(self) -> None:
        connection = self.network.current
        if connection.connected:
            connection.drop()
            self._outbox(connection).clear()


async def _run(seed: int) -> None:
    rng = random.Random(seed)
    network = FakeNetwork()
    session = make_session(network, inbound_buffer_size=2)
    hub = ScriptedHub(network, rng)
    seen: list[dict[str, Any]] = []
    permits = anyio.Semaphore(1)
    async with running(session) as tasks:

        async def consume() -> None:
            iterator = session.desired_patches().__aiter__()
            while True:
                await permits.acquire()
                seen.append(await iterator.__anext__())

        tasks.start_soon(consume)
        await network.connected(1)
        # The baseline reading: what the application's document starts from.
        await network.until(lambda: len(twin_requests(network.current)) == 1)
        hub.process_gets()
        hub.deliver_one()
        await network.until(lambda: session.protocol.desired.state.value == "live")
        for _ in range(STEPS):
            roll = rng.random()
            if roll < 0.30:
                for _ in range(rng.randint(1, 4)):  # a burst
                    hub.write()
            elif roll < 0.45:
                hub.process_gets()
            elif roll < 0.75:
                for _ in range(rng.randint(1, 3)):
                    hub.deliver_one()
            elif roll < 0.80:
                hub.drop()
            elif roll < 0.92:
                permits.release()
            for _ in range(rng.randint(0, 3)):
                await anyio.lowlevel.checkpoint()
            await network.until(lambda: network.current.connected, "a connection")

        # Settle: the hub answers and delivers everything, the application catches up.
        with anyio.fail_after(5):
            while (seen[-1]["$version"] if seen else 1) != hub.version or not _quiet(hub, network):
                await network.until(lambda: network.current.connected, "a connection")
                hub.process_gets()
                while hub.deliver_one():
                    pass
                permits.release()
                for _ in range(3):
                    await anyio.lowlevel.checkpoint()

    versions = [patch["$version"] for patch in seen]
    assert all(earlier < later for earlier, later in itertools.pairwise(versions)), versions
    document: dict[str, Any] = {"k0": 0}  # the baseline the first reading showed
    for patch in seen:
        document = merge_patch(document, {key: value for key, value in patch.items() if key != "$version"})
    assert document == hub.document


def _quiet(hub: ScriptedHub, network: FakeNetwork) -> bool:
    connection = network.current
    pending = [sent for sent in twin_requests(connection) if (id(connection), request_id(sent)) not in hub.answered]
    return not pending and not hub.outbox.get(id(connection))


@pytest.mark.parametrize("seed", SEEDS)
async def test_desired_patches_never_go_backwards_and_lose_nothing(seed: int) -> None:
    await _run(seed)
