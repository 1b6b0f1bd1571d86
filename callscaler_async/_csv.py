"""CSV records from a byte stream, one chunk at a time (constant memory for any size).

``csv.reader`` wants whole lines, and a record may span several lines when a quoted cell holds
a newline, so the text is cut only at ``\\n`` and a line is handed to the reader once the
quotes opened so far are closed (an even count of ``"`` in an RFC 4180 record). Only ``\\n``
counts as a line end: ``str.splitlines`` would also cut at U+2028, U+0085 and friends, which
a caller's name may contain unquoted (``csv`` quotes only ``\\r``, ``\\n``, ``"`` and ``,``).
"""

from __future__ import annotations

import codecs
import csv
from collections import deque
from collections.abc import Iterator

__all__ = ["CSVRecords"]


class _Lines(Iterator[str]):
    """The lines ``csv.reader`` may read now (every record among them is complete)."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque()

    def __next__(self) -> str:
        if not self.lines:
            raise StopIteration
        return self.lines.popleft()


class CSVRecords:
    """Feed bytes, get complete records: ``records = feed(chunk)``; ``finish()`` at the end.

    ``finish`` also returns a last record whose quotes never closed (a stream cut inside a
    quoted cell), parsed as far as it goes; ``unterminated`` then says so.

    >>> stream = CSVRecords()
    >>> stream.feed(b'id,name\\r\\n1,"a\\nb"\\r\\n2,')
    [['id', 'name'], ['1', 'a\\nb']]
    >>> stream.finish()
    [['2', '']]
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._ready = _Lines()
        self._reader = csv.reader(self._ready, strict=False)
        self._pending = ""  # text after the last line end
        self._record: list[str] = []  # lines of a record whose quotes are still open
        self._quotes = 0
        self.unterminated = False

    def _records(self, lines: list[str]) -> list[list[str]]:
        out: list[list[str]] = []
        ready = self._ready.lines
        for line in lines:
            count = line.count('"')
            if not self._record and not count & 1:  # the common case: a whole record
                ready.append(line)
                continue
            self._record.append(line)
            self._quotes += count
            if not self._quotes & 1:
                ready.extend(self._record)
                self._record.clear()
                self._quotes = 0
        if ready:
            out.extend(row for row in self._reader if row)
        return out

    def feed(self, chunk: bytes) -> list[list[str]]:
        text = self._pending + self._decoder.decode(chunk)
        lines = text.split("\n")
        self._pending = lines.pop()  # "" when the text ended with a line end
        if not lines:
            return []
        return self._records([line + "\n" for line in lines])

    def finish(self) -> list[list[str]]:
        tail = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        out = self._records([tail]) if tail else []
        if self._record:  # quotes never closed: the stream ended inside a quoted cell
            self.unterminated = True
            self._ready.lines.extend(self._record)
            self._record.clear()
            out.extend(row for row in self._reader if row)
        return out
