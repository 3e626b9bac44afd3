"""A small Python client of the REST API; the CLI uses it, and so can notebooks and scripts.

from service.client import Client
client = Client("http://127.0.0.1:8000")
study = client.submit({"name": "try-1", "workload": "digits-cnn", "n_trials": 20})
client.wait(study["id"])
print(client.best(study["id"]))
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

FINAL_STATUSES = ("completed", "failed", "cancelled")


class ApiError(Exception):
    """An error answer of the API, with its status code and the server's message."""

    def __init__(self, status_code: int, message: str, detail: Any = None) -> None:
        super().__init__(f"{status_code}: {message}")
        self.status_code = status_code
        self.message = message
        self.detail = detail


RATE_LIMIT_RETRIES = 5
"""Times a request refused with 429 and ``Retry-After`` (the service's rate limits) is sent
again, after waiting as told, before the 429 is raised."""
MAX_RETRY_AFTER_S = 60.0
"""Longest wait for one ``Retry-After``: a longer one is raised at once."""


def retry_after_s(response: httpx.Response) -> float | None:
    """The wait a ``429`` asks for (``Retry-After`` in seconds), or ``None`` if it gives none."""
    if response.status_code != 429:
        return None
    try:
        wait = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return wait if 0 <= wait <= MAX_RETRY_AFTER_S else None


class Client:
    """Talks to one adamp-tune service; ``token`` is sent as a Bearer token when given.

    Over the service's rate limits (429 with ``Retry-After``) a call waits as told and tries
    again, at most ``rate_limit_retries`` times, as a well-behaved client of a shared
    service does."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        token: str | None = None,
        timeout: float = 30,
        rate_limit_retries: int = RATE_LIMIT_RETRIES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)
        self._retries = rate_limit_retries
        self._sleep = sleep

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        for attempt in range(self._retries + 1):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as err:
                raise ApiError(
                    0, f"cannot reach the service at {self._http.base_url} ({err}); is it running?"
                ) from err
            wait = retry_after_s(response)
            if wait is None or attempt == self._retries:
                break
            self._sleep(wait)
        if response.status_code >= 400:
            self._raise(response)
        return response.json()

    @staticmethod
    def _raise(response: httpx.Response) -> None:
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text}
        message = body.get("message") or str(body.get("detail"))
        raise ApiError(response.status_code, message, body.get("detail"))

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Submit a study (the body of ``POST /api/v1/studies``); returns the study."""
        result: dict[str, Any] = self._call("POST", "/api/v1/studies", json=spec)
        return result

    def studies(self, **filters: Any) -> dict[str, Any]:
        """A page of studies: filters ``status``, ``owner``, ``workload``, ``limit``, ``offset``."""
        params = {k: v for k, v in filters.items() if v is not None}
        result: dict[str, Any] = self._call("GET", "/api/v1/studies", params=params)
        return result

    def study(self, study_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/api/v1/studies/{study_id}")
        return result

    def trials(self, study_id: int, **filters: Any) -> dict[str, Any]:
        """A page of trials: ``state``, ``order_by``, ``limit``, ``offset``."""
        params = {k: v for k, v in filters.items() if v is not None}
        result: dict[str, Any] = self._call(
            "GET", f"/api/v1/studies/{study_id}/trials", params=params
        )
        return result

    def trial(self, study_id: int, number: int) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/api/v1/studies/{study_id}/trials/{number}")
        return result

    def best(self, study_id: int) -> dict[str, Any] | None:
        """The best complete trial, or ``None`` while there is none."""
        best: dict[str, Any] | None = self.study(study_id)["best_trial"]
        return None if best is None else self.trial(study_id, best["number"])

    def cancel(self, study_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/api/v1/studies/{study_id}/cancel")
        return result

    def importance(self, study_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/api/v1/studies/{study_id}/importance")
        return result

    def download_checkpoint(self, study_id: int, number: int, path: str | Path) -> int:
        """Save trial ``number``'s last checkpoint to ``path``; returns its size in bytes.

        The file is streamed to a temporary name beside ``path`` and renamed when complete,
        so an interrupted download never leaves half a file where the model should be."""
        target = Path(path)
        partial = target.with_name(f".{target.name}.part")
        route = f"/api/v1/studies/{study_id}/trials/{number}/checkpoint"
        try:
            for attempt in range(self._retries + 1):
                with self._http.stream("GET", route) as response:
                    wait = retry_after_s(response)
                    if wait is not None and attempt < self._retries:
                        response.read()
                        self._sleep(wait)
                        continue
                    if response.status_code >= 400:
                        response.read()
                        self._raise(response)
                    size = 0
                    with partial.open("wb") as out:
                        for piece in response.iter_bytes():
                            out.write(piece)
                            size += len(piece)
                    break
        except httpx.TransportError as err:
            partial.unlink(missing_ok=True)
            raise ApiError(
                0, f"cannot reach the service at {self._http.base_url} ({err}); is it running?"
            ) from err
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(target)
        return size

    def workloads(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/api/v1/workloads")
        return result

    def cluster(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/api/v1/cluster")
        return result

    def compare(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Submit a comparison (the body of ``POST /api/v1/comparisons``); returns it."""
        result: dict[str, Any] = self._call("POST", "/api/v1/comparisons", json=spec)
        return result

    def comparisons(self, **filters: Any) -> dict[str, Any]:
        """A page of comparisons: ``status``, ``owner``, ``workload``, ``limit``, ``offset``."""
        params = {k: v for k, v in filters.items() if v is not None}
        result: dict[str, Any] = self._call("GET", "/api/v1/comparisons", params=params)
        return result

    def comparison(self, comparison_id: int) -> dict[str, Any]:
        """One comparison with its studies and report (provisional until it completes)."""
        result: dict[str, Any] = self._call("GET", f"/api/v1/comparisons/{comparison_id}")
        return result

    def cancel_comparison(self, comparison_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/api/v1/comparisons/{comparison_id}/cancel")
        return result

    def wait_comparison(
        self,
        comparison_id: int,
        *,
        poll_s: float = 2.0,
        timeout_s: float | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the comparison ends; returns it with its final report."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            found = self.comparison(comparison_id)
            if on_progress is not None:
                on_progress(found)
            if found["status"] in FINAL_STATUSES:
                return found
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"comparison {comparison_id} still {found['status']} after {timeout_s}s"
                )
            time.sleep(poll_s)

    def wait(
        self,
        study_id: int,
        *,
        poll_s: float = 1.0,
        timeout_s: float | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the study ends; returns it. ``TimeoutError`` after ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            study = self.study(study_id)
            if on_progress is not None:
                on_progress(study)
            if study["status"] in FINAL_STATUSES:
                return study
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"study {study_id} still {study['status']} after {timeout_s}s")
            time.sleep(poll_s)
