"""``docker-compose.yml`` holds together: services, ports, addresses, credentials, settings.

The file is read the way Compose reads it (YAML with anchors and merge keys, then
``${VAR:-default}`` interpolation), with no Docker needed; every ``ADAMP_TUNE_*`` variable it
sets must be a real setting, so a typo fails here instead of being silently ignored.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import AliasChoices

from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROJECT_SERVICES = ("ray-head", "ray-worker", "api")
TOKEN = "test-ray-token"

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(Exception):
    """A ``${VAR:?message}`` whose variable is unset, as Compose refuses it."""


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution, applied to every string of the parsed file."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        op, arg = match["op"], match["arg"] or ""
        current = env.get(name)
        unset = current is None or (current == "" and op is not None and op.startswith(":"))
        if op is not None and op.endswith("?") and unset:
            raise MissingVariable(f"{name}: {arg}")
        if op is not None and op.endswith("-") and unset:
            return arg
        return current or ""

    return _VARIABLE.sub(substitute, value)


def load_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    return interpolate(raw, {"RAY_AUTH_TOKEN": TOKEN} if env is None else env)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, from either of Compose's two spellings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def command_words(service: dict[str, Any]) -> list[str]:
    """The command's words; a ``sh -c SCRIPT`` command yields the words of SCRIPT."""
    command = service["command"]
    words = shlex.split(command) if isinstance(command, str) else [str(w) for w in command]
    if words[:2] == ["sh", "-c"] or words[:2] == ["/bin/sh", "-c"]:
        return shlex.split(words[2])
    return words


def option(words: list[str], name: str) -> str | None:
    """The value of ``--name=value`` or ``--name value`` among ``words``."""
    for i, word in enumerate(words):
        if word.startswith(f"{name}="):
            return word.split("=", 1)[1]
        if word == name and i + 1 < len(words):
            return words[i + 1]
    return None


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def head_address(services: dict[str, dict[str, Any]]) -> tuple[str, int]:
    words = command_words(services["ray-head"])
    port = option(words, "--port")
    assert port is not None, "ray-head must set its GCS port with --port"
    return "ray-head", int(port)


def settings_env_names() -> set[str]:
    """Every environment variable name ``Settings`` reads (upper case: it ignores case)."""
    prefix = Settings.model_config.get("env_prefix", "")
    names: set[str] = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{field_name}".upper())
    return names


def test_the_four_services_exist(services: dict[str, dict[str, Any]]) -> None:
    assert {"postgres", "ray-head", "ray-worker", "api"} <= set(services)


def test_project_services_share_one_image_built_here(services: dict[str, dict[str, Any]]) -> None:
    images = {services[name].get("image") for name in PROJECT_SERVICES}
    assert len(images) == 1, f"one project image for {PROJECT_SERVICES}, not {images}"
    for name in PROJECT_SERVICES:
        build = services[name].get("build")
        context = build.get("context") if isinstance(build, dict) else build
        assert context in (".", "./"), f"{name} must build the project image from ."


def test_dockerfile_installs_the_service_extra() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.MULTILINE)
    assert re.search(r"pip install[^\n]*\.\[service\]", text), "install the project with [service]"
    assert re.search(r"^ARG TORCH_SPEC=torch==", text, re.MULTILINE)
    assert re.search(r"^USER (?!root\b)\S+", text, re.MULTILINE), "run as a non-root user"


def test_postgres_has_a_healthcheck_and_a_declared_volume(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    named = [v.split(":", 1)[0] for v in postgres["volumes"] if not v.startswith((".", "/"))]
    assert named, "PostgreSQL's data must live in a named volume"
    assert set(named) <= set(compose.get("volumes") or {})


def test_api_waits_for_a_healthy_database_and_a_ray_head(
    services: dict[str, dict[str, Any]],
) -> None:
    depends = services["api"]["depends_on"]
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["ray-head"]["condition"] in ("service_started", "service_healthy")


def test_database_url_matches_the_postgres_service(services: dict[str, dict[str, Any]]) -> None:
    pg_env = environment(services["postgres"])
    url = urlsplit(environment(services["api"])["ADAMP_TUNE_DATABASE_URL"])
    assert url.scheme.startswith("postgresql")
    assert url.hostname == "postgres"
    assert url.port == 5432
    assert url.username == pg_env["POSTGRES_USER"]
    assert url.password == pg_env["POSTGRES_PASSWORD"]
    assert url.path.lstrip("/") == pg_env["POSTGRES_DB"]
    overridden = load_compose({"RAY_AUTH_TOKEN": TOKEN, "POSTGRES_PASSWORD": "s3cret"})
    pg_env = environment(overridden["services"]["postgres"])
    url = urlsplit(environment(overridden["services"]["api"])["ADAMP_TUNE_DATABASE_URL"])
    assert url.password == pg_env["POSTGRES_PASSWORD"] == "s3cret"


def test_ray_addresses_point_at_the_head_port(services: dict[str, dict[str, Any]]) -> None:
    head = head_address(services)
    assert head[1] != 6379, "6379 is Redis's port"
    assert "--num-gpus=0" in command_words(services["ray-head"])
    assert split_host_port(environment(services["api"])["RAY_ADDRESS"]) == head
    for name in ("ray-worker", "api"):
        address = option(command_words(services[name]), "--address")
        assert address is not None, f"{name} must join the head with ray start --address"
        assert split_host_port(address) == head


def test_every_ray_process_shares_the_auth_token(services: dict[str, dict[str, Any]]) -> None:
    for name in PROJECT_SERVICES:
        env = environment(services[name])
        assert env.get("RAY_AUTH_MODE") == "token", name
        assert env.get("RAY_AUTH_TOKEN") == TOKEN, name
    with pytest.raises(MissingVariable, match="RAY_AUTH_TOKEN"):
        load_compose({})


def test_worker_reserves_nvidia_gpus(services: dict[str, dict[str, Any]]) -> None:
    devices = services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def test_api_serves_with_auth_on_its_published_port(services: dict[str, dict[str, Any]]) -> None:
    api = services["api"]
    words = command_words(api)
    serve = words.index("serve")
    assert words[serve - 1] == "adamp-tune"
    serve_args = words[serve:]
    assert option(serve_args, "--host") == "0.0.0.0"
    port = int(option(serve_args, "--port") or Settings.model_fields["port"].default)
    published = [str(p).rsplit(":", 1) for p in api["ports"]]
    assert [host_port for host_port, container in published if int(container) == port]
    assert environment(api)["ADAMP_TUNE_AUTH"] == "required"


def test_adamp_tune_variables_are_real_settings(services: dict[str, dict[str, Any]]) -> None:
    known = settings_env_names()
    assert "RAY_ADDRESS" in known
    for name, service in services.items():
        for variable in environment(service):
            if variable.upper().startswith("ADAMP_TUNE_"):
                assert variable.upper() in known, f"{name}: {variable} is no setting"


def test_api_environment_gives_team_mode_settings(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in list(os.environ):  # what the caller's shell set must not count
        if variable.upper().startswith("ADAMP_TUNE_") or variable.upper() == "RAY_ADDRESS":
            monkeypatch.delenv(variable)
    for variable, value in environment(services["api"]).items():
        monkeypatch.setenv(variable, value)
    settings = Settings(host="0.0.0.0")
    assert settings.auth_required
    assert not settings.embedded_ray
    assert settings.resolved_database_url.startswith("postgresql+psycopg://")


def test_checkpoints_are_on_a_volume_the_api_and_every_ray_node_share(
    services: dict[str, dict[str, Any]],
) -> None:
    """Workers write checkpoints, the API serves and deletes them: one store for all."""
    url = environment(services["api"])["ADAMP_TUNE_CHECKPOINT_URL"]
    for name in ("api", "ray-head", "ray-worker"):
        mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in services[name]["volumes"]}
        assert mounts.get(url) == "checkpoints", f"{name} does not mount {url}"
    assert "chown adamp /checkpoints" in DOCKERFILE.read_text(), "writable by the user"
