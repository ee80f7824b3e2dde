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

import logging as _logging

from aioiothub import pnp
from aioiothub._version import __version__
from aioiothub.auth import (
    ConnectionString,
    SasTokenCredential,
    SharedAccessKeyCredential,
    X509Credential,
    derive_device_key,
    generate_sas_token,
)
from aioiothub.background_errors import (
    BackgroundError,
    ConnectionDropped,
    ConsumerFellBehind,
    DesiredResyncFailed,
    ErrorsDropped,
    MalformedMessage,
    MethodNotHandled,
    ReconnectFailed,
    RenewalFailed,
)
from aioiothub.client import AckMode, IoTHubDeviceClient, IoTHubModuleClient
from aioiothub.exceptions import (
    AuthenticationError,
    ConnectError,
    ConnectionLostError,
    CredentialError,
    DeviceDisabledError,
    IoTHubError,
    LossReason,
    ProtocolError,
    SendTimeoutError,
    ServiceError,
    ThrottledError,
)
from aioiothub.message import Message
from aioiothub.methods import MethodRequest, MethodResult
from aioiothub.options import ClientOptions, ProxyOptions, ReconnectPolicy
from aioiothub.pnp import WritablePropertyRequest, WritablePropertyResponse
from aioiothub.provisioned import ProvisionedDeviceClient
from aioiothub.provisioning import ProvisioningClient, ProvisioningOptions
from aioiothub.registration import RegistrationResult
from aioiothub.twin import Twin
from aioiothub.upload import BlobStorageInfo

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
    # Plug and Play (more in aioiothub.pnp)
    "pnp",
    "WritablePropertyRequest",
    "WritablePropertyResponse",
    # background errors (client.errors())
    "BackgroundError",
    "ConnectionDropped",
    "ConsumerFellBehind",
    "DesiredResyncFailed",
    "ErrorsDropped",
    "MalformedMessage",
    "MethodNotHandled",
    "ReconnectFailed",
    "RenewalFailed",
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
    # errors
    "AuthenticationError",
    "ConnectError",
    "ConnectionLostError",
    "CredentialError",
    "DeviceDisabledError",
    "IoTHubError",
    "LossReason",
    "ProtocolError",
    "SendTimeoutError",
    "ServiceError",
    "ThrottledError",
    "__version__",
]
