"""A griffe extension for the docs build: doctest examples in docstrings become code blocks.

The project's docstrings show examples as ``>>>`` sessions (runnable, read as plain text in
``help()``). Markdown would read their ``>`` as quotes, so each run of ``>>>``/``...`` lines
(and the output lines after it) is fenced as ``pycon`` before mkdocstrings renders it. A
reST ``Example::`` marker loses its second colon (the indented block after it is already
code in Markdown).
"""

from __future__ import annotations

from typing import Any

import griffe


def fence_doctests(text: str) -> str:
    out: list[str] = []
    in_block = False
    indent = ""
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith(">>>") and not in_block:
            indent = line[: len(line) - len(stripped)]
            out.append(f"{indent}```pycon")
            in_block = True
        elif in_block and (not stripped or not line.startswith(indent)):
            out.append(f"{indent}```")
            in_block = False
        if stripped.endswith("::") and not in_block and not stripped.startswith(":"):
            line = line[:-1]
        out.append(line)
    if in_block:
        out.append(f"{indent}```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and (
            ">>>" in obj.docstring.value or "::" in obj.docstring.value
        ):
            obj.docstring.value = fence_doctests(obj.docstring.value)
