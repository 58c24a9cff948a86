"""A run observer for tests: calls ``fn(stage, partition)`` at the runner's hooks.

The job layer takes observers as an argument (``run_job(..., observers=[...])``),
so tests inject their fault points instead of patching module globals.
"""
from __future__ import annotations

from spark_scoring.run import Observer


class StageHook(Observer):
    """``fn("after_commit", partition)`` after each output commit, ``fn("after_audit", partition)`` after each audit row."""

    def __init__(self, fn):
        self.fn = fn

    def after_commit(self, ctx, unit) -> None:
        self.fn("after_commit", unit.text)

    def after_audit(self, ctx, unit, result) -> None:
        self.fn("after_audit", unit.text)
