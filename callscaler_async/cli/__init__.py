"""The ``callscaler`` command (needs the ``cli`` extra: ``pip install callscaler-async[cli]``).

``callscaler demo`` shows the main job end to end against a local sandbox; ``callscaler sync
calls`` runs it against the real API. ``python -m callscaler_async.cli`` works too.
"""

from __future__ import annotations

from ._app import main

__all__ = ["main"]
