"""A small Python client of the protocol, end to end encrypted (see ``client.Client``)."""

from chat_server.sdk.client import Client, ClientError, Received

__all__ = ["Client", "ClientError", "Received"]
