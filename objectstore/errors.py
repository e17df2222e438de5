"""Errors raised by the object store.

Every error says what happened and, where the user can act, what to do about it.
"""
from __future__ import annotations


class StoreError(Exception):
    """Base class of every object-store error."""


class FormatError(StoreError):
    """The store (or a stream) has a format or version this code does not read."""


class StoreLocked(StoreError):
    """Another process has the store open for writing."""


class NotFound(StoreError):
    """A chunk, commit, tag or volume that was asked for does not exist."""


class CorruptChunk(StoreError):
    """A stored record failed its checksum or could not be decoded."""

    def __init__(self, message: str, *, pack: str | None = None, offset: int | None = None):
        super().__init__(message)
        self.pack = pack
        self.offset = offset


class StoreFull(StoreError):
    """The disk holding the store is full; nothing durable was lost."""
