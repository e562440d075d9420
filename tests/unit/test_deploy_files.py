"""The deployment files, checked without docker: the compose set-up's services and commands,
the proxy's slow-client limits, the image's user, the systemd units and the settings template."""

from __future__ import annotations

import configparser
import re
import secrets
from pathlib import Path

import pytest
import yaml

from connector.serve import CHANNEL_TIMEOUT, GRACEFUL_TIMEOUT
from connector.settings import load_settings, production_problems
from connector.web import MAX_BODY_BYTES

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def nginx_directives(path: Path) -> dict[str, list[str]]:
    """Directive name → its values, for every simple ``name value;`` line (comments dropped)."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.fullmatch(r"([a-z_0-9]+)\s+([^;{]+);", line)
        if match:
            found.setdefault(match.group(1), []).append(match.group(2).strip())
    return found


def seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m)?", value).groups()  # type: ignore[union-attr]
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[unit]


def test_compose_has_the_proxy_web_two_workers_postgres_and_migrations(compose):
    services = compose["services"]
    assert set(services) == {"db", "migrate", "web", "worker", "proxy"}
    assert services["db"]["image"].startswith("postgres:")
    assert services["migrate"]["command"] == ["offboard", "db", "upgrade"]
    assert services["worker"]["command"] == ["offboard", "worker"]
    assert services["worker"]["deploy"]["replicas"] == 2
    web = services["web"]["command"]
    assert web[:2] == ["offboard", "serve"] and "--no-worker" in web
    assert web[web.index("--host") + 1] == "0.0.0.0" and web[web.index("--port") + 1] == "8080"
    assert services["proxy"]["image"].startswith("nginx:")
    assert list(services["proxy"]["ports"]) and "ports" not in services["web"]  # only the proxy is published


def test_compose_migrates_before_web_and_workers_start(compose):
    services = compose["services"]
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("web", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["proxy"]["depends_on"]["web"]["condition"] == "service_healthy"
    assert "/readyz" in " ".join(services["web"]["healthcheck"]["test"])


def test_compose_runs_offboard_on_postgres_from_the_projects_image(compose):
    for name in ("migrate", "web", "worker"):
        service = compose["services"][name]
        assert service["build"] == "."
        url = service["environment"]["OFFBOARD_DATABASE_URL"]
        assert url.startswith("postgresql://") and "@db:5432/" in url
        assert seconds(service["stop_grace_period"]) > GRACEFUL_TIMEOUT


def test_the_compose_proxy_config_is_mounted_and_points_at_web(compose):
    mounts = compose["services"]["proxy"]["volumes"]
    assert "./deploy/nginx/compose.conf:/etc/nginx/conf.d/default.conf:ro" in mounts
    assert "./deploy/nginx/offboard-proxy.conf:/etc/nginx/offboard-proxy.conf:ro" in mounts
    conf = nginx_directives(DEPLOY / "nginx" / "compose.conf")
    assert conf["server"] == ["web:8080"]
    assert conf["include"] == ["/etc/nginx/offboard-proxy.conf"]
    assert conf["listen"] == ["8080"]


@pytest.mark.parametrize("config", ["compose.conf", "offboard.conf"])
def test_both_proxy_configs_include_the_limits_and_cap_connections_per_client(config):
    conf = nginx_directives(DEPLOY / "nginx" / config)
    assert conf["include"] == ["/etc/nginx/offboard-proxy.conf"]
    assert conf["limit_conn_zone"] and conf["limit_conn"]
    # Idle upstream connections are dropped by nginx before the server drops them itself.
    assert seconds(conf["keepalive_timeout"][0]) < CHANNEL_TIMEOUT


def test_the_proxy_stops_slow_clients_and_oversized_bodies():
    conf = nginx_directives(DEPLOY / "nginx" / "offboard-proxy.conf")
    assert seconds(conf["client_header_timeout"][0]) <= 15
    assert seconds(conf["client_body_timeout"][0]) <= 15
    assert seconds(conf["send_timeout"][0]) <= 30
    assert conf["proxy_request_buffering"] == ["on"]
    assert conf["client_max_body_size"] == ["1m"] and MAX_BODY_BYTES == 1024 * 1024
    assert conf["client_body_buffer_size"] == ["1m"]  # a whole webhook in memory, no temp file
    assert conf["proxy_pass"] == ["http://offboard_web"]


def test_the_tls_config_redirects_to_https_and_serves_tls():
    text = (DEPLOY / "nginx" / "offboard.conf").read_text()
    conf = nginx_directives(DEPLOY / "nginx" / "offboard.conf")
    assert "return 301 https://$host$request_uri" in text
    assert "443 ssl http2" in conf["listen"]
    assert conf["server"] == ["127.0.0.1:8080"]


def test_the_image_installs_the_project_and_runs_as_an_unprivileged_user():
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    text = "\n".join(lines)
    final_stage = text.rsplit("\nFROM ", 1)[1]
    assert "pip install ." in text
    assert "COPY --from=build /opt/offboard /opt/offboard" in final_stage
    assert "useradd --system" in final_stage
    users = [line.split()[1] for line in final_stage.splitlines() if line.startswith("USER ")]
    assert users == ["offboard"]
    cmd = next(line for line in final_stage.splitlines() if line.startswith("CMD "))
    assert '"offboard", "serve"' in cmd and '"--no-worker"' in cmd
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert {".venv", ".git", "offboard.env", ".env"} <= set(ignored)  # no local secrets in the image


def _unit(name: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=True, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((DEPLOY / "systemd" / name).read_text())
    return unit


def test_the_systemd_units_run_web_and_workers_as_offboard_and_stop_gracefully():
    web, worker = _unit("offboard-web.service"), _unit("offboard-worker@.service")
    assert web["Service"]["ExecStartPre"].endswith("offboard db upgrade")
    assert " serve " in web["Service"]["ExecStart"] and web["Service"]["ExecStart"].endswith("--no-worker")
    assert "--host 127.0.0.1" in web["Service"]["ExecStart"]
    assert worker["Service"]["ExecStart"].endswith("offboard worker")
    assert "offboard-web.service" in worker["Unit"]["After"]
    for unit in (web, worker):
        service = unit["Service"]
        assert (service["User"], service["KillMode"], service["KillSignal"]) == (
            "offboard",
            "mixed",
            "SIGTERM",
        )
        assert int(service["TimeoutStopSec"]) > GRACEFUL_TIMEOUT
        assert service["EnvironmentFile"] == "/etc/offboard/offboard.env"
        assert service["Restart"] == "on-failure"


def test_the_settings_template_filled_in_passes_production(monkeypatch):
    values = {}
    for line in (DEPLOY / "offboard.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    assert values["OFFBOARD_ENV"] == "production" and values["OFFBOARD_SANDBOX"] == "false"
    values["OFFBOARD_SECRET_KEY"] = secrets.token_urlsafe(48)
    values["SALESFORCE_OUTBOUND_KEY"] = secrets.token_urlsafe(32)
    settings = load_settings(**values)  # the blanks left are "not set"
    assert production_problems(settings, web_processes=2) == []
