"""Test helpers: a faithful in-process fake of the CallScaler REST API v1.

Example::

    from callscaler_async.testing import FakeCallScaler

    async with FakeCallScaler(calls=100, rate_limit=10, period=3.0) as fake:
        ...  # point a client at fake.base_url with fake.api_key

The fake never imports the SDK: it serves plain JSON built from its own data model.
"""

from ._data import ApiKey, Business
from ._faults import Faults, PendingFault
from ._server import FakeCallScaler, RequestRecord, Stats, StorageRecord, recording_bytes, serve

__all__ = [
    "ApiKey",
    "Business",
    "FakeCallScaler",
    "Faults",
    "PendingFault",
    "RequestRecord",
    "Stats",
    "StorageRecord",
    "recording_bytes",
    "serve",
]
