"""The dashboard trusts only its own address: a request with another Host header (DNS rebinding) is refused.

The real dashboard process (``python -m dashboard`` on a free loopback port,
with a control token) answers its own address and refuses every other Host
with 421 on the pages, the API and the event stream; the control API still
wants its token. ``dashboard.allowed_hosts`` is checked on the app itself.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from core.config import ConfigError, load_stack
from dashboard.app import create_app
from dashboard.hostcheck import allowed_hosts
from tests.browser.support import dashboard_running
from tests.dashboard.firm import Firm

TOKEN = "host-check-token-51c2"
READ_PATHS = ["/", "/agents", "/risk", "/api/state", "/api/agents", "/metrics", "/healthz", "/static/app.css"]
CONTROL_PATHS = ["/api/risk/halt", "/api/risk/resume", "/api/agents/sma-samsung/kill", "/api/recon/run"]


@pytest.fixture(scope="module")
def firm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Firm]:
    with dashboard_running(Firm(Path(tmp_path_factory.mktemp("hostcheck")), token=TOKEN)) as f:
        yield f


def get(firm: Firm, path: str, host: str | None = None, **kw) -> httpx.Response:
    headers = {"Host": host} if host else {}
    return httpx.get(firm.url + path, headers=headers, timeout=5, **kw)


def assert_refused(r: httpx.Response) -> None:
    assert r.status_code == 421, (r.status_code, r.text[:200])
    assert r.headers["content-type"].startswith("text/plain")
    assert "misdirected request" in r.text and len(r.content) < 300  # a short reason, none of the state


@pytest.mark.parametrize("path", READ_PATHS)
def test_the_dashboards_own_address_is_served(firm: Firm, path: str) -> None:
    assert get(firm, path).status_code == 200  # Host: 127.0.0.1:<port>
    assert get(firm, path, host=f"localhost:{firm.port}").status_code == 200


@pytest.mark.parametrize("host", ["evil.example:8000", "evil.example", "attacker.test:{port}", "127.0.0.1:1",
                                  "127.0.0.1", "localhost.evil.example:{port}", "127.0.0.1:{port}.evil.example"])
@pytest.mark.parametrize("path", READ_PATHS)
def test_another_host_is_refused_before_any_page_or_state(firm: Firm, path: str, host: str) -> None:
    assert_refused(get(firm, path, host=host.format(port=firm.port)))


def test_the_event_stream_opens_for_the_own_address_only(firm: Firm) -> None:
    with httpx.stream("GET", firm.url + "/api/stream", timeout=5) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert next(r.iter_lines()) != ""  # the stream is live: its first event line arrives
    with httpx.stream("GET", firm.url + "/api/stream", headers={"Host": "evil.example:8000"}, timeout=5) as r:
        r.read()
        assert_refused(r)


def test_a_request_without_a_host_header_is_refused(firm: Firm) -> None:
    with socket.create_connection(("127.0.0.1", firm.port), timeout=5) as s:
        s.sendall(b"GET /api/state HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 421 ") and b"no Host header" in answer


@pytest.mark.parametrize("path", CONTROL_PATHS)
def test_control_is_refused_without_the_token_and_from_another_host_even_with_it(firm: Firm, path: str) -> None:
    assert httpx.post(firm.url + path, timeout=5).status_code == 401
    assert httpx.post(firm.url + path, headers={"Authorization": "Bearer wrong"}, timeout=5).status_code == 401
    evil = httpx.post(firm.url + path, headers={"Host": "evil.example:8000", "Authorization": f"Bearer {TOKEN}"},
                      timeout=5)
    assert_refused(evil)


def test_allowed_hosts_adds_names_with_or_without_their_port(tmp_path: Path) -> None:
    settings = load_stack(run_dir=str(tmp_path), dashboard={"host": "127.0.0.1", "port": 8123,
                                                            "allowed_hosts": ["Trader.LAN", "proxy.lan:443"]})
    assert allowed_hosts(settings) == {"127.0.0.1:8123", "localhost:8123", "[::1]:8123", "trader.lan",
                                       "trader.lan:8123", "proxy.lan:443"}
    app = create_app(settings, start_feed=False)
    for base, status in [("http://trader.lan:8123", 200), ("http://proxy.lan:443", 200), ("http://[::1]:8123", 200),
                         ("http://proxy.lan:8123", 421), ("http://testserver", 421)]:
        with TestClient(app, base_url=base) as c:
            assert c.get("/api/state").status_code == status, base


def test_a_dashboard_on_another_address_does_not_answer_loopback_names(tmp_path: Path) -> None:
    lan = load_stack(run_dir=str(tmp_path), dashboard={"host": "192.0.2.10", "port": 8000})
    assert allowed_hosts(lan) == {"192.0.2.10:8000"}
    every = load_stack(run_dir=str(tmp_path), dashboard={"host": "0.0.0.0", "port": 80, "allowed_hosts": ["box"]})
    assert allowed_hosts(every) == {"127.0.0.1:80", "localhost:80", "[::1]:80", "127.0.0.1", "localhost", "[::1]",
                                    "box", "box:80"}
    v6 = load_stack(run_dir=str(tmp_path), dashboard={"host": "::1", "port": 8000})
    assert "[::1]:8000" in allowed_hosts(v6)


@pytest.mark.parametrize("entry", ["http://trader.lan", "trader lan", ""])
def test_an_allowed_host_that_is_not_a_host_name_is_a_configuration_error(tmp_path: Path, entry: str) -> None:
    with pytest.raises(ConfigError, match="dashboard.allowed_hosts"):
        load_stack(run_dir=str(tmp_path), dashboard={"allowed_hosts": [entry]})
