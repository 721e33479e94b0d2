"""Data: the CSV reader and splits (``readers``), the tasks (``tasks``) and the shipped series
and texts (``series``, package data)."""

from bptt.data import readers, tasks

__all__ = ["readers", "tasks"]
