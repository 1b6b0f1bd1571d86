"""The ``callscaler`` command (its dependencies come with the ``cli`` extra).

``callscaler demo`` shows the main job end to end against a local sandbox; ``callscaler sync
calls`` runs it against the real API. ``python -m callscaler_async`` runs the same command.

Installed without the extra, the command says in one line what to install and exits with
status 2 (a usage error): the SDK itself does not need click, and a service using only the
library should not have to install it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from ._app import main

__all__ = ["main", "run"]

# Top-level modules the command needs that the core install does not bring: the packages of
# the ``cli`` extra in pyproject.toml (a test keeps the two in step).
_CLI_EXTRA_MODULES = frozenset({"click", "rich"})
_INSTALL_HINT = "pip install 'callscaler-async[cli]'"


def _missing_extra_module(exc: ModuleNotFoundError) -> str | None:
    """The ``cli`` extra's package whose absence ``exc`` reports, else None.

    Only the package itself counts: an import failing *inside* an installed click or rich
    (``rich.progres``), or a module of ours, is a bug that keeps its traceback.
    """
    return exc.name if exc.name in _CLI_EXTRA_MODULES else None


def run(argv: list[str] | None = None) -> NoReturn:
    """The ``callscaler`` console script and ``python -m callscaler_async``."""
    try:
        from ._app import main

        # Inside the try too: a command may import part of the extra only when it runs.
        main(args=argv)
    except ModuleNotFoundError as exc:
        missing = _missing_extra_module(exc)
        if missing is None:
            raise
        print(
            f"callscaler: the command needs the cli extra (no module named {missing!r}): "
            f"{_INSTALL_HINT}",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    raise SystemExit(0)  # click's standalone mode exits by itself; not reached


def __getattr__(name: str) -> Any:
    # ``main`` is the click group (for click's test runner); importing it needs click.
    if name == "main":
        from ._app import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
