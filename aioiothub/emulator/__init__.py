"""A local Azure IoT Hub emulator: run device code and tests offline, with the hub's rules enforced.

Example::

    from aioiothub.emulator import Emulator

    async with Emulator() as hub:                   # TLS on a free port: hub.port, hub.ca_file
        device = hub.add_device("dev1")             # device.connection_string, device.primary_key
        ...                                         # connect with ssl_context=hub.client_ssl_context()
        await hub.update_desired("dev1", {"interval": 5})
        result = await hub.invoke_method("dev1", "reboot", {"delay": 1}, timeout=5)
        await hub.send_c2d("dev1", b"hello", properties={"k": "v"})
        records = await hub.wait_for_telemetry(1, device_id="dev1")
        group = hub.dps.add_enrollment_group("factory")  # DPS on the same listeners: hub.dps.id_scope

Run it standalone with ``python -m aioiothub.emulator --device dev1``.
"""

from __future__ import annotations

from aioiothub.emulator.hub import (
    Allocation,
    Authentication,
    DeviceIdentity,
    Enrollment,
    EnrollmentGroup,
    Hub,
    Identity,
    MethodResult,
    ModuleIdentity,
    ProvisioningService,
    RegistrationRecord,
    TelemetryRecord,
)
from aioiothub.emulator.server import Emulator

__all__ = [
    "Allocation",
    "Authentication",
    "DeviceIdentity",
    "Emulator",
    "Enrollment",
    "EnrollmentGroup",
    "Hub",
    "Identity",
    "MethodResult",
    "ModuleIdentity",
    "ProvisioningService",
    "RegistrationRecord",
    "TelemetryRecord",
]
