"""Helpers for the client integration tests: ways to connect, unique ids, and waiting without sleeps."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio

import aioiothub
from aioiothub.emulator import Authentication, Emulator, Identity
from aioiothub.protocol.sas import device_resource_uri

T = TypeVar("T")

#: Seconds to wait for something the emulator or the client should do at once.
STEP = 5.0

_ids = itertools.count(1)

current_transport = "aiomqtt"
"""The ``transport=`` the helpers give the clients they build (set per test by the ``transport`` fixture)."""


def new_id(prefix: str) -> str:
    """A device or module id no other test in the session uses."""
    return f"{prefix}-{next(_ids)}"


@dataclass(frozen=True, slots=True)
class Setup:
    """One way of reaching the hub: a transport and a kind of credential.

    Attributes:
        name: the pytest id.
        authentication: how the identity is registered with the emulator.
        websockets: MQTT over WebSocket instead of MQTT over TLS.
        sas_token: connect with a SAS token made by the test instead of the shared access key.
    """

    name: str
    authentication: Authentication = "sas"
    websockets: bool = False
    sas_token: bool = False


TCP_SAS = Setup("tcp-sas")
WEBSOCKET_SAS = Setup("websocket-sas", websockets=True)
TCP_X509 = Setup("tcp-x509-self-signed", authentication="x509")
TCP_X509_CA = Setup("tcp-x509-ca-signed", authentication="x509_ca")
TCP_SAS_TOKEN = Setup("tcp-sas-token", sas_token=True)

DEVICE_SETUPS = (TCP_SAS, WEBSOCKET_SAS, TCP_X509, TCP_X509_CA, TCP_SAS_TOKEN)
MODULE_SETUPS = (TCP_SAS, WEBSOCKET_SAS)


def client_options(hub: Emulator, identity: Identity, setup: Setup, directory: Path) -> dict[str, Any]:
    """Keyword options for ``from_connection_string`` (or the constructor, for SAS tokens)."""
    options: dict[str, Any] = {"ssl_context": hub.client_ssl_context()}
    if setup.websockets:
        options["websockets"] = True
        options["port"] = hub.websocket_port
    else:
        options["port"] = hub.port
    if setup.authentication != "sas":
        certificate_file, key_file = identity.write_certificate_files(directory)
        options["x509"] = aioiothub.X509Credential(certificate_file, key_file)
    return options


def device_client(
    hub: Emulator, identity: Identity, setup: Setup = TCP_SAS, directory: Path | None = None, **options: Any
) -> aioiothub.IoTHubDeviceClient:
    """A (not yet opened) device client for ``identity`` connecting the way ``setup`` says."""
    return _client(aioiothub.IoTHubDeviceClient, hub, identity, setup, directory, options)


def module_client(
    hub: Emulator, identity: Identity, setup: Setup = TCP_SAS, directory: Path | None = None, **options: Any
) -> aioiothub.IoTHubModuleClient:
    """A (not yet opened) module client for ``identity`` connecting the way ``setup`` says."""
    return _client(aioiothub.IoTHubModuleClient, hub, identity, setup, directory, options)


ClientT = TypeVar("ClientT", aioiothub.IoTHubDeviceClient, aioiothub.IoTHubModuleClient)


def _client(
    kind: type[ClientT],
    hub: Emulator,
    identity: Identity,
    setup: Setup,
    directory: Path | None,
    options: dict[str, Any],
) -> ClientT:
    if setup.authentication != "sas" and directory is None:
        raise AssertionError("X.509 setups need a directory for the certificate files")
    merged = {"transport": current_transport, **client_options(hub, identity, setup, directory or Path()), **options}
    if not setup.sas_token:
        return kind.from_connection_string(identity.connection_string, **merged)
    assert identity.primary_key is not None
    resource = device_resource_uri(hub.hostname, identity.device_id, identity.module_id)
    token = aioiothub.generate_sas_token(resource, identity.primary_key, int(time.time()) + 3600)
    if identity.module_id is not None:
        merged["module_id"] = identity.module_id
    return kind(hostname=hub.hostname, device_id=identity.device_id, sas_token=token, **merged)


async def wait_subscribed(hub: Emulator, topic_filter: str, device_id: str, module_id: str | None = None) -> None:
    """Wait until the identity's live connection holds ``topic_filter``."""
    await hub.wait_subscribed(device_id, topic_filter, module_id=module_id, timeout=STEP)


async def take(iterator: AsyncIterator[T], count: int, *, timeout: float = STEP) -> list[T]:  # noqa: ASYNC109
    """The next ``count`` items of ``iterator``, within ``timeout`` seconds."""
    items: list[T] = []
    with anyio.fail_after(timeout):
        while len(items) < count:
            items.append(await anext(iterator))
    return items


async def round_trips(client: aioiothub.IoTHubDeviceClient | aioiothub.IoTHubModuleClient) -> None:
    """Two twin reads, used as a barrier on the connection.

    The emulator handles a connection's packets in order and answers on the same stream. After the
    first answer arrives, the client has also processed everything the hub sent before it; after the
    second, the hub has processed everything the client sent before that (such as a PUBACK).
    """
    with anyio.fail_after(STEP):
        await client.get_twin()
        await client.get_twin()


async def reconnect_seen_by_hub(
    hub: Emulator, device_id: str, module_id: str | None = None, *, timeout: float = STEP  # noqa: ASYNC109
) -> None:
    """Wait until the hub sees the identity's connection end and a new one come up.

    A planned reconnect (a SAS renewal) is not reported by ``connection_states()``; tests that wait
    for one watch the hub instead.
    """
    with anyio.fail_after(timeout):
        await hub.wait_disconnected(device_id, module_id, timeout=timeout)
        await hub.wait_connected(device_id, module_id, timeout=timeout)


async def nothing_more(iterator: AsyncIterator[T], *, within: float = 0.3) -> None:
    """Fail if ``iterator`` yields anything within ``within`` seconds."""
    with anyio.move_on_after(within):
        item = await anext(iterator)
        raise AssertionError(f"unexpected item: {item!r}")
