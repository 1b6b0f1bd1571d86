"""Pieces shared by every API area: open enums and the ``Deleted`` acknowledgement."""

from __future__ import annotations

import enum
from typing import Any
from uuid import UUID

import attrs

__all__ = ["Deleted", "OpenStrEnum"]

# Pseudo-members are cached so that ``X("new") is X("new")``, but only this many per enum:
# a hostile or buggy server must not grow the cache without bound.
_MAX_CACHED_PSEUDO_MEMBERS = 256


class OpenStrEnum(enum.StrEnum):
    """A string enum that keeps values it does not know.

    The API adds enum values without notice (``completed``, ``no-answer`` ...). A closed
    enum would make a whole page of calls undecodable, so an unknown value becomes a
    pseudo-member whose ``.value`` is the raw string and which encodes back unchanged:

    >>> class Color(OpenStrEnum):
    ...     RED = "red"
    >>> Color("teal").value, Color("teal") == "teal", Color("teal").is_known
    ('teal', True, False)
    """

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_ = value
        member._value_ = value
        cache = cls._value2member_map_
        if len(cache) < len(cls._member_names_) + _MAX_CACHED_PSEUDO_MEMBERS:
            cache[value] = member
        return member

    @property
    def is_known(self) -> bool:
        """True for a value this SDK version declares, False for a kept unknown value."""
        return type(self)._member_map_.get(self._name_) is self

    def __repr__(self) -> str:
        return f"<{type(self).__name__}.{self._name_}: {self._value_!r}>"


@attrs.frozen(kw_only=True)
class Deleted:
    """The answer to a DELETE: ``{"deleted": true, "id": "<uuid>"}``."""

    deleted: bool
    id: UUID
