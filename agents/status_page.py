"""An agent's own status page on 127.0.0.1:<dp>: ``GET /status`` (JSON) and ``GET /`` (HTML).

The server runs on a thread of its own (``http.server.ThreadingHTTPServer``)
that sleeps until a browser connects or ``close()`` wakes it (no polling: a
hundred idle agents must not wake a hundred threads five times a second), and
never touches the agent's book: the agent's poll loop hands it a finished
status document (``StatusPage.update``), which the page swaps in as one
reference, so a slow or stuck browser cannot delay the loop and the loop never
waits for a request. No ZeroMQ call happens on the server's threads.
"""

from __future__ import annotations

import html
import json
import logging
import selectors
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("agents.status_page")

HOST = "127.0.0.1"


class StatusPage:
    """Serves the latest status document of one agent until ``close()``."""

    def __init__(self, port: int, title: str, host: str = HOST) -> None:
        self.title = title
        self._json = b"{}"
        self._doc: dict[str, Any] = {}
        self.requests = 0
        page = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                page.requests += 1
                path = self.path.split("?", 1)[0]
                if path == "/status":
                    self._send(200, "application/json", page._json)
                elif path == "/":
                    self._send(200, "text/html; charset=utf-8", page.render_html().encode())
                else:
                    self._send(404, "application/json", b'{"error": "not found; try /status or /"}')

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
                log.debug("%s " + format, self.address_string(), *args)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.server.timeout = None  # handle_request is called only once a connection waits
        self.port = self.server.server_address[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._closing = False
        self._thread = threading.Thread(target=self._serve, name=f"status-{port}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        """Accept connections until ``close()`` writes to the wake-up pair."""
        with selectors.DefaultSelector() as sel:
            sel.register(self.server, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self._closing:
                for key, _ in sel.select():
                    if key.fileobj is self.server and not self._closing:
                        self.server.handle_request()  # one connection, answered on a thread of its own

    def update(self, doc: dict[str, Any]) -> None:
        """Publish a new status document (called by the agent loop)."""
        encoded = json.dumps(doc, default=str).encode()
        self._doc, self._json = doc, encoded

    def render_html(self) -> str:
        """A small self-refreshing page of the latest status."""
        doc = self._doc
        book = doc.get("book") or {}
        sync = doc.get("sync") or {}
        esc = html.escape
        rows = "".join(
            f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>"
            for k, v in book.items()
            if not isinstance(v, dict)
        )
        pos_rows = "".join(
            f"<tr><td>{esc(code)}</td><td>{p.get('qty')}</td><td>{p.get('avg_price')}</td><td>{p.get('last_price')}</td>"
            f"<td>{p.get('realized_pnl_won')}</td><td>{p.get('unrealized_pnl_won')}</td><td>{p.get('pending_buy_qty')}</td>"
            f"<td>{p.get('pending_sell_qty')}</td></tr>"
            for code, p in (book.get("positions") or {}).items()
        )
        order_rows = "".join(
            f"<tr><td>{esc(str(o.get('client_order_id')))}</td><td>{esc(str(o.get('code')))}</td><td>{esc(str(o.get('side')))}</td>"
            f"<td>{o.get('qty')}</td><td>{o.get('price')}</td><td>{o.get('filled_qty')}</td><td>{esc(str(o.get('status')))}</td></tr>"
            for o in doc.get("open_orders") or []
        )
        facts = {
            "strategy": doc.get("strategy"),
            "codes": ", ".join(doc.get("codes") or []),
            "phase": doc.get("phase"),
            "sync": sync.get("state"),
            "trading": doc.get("trading"),
            "strategy errors": doc.get("errors_total"),
            "last error": doc.get("last_error"),
        }
        fact_rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in facts.items())
        state = esc(json.dumps(doc.get("strategy_state") or {}, default=str))
        return f"""<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<title>{esc(self.title)}</title>
<style>body{{font-family:sans-serif;margin:1em}}table{{border-collapse:collapse;margin-bottom:1em}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}th{{text-align:left}}</style></head><body>
<h1>{esc(self.title)}</h1>
<table>{fact_rows}</table>
<h2>Book</h2><table>{rows}</table>
<h2>Positions</h2><table><tr><th>code</th><th>qty</th><th>avg price</th><th>last</th><th>realised</th><th>unrealised</th>
<th>pending buy</th><th>pending sell</th></tr>{pos_rows}</table>
<h2>Open orders</h2><table><tr><th>client order id</th><th>code</th><th>side</th><th>qty</th><th>price</th><th>filled</th>
<th>status</th></tr>{order_rows}</table>
<h2>Strategy state</h2><pre>{state}</pre>
<p><a href="/status">/status</a> (JSON)</p></body></html>"""

    def close(self) -> None:
        """Stop serving and release the port."""
        self._closing = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._thread.join(timeout=2.0)
        self.server.server_close()
        self._wake_r.close()
        self._wake_w.close()
