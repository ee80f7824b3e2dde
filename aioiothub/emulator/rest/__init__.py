"""The emulator's HTTPS surfaces for devices: the HTTP/1.1 server and router, their SAS checks, file upload.

Modules, one job each: :mod:`.https` (the HTTP/1.1 connection handler on h11, the router, requests
and responses), :mod:`.http_auth` (a device's or module's SAS token on an HTTPS request),
:mod:`.file_upload` (the device file-upload routes and their records) and :mod:`.surface`
(:class:`~aioiothub.emulator.rest.surface.HttpsSurface`: these routes, the IoT Edge routes and the
blob endpoint composed behind the WebSocket port). IoT Hub's service REST API rides the same router
from :mod:`aioiothub.emulator.service_api`.

It may import :mod:`aioiothub.emulator.hub`, the listeners, :mod:`aioiothub.emulator.storage` and
:mod:`aioiothub.emulator.edge` (the surfaces it composes), and the shared protocol core.
"""
