"""Credentials: shared access keys, SAS tokens and X.509 certificates, and the tokens they sign.

Imports only the protocol core and the exceptions.
"""
