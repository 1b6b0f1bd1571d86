"""One module per API area; each method builds a request and names the model."""

from .account import Account
from .analytics import Analytics
from .call_flows import CallFlows
from .calls import CallExport, Calls, Download
from .numbers import NOT_GIVEN, Numbers

__all__ = [
    "NOT_GIVEN",
    "Account",
    "Analytics",
    "CallExport",
    "CallFlows",
    "Calls",
    "Download",
    "Numbers",
]
