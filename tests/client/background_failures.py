"""A client taken through every kind of failure it recovers from, run as a program of its own.

``python -m tests.client.background_failures [transport]`` starts an emulator, connects a device
and then: fails a token renewal, drops the connection and refuses the reconnects, lets a consumer
fall behind and invokes a method nobody serves. It waits (with deadlines) for each failure to
appear on ``client.errors()`` and prints the kinds seen as JSON. Logging is left unconfigured, as
in an application that never set it up: whatever the library wrote to stderr would show.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter

import anyio

import aioiothub
from aioiothub.emulator import Emulator
from aioiothub.protocol.sas import device_resource_uri

STEP = 10.0


async def main(transport: str) -> dict[str, int]:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("quiet-device")
        assert device.primary_key is not None
        resource = device_resource_uri(hub.hostname, device.device_id)
        renewals = 0

        def renew() -> str:
            nonlocal renewals
            renewals += 1
            if renewals == 1:
                raise OSError("token service unreachable")
            return aioiothub.generate_sas_token(resource, device.primary_key, int(time.time()) + 3600)

        first_token = aioiothub.generate_sas_token(resource, device.primary_key, int(time.time()) + 5)
        kinds: Counter[str] = Counter()
        changed = anyio.Event()

        async def until(kind: str, count: int = 1) -> None:
            nonlocal changed
            with anyio.fail_after(STEP):
                while kinds[kind] < count:
                    await changed.wait()

        async with (
            aioiothub.IoTHubDeviceClient(
                hostname=hub.hostname,
                device_id=device.device_id,
                sas_token=first_token,
                renew_sas_token=renew,
                port=hub.port,
                ssl_context=hub.client_ssl_context(),
                transport=transport,
                inbound_buffer_size=1,
                reconnect=aioiothub.ReconnectPolicy(initial_delay=0.05, max_delay=0.05, jitter=0),
            ) as client,
            anyio.create_task_group() as tasks,
        ):

            async def collect() -> None:
                nonlocal changed
                async for error in client.errors():
                    kinds[type(error).__name__] += getattr(error, "count", 1)
                    changed.set()
                    changed = anyio.Event()

            took_one = anyio.Event()

            async def stuck_consumer() -> None:
                async for _ in client.cloud_messages():
                    took_one.set()
                    await anyio.sleep_forever()

            async def reboots() -> None:
                async for request in client.method_requests("reboot"):
                    await request.respond(200)

            tasks.start_soon(collect)
            await anyio.wait_all_tasks_blocked()

            # A renewal that fails (the token lives 5 s: renewal is due after 4), then works.
            await until("RenewalFailed")
            await hub.wait_disconnected(device.device_id, timeout=STEP)  # the renewal reconnect
            await hub.wait_connected(device.device_id, timeout=STEP)

            # A dropped connection, then two refused reconnects.
            hub.refuse_connects(2, return_code=3)
            hub.drop_connection(device.device_id)
            await until("ConnectionDropped")
            await until("ReconnectFailed", 2)
            await hub.wait_connected(device.device_id, timeout=STEP)

            # A consumer that falls behind, and a method nobody serves.
            tasks.start_soon(stuck_consumer)
            tasks.start_soon(reboots)
            await hub.wait_subscribed(device.device_id, f"devices/{device.device_id}/messages/devicebound/#")
            await hub.wait_subscribed(device.device_id, "$iothub/methods/POST/#")
            await hub.send_c2d(device.device_id, b"taken")
            with anyio.fail_after(STEP):
                await took_one.wait()
            for index in range(3):  # one waits in the buffer, two do not fit
                await hub.send_c2d(device.device_id, b"%d" % index)
            await until("ConsumerFellBehind", 2)
            assert (await hub.invoke_method(device.device_id, "selfTest", timeout=STEP)).status == 503
            await until("MethodNotHandled")
            tasks.cancel_scope.cancel()
        return dict(kinds)


if __name__ == "__main__":
    seen = anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "aiomqtt", backend="asyncio")
    print(json.dumps(seen, sort_keys=True))
