"""KIS's REST gateway in front of the desk and the queries: paths, headers, auth, rate limit, faults, errors.

One catch-all ASGI route so that every request, a wrong path included, gets
KIS's own answer. The checks run in KIS's order: body size, app key and
secret (EGW0010x, cross-environment EGW02004 / EGW02007), the rate limit
(EGW00201, HTTP 500), the token (EGW00205 / EGW00121 / EGW00123), ``custtype``
(EGW00208), the TR id (OPSQ9999 missing; EGW02006 on demo, OPSQ0002 on real
for one this server does not have), then the body or query (OPSQ9997 for
malformed JSON). The control endpoint lives under ``/kis-sim/``, off KIS's
paths, and no fault or limit applies to it.

Response headers are lower case (``tr_id``, ``tr_cont`` on paged TRs,
``gt_uid``); bodies are UTF-8 JSON with every number as a string.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from uvicorn.protocols.http.h11_impl import H11Protocol

from services.kis_sim import flavour as f
from services.kis_sim import inquiries
from services.kis_sim.replies import KisError, dumps

if TYPE_CHECKING:
    from services.kis_sim.service import KisSim

MAX_BODY_BYTES = 64 * 1024
CONTROL_PREFIX = "/kis-sim/"
JSON = "application/json; charset=utf-8"
_TRANSPORTS: dict[tuple[str, int], asyncio.Transport] = {}

POST_PATHS = {f.ORDER_CASH, f.ORDER_RVSECNCL}
GET_PATHS = {f.DAILY_CCLD, f.BALANCE, f.PSBL_ORDER, f.PSBL_RVSECNCL, f.PRICE, f.INVESTOR, f.MINUTE_CHART}


class DroppableH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol that lets the app find its connection, to drop it as a fault."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self._peer = (peer[0], peer[1])
            _TRANSPORTS[self._peer] = transport

    def connection_lost(self, exc: Exception | None) -> None:
        peer = getattr(self, "_peer", None)
        if peer is not None:
            _TRANSPORTS.pop(peer, None)
        super().connection_lost(exc)


async def drop_connection(request: Request) -> Response:
    """Drop the request's connection without an answer (the client cannot know what happened)."""
    client = request.scope.get("client")
    transport = _TRANSPORTS.get((client[0], client[1])) if client else None
    if transport is not None:
        transport.abort()
    await asyncio.sleep(0.01)  # let uvicorn see the connection gone before the app returns
    return Response(b"", 500)


def _response(body: dict[str, Any], status: int = 200, tr_id: str = "", tr_cont: str | None = None,
              background: BackgroundTask | None = None) -> Response:
    headers = {"gt_uid": uuid.uuid4().hex}
    if tr_id:
        headers["tr_id"] = tr_id
    if tr_cont is not None:
        headers["tr_cont"] = tr_cont
    return Response(dumps(body), status, headers=headers, media_type=JSON, background=background)


def _error(exc: KisError, tr_id: str = "") -> Response:
    return _response(exc.body(), exc.status, tr_id)


async def _read_json(request: Request, *, oauth: bool = False) -> dict[str, Any]:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise KisError("EGW00101", 413, oauth=oauth)
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise KisError("EGW00101", 403, oauth=True) if oauth else KisError("OPSQ9997", 500) from None
    if not isinstance(body, dict):
        raise KisError("EGW00101", 403, oauth=True) if oauth else KisError("OPSQ9997", 500)
    return body


def _too_big(request: Request) -> bool:
    length = request.headers.get("content-length")
    return bool(length and length.isdigit() and int(length) > MAX_BODY_BYTES)


def make_app(sim: KisSim) -> Any:
    """The ASGI application of the REST port."""
    from fastapi import FastAPI

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    async def everything(request: Request) -> Response:
        path = request.url.path
        if path.startswith(CONTROL_PREFIX):
            return await _control(sim, request, path[len(CONTROL_PREFIX):])
        now = time.monotonic()
        if sim.faults.silent(now):
            while sim.faults.silent(time.monotonic()):
                await asyncio.sleep(0.05)
            return await drop_connection(request)
        if _too_big(request):
            return _error(KisError("EGW00101", 413, oauth=path.startswith("/oauth2/")))
        if sim.faults.next_500():
            return _error(KisError("EGW00002", 500))
        try:
            if path.startswith("/oauth2/"):
                return await _oauth(sim, request, path)
            return await _uapi(sim, request, path)
        except KisError as exc:
            return _error(exc, request.headers.get("tr_id", ""))

    return app


async def _oauth(sim: KisSim, request: Request, path: str) -> Response:
    if request.method != "POST" or path not in ("/oauth2/tokenP", "/oauth2/revokeP", "/oauth2/Approval"):
        raise KisError("MCA00124", 404)
    body = await _read_json(request, oauth=True)
    now = sim.auth_now()
    book = sim.book
    if path == "/oauth2/tokenP":
        reply = book.issue(body, now)
    elif path == "/oauth2/revokeP":
        reply = book.revoke(body)
    else:
        reply = book.approve(body, now)
    sim.save_kis()
    return _response(reply)


async def _uapi(sim: KisSim, request: Request, path: str) -> Response:
    headers = request.headers
    hashkey = path == "/uapi/hashkey"
    if not (hashkey or path in POST_PATHS or path in GET_PATHS):
        raise KisError("MCA00124", 404)
    if (request.method == "POST") != (hashkey or path in POST_PATHS):
        raise KisError("MCA00124", 404)
    appkey = headers.get("appkey")
    sim.book.check_app(appkey, headers.get("appsecret"))
    assert appkey is not None
    if not sim.limiter.admit(appkey, time.monotonic()):
        raise KisError("EGW00201", 500)
    if hashkey:
        body = await _read_json(request)
        digest = hashlib.sha256(dumps(body)).hexdigest()
        return _response({"BODY": body, "HASH": digest})
    sim.book.check_bearer(headers.get("authorization"), appkey, sim.auth_now())
    if headers.get("custtype") not in ("P", "B"):
        raise KisError("EGW00208", 500)
    tr_id = headers.get("tr_id")
    if not tr_id:
        raise KisError("OPSQ9999", 500)
    action = sim.flavour.action(path, tr_id)
    if action is None:
        raise KisError("EGW02006" if sim.flavour.is_demo else "OPSQ0002", 500)
    tr_cont_in = headers.get("tr_cont", "")
    if request.method == "POST":
        body = await _read_json(request)
        return await _order(sim, request, path, action, tr_id, body)
    query = {k.upper(): v for k, v in request.query_params.items()}
    market, desk = sim.market, sim.desk
    if path == f.DAILY_CCLD:
        answer = inquiries.daily_ccld(query, tr_cont_in, desk, market, spellings=sim.options.doc_spellings)
    elif path == f.BALANCE:
        answer = inquiries.balance(query, tr_cont_in, desk, market)
    elif path == f.PSBL_ORDER:
        answer = inquiries.psbl_order(query, desk, market)
    elif path == f.PSBL_RVSECNCL:
        answer = inquiries.psbl_rvsecncl(query, tr_cont_in, desk, market)
    elif path == f.PRICE:
        answer = inquiries.price(query, market)
    elif path == f.INVESTOR:
        answer = inquiries.investor(query, market)
    else:
        answer = inquiries.minute_chart(query, market)
    body, tr_cont = answer
    return _response(body, 200, tr_id, tr_cont if tr_cont else None)


async def _order(sim: KisSim, request: Request, path: str, action: str, tr_id: str, body: dict[str, Any]) -> Response:
    """An order or a revise/cancel: carried out, saved, then answered (or a fault played on the answer)."""
    try:
        what, output, notices = sim.order(action, body)
    except KisError as exc:
        return _error(exc, tr_id)
    fault = sim.faults.take_order_fault()
    flavour = sim.flavour
    reply = {"rt_cd": "0", "msg_cd": flavour.order_ok_code, "msg1": flavour.order_ok_text[what], "output": output}
    if sim.faults.notice_first:
        waits = sim.send_notices(notices, wait=True)
        if waits:
            await asyncio.wait(waits, timeout=1.0)
        background = None
    else:
        background = BackgroundTask(sim.send_notices, notices)
    if fault == "timeout":
        if background is not None:
            sim.send_notices(notices)
        return _error(KisError("EGW00301", 500), tr_id)
    if fault == "drop":
        if background is not None:
            sim.send_notices(notices)
        return await drop_connection(request)
    return _response(reply, 200, tr_id, background=background)


async def _control(sim: KisSim, request: Request, name: str) -> Response:
    """``/kis-sim/status``, ``/kis-sim/fault``, ``/kis-sim/auth-clock``, ``/kis-sim/settings``."""
    from services.kis_sim.faults import FaultError

    if name == "status" and request.method == "GET":
        return Response(dumps(sim.status()), media_type=JSON)
    if request.method != "POST" or name not in ("fault", "auth-clock", "settings"):
        return Response(dumps({"error": f"unknown control {name!r}: GET status, POST fault / auth-clock / settings"}),
                        404, media_type=JSON)
    try:
        body = await _read_json(request)
    except KisError:
        return Response(dumps({"error": "the body must be a JSON object"}), 400, media_type=JSON)
    try:
        if name == "fault":
            result = await sim.fault(body)
        elif name == "auth-clock":
            result = sim.advance_auth_clock(body)
        else:
            result = sim.settings(body)
    except (FaultError, ValueError, TypeError) as exc:
        return Response(dumps({"error": str(exc)}), 400, media_type=JSON)
    return Response(dumps(result), media_type=JSON)
