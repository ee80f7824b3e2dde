"""Fixtures for these tests: the ``transport`` fixture, for the tests that connect a client.

A test that builds a client (directly, or through the ``iothub_device`` fixture) asks for
``transport`` first among its fixtures and runs once per transport (``[aiomqtt]`` and ``[native]``,
see ``tests.transport_matrix``); tests that speak only raw MQTT, HTTPS or the hub's API run once.
"""

from __future__ import annotations

import pytest

from tests.transport_matrix import parametrize_transport, use_transport


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_transport(metafunc)


@pytest.fixture
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """The transport this test's clients use (the client constructors' default while it runs)."""
    return use_transport(request, monkeypatch)
