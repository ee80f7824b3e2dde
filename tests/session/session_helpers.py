"""Building a session over the fake network, and the hub's answers the tests script."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import anyio

from aioiothub._auth.credentials import SharedAccessKeyCredential
from aioiothub._session.session import HubSession, SessionSettings
from aioiothub.exceptions import unwrap_group as unwrap
from aioiothub.options import ReconnectPolicy
from aioiothub.protocol import topics
from tests.fakes import FakeConnection, FakeNetwork, Sent

KEY = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg="
#: Reconnect at once: the tests that are about back-off build their own policy.
IMMEDIATE = ReconnectPolicy(initial_delay=0, max_delay=0, jitter=0)
_CONTEXT = ssl.create_default_context()


def make_session(network: FakeNetwork, **changes: Any) -> HubSession:
    """A device session on the fake network, with the fake clock."""
    settings = SessionSettings(
        hostname="hub.example.net",
        device_id="dev1",
        module_id=None,
        credential=SharedAccessKeyCredential(KEY, ttl=3600),
        connect_host="hub.example.net",
        port=8883,
        websockets=False,
        ssl_context=_CONTEXT,
        proxy=None,
        product_info="aioiothub-tests",
        model_id=None,
        keepalive=60,
        request_timeout=5.0,
        reconnect=IMMEDIATE,
        max_in_flight=8,
        inbound_buffer_size=4,
        transport=network.factory,
    )
    return HubSession(replace(settings, **changes), clock=network.clock)


@asynccontextmanager
async def running(session: HubSession) -> AsyncIterator[anyio.abc.TaskGroup]:
    """Run the session (first connect included) and give a task group for the test's own tasks.

    A single error ending the group is raised as it is, as the clients do.
    """
    try:
        async with anyio.create_task_group() as task_group:
            await task_group.start(session.run)
            try:
                yield task_group
            finally:
                session.close()
                task_group.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise unwrap(group) from None


def twin_requests(connection: FakeConnection, kind: str = "GET") -> list[Sent]:
    """The twin GETs (or reported PATCHes) a connection carried."""
    prefix = "$iothub/twin/GET/" if kind == "GET" else "$iothub/twin/PATCH/properties/reported/"
    return [sent for sent in connection.published if sent.topic.startswith(prefix)]


def request_id(sent: Sent) -> str:
    """The ``$rid`` of a twin request."""
    return topics.parse_twin_request_topic(sent.topic).request_id


def answer_twin(connection: FakeConnection, sent: Sent, desired: dict[str, Any], reported: dict[str, Any]) -> None:
    """Answer a twin GET with a document."""
    body = json.dumps({"desired": desired, "reported": reported}).encode()
    connection.deliver(topics.twin_response_topic(200, request_id(sent)), body)


def notify_desired(connection: FakeConnection, patch: dict[str, Any]) -> None:
    """Send a desired-property notification (the version goes on the topic, as the hub does)."""
    connection.deliver(topics.twin_desired_topic(patch["$version"]), json.dumps(patch).encode())
