"""Authenticate with SAS tokens you make yourself, and hand the client a fresh one before expiry.

Run it with no arguments to use the embedded emulator, or set ``IOTHUB_DEVICE_CONNECTION_STRING``
(with ``SharedAccessKey``): the example signs its own short-lived tokens with that key.
"""

from __future__ import annotations

import time

import anyio
from _hub import device_options

import aioiothub

TOKEN_LIFETIME = 3600


async def main() -> None:
    async with device_options() as (connection_string, options, _hub):
        parsed = aioiothub.ConnectionString.parse(connection_string)
        assert parsed.shared_access_key is not None, "the connection string needs a SharedAccessKey"
        resource = f"{parsed.host_name}/devices/{parsed.device_id}"
        renewals = 0

        def fresh_token() -> str:
            # Called by the client shortly before the current token expires (and for reconnects
            # after it did); a real device might ask a token service instead.
            nonlocal renewals
            renewals += 1
            return aioiothub.generate_sas_token(resource, parsed.shared_access_key, int(time.time()) + TOKEN_LIFETIME)

        first = aioiothub.generate_sas_token(resource, parsed.shared_access_key, int(time.time()) + TOKEN_LIFETIME)
        async with aioiothub.IoTHubDeviceClient(
            hostname=parsed.host_name,
            device_id=parsed.device_id,
            sas_token=first,
            renew_sas_token=fresh_token,
            **options,
        ) as client:
            await client.send_message({"authenticated": "with a SAS token"})
            print("sent a message with a SAS token valid for", TOKEN_LIFETIME, "s; renewals so far:", renewals)


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
