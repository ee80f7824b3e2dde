"""What the device and module clients share: argument checks into session settings, and the client's lifetime.

Imports the session, HTTPS helpers and value types; the public clients build on it.
"""
