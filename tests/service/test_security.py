"""Every door locked: each route and mount refuses callers without a valid token and
changes nothing for them; nothing a client sends gets a 500 or floods the service.

Against the session's auth-required service (``secured``), as an attacker would reach it.
"""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx
import optuna
import pytest
from fastapi.routing import iter_route_contexts
from optuna_dashboard._app import create_app as optuna_dashboard_app
from starlette.routing import Mount

from service.app import create_app
from service.settings import Settings
from tests.support.in_process import InProcessService
from tests.support.studies import all_trials, submit, synthetic, wait_for
from tests.support.tokens import cli

HUGE = 9223372036854775808  # 2**63: once a 500 (OverflowError) in every numeric path slot

# The only paths a caller without a token may fetch, and why. Everything else, the mounted
# optuna-dashboard included, must answer 401 to no token and to a revoked one.
PUBLIC: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "orchestrators' liveness probes carry no token",
    ("GET", "/openapi.json"): "the API's description: no study data",
    ("GET", "/docs"): "Swagger UI's page: no study data",
    ("GET", "/redoc"): "ReDoc's page: no study data",
    ("POST", "/auth/session"): "signing in: the token is checked there",
    ("DELETE", "/auth/session"): "signing out: only clears the caller's own cookies",
    ("GET", "/dashboard/plotly.min.js"): "a static asset",
    ("GET", "/dashboard/static/common.js"): "a static asset",
    ("GET", "/docs/static/swagger-ui.css"): "a static asset",
    ("GET", "/optuna/static/bundle.js"): "a static asset",
    ("GET", "/optuna/favicon.ico"): "a static asset",
}
STATIC_FILES = {
    "/dashboard/static": "common.js",
    "/docs/static": "swagger-ui.css",
    "/optuna/static": "bundle.js",
}


@pytest.fixture(scope="module")
def seeded(secured: tuple[InProcessService, dict[str, str]]) -> dict[str, Any]:
    """A finished study of alice's, with its trials, for the routes to aim at."""
    service, tokens = secured
    with _as(service, tokens["alice"]) as alice:
        study = submit(alice, **synthetic("walk-target", n_trials=2, fixed={"steps": 3}))
        study = wait_for(alice, study["id"], timeout_s=120)
        assert study["status"] == "completed"
        trials = all_trials(alice, study["id"])
    optuna_id = optuna.load_study(
        study_name="walk-target", storage=optuna.storages.RDBStorage(service.database_url)
    )._study_id
    return {"study": study, "trials": trials, "optuna_id": optuna_id}


def _as(service: InProcessService, token: str | None, **headers: str) -> httpx.Client:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=service.url, headers=headers, timeout=30)


def _every_route(seed: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(method, concrete path) for every route of the app and of every mount, found by
    walking them, so a route added later is walked too."""
    app = create_app(Settings(auth="required"))
    values = {"study_id": str(seed["study"]["id"]), "number": "0"}
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, Mount):
            if route.path in STATIC_FILES:
                yield "GET", f"{route.path}/{STATIC_FILES[route.path]}"
                continue
            assert route.path == "/optuna", f"a mount nobody walks: {route.path}"
            yield from _optuna_routes(seed)
            continue
        path = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: values.get(m.group(1), "1"), route.path)
        for method in sorted(route.methods or {"GET"}):
            yield method, path


def _optuna_routes(seed: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """optuna-dashboard's own routes (a Bottle app), below ``/optuna``."""
    bottle = optuna_dashboard_app(optuna.storages.InMemoryStorage())
    trial_id = str(seed["trials"][0]["number"])
    for route in bottle.routes:
        rule = re.sub(r"<:re:[^>]*>", "", route.rule)
        rule = re.sub(r"<study_id:int>", str(seed["optuna_id"]), rule)
        rule = re.sub(r"<trial_id:int>", trial_id, rule)
        rule = re.sub(r"<filename:path>", "bundle.js", rule)
        rule = re.sub(r"<[^>]+>", "x", rule)
        yield route.method, f"/optuna{rule}"


def _snapshot(database_url: str) -> list[str]:
    """The whole database as SQL, but for the scheduler's lease (renewed every few s)."""
    path = database_url.removeprefix("sqlite:///")
    connection = sqlite3.connect(path)
    try:
        return [
            line
            for line in connection.iterdump()
            if "adamp_tune_scheduler_lease" not in line and "last_used_at" not in line
        ]
    finally:
        connection.close()


def _wait_quiet(api: httpx.Client) -> None:
    """Until no study of the session's secured service is queued or running."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        active = api.get("/api/v1/studies", params={"status": ["queued", "running"]}).json()
        if active["total"] == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"studies still active: {active}")


def test_every_route_and_mount_refuses_callers_without_a_valid_token(secured, seeded) -> None:
    service, tokens = secured
    routes = sorted(set(_every_route(seeded)))
    assert any(p.startswith("/optuna/api/") for _, p in routes), "the mount was walked"
    assert ("DELETE", f"/optuna/api/studies/{seeded['optuna_id']}") in routes
    with _as(service, tokens["root"]) as root:
        _wait_quiet(root)
    before = _snapshot(service.database_url)
    walked_public = set()
    for token in (None, tokens["revoked"]):
        with _as(service, token, Accept="application/json") as caller:
            for method, path in routes:
                body = {} if method in ("POST", "PUT", "PATCH", "DELETE") else None
                answer = caller.request(method, path, json=body)
                if (method, path) in PUBLIC or (method == "HEAD" and ("GET", path) in PUBLIC):
                    walked_public.add((method, path))
                    assert answer.status_code < 500, (method, path, answer.text)
                    continue
                assert answer.status_code == 401, (token is not None, method, path, answer.text)
                assert answer.headers["www-authenticate"] == "Bearer"
    assert set(PUBLIC) <= walked_public, "every allowed path exists and was walked"
    assert _snapshot(service.database_url) == before, "nothing changed for them"
    with _as(service, tokens["alice"]) as alice:
        assert alice.get(f"/api/v1/studies/{seeded['study']['id']}").json()["status"] == (
            "completed"
        )


def test_a_browser_without_a_session_gets_the_sign_in_page(secured) -> None:
    service, _ = secured
    for path in ("/", "/studies/1", "/optuna/", "/optuna/dashboard"):
        with _as(service, None, Accept="text/html") as browser:
            page = browser.get(path)
        assert page.status_code == 401, path
        assert "Sign in" in page.text
        assert page.headers["content-type"].startswith("text/html")


def test_optuna_dashboard_is_read_only_even_for_the_owner(secured, seeded) -> None:
    service, tokens = secured
    study_id = seeded["optuna_id"]
    with _as(service, tokens["alice"]) as alice:
        listed = alice.get("/optuna/api/studies")
        assert listed.status_code == 200
        assert "walk-target" in listed.text
        for method, path, body in [
            ("DELETE", f"/optuna/api/studies/{study_id}", None),
            ("POST", f"/optuna/api/studies/{study_id}/rename", {"study_name": "x"}),
            ("PUT", f"/optuna/api/studies/{study_id}/note", {"version": 1, "body": "x"}),
            ("POST", "/optuna/api/studies", {"study_name": "sneaky", "directions": ["minimize"]}),
            ("POST", "/optuna/incompatible-rdb-schema", None),
        ]:
            answer = alice.request(method, path, json=body)
            assert answer.status_code == 405, (method, path, answer.text)
            assert "/api/v1" in answer.json()["message"]
        kept = alice.get(f"/api/v1/studies/{seeded['study']['id']}/trials").json()
    assert kept["total"] == 2
    still = optuna.load_study(
        study_name="walk-target", storage=optuna.storages.RDBStorage(service.database_url)
    )
    assert len(still.trials) == 2


def _raw(service: InProcessService, request: bytes, timeout_s: float = 10) -> bytes:
    """Send ``request`` on a socket and read what comes back first (no client logic)."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=timeout_s) as sock:
        sock.sendall(request)
        return sock.recv(65536)


def test_an_anonymous_upload_is_refused_before_its_body_is_read(secured) -> None:
    service, _ = secured
    head = (
        b"POST /api/v1/studies HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 200000000\r\n\r\n{"
    )
    started = time.monotonic()
    answer = _raw(service, head)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert time.monotonic() - started < 5, "the 401 did not wait for 200 MB to arrive"


def test_bodies_over_the_limit_are_refused_while_reading(secured) -> None:
    service, tokens = secured
    with _as(service, tokens["alice"]) as alice:
        declared = alice.post(
            "/api/v1/studies", content=b"x" * (2 * 1024 * 1024), headers={"Content-Type": "x"}
        )
        assert declared.status_code == 413
        assert "ADAMP_TUNE_MAX_BODY_BYTES" in declared.json()["message"]

        def chunks() -> Iterator[bytes]:
            for _ in range(64):
                yield b" " * 65536

        streamed = alice.post(
            "/api/v1/studies", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert streamed.status_code == 413, streamed.text


def test_error_replies_quote_only_an_excerpt_of_the_input(secured) -> None:
    service, tokens = secured
    big = "z" * 900_000
    with _as(service, tokens["alice"]) as alice:
        for field, body in (
            ("fixed.schedule", synthetic("echo-1", fixed={"steps": 1, "schedule": big})),
            ("fixed.steps", synthetic("echo-2", fixed={"steps": big})),
            ("search_space.zzz", synthetic("echo-3", search_space={big: {"low": 0, "high": 1}})),
            ("name", {**synthetic("echo-4"), "name": big[:100_000]}),
        ):
            answer = alice.post("/api/v1/studies", json=body)
            assert answer.status_code == 422, answer.text[:300]
            assert len(answer.content) < 4096, (field, len(answer.content))
            assert answer.json()["message"].startswith(field), answer.text[:300]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/api/v1/studies/{HUGE}"),
        ("GET", f"/api/v1/studies/{HUGE}/trials"),
        ("GET", f"/api/v1/studies/1/trials/{HUGE}"),
        ("GET", f"/api/v1/studies?offset={HUGE}"),
        ("GET", f"/api/v1/studies/1/trials?offset={HUGE}"),
        ("GET", f"/api/v1/studies/{HUGE}/events"),
        ("GET", f"/api/v1/studies/{HUGE}/importance"),
        ("PATCH", f"/api/v1/studies/{HUGE}"),
        ("POST", f"/api/v1/studies/{HUGE}/cancel"),
        ("GET", f"/dashboard-api/studies/{HUGE}/plots"),
        ("GET", f"/dashboard-api/studies/{HUGE}/best"),
        ("GET", f"/optuna/api/studies/{HUGE}"),
        ("GET", f"/optuna/csv/{HUGE}"),
        ("GET", "/optuna/api/studies/1?after=x"),
        ("GET", "/optuna/csv/1?trial_ids=1,x"),
    ],
)
def test_numbers_out_of_range_are_a_4xx_naming_the_field(secured, method: str, path: str) -> None:
    service, tokens = secured
    with _as(service, tokens["alice"]) as alice:
        answer = alice.request(method, path, json={"priority": 1} if method == "PATCH" else None)
    assert 400 <= answer.status_code < 500, answer.text
    if path.startswith(("/api/", "/dashboard-api/")):
        assert answer.status_code == 422
        field = "offset" if "offset" in path else "number" if "/trials/" in path else "study_id"
        assert answer.json()["message"].startswith(field), answer.text


@pytest.mark.parametrize(
    ("where", "body"),
    [
        ("fixed.lr", synthetic("n1", fixed={"steps": 1, "lr": 10**400})),
        ("fixed.steps", synthetic("n2", fixed={"steps": 10**400})),
        ("search_space.lr.choices", synthetic("n3", search_space={"lr": {"choices": [10**400]}})),
        ("search_space.lr", synthetic("n4", search_space={"lr": {"low": 0, "high": 10**400}})),
    ],
)
def test_huge_integers_in_a_body_are_a_422_naming_the_field(
    secured, where: str, body: dict[str, Any]
) -> None:
    service, tokens = secured
    with _as(service, tokens["alice"]) as alice:
        answer = alice.post("/api/v1/studies", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["message"].startswith(where), answer.text


def test_static_files_need_no_accept_encoding_header(secured) -> None:
    service, _ = secured
    answer = _raw(service, b"GET /optuna/favicon.ico HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


def test_names_people_cannot_tell_apart_name_one_study(secured) -> None:
    service, tokens = secured
    with _as(service, tokens["alice"]) as alice, _as(service, tokens["bob"]) as bob:
        first = submit(alice, **synthetic("Caf\u00e9-Base"))  # composed é
        assert first["name"] == "Caf\u00e9-Base"
        for look_alike in ("Cafe\u0301-Base", "caf\u00e9-base", "\uff23af\u00e9-Base"):
            again = bob.post("/api/v1/studies", json=synthetic(look_alike))
            assert again.status_code == 409, (look_alike, again.text)
            assert f"study {first['id']}" in again.json()["message"]
        mixed = bob.post("/api/v1/studies", json=synthetic("\u0430lice-base"))  # U+0430
        assert mixed.status_code == 422
        assert mixed.json()["message"].startswith("name:")
        assert "CYRILLIC" in mixed.json()["message"]
        wide = submit(bob, **synthetic("\uff57ide-name"))  # full-width w: stored as NFKC
        assert wide["name"] == "wide-name"
        assert bob.get(f"/api/v1/studies/{first['id']}").json()["status"] in (
            "queued",
            "running",
            "completed",
        )


@pytest.mark.parametrize("path", ["/", "/optuna/", "/docs", "/redoc", "/api/v1/studies"])
def test_pages_protect_themselves(secured, path: str) -> None:
    service, tokens = secured
    with _as(service, tokens["alice"]) as alice:
        answer = alice.get(path, follow_redirects=True)
    assert answer.status_code == 200
    assert answer.headers["x-frame-options"] == "DENY"
    csp = answer.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    script_src = re.search(r"script-src ([^;]*)", csp)
    assert script_src is not None
    assert script_src.group(1).startswith("'self'")
    assert "unsafe-inline" not in script_src.group(1)
    if answer.headers["content-type"].startswith("text/html"):
        for url in re.findall(r"(?:src|href)=\"((?:https?:)?//[^\"]*)\"", answer.text):
            assert url.startswith(service.url), f"nothing from elsewhere (a CDN): {url}"


def test_swagger_ui_and_redoc_are_served_by_the_service(secured) -> None:
    service, _ = secured
    with _as(service, None) as anyone:
        for page in ("/docs", "/redoc"):
            html = anyone.get(page).text
            scripts = re.findall(r'<script src="([^"]+)"', html)
            assert scripts, page
            for src in scripts:
                script = anyone.get(src)
                assert script.status_code == 200, src
                assert len(script.content) > 1000 or "SwaggerUIBundle" in script.text


def test_the_schema_documents_the_error_answers(secured) -> None:
    service, _ = secured
    schema = httpx.get(f"{service.url}/openapi.json").json()
    paths = schema["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            if path in ("/healthz", "/auth/session"):
                continue
            assert "401" in operation["responses"], (method, path)
    studies = paths["/api/v1/studies"]["post"]["responses"]
    assert {"401", "403", "409", "413", "422"} <= set(studies)
    one = paths["/api/v1/studies/{study_id}"]
    assert {"401", "404", "422"} <= set(one["get"]["responses"])
    assert {"401", "403", "404", "409", "413", "422"} <= set(one["patch"]["responses"])
    update = schema["components"]["schemas"]["StudyUpdate"]
    assert update["minProperties"] == 1
    assert all(p.get("type") == "integer" for p in update["properties"].values())
    with _as(service, None) as anyone:
        assert anyone.patch("/api/v1/studies/1", json={}).status_code == 401


def test_a_token_can_end(secured) -> None:
    service, _ = secured
    env = {**os.environ, "ADAMP_TUNE_DATABASE_URL": service.database_url}
    refused = cli(env, "token", "create", "dave", "--expires-in", "soon")
    assert refused.returncode == 2
    assert "--expires-in" in refused.stderr
    # Long enough for a slow CLI on a loaded machine; the wait below ends just after it.
    made = cli(env, "token", "create", "dave", "--expires-in", "6s")
    created_by = time.monotonic()
    assert made.returncode == 0, made.stderr
    assert "expires" in made.stderr
    token = made.stdout.strip().splitlines()[-1]
    with _as(service, token) as dave:
        assert dave.get("/api/v1/studies").status_code == 200
        time.sleep(max(0.0, created_by + 6.5 - time.monotonic()))
        late = dave.get("/api/v1/studies")
    assert late.status_code == 401
    assert "expired" in late.json()["message"]
    listed = cli(env, "token", "list")
    row = next(line for line in listed.stdout.splitlines() if "dave" in line)
    assert "expired" in row
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", row), "last use is shown"


def test_a_browser_session_is_a_cookie_with_csrf_protection(secured, seeded) -> None:
    service, tokens = secured
    with _as(service, None) as browser:
        signed = browser.post("/auth/session", json={"token": tokens["bob"]})
        assert signed.status_code == 200
        assert signed.json()["user"] == "bob"
        cookies = signed.headers.get_list("set-cookie")
        session = next(c for c in cookies if c.startswith("adamp_tune_session="))
        assert "HttpOnly" in session
        assert "SameSite=strict" in session or "SameSite=Strict" in session
        assert browser.get("/optuna/api/studies").status_code == 200, "the mount reads it"
        with _as(service, tokens["bob"]) as bob:
            study = submit(bob, **synthetic("bob-cookie", n_trials=50, fixed={"sleep_s": 0.2}))
        without = browser.post(f"/api/v1/studies/{study['id']}/cancel")
        assert without.status_code == 403
        assert "X-CSRF-Token" in without.json()["message"]
        other_site = browser.post(
            f"/api/v1/studies/{study['id']}/cancel",
            headers={
                "X-CSRF-Token": browser.cookies["adamp_tune_csrf"],
                "Origin": "http://evil.example",
            },
        )
        assert other_site.status_code == 403
        done = browser.post(
            f"/api/v1/studies/{study['id']}/cancel",
            headers={"X-CSRF-Token": browser.cookies["adamp_tune_csrf"]},
        )
        assert done.status_code == 200, done.text
        assert browser.delete("/auth/session").status_code == 204
        assert "adamp_tune_session" not in browser.cookies
        assert browser.get("/api/v1/studies").status_code == 401
    with _as(service, None) as stale:
        stale.cookies.set("adamp_tune_session", tokens["revoked"])
        assert stale.get("/api/v1/studies").status_code == 401
