"""IoT Edge in the emulator: the environment a module runs in, its workload API, module-to-module methods.

Modules, one job each: :mod:`.edge_hub` (an IoT Edge device's environment: the variables and the
workload socket its modules are given), :mod:`.workload` (the workload API over a Unix socket:
signing and certificates) and :mod:`.edge_methods` (direct methods a module invokes on another
module or device through the edge hub).

It may import :mod:`aioiothub.emulator.hub`, the HTTP router and SAS checks of
:mod:`aioiothub.emulator.rest`, and the shared protocol core.
"""
