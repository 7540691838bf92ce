"""KIS credentials in use: the access token and the WebSocket approval key, cached on disk, issued sparingly.

KIS issues an access token at most once a minute per app key (a faster call
gets HTTP 403 EGW00133), sends a KakaoTalk message to the customer for each
real issuance, and answers within six hours with the token it already gave
(KIS.md 3.1, 7.10). So the gateway issues as rarely as it can:

* one token per app key, kept with its expiry in a JSON file (mode 0600,
  replaced atomically), read back by the next process: a restart reuses it;
* renewed ahead of expiry (``renew_before_s``, an hour by default); if the
  renewal fails the old token serves while it is still valid;
* never two issuance calls within ``issue_interval_s`` (60 s), counted across
  restarts through the file; a token needed sooner is ``KisUnavailable`` (the
  call is not made; KIS is not asked to refuse it);
* ``drop(token)`` after EGW00121 / EGW00123: that token is never handed out
  again, and the next ``token()`` issues one (the caller retries its call once).

The WebSocket approval key (``/oauth2/Approval``, valid 24 h, checked only
when a session connects) lives in the same file with the same rules except
the one-a-minute one, which KIS has not published for it.

Thread-safe: one lock around everything, because the WebSocket thread asks
for the approval key while the main loop asks for the token. Another process
on the same file is serialised by an advisory lock on ``<file>.lock`` while
either issues. No secret or token value is ever logged: a token shows as its
last four characters.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from core.krx import KST
from services.kis_gateway.wire import KisBadReply, KisFailure, KisUnavailable, read_oauth

TOKEN_PATH = "/oauth2/tokenP"
APPROVAL_PATH = "/oauth2/Approval"
ISSUE_INTERVAL_S = 60.0  # KIS: one token per minute per app key
RENEW_BEFORE_S = 3600.0
EXPIRY_SKEW_S = 60.0  # a token this close to its expiry is treated as expired (clocks differ)
APPROVAL_LIFETIME_S = 86_400.0  # KIS.md 3.3: valid 24 hours
FILE_VERSION = 1
_log = logging.getLogger("kis_gateway.auth")


def tail(secret: str) -> str:
    """What of a token or key may appear in a log: its last four characters."""
    return f"…{secret[-4:]}" if secret else "(none)"


class TokenCache:
    """The access token and approval key of one app key at one KIS server, cached in ``path``."""

    def __init__(self, path: Path, rest_url: str, appkey: str, appsecret: str, *, timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.time, renew_before_s: float = RENEW_BEFORE_S,
                 issue_interval_s: float = ISSUE_INTERVAL_S, counters: Counter[str] | None = None) -> None:
        self.path = path
        self._url = rest_url.rstrip("/")
        self._appkey = appkey
        self._appsecret = appsecret
        self._clock = clock
        self._renew_before_s = renew_before_s
        self._issue_interval_s = issue_interval_s
        # the file is keyed by a digest of server and app key, so it names neither
        self._entry_id = hashlib.sha256(f"{self._url}|{appkey}".encode()).hexdigest()[:24]
        self._http = httpx.Client(base_url=self._url, timeout=timeout_s)
        self._lock = threading.Lock()
        self._refused: set[str] = set()  # tokens KIS refused: never handed out again
        self._refused_approvals: set[str] = set()
        self._entry: dict[str, Any] = {}
        self.counters: Counter[str] = counters if counters is not None else Counter()
        with self._lock:
            self._entry = self._read_entry()

    # --- the access token ------------------------------------------------------------------

    def token(self) -> str:
        """A valid access token: the cached one, or one issued now; KisUnavailable if none can be had."""
        with self._lock:
            now = self._clock()
            token = self._usable_token(self._entry, now)
            if token and self._entry["token_expires_s"] - now > self._renew_before_s:
                return token
            with self._file_lock():
                self._merge_file()  # another process may have issued meanwhile
                token = self._usable_token(self._entry, now)
                if token and self._entry["token_expires_s"] - now > self._renew_before_s:
                    return token
                return self._issue_token(now, fallback=token)

    def drop(self, token: str | None = None) -> None:
        """KIS refused ``token`` (EGW00121 / EGW00123): forget it; the next ``token()`` issues another."""
        with self._lock:
            current = self._entry.get("token", "")
            if token is None:
                token = current
            if token:
                self._refused.add(token)
                _log.warning("access token %s refused by KIS: dropped", tail(token))

    @property
    def issued(self) -> int:
        """Tokens this process issued (a second process reusing the file issues none)."""
        return self.counters["token_issued"]

    def _usable_token(self, entry: dict[str, Any], now: float) -> str:
        token = entry.get("token")
        expires = entry.get("token_expires_s")
        if not isinstance(token, str) or not token or token in self._refused or not isinstance(expires, float | int):
            return ""
        return token if now < expires - EXPIRY_SKEW_S else ""

    def _issue_token(self, now: float, fallback: str) -> str:
        last = self._entry.get("last_issue_s")
        if isinstance(last, float | int) and 0 <= now - last < self._issue_interval_s:
            wait = self._issue_interval_s - (now - last)
            if fallback:
                return fallback  # renewal can wait; the current token is still good
            raise KisUnavailable(f"no valid access token, and KIS issues one a minute: the last was asked for "
                                 f"{now - last:.0f} s ago, the next may be in {wait:.0f} s")
        self._entry["last_issue_s"] = now
        self._write_entry()  # the attempt counts against the minute even if its answer is lost
        try:
            body = self._post(TOKEN_PATH, {"grant_type": "client_credentials", "appkey": self._appkey,
                                           "appsecret": self._appsecret})
            token, expires_in = _token_grant(body, now)
        except KisUnavailable as exc:
            if isinstance(exc.__cause__, httpx.ConnectError):
                # the request never reached KIS (nothing listening yet): it does not count against the minute
                self._entry["last_issue_s"] = last
                self._write_entry()
            if fallback:
                _log.warning("access token renewal failed (%s); %s serves until it expires", exc.why,
                             tail(fallback))
                return fallback
            raise
        self._entry.update(token=token, token_expires_s=now + expires_in, token_issued_s=now)
        self._write_entry()
        self.counters["token_issued"] += 1
        expiry = dt.datetime.fromtimestamp(now + expires_in, KST)
        _log.info("access token %s issued, valid until %s KST", tail(token), expiry.strftime("%Y-%m-%d %H:%M:%S"))
        return token

    # --- the WebSocket approval key ---------------------------------------------------------------

    def approval_key(self) -> str:
        """A WebSocket approval key: the cached one, or one asked for now; KisUnavailable if none can be had."""
        with self._lock:
            now = self._clock()
            key = self._usable_approval(self._entry, now)
            if key:
                return key
            with self._file_lock():
                self._merge_file()
                key = self._usable_approval(self._entry, now)
                if key:
                    return key
                body = self._post(APPROVAL_PATH, {"grant_type": "client_credentials", "appkey": self._appkey,
                                                  "secretkey": self._appsecret})  # "secretkey": KIS.md 3.3
                raw = body.get("approval_key")
                if not isinstance(raw, str) or not raw.strip():
                    raise KisUnavailable("the approval key reply carries no approval_key")
                key = raw.strip()
                self._entry.update(approval_key=key, approval_expires_s=now + APPROVAL_LIFETIME_S)
                self._write_entry()
                self.counters["approval_issued"] += 1
                _log.info("WebSocket approval key %s issued", tail(key))
                return key

    def drop_approval(self, key: str | None = None) -> None:
        """The WebSocket server refused ``key`` (OPSP0011 and the like): forget it."""
        with self._lock:
            key = key if key is not None else self._entry.get("approval_key", "")
            if key:
                self._refused_approvals.add(key)
                _log.warning("approval key %s refused: dropped", tail(key))

    def _usable_approval(self, entry: dict[str, Any], now: float) -> str:
        key = entry.get("approval_key")
        expires = entry.get("approval_expires_s")
        if not isinstance(key, str) or not key or key in self._refused_approvals \
                or not isinstance(expires, float | int):
            return ""
        return key if expires - now > self._renew_before_s else ""

    # --- HTTP ---------------------------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, str]) -> dict[str, Any]:
        """An /oauth2 call; every way it can fail is KisUnavailable (the call it was for is not made)."""
        what = path.rsplit("/", 1)[-1]
        try:
            r = self._http.post(path, json=body, headers={"content-type": "application/json; charset=utf-8"})
        except httpx.HTTPError as exc:
            self.counters[f"failures.{what}.transport"] += 1
            raise KisUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc
        try:
            answer = read_oauth(what, r.status_code, r.content)
        except KisBadReply as exc:
            self.counters[f"bad_replies.{what}"] += 1
            raise KisUnavailable(f"{what}: {exc.reason}") from exc
        if isinstance(answer, KisFailure):
            self.counters[f"failures.{answer.msg_cd}"] += 1
            _log.warning("%s refused: %s", what, answer)
            raise KisUnavailable(f"{what} refused: {answer}")
        return answer

    # --- the file ------------------------------------------------------------------------------------

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Serialise issuing with other processes that use the same file."""
        fd: int | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:  # an unwritable folder must not stop trading: this process alone then
            _log.warning("token cache lock %s.lock unavailable (%s)", self.path, exc.strerror)
        if fd is None:
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _read_all(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            _log.warning("token cache %s unreadable (%s): starting without it", self.path, type(exc).__name__)
            return {}
        if not isinstance(data, dict) or data.get("version") != FILE_VERSION or not isinstance(data.get("apps"), dict):
            _log.warning("token cache %s has an unknown layout: starting without it", self.path)
            return {}
        return data

    def _read_entry(self) -> dict[str, Any]:
        entry = self._read_all().get("apps", {}).get(self._entry_id, {})
        return dict(entry) if isinstance(entry, dict) else {}

    def _merge_file(self) -> None:
        """Take from the file what is newer than what this process holds (another process's issuance)."""
        disk, mine = self._read_entry(), self._entry
        if _number(disk, "token_issued_s") > _number(mine, "token_issued_s"):
            mine.update({k: disk.get(k) for k in ("token", "token_expires_s", "token_issued_s")})
        if _number(disk, "approval_expires_s") > _number(mine, "approval_expires_s"):
            mine.update({k: disk.get(k) for k in ("approval_key", "approval_expires_s")})
        last = max(_number(disk, "last_issue_s"), _number(mine, "last_issue_s"))
        if last > float("-inf"):
            mine["last_issue_s"] = last

    def _write_entry(self) -> None:
        """Replace the file with this entry updated (others' entries kept); a failure is logged, not raised."""
        data = self._read_all() or {"version": FILE_VERSION, "apps": {}}
        data["apps"][self._entry_id] = self._entry
        raw = json.dumps(data, indent=1, sort_keys=True).encode()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.fchmod(fd, 0o600)  # a stale temp file of another mode is not trusted
                os.write(fd, raw)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:  # the token still serves from memory; the next process issues its own
            _log.warning("token cache %s not written (%s)", self.path, exc.strerror)

    def close(self) -> None:
        self._http.close()


def _number(entry: dict[str, Any], key: str) -> float:
    """A time stamp of an entry, or minus infinity when it is missing or not a number (a hand-edited file)."""
    value = entry.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else float("-inf")


def _token_grant(body: dict[str, Any], now: float) -> tuple[str, float]:
    """The token and its lifetime in seconds from a tokenP reply (``expires_in``, else the KST expiry stamp)."""
    token = body.get("access_token")
    if not isinstance(token, str) or not token.strip():
        raise KisUnavailable("tokenP reply carries no access_token")
    expires_in = body.get("expires_in")
    if isinstance(expires_in, str) and expires_in.strip().isdigit():
        expires_in = int(expires_in)
    if isinstance(expires_in, int) and not isinstance(expires_in, bool) and expires_in > 0:
        return token.strip(), float(expires_in)
    stamp = body.get("access_token_token_expired")
    try:
        expiry = dt.datetime.strptime(str(stamp), "%Y-%m-%d %H:%M:%S").replace(tzinfo=KST)
    except ValueError:
        raise KisUnavailable("tokenP reply carries neither expires_in nor access_token_token_expired") from None
    return token.strip(), expiry.timestamp() - now
