"""The device and module clients: the public face of a :class:`~aioiothub.session.HubSession`.

The classes live in modules of their own: what both share in :mod:`aioiothub.hub_client`,
:class:`IoTHubDeviceClient` in :mod:`aioiothub.device_client` and :class:`IoTHubModuleClient` in
:mod:`aioiothub.module_client`. This module gathers them, with the type aliases of their arguments.
"""

from __future__ import annotations

from aioiothub.device_client import IoTHubDeviceClient
from aioiothub.hub_client import AckMode, MessageLike
from aioiothub.module_client import IoTHubModuleClient

__all__ = ["AckMode", "IoTHubDeviceClient", "IoTHubModuleClient", "MessageLike"]
