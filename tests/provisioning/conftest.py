"""Fixtures for the provisioning tests: one emulator per test module, every transport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from aioiothub.emulator import Emulator
from aioiothub.emulator.hub.dps import ProvisioningService
from aioiothub.transports import TRANSPORT_NAMES
from tests.proxy_helpers import ConnectProxy, serve_proxy


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    # Module scope, so that one emulator (a module-scoped async fixture) serves a whole test file.
    return "asyncio"


@pytest.fixture(scope="module")
def hub(iothub_emulator_module: Emulator) -> Emulator:
    """An emulator (hub and DPS on the same TLS and WebSocket listeners) for a test module.

    The ``aioiothub.testing`` plugin's ``iothub_emulator_module``, under the name these tests use.
    """
    return iothub_emulator_module


@pytest.fixture
def dps(hub: Emulator) -> Iterator[ProvisioningService]:
    """The emulator's DPS answering at once (``retry-after`` 0), restored after the test."""
    hub.dps.retry_after = 0
    yield hub.dps
    hub.dps.retry_after = 0
    hub.dps.pending_polls = 0
    hub.dps.fail_requests(0)


@pytest.fixture(params=TRANSPORT_NAMES)
def transport(request: pytest.FixtureRequest) -> str:
    """Every value of the clients' ``transport=`` option."""
    name: str = request.param
    return name


@pytest.fixture
async def http_proxy() -> AsyncIterator[tuple[ConnectProxy, int]]:
    """An HTTP CONNECT proxy on loopback that records where it was asked to connect, and its port."""
    recorder = ConnectProxy()
    async for port in serve_proxy(recorder):
        yield recorder, port
