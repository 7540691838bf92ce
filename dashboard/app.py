"""The dashboard web app: status pages pushed live to the browser, control actions behind a token.

``create_app(settings)`` builds the FastAPI app. On start-up it loads the roster
and the instrument master, starts :class:`~dashboard.feed.BusFeed` (bus listener
and RPC poller on threads of their own) and serves:

- pages ``/``, ``/agents``, ``/agents/{id}``, ``/market``, ``/risk``, ``/recon``, ``/config``;
- ``/api/stream``: Server-Sent Events carrying the sections of the state that changed;
- ``/api/state``, ``/api/agents`` (+ ``.csv``, ``.xlsx``), ``/api/agents/{id}``;
- control: ``POST /api/agents/{id}/{spawn|kill|restart}``, ``POST /api/risk/{halt|resume|reduce}`` and
  ``POST /api/ledger/adjust`` (agent_id, code, qty, cash_won, reason: a ledger adjustment), ``POST /api/recon/run`` (a reconciliation now), each needing the token (``Authorization: Bearer <token>`` or a ``token`` form field);
- ``/metrics`` (Prometheus text format) and ``/healthz``.

RPC calls run in the thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.concurrency import run_in_threadpool

from core.config import PROJECT_ROOT, StackSettings, load_stack, project_path
from core.instruments import InstrumentError, load_instruments
from dashboard import blotter, pages, reports
from dashboard.export import XLSX_MEDIA_TYPE, grid_csv, grid_xlsx, select_rows
from dashboard.feed import ACTIONS, BusFeed
from dashboard.hostcheck import HostCheck, allowed_hosts
from dashboard.journal import JournalReader
from dashboard.metrics import FirmCollector
from dashboard.pages import STATIC_DIR
from dashboard.roster import load_roster
from dashboard.state import SECTIONS, FirmState
from dashboard.venue import VenueConfig

log = logging.getLogger("dashboard")

PUSH_MIN_INTERVAL_S = 0.1  # at most ten pushes a second per browser: ticks arrive far faster
PING_INTERVAL_S = 1.0  # a quiet stream still says it is alive this often
AGENT_ACTIONS = ("spawn", "kill", "restart")
RISK_ACTIONS = ("halt", "resume", "reduce")
AGENT_STATUS_TIMEOUT_S = 1.0
PAGE_SECTIONS = {  # every page carries "venue": the LIVE banner is on every page
    "overview": ("desk", "processes", "alerts", "bus", "clock", "venue"),  # the desk carries the trading state
    "agents": ("agents", "venue"),
    "agent": ("agents", "market", "venue"),
    "market": ("market", "clock", "venue"),
    "risk": ("risk", "venue"),
    "recon": ("recon", "venue"),
    "config": ("processes", "venue"),
}


class Hub:
    """Wakes every open stream when the state changes (called from the feed's threads)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.events: set[asyncio.Event] = set()
        self._pending = False

    def notify_threadsafe(self) -> None:
        """Schedule one wake-up on the loop; changes that come while it is pending ride along."""
        if self.loop is None or self._pending:
            return
        self._pending = True
        try:
            self.loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop is closed: the app is shutting down
            self._pending = False

    def _wake(self) -> None:
        self._pending = False
        for event in self.events:
            event.set()


def _now_ns() -> int:
    return time.time_ns()


def _instrument_facts(settings: StackSettings) -> tuple[dict[str, str], dict[str, int]]:
    path = Path(settings.market.instruments_file)
    if not path.is_absolute():
        path = PROJECT_ROOT / path
    try:
        master = load_instruments(path)
    except (InstrumentError, OSError) as exc:
        log.warning("no instrument master: %s", exc)
        return {}, {}
    return {c: i.name for c, i in master.items()}, {c: i.last_close for c, i in master.items()}


def create_app(settings: StackSettings | None = None, *, start_feed: bool = True) -> FastAPI:
    """The dashboard app for ``settings`` (read with load_stack() when not given)."""
    settings = settings or load_stack()
    roster, roster_note = load_roster(project_path(settings.roster_file))  # the supervisor's roster
    names, bases = _instrument_facts(settings)
    kis = settings.broker.kis
    journal = JournalReader(settings.run_path / "journal.sqlite")
    state = FirmState(roster, names, bases, VenueConfig(settings.broker.kind, kis.env, kis.server),
                      started_ns=_now_ns(), opening_realized=journal.opening_realized)
    hub = Hub()
    state.subscribe(hub.notify_threadsafe)
    feed = BusFeed(settings, state)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub.loop = asyncio.get_running_loop()
        if start_feed:
            feed.start()
        try:
            yield
        finally:
            hub.loop = None
            if start_feed:
                await run_in_threadpool(feed.stop)

    app = FastAPI(title="trader dashboard", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(HostCheck, allowed=allowed_hosts(settings))  # only requests addressed to this dashboard
    app.state.firm = state
    app.state.feed = feed
    app.state.settings = settings
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    registry = CollectorRegistry()
    registry.register(FirmCollector(state, _now_ns))
    control_enabled = bool(settings.token())

    def render(name: str, title: str, body: str, extra: dict[str, Any] | None = None, stream: str = "", *,
               sections: tuple[str, ...] | None = None, scripts: tuple[str, ...] = (),
               styles: tuple[str, ...] = ()) -> HTMLResponse:
        """A page of the dashboard: ``sections`` of the state embedded and streamed (the page's own by default)."""
        sections = PAGE_SECTIONS[name] if sections is None else sections
        initial = state.view(sections, _now_ns())
        if extra:
            initial.update(extra)
        query = "sections=" + ",".join(sections) + (f"&{stream}" if stream else "")
        return HTMLResponse(pages.page(name, title, body, initial, stream=query, control=control_enabled,
                                       scripts=scripts, styles=styles))

    app.state.render = render  # for the pages that live in their own modules (blotter, reports)
    app.state.authorize = None  # set below, once defined

    @app.get("/favicon.svg", include_in_schema=False)
    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response((STATIC_DIR / "favicon.svg").read_bytes(), media_type="image/svg+xml",
                        headers={"Cache-Control": "max-age=86400"})

    # --- pages ------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def overview() -> HTMLResponse:
        return render("overview", "Overview", pages.overview_body(), scripts=("overview.js",))

    @app.get("/agents", response_class=HTMLResponse)
    def agents_page() -> HTMLResponse:
        return render("agents", "Agents", pages.agents_body(), scripts=(*pages.GRID_SCRIPTS, "agents.js"),
                      styles=pages.GRID_STYLES)

    @app.get("/agents/{agent_id}", response_class=HTMLResponse)
    async def agent_page(agent_id: str) -> HTMLResponse:
        detail = state.agent_detail(agent_id, _now_ns())
        if detail is None:
            return HTMLResponse(f"<h1>no agent {escape(agent_id[:64])}</h1>", status_code=404)
        history = await run_in_threadpool(journal.history, agent_id)
        note = "no journal yet" if not journal.present else "nothing in the journal for this agent"
        return render(
            "agent",
            f"Agent {agent_id}",
            pages.agent_body(agent_id, history, note),
            {"agent": detail},
            stream=f"agent={agent_id}",
            scripts=("agent.js",),
        )

    @app.get("/api/agents/{agent_id}/status")
    async def api_agent_status(agent_id: str) -> JSONResponse:
        """The agent's own status document (strategy state, limits, refusals), asked of its status page."""
        detail = state.agent_detail(agent_id, _now_ns())
        if detail is None:
            return JSONResponse({"error": f"no agent {agent_id[:64]!r}"}, status_code=404)
        # An agent that is down or has no page is a normal answer (the page says so), not a failed request.
        dp = int(detail["row"].get("dp") or 0)
        if not dp:
            return JSONResponse({"available": False, "error": "the agent has no status page (no dp)"})
        answer = await run_in_threadpool(_agent_status, dp)
        if isinstance(answer, str):
            return JSONResponse({"available": False, "error": answer})
        return JSONResponse({"available": True, **answer})

    @app.get("/market", response_class=HTMLResponse)
    def market_page() -> HTMLResponse:
        return render("market", "Market", pages.market_body())

    @app.get("/risk", response_class=HTMLResponse)
    def risk_page() -> HTMLResponse:
        return render("risk", "Risk", pages.risk_body(), scripts=("risk.js",))

    @app.get("/recon", response_class=HTMLResponse)
    def recon_page() -> HTMLResponse:
        return render("recon", "Reconciliation", pages.recon_body(), scripts=("risk.js",))

    @app.get("/config", response_class=HTMLResponse)
    def config_page() -> HTMLResponse:
        return render("config", "Configuration", pages.config_body(settings.masked(), roster_note))

    # --- data ---------------------------------------------------------------

    @app.get("/api/state")
    def api_state(sections: str = "") -> JSONResponse:
        wanted = [s for s in sections.split(",") if s in SECTIONS] or list(SECTIONS)
        return JSONResponse(state.view(wanted, _now_ns()))

    def grid_rows(request: Request) -> list[Any]:
        p = request.query_params
        filters = {k.removeprefix("f_"): v for k, v in p.items() if k.startswith("f_")}
        rows = state.view(["agents"], _now_ns())["agents"]["rows"]
        return select_rows(rows, q=p.get("q", ""), filters=filters, sort=p.get("sort", "id"), desc=p.get("desc") == "1")

    @app.get("/api/agents")
    def api_agents(request: Request) -> JSONResponse:
        return JSONResponse({"rows": grid_rows(request)})

    @app.get("/api/agents.csv")
    def api_agents_csv(request: Request) -> Response:
        return Response(
            grid_csv(grid_rows(request)),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="agents.csv"'},
        )

    @app.get("/api/agents.xlsx")
    def api_agents_xlsx(request: Request) -> Response:
        return Response(
            grid_xlsx(grid_rows(request)),
            media_type=XLSX_MEDIA_TYPE,
            headers={"Content-Disposition": 'attachment; filename="agents.xlsx"'},
        )

    @app.get("/api/agents/{agent_id}")
    def api_agent(agent_id: str) -> JSONResponse:
        detail = state.agent_detail(agent_id, _now_ns())
        if detail is None:
            return JSONResponse({"error": "UNKNOWN_AGENT", "agent_id": agent_id}, status_code=404)
        return JSONResponse(detail)

    @app.get("/api/stream")
    async def api_stream(request: Request, sections: str = "", agent: str = "") -> StreamingResponse:
        wanted = [s for s in sections.split(",") if s in SECTIONS] or list(SECTIONS)
        return StreamingResponse(
            _stream(request, state, hub, wanted, agent),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    # --- control ------------------------------------------------------------

    async def authorize(request: Request) -> tuple[bool, dict[str, str]]:
        body = (await request.body()).decode(errors="replace")
        fields: dict[str, str] = {}
        if request.headers.get("content-type", "").startswith("application/json") and body:
            try:
                data = json.loads(body)
                fields = {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
            except ValueError:
                fields = {}
        elif body:
            fields = {k: v[0] for k, v in parse_qs(body).items()}
        expected = settings.token()
        header = request.headers.get("authorization", "")
        supplied = header[7:].strip() if header.lower().startswith("bearer ") else fields.get("token", "")
        ok = bool(expected) and bool(supplied) and hmac.compare_digest(supplied.encode(), expected.encode())
        fields.pop("token", None)
        return ok, fields

    app.state.authorize = authorize

    def refused(action: str) -> JSONResponse:
        reason = "NO_TOKEN_CONFIGURED" if not settings.token() else "BAD_OR_MISSING_TOKEN"
        return JSONResponse(
            {"ok": False, "reason_code": reason, "error": f"{action} needs the dashboard token"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    async def run_action(action: str, args: dict[str, Any]) -> JSONResponse:
        result = await run_in_threadpool(feed.command, action, args)
        status = 200 if result.ok else (503 if result.reason_code.startswith("RPC_") else 409)
        log.info("control %s %s -> %s %s", action, args, result.ok, result.reason_code)
        return JSONResponse(result.model_dump(mode="json"), status_code=status)

    @app.post("/api/agents/{agent_id}/{action}")
    async def agent_action(agent_id: str, action: str, request: Request) -> JSONResponse:
        if action not in AGENT_ACTIONS:
            return JSONResponse({"ok": False, "reason_code": "UNKNOWN_ACTION", "error": action}, status_code=404)
        ok, _ = await authorize(request)
        if not ok:
            return refused(action)
        return await run_action(action, {"agent_id": agent_id})

    @app.post("/api/risk/{action}")
    async def risk_action(action: str, request: Request) -> JSONResponse:
        if action not in RISK_ACTIONS:
            return JSONResponse({"ok": False, "reason_code": "UNKNOWN_ACTION", "error": action}, status_code=404)
        ok, fields = await authorize(request)
        if not ok:
            return refused(action)
        args = {"reason": fields.get("reason", "from the dashboard")}
        return await run_action(action, args)

    @app.post("/api/alerts/{action}")
    async def alerts_action(action: str, request: Request) -> JSONResponse:
        """Acknowledge (``ack``) or mute (``mute``, ``minutes``; 0 unmutes) an alert group (``key`` source/kind)."""
        if action not in ("ack", "mute"):
            return JSONResponse({"ok": False, "reason_code": "UNKNOWN_ACTION", "error": action}, status_code=404)
        ok, fields = await authorize(request)
        if not ok:
            return refused(f"alerts {action}")
        key = fields.get("key", "")
        try:
            minutes = float(fields.get("minutes", "60") or 60)
        except ValueError:
            return JSONResponse({"ok": False, "reason_code": "BAD_ARGS",
                                 "error": f"minutes must be a number, not {fields.get('minutes')!r}"}, status_code=422)
        row = state.alert_action(action, key, "dashboard", minutes, _now_ns())
        if row is None:
            return JSONResponse({"ok": False, "reason_code": "UNKNOWN_ALERT", "error": f"no alert group {key!r}"},
                                status_code=404)
        log.info("alerts %s %s", action, key)
        return JSONResponse({"ok": True, "result": row})

    @app.get("/api/days")
    async def api_days(agent: str = "ACCOUNT") -> JSONResponse:
        """The daily reports of one book (an agent id, or ACCOUNT for the firm), oldest first."""
        return JSONResponse({"agent": agent, "days": await run_in_threadpool(journal.daily_pnl, agent[:64])})

    @app.post("/api/ledger/adjust")
    async def ledger_adjust(request: Request) -> JSONResponse:
        """Book a ledger adjustment (agent_id, code, qty, cash_won, cost_won?, reason): the token is needed."""
        ok, fields = await authorize(request)
        if not ok:
            return refused("ledger_adjust")
        args: dict[str, Any] = {"agent_id": fields.get("agent_id", ""), "code": fields.get("code", ""),
                                "reason": fields.get("reason", ""), "who": "dashboard",
                                "adjustment_id": fields.get("adjustment_id") or f"adj-dash-{_now_ns()}"}
        for key in ("qty", "cash_won", "cost_won"):
            raw = fields.get(key, "0") or "0"
            try:
                args[key] = int(raw)
            except ValueError:
                return JSONResponse({"ok": False, "reason_code": "BAD_ARGS", "error": f"{key} must be a whole number, not {raw!r}"},
                                    status_code=422)
        return await run_action("ledger_adjust", args)

    @app.post("/api/recon/run")
    async def recon_run(request: Request) -> JSONResponse:
        """Ask the reconciler for a run now (its report is the answer): the token is needed."""
        ok, _ = await authorize(request)
        if not ok:
            return refused("recon_run")
        return await run_action("recon_run", {})

    # --- operations -----------------------------------------------------------

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> PlainTextResponse:
        age = state.view(["bus"], _now_ns())["bus"]["last_message_age_s"]
        text = "ok" if age is not None and age < 5 else "ok (no bus message yet)" if age is None else f"ok (bus silent {age}s)"
        return PlainTextResponse(text)

    blotter.install(app, settings.run_path)  # /blotter, /api/blotter(.csv|.xlsx)
    reports.install(app, settings.run_path)  # /reports, /reports/{name}, /api/reports
    assert set(ACTIONS) == set(AGENT_ACTIONS) | set(RISK_ACTIONS) | {"ledger_adjust", "recon_run"}
    return app


def _agent_status(dp: int) -> dict[str, Any] | str:
    """GET http://127.0.0.1:<dp>/status: the document, or why there is none."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{dp}/status", timeout=AGENT_STATUS_TIMEOUT_S) as resp:
            doc = json.loads(resp.read())
    except (OSError, ValueError) as exc:
        return f"the agent's status page on port {dp} did not answer: {exc}"
    return doc if isinstance(doc, dict) else f"the agent's status page on port {dp} answered {type(doc).__name__}"


async def _stream(request: Request, state: FirmState, hub: Hub, wanted: list[str], agent: str) -> AsyncIterator[str]:
    """The SSE body: the wanted sections whenever they change (at most every PUSH_MIN_INTERVAL_S), pings between."""
    event = asyncio.Event()
    hub.events.add(event)
    seen: dict[str, int] = {}
    last_push = 0.0
    last_any = time.monotonic()
    loop = asyncio.get_running_loop()
    try:
        yield "retry: 1000\n\n"
        while True:
            event.clear()
            changed = [s for s in state.changed_sections(seen) if s in wanted]
            if changed:
                wait = PUSH_MIN_INTERVAL_S - (loop.time() - last_push)
                if wait > 0:
                    await asyncio.sleep(wait)
                    changed = [s for s in state.changed_sections(seen) if s in wanted]
                payload = state.view(changed, _now_ns())
                for s in changed:
                    seen[s] = payload["versions"][s]
                if agent and ("agents" in changed or "market" in changed):
                    payload["agent"] = state.agent_detail(agent, payload["now_ns"])
                last_push = loop.time()
                last_any = time.monotonic()
                yield f"event: state\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"
                continue
            if await request.is_disconnected():
                return
            try:
                await asyncio.wait_for(event.wait(), timeout=PING_INTERVAL_S)
            except TimeoutError:
                pass
            if time.monotonic() - last_any >= PING_INTERVAL_S:
                last_any = time.monotonic()
                yield f"event: ping\ndata: {_now_ns()}\n\n"
    finally:
        hub.events.discard(event)
