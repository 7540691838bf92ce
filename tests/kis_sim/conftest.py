"""The local KIS server as a real process on free loopback ports, and a plain KIS client written here."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
PRICE = "/uapi/domestic-stock/v1/quotations/inquire-price"
ORDER = "/uapi/domestic-stock/v1/trading/order-cash"
CHANGE = "/uapi/domestic-stock/v1/trading/order-rvsecncl"
CCLD = "/uapi/domestic-stock/v1/trading/inquire-daily-ccld"
BALANCE = "/uapi/domestic-stock/v1/trading/inquire-balance"


def wait_ready(log: Path, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """Wait for the server's ready line, which it prints once its REST and WebSocket ports both listen."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if b" ready: " in log.read_bytes():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"kis-sim exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    raise TimeoutError(f"kis-sim did not say it was ready in {timeout_s} s (its output: {log})")


class Server:
    """A running ``python -m services.kis_sim`` and the credentials it shows."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.rest_port, self.ws_port = free_port(), free_port()
        self.state = tmp
        self.args = list(args)
        env = [a for a in args if a in ("real", "demo")]
        self.env = env[0] if env else "demo"
        out = subprocess.check_output([sys.executable, "-m", "services.kis_sim", "--env", self.env,
                                       "--print-credentials"], cwd=ROOT)
        self.creds = json.loads(out)
        self.base = f"http://127.0.0.1:{self.rest_port}"
        self.ws_url = f"ws://127.0.0.1:{self.ws_port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.start()

    def start(self) -> None:
        cmd = [sys.executable, "-m", "services.kis_sim", "--rest-port", str(self.rest_port), "--ws-port",
               str(self.ws_port), "--state", str(self.state), *self.args]
        self.log = self.state / f"kis-sim-{self.starts}.log"  # one per start: the ready line waited for is this one's
        self.starts += 1
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_ready(self.log, self.proc)
        self.http = httpx.Client(base_url=self.base, timeout=10)
        self._token: str | None = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.http.close()

    # --- control ---------------------------------------------------------------------

    def control(self, name: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        if body is None:
            return self.http.get(f"/kis-sim/{name}").json()
        r = self.http.post(f"/kis-sim/{name}", json=body)
        assert r.status_code == 200, r.text
        return r.json()

    def fault(self, name: str, **args: Any) -> dict[str, Any]:
        return self.control("fault", {"name": name, **args})

    # --- a plain KIS client -------------------------------------------------------------

    def issue_token(self) -> httpx.Response:
        return self.http.post("/oauth2/tokenP", json={"grant_type": "client_credentials",
                                                        "appkey": self.creds["appkey"],
                                                        "appsecret": self.creds["appsecret"]})

    def token(self, fresh: bool = False) -> str:
        if self._token is None or fresh:
            self.control("auth-clock", {"advance_s": 61})
            r = self.issue_token()
            assert r.status_code == 200, r.text
            self._token = r.json()["access_token"]
        return self._token

    def headers(self, tr_id: str, **extra: str) -> dict[str, str]:
        return {"content-type": "application/json; charset=utf-8", "authorization": f"Bearer {self.token()}",
                "appkey": self.creds["appkey"], "appsecret": self.creds["appsecret"], "tr_id": tr_id,
                "custtype": "P", **extra}

    def get(self, path: str, tr_id: str, params: dict[str, str], **headers: str) -> httpx.Response:
        return self.http.get(path, params=params, headers=self.headers(tr_id, **headers))

    def post(self, path: str, tr_id: str, body: dict[str, str], **headers: str) -> httpx.Response:
        return self.http.post(path, json=body, headers=self.headers(tr_id, **headers))

    @property
    def cano(self) -> str:
        return self.creds["account"][:8]

    def order(self, side: str = "buy", qty: int = 1, price: int = 0, code: str = "005930",
              dvsn: str | None = None) -> httpx.Response:
        prefix = "V" if self.env == "demo" else "T"
        tr = f"{prefix}TTC0012U" if side == "buy" else f"{prefix}TTC0011U"
        body = {"CANO": self.cano, "ACNT_PRDT_CD": "01", "PDNO": code, "ORD_DVSN": dvsn or ("00" if price else "01"),
                "ORD_QTY": str(qty), "ORD_UNPR": str(price)}
        return self.post(ORDER, tr, body)

    def change(self, odno: str, what: str, qty: int = 0, price: int = 0, all_qty: str = "Y",
               branch: str | None = None) -> httpx.Response:
        prefix = "V" if self.env == "demo" else "T"
        body = {"CANO": self.cano, "ACNT_PRDT_CD": "01",
                "KRX_FWDG_ORD_ORGNO": branch if branch is not None else ("00950" if self.env == "demo" else "06010"),
                "ORGN_ODNO": odno, "ORD_DVSN": "00", "RVSE_CNCL_DVSN_CD": what, "ORD_QTY": str(qty),
                "ORD_UNPR": str(price), "QTY_ALL_ORD_YN": all_qty}
        return self.post(CHANGE, f"{prefix}TTC0013U", body)

    def price(self, code: str = "005930") -> dict[str, str]:
        r = self.get(PRICE, "FHKST01010100", {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": code})
        assert r.status_code == 200, r.text
        return r.json()["output"]

    def ccld(self, tr_cont: str = "", fk: str = "", nk: str = "", ccld_dvsn: str = "00") -> httpx.Response:
        prefix = "V" if self.env == "demo" else "T"
        params = {"CANO": self.cano, "ACNT_PRDT_CD": "01", "INQR_STRT_DT": "20000101", "INQR_END_DT": "20991231",
                  "SLL_BUY_DVSN_CD": "00", "PDNO": "", "ORD_GNO_BRNO": "", "ODNO": "", "CCLD_DVSN": ccld_dvsn,
                  "INQR_DVSN": "00", "INQR_DVSN_1": "", "INQR_DVSN_3": "00", "EXCG_ID_DVSN_CD": "",
                  "CTX_AREA_FK100": fk, "CTX_AREA_NK100": nk}
        return self.get(CCLD, f"{prefix}TTC0081R", params, tr_cont=tr_cont)

    def approval(self) -> str:
        r = self.http.post("/oauth2/Approval", json={"grant_type": "client_credentials",
                                                       "appkey": self.creds["appkey"],
                                                       "secretkey": self.creds["appsecret"]})
        assert r.status_code == 200, r.text
        return r.json()["approval_key"]


def subscribe_msg(approval: str, tr_id: str, tr_key: str, tr_type: str = "1") -> str:
    return json.dumps({"header": {"approval_key": approval, "custtype": "P", "tr_type": tr_type,
                                  "content-type": "utf-8"},
                       "body": {"input": {"tr_id": tr_id, "tr_key": tr_key}}})


def aes_decrypt(b64: str, key: str, iv: str) -> str:
    dec = Cipher(algorithms.AES(key.encode()), modes.CBC(iv.encode())).decryptor()
    data = dec.update(base64.b64decode(b64)) + dec.finalize()
    unpad = padding.PKCS7(128).unpadder()
    return (unpad.update(data) + unpad.finalize()).decode()


def _server(tmp_path_factory: pytest.TempPathFactory, name: str, *args: str) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp(name), *args)
    try:
        yield server
    finally:
        server.stop()


COMMON = ("--start-time", "09:05", "--speed", "10", "--ping-interval", "0.3", "--pong-timeout", "1.5",
          "--cancel-guard-ms", "100")


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _server(tmp_path_factory, "demo", "--rate-limit", "1000", *COMMON)


@pytest.fixture(scope="session")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _server(tmp_path_factory, "real", "--env", "real", "--rate-limit", "1000", *COMMON)
