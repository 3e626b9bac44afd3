"""Answers about studies that can no longer change, kept as JSON and served from memory.

A study that has ended (completed, failed or cancelled) and has no trial running or waiting
is frozen: ended studies refuse cancel and PATCH, the scheduler no longer holds them, and
no trial of theirs can change state. Their summary and trial pages are therefore computed
once per process and then answered without touching the database, which is what keeps a
dashboard full of finished 5,000-trial studies cheap to poll. Anything still moving is
computed afresh on every request.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

from fastapi import Response

from service.schemas import TrialCounts

ENDED_STATUSES = ("completed", "failed", "cancelled")
MAX_ANSWERS = 512
"""Answers kept per process (each at most a page of trials: a few hundred kB)."""


def is_frozen(status: str, counts: TrialCounts) -> bool:
    """Whether a study in ``status`` with these trial ``counts`` can still change."""
    return status in ENDED_STATUSES and counts.running == 0 and counts.waiting == 0


class FrozenAnswers:
    """A bounded, thread-safe map from a request's identity to its JSON answer."""

    def __init__(self, max_answers: int = MAX_ANSWERS) -> None:
        self._answers: OrderedDict[Hashable, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_answers

    def get(self, key: Hashable) -> Response | None:
        """The kept answer for ``key``, if any."""
        with self._lock:
            body = self._answers.get(key)
            if body is not None:
                self._answers.move_to_end(key)
        return None if body is None else json_response(body)

    def keep(self, key: Hashable, body: bytes) -> None:
        """Remember ``body`` as the answer for ``key`` (the least recently used goes)."""
        with self._lock:
            self._answers[key] = body
            self._answers.move_to_end(key)
            while len(self._answers) > self._max:
                self._answers.popitem(last=False)


def json_response(body: bytes) -> Response:
    """``body`` (already JSON) as the response."""
    return Response(content=body, media_type="application/json")
