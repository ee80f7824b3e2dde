"""The outbox on real clients against the emulator over TLS: delivery, outages, bounds, TTL, restarts, identities."""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

import aioiothub
from tests.outbox.outbox_helpers import RestartableHub

pytestmark = pytest.mark.anyio


async def _next_event(client: aioiothub.IoTHubDeviceClient, kind: type[aioiothub.BackgroundError]) -> object:
    with anyio.fail_after(10):
        async for event in client.errors():
            if isinstance(event, kind):
                return event
    raise AssertionError("the errors() stream ended")


async def test_sends_are_delivered_with_stable_message_ids_and_flush_waits_for_the_acknowledgements(
    restartable_hub: RestartableHub, tmp_path: Path
) -> None:
    async with restartable_hub.running() as hub:
        hub.emulator.add_device("ids")
        async with hub.client("ids", tmp_path / "outbox.db") as client:
            assert isinstance(client.outbox, aioiothub.OutboxQueue)
            for number in range(50):
                await client.send_message({"n": number})
            await client.send_message(aioiothub.Message(b"mine", message_id="chosen-id"))
            await client.outbox.flush(timeout=30)
            statistics = client.outbox.statistics()
        records = hub.emulator.telemetry("ids")
        assert [record.body for record in records[:50]] == [b'{"n":%d}' % number for number in range(50)]
        ids = [record.system_properties["$.mid"] for record in records]
        assert len(set(ids)) == 51
        assert ids[-1] == "chosen-id"
        assert statistics == aioiothub.OutboxStatistics(
            pending=0, pending_bytes=0, oldest_age=None, delivered=51, expired=0, dropped=0
        )


async def test_an_outage_longer_than_request_timeout_loses_nothing_and_keeps_the_order(
    restartable_hub: RestartableHub, tmp_path: Path
) -> None:
    async with restartable_hub.running() as hub:
        hub.emulator.add_device("outage")
        async with hub.client("outage", tmp_path / "outbox.db", request_timeout=0.5) as client:
            await client.send_message({"n": -1})
            await client.outbox.flush(timeout=30)
            async with hub.stopped():
                async with anyio.create_task_group() as senders:
                    for sender in range(10):
                        senders.start_soon(_send_range, client, sender * 1000, sender * 1000 + 1000)
                # Every send returned while the hub was away, and stays away for longer than request_timeout.
                assert not client.connected
                assert client.outbox.statistics().pending == 10_000
                await anyio.sleep(1.0)
            await client.outbox.flush(timeout=120)
        numbers = [body["n"] for body in hub.bodies("outage")]
        first_seen = list(dict.fromkeys(numbers))
        assert sorted(first_seen) == list(range(-1, 10_000))
        for sender in range(10):
            own = [n for n in first_seen if sender * 1000 <= n < sender * 1000 + 1000]
            assert own == list(range(sender * 1000, sender * 1000 + 1000))


async def _send_range(client: aioiothub.IoTHubDeviceClient, start: int, stop: int) -> None:
    for number in range(start, stop):
        await client.send_message({"n": number})


async def test_a_full_outbox_rejects_at_once_when_told_to(restartable_hub: RestartableHub, tmp_path: Path) -> None:
    outbox = aioiothub.Outbox(tmp_path / "outbox.db", max_messages=100, when_full="reject")
    async with restartable_hub.running() as hub:
        hub.emulator.add_device("reject")
        async with hub.client("reject", outbox) as client:
            async with hub.stopped():
                for number in range(100):
                    await client.send_message({"n": number})
                with pytest.raises(aioiothub.OutboxFull) as raised:
                    await client.send_message({"n": 100})
                assert raised.value.limit == "max_messages"
                assert client.outbox.statistics().pending == 100
            await client.outbox.flush(timeout=60)
            await client.send_message({"n": 101})  # room again
            await client.outbox.flush(timeout=60)
            statistics = client.outbox.statistics()
        assert list(dict.fromkeys(body["n"] for body in hub.bodies("reject"))) == [*range(100), 101]
        assert (statistics.delivered, statistics.dropped, statistics.expired) == (101, 0, 0)


async def test_a_full_outbox_drops_the_oldest_counts_and_reports_them(
    restartable_hub: RestartableHub, tmp_path: Path
) -> None:
    outbox = aioiothub.Outbox(tmp_path / "outbox.db", max_messages=100, max_bytes=50_000, when_full="drop_oldest")
    reported: list[int] = []
    async with restartable_hub.running() as hub:
        hub.emulator.add_device("drop")
        async with hub.client("drop", outbox) as client, anyio.create_task_group() as watchers:
            watchers.start_soon(_collect_drops, client, reported)
            await anyio.lowlevel.checkpoint()  # the loop is listening from here on
            async with hub.stopped():
                for number in range(150):
                    await client.send_message({"n": number})
                statistics = client.outbox.statistics()
                assert (statistics.pending, statistics.dropped) == (100, 50)
                # A message of ~30 kB pushes out as many of the oldest as its bytes need.
                await client.send_message({"n": 150, "pad": "x" * 30_000})
                assert client.outbox.statistics().pending_bytes <= 50_000
            await client.outbox.flush(timeout=60)
            final = client.outbox.statistics()
            with anyio.fail_after(10):
                while sum(reported) < final.dropped:  # noqa: ASYNC110 - the events come within a second
                    await anyio.sleep(0.05)
            watchers.cancel_scope.cancel()
        arrived = list(dict.fromkeys(body["n"] for body in hub.bodies("drop")))
        assert arrived == list(range(final.dropped, 151))
        assert final.delivered + final.dropped == 151
        assert sum(reported) == final.dropped > 50
        assert len(reported) < final.dropped  # reported in a few events, not one per message


async def _collect_drops(client: aioiothub.IoTHubDeviceClient, reported: list[int]) -> None:
    async for event in client.errors():
        if isinstance(event, aioiothub.OutboxMessagesDropped):
            reported.append(event.count)


async def test_messages_past_their_time_to_live_are_dropped_counted_and_reported(
    restartable_hub: RestartableHub, tmp_path: Path
) -> None:
    outbox = aioiothub.Outbox(tmp_path / "outbox.db", ttl=0.5)
    async with restartable_hub.running() as hub:
        hub.emulator.add_device("ttl")
        async with hub.client("ttl", outbox) as client:
            async with hub.stopped():
                for number in range(10):
                    await client.send_message({"n": number})
                event = await _next_event(client, aioiothub.OutboxMessagesExpired)
                assert isinstance(event, aioiothub.OutboxMessagesExpired)
                assert event.ttl == 0.5
            await client.wait_connected()
            await client.send_message({"n": "fresh"})
            await client.outbox.flush(timeout=30)
            statistics = client.outbox.statistics()
        assert hub.bodies("ttl") == [{"n": "fresh"}]
        assert (statistics.expired, statistics.delivered, statistics.pending) == (10, 1, 0)


async def test_a_client_opened_later_on_the_file_delivers_what_an_earlier_one_left_first(
    restartable_hub: RestartableHub, tmp_path: Path
) -> None:
    path = tmp_path / "outbox.db"
    async with restartable_hub.running() as hub:
        hub.emulator.add_device("later")
        async with hub.client("later", path) as client:
            await hub.stop()
            for number in range(300):
                await client.send_message({"n": number})
            # The client closes with everything still pending (as a process would end).
        await hub.start()
        assert hub.bodies("later") == []
        async with hub.client("later", aioiothub.Outbox(path)) as client:
            assert client.outbox.statistics().pending == 300
            await client.send_message({"n": 300})
            await client.outbox.flush(timeout=30)
        assert list(dict.fromkeys(body["n"] for body in hub.bodies("later"))) == list(range(301))


async def test_a_client_with_an_outbox_starts_while_the_hub_is_down_and_delivers_once_it_is_back(
    restartable_hub: RestartableHub, tmp_path: Path
) -> None:
    async with restartable_hub.running() as hub:
        hub.emulator.add_device("boot")
        # A device powered on without a network: entering returns, and sends are kept.
        async with hub.stopped(), hub.client("boot", tmp_path / "outbox.db") as client:
            assert not client.connected
            for number in range(200):
                await client.send_message({"n": number})
            assert client.outbox.statistics().pending == 200
            failed = await _next_event(client, aioiothub.ReconnectFailed)
            assert isinstance(failed, aioiothub.ReconnectFailed)
            assert isinstance(failed.error, aioiothub.ConnectError)
            assert failed.retry_in is not None
            async with anyio.create_task_group() as waiting:
                waiting.start_soon(hub.start)  # the hub comes up while the client waits
                await client.outbox.flush(timeout=30)
            assert client.connected
            twin = await client.get_twin()  # the rest of the client works on the late connection
            assert "$version" in twin.desired
            await hub.stop()
    assert [body["n"] for body in hub.bodies("boot")] == list(range(200))


async def test_an_outbox_client_still_fails_at_entry_without_reconnecting_or_with_a_refused_key(
    restartable_hub: RestartableHub, tmp_path: Path
) -> None:
    path = tmp_path / "outbox.db"
    async with restartable_hub.running() as hub:
        hub.emulator.add_device("strict")
        async with hub.stopped():
            # Nothing would ever deliver what is sent: entering fails, as without an outbox.
            with pytest.raises(aioiothub.ConnectError):
                async with hub.client("strict", path, reconnect=False):
                    pytest.fail("entered with reconnecting off and no hub")
        # A key the hub refuses is no outage: it is raised at entry, not retried.
        wrong = aioiothub.IoTHubDeviceClient.from_connection_string(
            f"HostName={hub.emulator.hostname};DeviceId=strict;SharedAccessKey=" + "A" * 44,
            port=hub.port,
            ssl_context=hub.emulator.client_ssl_context(),
            outbox=path,
        )
        with pytest.raises(aioiothub.AuthenticationError):
            async with wrong:
                pytest.fail("entered with a refused key")
        # Each failure released the identity's queue.
        async with hub.client("strict", path) as client:
            assert client.connected


async def test_one_file_holds_many_identities_and_one_identity_has_one_live_client(
    restartable_hub: RestartableHub, tmp_path: Path
) -> None:
    outbox = aioiothub.Outbox(tmp_path / "gateway.db")
    async with restartable_hub.running() as hub:
        for name in ("child-a", "child-b"):
            hub.emulator.add_device(name)
        async with hub.client("child-a", outbox) as a, hub.client("child-b", outbox) as b:
            with pytest.raises(aioiothub.OutboxInUseError) as raised:
                async with hub.client("child-a", tmp_path / "gateway.db"):
                    pytest.fail("a second live client of child-a was opened on the same file")
            assert raised.value.identity == "child-a"
            for number in range(20):
                await a.send_message({"n": number})
                await b.send_message({"n": -number})
            await a.outbox.flush(timeout=30)
            await b.outbox.flush(timeout=30)
        assert [body["n"] for body in hub.bodies("child-a")] == list(range(20))
        assert [body["n"] for body in hub.bodies("child-b")] == [-n for n in range(20)]
        # Once the first client is closed, the identity can be claimed again.
        async with hub.client("child-a", outbox) as again:
            assert again.outbox.statistics().delivered == 20


async def test_qos_0_bypasses_the_outbox_and_a_client_without_one_has_none(
    restartable_hub: RestartableHub, tmp_path: Path
) -> None:
    async with restartable_hub.running() as hub:
        hub.emulator.add_device("qos0")
        async with hub.client("qos0", tmp_path / "outbox.db") as client:
            await client.send_message({"n": 0}, qos=0)
            assert client.outbox.statistics().pending == 0
            with anyio.fail_after(10):
                while not hub.bodies("qos0"):  # noqa: ASYNC110 - no event to await
                    await anyio.sleep(0.01)
        async with hub.client("qos0", None) as plain:
            assert plain.outbox is None
        client = hub.client("qos0", tmp_path / "outbox.db")
        with pytest.raises(RuntimeError, match="not open"):
            client.outbox  # noqa: B018 - the property raises


async def test_outbox_arguments_are_checked_and_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="when_full"):
        aioiothub.Outbox(tmp_path / "o.db", when_full="overwrite")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="durability"):
        aioiothub.Outbox(tmp_path / "o.db", durability="fsync")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_messages"):
        aioiothub.Outbox(tmp_path / "o.db", max_messages=0)
    with pytest.raises(TypeError, match="max_bytes"):
        aioiothub.Outbox(tmp_path / "o.db", max_bytes=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl"):
        aioiothub.Outbox(tmp_path / "o.db", ttl=-1)
    with pytest.raises(ValueError, match="path"):
        aioiothub.Outbox(":memory:")
    with pytest.raises(TypeError, match="outbox"):
        aioiothub.IoTHubDeviceClient(hostname="h.example.net", device_id="d", shared_access_key="a2V5", outbox=3)  # type: ignore[arg-type]
