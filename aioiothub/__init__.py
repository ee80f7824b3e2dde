"""aioiothub: an asyncio-native Azure IoT Hub client for devices and modules over MQTT.

One connection multiplexes telemetry, cloud-to-device messages, the device twin and direct
methods; the connection is re-established on its own, SAS tokens are renewed before they expire,
and every request has a deadline. A faithful local hub for tests and offline development lives in
:mod:`aioiothub.emulator`.

Example:
    >>> import aioiothub
    >>> async def main(connection_string):
    ...     async with aioiothub.IoTHubDeviceClient.from_connection_string(connection_string) as client:
    ...         await client.send_message({"temperature": 21.5})
    ...         twin = await client.get_twin()
"""

import contextlib as _contextlib
import logging as _logging

from aioiothub import exceptions as _exceptions
from aioiothub import pnp
from aioiothub._auth.credentials import (
    ConnectionString,
    SasTokenCredential,
    SharedAccessKeyCredential,
    X509Credential,
    derive_device_key,
    generate_sas_token,
)
from aioiothub._client.hub_client import AckMode
from aioiothub._https.upload import BlobStorageInfo
from aioiothub._outbox.outbox import Outbox, OutboxQueue, OutboxStatistics
from aioiothub._provisioning.client import ProvisioningClient, ProvisioningOptions
from aioiothub._provisioning.registration import RegistrationResult
from aioiothub._session import background_errors as _background_errors
from aioiothub._session.background_errors import *
from aioiothub._session.methods import MethodRequest, MethodResult
from aioiothub._session.twin import Twin
from aioiothub._version import __version__
from aioiothub.device_client import IoTHubDeviceClient
from aioiothub.exceptions import *
from aioiothub.message import Message
from aioiothub.module_client import IoTHubModuleClient
from aioiothub.options import ClientOptions, ProxyOptions, ReconnectPolicy
from aioiothub.pnp import WritablePropertyRequest, WritablePropertyResponse

ProvisionedDeviceClient = IoTHubDeviceClient
"""What :meth:`IoTHubDeviceClient.from_provisioning` returns: an :class:`IoTHubDeviceClient` given the
identity DPS assigned (``client.registration``). The name stays for code that annotates with it."""

# A library prints nothing by itself: without this, Python's last-resort handler would write the
# client's warnings to stderr whenever the application has not configured logging.
_logging.getLogger("aioiothub").addHandler(_logging.NullHandler())

__all__ = [
    # clients
    "IoTHubDeviceClient",
    "IoTHubModuleClient",
    # device provisioning (DPS)
    "ProvisioningClient",
    "ProvisionedDeviceClient",
    "ProvisioningOptions",
    "RegistrationResult",
    # what they send and receive
    "Message",
    "MethodRequest",
    "MethodResult",
    "Twin",
    "BlobStorageInfo",
    "AckMode",
    # the durable outbox (outbox= on every client)
    "Outbox",
    "OutboxQueue",
    "OutboxStatistics",
    # Plug and Play (more in aioiothub.pnp)
    "pnp",
    "WritablePropertyRequest",
    "WritablePropertyResponse",
    # options
    "ClientOptions",
    "ProxyOptions",
    "ReconnectPolicy",
    # authentication
    "ConnectionString",
    "SasTokenCredential",
    "SharedAccessKeyCredential",
    "X509Credential",
    "derive_device_key",
    "generate_sas_token",
    "__version__",
]
# background errors (client.errors()), then every exception of aioiothub.exceptions
__all__ += _background_errors.__all__
__all__ += _exceptions.__all__

# Reprs, tracebacks and the API reference show the import path users type (as httpx and anyio do),
# not the private module a name happens to be defined in.
for _name in __all__:
    _value = globals()[_name]
    if not _name.startswith("__") and not isinstance(_value, type(_logging)) and hasattr(_value, "__module__"):
        with _contextlib.suppress(AttributeError, TypeError):  # aliases without a writable __module__
            _value.__module__ = "aioiothub"
del _name, _value
