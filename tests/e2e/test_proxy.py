"""The deployment guide's nginx set-up, run for real where nginx is installed: both
configurations pass ``nginx -t``; in front of ``offboard serve`` it answers a signed webhook
while slow clients are connected, drops a client that trickles its headers, and refuses an
oversized body itself.

The configurations are the files in deploy/nginx, with only the addresses (and the TLS
certificate paths) replaced for this machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.helpers import BUNDLED_PLAYBOOKS, WEBHOOK_SECRET, deal_closed_today, signed
from tests.support.server import ServerProcess, free_port
from tests.support.slow_clients import SlowClients

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NGINX_DIR = ROOT / "deploy" / "nginx"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def _main_config(tmp: Path, site: Path) -> Path:
    """A minimal nginx.conf around one site file, everything written under ``tmp``."""
    temp = {name: tmp / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir(exist_ok=True)
    main = tmp / "nginx.conf"
    main.write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"daemon off;\npid {tmp / 'nginx.pid'};\nerror_log {tmp / 'error.log'} info;\n"
        "events { worker_connections 1024; }\nhttp {\n"
        f"  access_log {tmp / 'access.log'};\n"
        f"  client_body_temp_path {temp['body']};\n  proxy_temp_path {temp['proxy']};\n"
        f"  fastcgi_temp_path {temp['fastcgi']};\n  uwsgi_temp_path {temp['uwsgi']};\n"
        f"  scgi_temp_path {temp['scgi']};\n  include {site};\n}}\n"
    )
    return main


def _site(tmp: Path, name: str, replacements: dict[str, str]) -> Path:
    proxy = tmp / "offboard-proxy.conf"
    shutil.copy(NGINX_DIR / "offboard-proxy.conf", proxy)
    text = (NGINX_DIR / name).read_text().replace("/etc/nginx/offboard-proxy.conf", str(proxy))
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    site = tmp / name
    site.write_text(text)
    return site


def _nginx_test(main: Path) -> subprocess.CompletedProcess[str]:
    assert NGINX is not None
    return subprocess.run([NGINX, "-t", "-c", str(main)], capture_output=True, text=True, timeout=30)


@pytest.fixture(autouse=True)
def _needs_nginx() -> None:
    if NGINX is None:
        pytest.skip("nginx is not installed here (the static checks in tests/unit/test_deploy_files.py ran)")


def test_both_configurations_pass_nginx_t(tmp_path):
    compose = _site(tmp_path, "compose.conf", {"server web:8080;": "server 127.0.0.1:9;"})
    result = _nginx_test(_main_config(tmp_path, compose))
    assert result.returncode == 0, result.stderr

    certificate, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=offboard.example.com",
         "-days", "1", "-keyout", str(key), "-out", str(certificate)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    tls = _site(
        tmp_path,
        "offboard.conf",
        {
            "/etc/letsencrypt/live/offboard.example.com/fullchain.pem": str(certificate),
            "/etc/letsencrypt/live/offboard.example.com/privkey.pem": str(key),
            "listen 80;": f"listen 127.0.0.1:{free_port()};",
            "listen 443 ssl http2;": f"listen 127.0.0.1:{free_port()} ssl http2;",
        },
    )
    result = _nginx_test(_main_config(tmp_path, tls))
    assert result.returncode == 0, result.stderr


@pytest.fixture
def proxied(sqlite_url, tmp_path) -> Iterator[tuple[str, int]]:
    env = {
        "OFFBOARD_DATABASE_URL": sqlite_url,
        "OFFBOARD_PLAYBOOKS": str(BUNDLED_PLAYBOOKS),
        "OFFBOARD_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    server = ServerProcess(env, "--no-worker", log=tmp_path / "server.log").start()
    port = free_port()
    site = _site(
        tmp_path,
        "compose.conf",
        {"server web:8080;": f"server 127.0.0.1:{server.port};", "listen 8080;": f"listen 127.0.0.1:{port};"},
    )
    assert NGINX is not None
    nginx = subprocess.Popen(
        [NGINX, "-c", str(_main_config(tmp_path, site))],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "nginx.out").open("wb"),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", port
    finally:
        os.killpg(nginx.pid, signal.SIGTERM)
        nginx.wait(timeout=10)
        server.stop()


def test_behind_nginx_a_webhook_is_answered_slow_headers_are_dropped_and_big_bodies_refused(proxied):
    url, port = proxied
    slow = SlowClients(port).open()
    try:
        time.sleep(2.5)
        body, headers = signed(deal_closed_today("PROXY-1"))
        request = urllib.request.Request(f"{url}/webhooks/generic", data=body, headers=headers, method="POST")
        started = time.monotonic()
        with urllib.request.urlopen(request, timeout=5) as reply:
            assert reply.status == 202
        assert time.monotonic() - started < 5

        # client_header_timeout: the whole head within 10 s, or the connection is closed.
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(b"POST /webhooks/generic HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            closed = False
            while time.monotonic() - started < 18 and not closed:
                try:
                    sock.sendall(b"X")
                    sock.settimeout(2)
                    closed = sock.recv(4096) == b""
                except TimeoutError:
                    continue
                except OSError:
                    closed = True
            assert closed and 8 < time.monotonic() - started < 18

        # client_max_body_size: refused by nginx before a byte of the body is sent.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /webhooks/generic HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n")
            assert sock.recv(4096).split(b" ", 2)[1] == b"413"
    finally:
        slow.close()
