"""Run reports, cancellation and progress shared by both pipelines."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from app.core.errors import Cancelled

ProgressFn = Callable[[str, float], None]
"""Called with a stage name and the fraction of the whole run done (0..1)."""


class CancelToken:
    """A flag a long job checks between batches; set from any thread."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if cancellation was requested."""
        if self._event.is_set():
            raise Cancelled()


@dataclass
class RunReport:
    """What a pipeline run did: per-stage milliseconds, providers used, and counters."""

    timings_ms: dict[str, float] = field(default_factory=dict)
    providers: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage; repeated names accumulate."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            ms = (time.perf_counter() - t0) * 1000.0
            self.timings_ms[name] = self.timings_ms.get(name, 0.0) + ms

    def as_dict(self) -> dict[str, Any]:
        return {
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
            "providers": list(self.providers),
            **self.info,
        }
