"""Thousands of hostile connections never cost a well-behaved device a message or its connection."""

from __future__ import annotations

import logging

import pytest

from aioiothub.emulator import Emulator
from aioiothub.transports import TRANSPORT_NAMES
from benchmarks.reliability.hostile import ATTACKS, run_hostile

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("transport", TRANSPORT_NAMES)
async def test_hostile_connections_leave_the_honest_device_alone(
    hub: Emulator, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aioiothub.emulator")
    report = await run_hostile(hub, connections=1200, concurrency=24, seed=7, transport=transport)
    print(report.summary())
    assert sum(report.attacks.values()) == 1200
    assert set(report.attacks) == set(ATTACKS)
    assert report.sent > 0
    assert report.arrived >= report.sent  # every acknowledged message is at the hub
    assert report.honest_drops == 0
    assert report.twin_reads > 0
    # The hub refused each attack on its own connection, never with an internal error.
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
