"""A link that dies without FIN or RST is noticed within 1.5 x keep-alive, and nothing queued is lost."""

from __future__ import annotations

import pytest

from aioiothub.emulator import Emulator
from aioiothub.transports import TRANSPORT_NAMES
from benchmarks.reliability.half_open import run_half_open

pytestmark = pytest.mark.anyio

KEEPALIVE = 2
# The event loop and a loaded machine may add a little to the rule's own deadline.
SLACK = 0.75


@pytest.mark.parametrize("transport", TRANSPORT_NAMES)
async def test_silent_cuts_are_detected_and_nothing_queued_is_lost(hub: Emulator, transport: str) -> None:
    report = await run_half_open(hub, cuts=2, keepalive=KEEPALIVE, transport=transport)
    print(report.summary())
    assert len(report.detections) == 2
    assert all(seconds <= 1.5 * KEEPALIVE + SLACK for seconds in report.detections)
    assert report.failed == 0
    assert report.sent == 60
    assert report.arrived == 60
