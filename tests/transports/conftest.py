"""Fixtures for the transport tests: one emulator per test module."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aioiothub.emulator import Emulator


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def hub() -> AsyncIterator[Emulator]:
    """An emulator listening on TLS and WebSocket ports for the duration of a test module."""
    async with Emulator() as emulator:
        yield emulator
