"""Fixtures of the persistence-group tests; they live in group_helpers.py."""
from group_helpers import group_binaries, group_store  # noqa: F401  (pytest finds fixtures here)
