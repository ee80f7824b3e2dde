"""Fixtures for the HTTPS tests: a fresh emulator per test (fault injection stays local)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aioiothub.emulator import Emulator


@pytest.fixture
async def hub() -> AsyncIterator[Emulator]:
    """An emulator with its TLS, WebSocket/REST and blob listeners on free ports."""
    async with Emulator() as emulator:
        yield emulator
