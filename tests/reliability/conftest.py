"""Fixtures for the reliability proofs: one emulator per test module, as for the client tests."""

from __future__ import annotations

import pytest

from aioiothub.emulator import Emulator


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def hub(iothub_emulator_module: Emulator) -> Emulator:
    """An emulator listening on TLS and WebSocket ports for the duration of a test module.

    The ``aioiothub.testing`` plugin's ``iothub_emulator_module``, under the name these tests use.
    """
    return iothub_emulator_module
