"""A device that only ever holds SAS tokens issued elsewhere: ``from_sas_token`` and ``update_sas_token``.

The hub, device and module come from the token's ``sr``. ``update_sas_token`` reconnects with the
new token at once, losing nothing, so the old token's expiry never forces a drop. Run it with no
arguments to use the embedded emulator, or set ``IOTHUB_DEVICE_CONNECTION_STRING`` (with
``SharedAccessKey``) to sign the tokens with that device's key, as a token service would.
"""

from __future__ import annotations

import time

import anyio
from _hub import device_options

import aioiothub


def issue_token(connection_string: str, lifetime: int) -> str:
    """What a token service would hand the device."""
    parsed = aioiothub.ConnectionString.parse(connection_string)
    assert parsed.shared_access_key is not None, "the connection string needs a SharedAccessKey"
    resource = f"{parsed.host_name}/devices/{parsed.device_id}"
    return aioiothub.generate_sas_token(resource, parsed.shared_access_key, int(time.time()) + lifetime)


async def main() -> None:
    async with device_options() as (connection_string, options, _hub):
        first = issue_token(connection_string, 600)
        async with aioiothub.IoTHubDeviceClient.from_sas_token(first, **options) as client:
            await client.send_message({"token": "first"})
            await client.update_sas_token(issue_token(connection_string, 3600))
            await client.send_message({"token": "second"})
            print("sent with two tokens; still connected:", client.connected)
            try:
                await client.update_sas_token(issue_token(connection_string, -60))
            except aioiothub.CredentialError as error:
                print("an expired token is refused before use:", error)


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
