"""The ``remote`` fixture (a gateway with a provider's fake over loopback) for this folder."""

from tests.e2e.remote_setup import remote

__all__ = ["remote"]
