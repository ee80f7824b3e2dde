"""Fixtures for the HTTPS tests: a fresh emulator per test (fault injection stays local)."""

from __future__ import annotations

import pytest

from aioiothub.emulator import Emulator


@pytest.fixture
def hub(iothub_emulator: Emulator) -> Emulator:
    """An emulator with its TLS, WebSocket/REST and blob listeners on free ports (``aioiothub.testing``)."""
    return iothub_emulator
