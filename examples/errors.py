"""What goes wrong, and what it raises: wrong credentials, a hub that does not answer in time,
a throttled request.

Run it with no arguments to use the embedded emulator (which injects the faults), or set
``IOTHUB_DEVICE_CONNECTION_STRING`` to see the authentication error from a real hub.
"""

from __future__ import annotations

import base64

import anyio
from _hub import device_options

import aioiothub


async def main() -> None:
    async with device_options() as (connection_string, options, hub):
        parsed = aioiothub.ConnectionString.parse(connection_string)
        wrong_key = base64.b64encode(b"not the device's key" + bytes(12)).decode()
        try:
            async with aioiothub.IoTHubDeviceClient(
                hostname=parsed.host_name, device_id=parsed.device_id, shared_access_key=wrong_key, **options
            ):
                pass
        except aioiothub.AuthenticationError as error:
            print("refused at once, no retry loop:", error)

        if hub is None:
            return
        async with aioiothub.IoTHubDeviceClient.from_connection_string(
            connection_string, request_timeout=1, **options
        ) as client:
            hub.ignore_twin_requests(1)
            try:
                await client.get_twin()
            except TimeoutError as error:
                print("nothing hangs: get_twin raised", type(error).__name__, error)
            hub.fail_twin_operations(1, status=429)
            try:
                await client.get_twin()
            except aioiothub.ThrottledError as error:
                print("throttled:", error.status)
            twin = await client.get_twin()
            print("and the next request works:", twin.desired)


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
