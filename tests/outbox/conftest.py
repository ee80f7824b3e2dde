"""The outbox tests: every test that builds a client runs on every transport (``[aiomqtt]`` and ``[native]``)."""

from __future__ import annotations

import pytest

from tests.outbox.outbox_helpers import RestartableHub
from tests.transport_matrix import parametrize_transport, use_transport

#: Modules that test the file itself and build no client: they run once.
_SINGLE_TRANSPORT_MODULES = frozenset({"test_outbox_file"})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__.rpartition(".")[2] not in _SINGLE_TRANSPORT_MODULES:
        parametrize_transport(metafunc)


@pytest.fixture(autouse=True)
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """The transport this test's clients use (``None`` for a test that builds no client)."""
    return use_transport(request, monkeypatch)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def restartable_hub() -> RestartableHub:
    """An emulator the test starts (``async with hub.running():``), stops and starts again on its port."""
    return RestartableHub()
