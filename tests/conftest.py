import pytest


@pytest.fixture
def anyio_backend() -> str:
    # aiomqtt needs asyncio, so the whole suite runs on it.
    return "asyncio"
