"""Answers about studies that can no longer change are kept; nothing still moving is."""

from __future__ import annotations

from service.frozen import FrozenAnswers, is_frozen
from service.schemas import TrialCounts


def test_only_ended_studies_with_nothing_running_or_waiting_are_frozen() -> None:
    done = TrialCounts(complete=5, pruned=1, fail=1)
    assert is_frozen("completed", done)
    assert is_frozen("cancelled", done)
    assert is_frozen("failed", done)
    # Cancelled but a trial is still stopping, or a re-run is queued: it will change.
    assert not is_frozen("cancelled", TrialCounts(complete=2, running=1))
    assert not is_frozen("completed", TrialCounts(complete=2, waiting=1))
    for status in ("queued", "running"):
        assert not is_frozen(status, done)


def test_kept_answers_are_bounded_and_least_recently_used_go_first() -> None:
    answers = FrozenAnswers(max_answers=2)
    answers.keep("a", b'{"a":1}')
    answers.keep("b", b'{"b":2}')
    assert answers.get("a") is not None  # "a" is now the most recently used
    answers.keep("c", b'{"c":3}')
    assert answers.get("b") is None
    kept = answers.get("a")
    assert kept is not None
    assert kept.body == b'{"a":1}'
    assert kept.media_type == "application/json"
