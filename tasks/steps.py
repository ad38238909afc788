"""What every step returns: a status, its seconds, and a one-line summary."""

from __future__ import annotations

from datetime import datetime
from typing import Self

from pydantic import BaseModel

from drillbook.tasks.outcome import Status


class StepResult(BaseModel):
    """Base of every step's result; subclasses give every other field a default."""

    status: Status = Status.SKIPPED
    seconds: float = 0.0
    summary: str = ""
    started_at: datetime | None = None  # wall clock, where a step records it (restore: around litestream)
    finished_at: datetime | None = None

    @classmethod
    def crashed(cls, exc: BaseException) -> Self:
        """The result of a step whose task raised: the drill goes on to its verdict."""
        return cls(status=Status.ERROR, summary=f"step crashed: {type(exc).__name__}: {exc}")

    @classmethod
    def skipped(cls, why: str) -> Self:
        return cls(status=Status.SKIPPED, summary=why)

    @property
    def ok(self) -> bool:
        return self.status == Status.PASSED
