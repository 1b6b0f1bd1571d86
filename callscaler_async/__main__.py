"""``python -m callscaler_async``: the ``callscaler`` command."""

from .cli import run

run()
