"""The HTTPS half of the device API (httpx): file upload, module-to-device methods and the IoT Edge workload API.

Imports the credentials, the protocol core and value types; never the MQTT session.
"""
