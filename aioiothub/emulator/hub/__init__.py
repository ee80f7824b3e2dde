"""The emulated hub's state and its service-side API: everything IoT Hub keeps, without any sockets.

:class:`Hub` is a facade over parts that each do one job:

=====================  ==========================================================================
``registry``           devices and modules, their keys or certificates, the CA it trusts, status
``admission``          CONNECT decisions: username, client id, SAS token or client certificate
``connections``        the live connection of each identity, waits on it, persistent subscriptions
``twins``              desired and reported properties, their versions and the twin topics
``methods``            direct method calls: requests out, answers matched back by ``$rid``
``queues``             cloud-to-device and module-input messages until acknowledged or expired
``telemetry``          device-to-cloud messages received, with waits and live streams
``faults``             fault injection: refused connects, failed or lost twin requests, slow PUBACKs
``dps``                the Device Provisioning Service: enrollments, registrations, assignments
``core``               the parts wired together, and the calls a device connection makes into them
``facade``             :class:`Hub`, the service-side API, holding its ``core``
``management``         deleting and updating identities, loading a store (for the service REST API)
``traffic_observer``   what a traffic log is told of each operation (``--log-traffic``)
=====================  ==========================================================================

Live MQTT connections (:class:`~aioiothub.emulator.mqtt.device.DeviceHandler`) call into
the hub's ``core``; the hub reaches a connection only through the small :class:`Connection` protocol, so
nothing here reads or writes bytes. Waiting (for telemetry, for a connection) never polls.
"""

from __future__ import annotations

from aioiothub.emulator.hub.admission import Admission
from aioiothub.emulator.hub.connections import Connection, PersistentSubscriptions
from aioiothub.emulator.hub.dps import ProvisioningService, RegistrationRecord
from aioiothub.emulator.hub.dps_enrollments import Allocation, Enrollment, EnrollmentGroup
from aioiothub.emulator.hub.errors import RuleViolation
from aioiothub.emulator.hub.facade import Hub
from aioiothub.emulator.hub.identity import Authentication, DeviceIdentity, Identity, ModuleIdentity
from aioiothub.emulator.hub.methods import MethodResult
from aioiothub.emulator.hub.queues import CloudMessage
from aioiothub.emulator.hub.telemetry import TelemetryRecord

__all__ = [
    "Admission",
    "Allocation",
    "Authentication",
    "CloudMessage",
    "Connection",
    "DeviceIdentity",
    "Enrollment",
    "EnrollmentGroup",
    "Hub",
    "Identity",
    "MethodResult",
    "ModuleIdentity",
    "PersistentSubscriptions",
    "ProvisioningService",
    "RegistrationRecord",
    "RuleViolation",
    "TelemetryRecord",
]
