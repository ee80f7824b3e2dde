"""Connect, work, cancel and disconnect over and over: nothing accumulates."""

from __future__ import annotations

import pytest

from aioiothub.emulator import Emulator
from aioiothub.transports import TRANSPORT_NAMES
from benchmarks.reliability.leaks import run_leaks

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("transport", TRANSPORT_NAMES)
async def test_cycles_and_cancellations_leave_no_descriptor_thread_task_or_request(
    hub: Emulator, transport: str
) -> None:
    report = await run_leaks(hub, cycles=300, concurrent_clients=200, concurrent_cycles=2, seed=5, transport=transport)
    print(report.summary())
    assert report.cycles == 300 + 200 * 2
    assert sum(report.cancelled.values()) > 50
    assert report.pending_requests_seen == 0
    # The emulator shares the process: its connections are closed by now too.
    assert report.fds[1] <= report.fds[0]
    assert report.threads[1] <= report.threads[0]
    assert report.tasks[1] <= report.tasks[0]
    assert report.rss_growth_per_cycle_kib < 32
