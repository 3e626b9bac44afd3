"""Tokens, owners and who may do what, against a service with ``ADAMP_TUNE_AUTH=required``."""

from __future__ import annotations

import os

import httpx
import pytest

from service.settings import Settings
from tests.support.in_process import InProcessService
from tests.support.studies import synthetic
from tests.support.tokens import cli as _cli


def _as(service: InProcessService, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=service.url, headers=headers, timeout=30)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/studies"),
        ("POST", "/api/v1/studies"),
        ("GET", "/api/v1/studies/1"),
        ("GET", "/api/v1/studies/1/trials"),
        ("POST", "/api/v1/studies/1/cancel"),
        ("PATCH", "/api/v1/studies/1"),
        ("GET", "/api/v1/workloads"),
        ("GET", "/api/v1/cluster"),
    ],
)
def test_every_api_call_needs_a_valid_token(secured, method: str, path: str) -> None:
    service, _ = secured
    for token in (None, "at_not-a-real-token"):
        with _as(service, token) as api:
            answer = api.request(method, path, json={})
        assert answer.status_code == 401, answer.text
        assert answer.headers["www-authenticate"] == "Bearer"
        assert "token" in answer.json()["message"]


def test_health_needs_no_token(secured) -> None:
    service, _ = secured
    with _as(service, None) as api:
        assert api.get("/healthz").status_code == 200


def test_owners_and_permissions(secured, unique_name: str) -> None:
    service, tokens = secured
    with (
        _as(service, tokens["alice"]) as alice,
        _as(service, tokens["bob"]) as bob,
        _as(service, tokens["root"]) as root,
    ):
        body = synthetic(unique_name, n_trials=3, fixed={"steps": 500, "sleep_s": 0.05})
        made = alice.post("/api/v1/studies", json=body)
        assert made.status_code == 201
        study = made.json()
        assert study["owner"] == "alice"
        theirs = bob.post("/api/v1/studies", json=synthetic(unique_name + "-bob", n_trials=1))
        assert theirs.json()["owner"] == "bob"

        assert bob.get(f"/api/v1/studies/{study['id']}").status_code == 200, "everyone may look"
        denied = bob.post(f"/api/v1/studies/{study['id']}/cancel")
        assert denied.status_code == 403
        assert "alice" in denied.json()["message"]
        assert bob.patch(f"/api/v1/studies/{study['id']}", json={"priority": 5}).status_code == 403

        changed = alice.patch(
            f"/api/v1/studies/{study['id']}", json={"priority": -5, "max_concurrent": 1}
        )
        assert changed.status_code == 200
        assert changed.json()["priority"] == -5
        assert changed.json()["max_concurrent"] == 1

        listed = alice.get("/api/v1/studies", params={"owner": "bob"}).json()
        assert {s["owner"] for s in listed["items"]} == {"bob"}

        assert root.post(f"/api/v1/studies/{study['id']}/cancel").status_code == 200, "admins may"
        assert alice.get(f"/api/v1/studies/{study['id']}").json()["status"] == "cancelled"


def test_a_revoked_token_is_refused(secured) -> None:
    service, _ = secured
    env = {**os.environ, "ADAMP_TUNE_DATABASE_URL": service.database_url}
    made = _cli(env, "token", "create", "carol", "--label", "ci")
    token = made.stdout.strip().splitlines()[-1]
    with _as(service, token) as carol:
        assert carol.get("/api/v1/studies").status_code == 200
        listed = _cli(env, "token", "list")
        assert "carol" in listed.stdout
        assert token not in listed.stdout, "only a prefix of a token is ever shown again"
        token_id = next(
            line.split("│")[1].strip() for line in listed.stdout.splitlines() if "carol" in line
        )
        revoked = _cli(env, "token", "revoke", token_id)
        assert revoked.returncode == 0, revoked.stderr
        assert carol.get("/api/v1/studies").status_code == 401


@pytest.mark.parametrize(
    ("host", "auth", "required"),
    [
        ("127.0.0.1", "auto", False),
        ("localhost", "auto", False),
        ("0.0.0.0", "auto", True),
        ("10.1.2.3", "auto", True),
        ("127.0.0.1", "required", True),
        ("0.0.0.0", "off", False),
    ],
)
def test_auth_is_required_whenever_the_service_is_reachable_from_elsewhere(
    host: str, auth: str, required: bool
) -> None:
    assert Settings(host=host, auth=auth).auth_required is required
