"""Device Provisioning Service: the registration client and the provider a provisioned device client is given.

Imports the transports, the credentials and the client settings; never the public clients.
"""
