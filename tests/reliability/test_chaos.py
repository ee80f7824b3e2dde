"""Under seeded chaos nothing acknowledged is lost, nothing hangs, and no desired change is missed."""

from __future__ import annotations

import pytest

from aioiothub.emulator import Emulator
from aioiothub.transports import TRANSPORT_NAMES
from benchmarks.reliability.chaos import deadline_bound, run_chaos

pytestmark = pytest.mark.anyio

IN_FLIGHT = 200


@pytest.mark.parametrize("transport", TRANSPORT_NAMES)
async def test_chaos_loses_nothing_and_hangs_nothing(hub: Emulator, transport: str) -> None:
    report = await run_chaos(hub, messages=20_000, in_flight=IN_FLIGHT, seed=11, transport=transport, min_drops=12)
    print(report.summary())
    drops = report.events["drop"] + report.events["drop with refused reconnects"]
    assert drops > 0
    assert report.arrived == report.sent  # every acknowledged message reached the hub
    assert report.sent + sum(report.failed_sends.values()) == 20_000
    assert report.duplicates <= IN_FLIGHT * drops
    assert report.longest <= deadline_bound(), report.slowest
    assert report.twin_operations["ok"] > 0
    assert report.desired_matches
    assert report.desired_backward_steps == 0
