"""KIS authentication: access tokens (``/oauth2/tokenP``), their revocation, and WebSocket approval keys.

Pure: every call takes the gateway's wall time (seconds since the epoch) as an
argument. The rules (KIS.md section 3):

* a token is an HS512 JWT whose ``jti`` is the app key, valid ``token_lifetime_s``
  (24 h); asking again within ``same_token_s`` (6 h) of the last issuance returns
  the same token; any tokenP call within ``issue_interval_s`` (1 min) of the last
  answered one is refused with HTTP 403 EGW00133 in the OAuth body shape (users
  hit it with several processes asking at once, so the stricter reading: every
  call counts, not only those that mint);
* after the 6-hour window a new token is minted; whether that kills the previous
  one is UNCONFIRMED, so by default it does (``keep_old_tokens`` keeps them);
* a revoked or unknown token gets EGW00121, an expired one EGW00123, each with
  ``token_error_status`` (500 by default; some reports say 200);
* an approval key is a UUID-like string valid 24 h, checked only when a
  WebSocket session starts using it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from core.krx import KST
from services.kis_sim.credentials import Credentials
from services.kis_sim.replies import KisError

TOKEN_LIFETIME_S = 86_400
SAME_TOKEN_S = 6 * 3600
ISSUE_INTERVAL_S = 60
APPROVAL_LIFETIME_S = 86_400


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(slots=True)
class Token:
    """One issued access token."""

    token: str
    appkey: str
    issued_s: float
    expires_s: float
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class AuthRules:
    """The knobs of the token rules (UNCONFIRMED ones default to the stricter reading)."""

    token_lifetime_s: int = TOKEN_LIFETIME_S
    same_token_s: int = SAME_TOKEN_S
    issue_interval_s: int = ISSUE_INTERVAL_S
    token_error_status: int = 500
    keep_old_tokens: bool = False


class TokenBook:
    """The tokens and approval keys this server issued, and the checks a request's credentials go through."""

    def __init__(self, creds: Credentials, signing_key: bytes, rules: AuthRules = AuthRules()) -> None:
        self.creds = creds
        self.rules = rules
        self._signing_key = signing_key
        self.tokens: dict[str, Token] = {}
        self.approvals: dict[str, tuple[str, float]] = {}  # approval key -> (appkey, expires_s)
        self._last_issued: Token | None = None
        self._last_call_s: float | None = None  # the last answered tokenP call (the 1-per-minute rule)
        self.changed = False  # something to save

    # --- credentials of a request -------------------------------------------------

    def check_app(self, appkey: str | None, appsecret: str | None, *, oauth: bool = False) -> None:
        """Raise the KIS error for a missing, foreign or wrong app key / secret."""
        status = 403 if oauth else 500
        if not appkey:
            raise KisError("EGW00102", status, oauth=oauth)
        if appkey == self.creds.other_env_appkey:
            raise KisError("EGW02007" if self.creds.env == "demo" else "EGW02004", status, oauth=oauth)
        if appkey != self.creds.appkey:
            raise KisError("EGW00103", status, oauth=oauth)
        if not appsecret:
            raise KisError("EGW00104", status, oauth=oauth)
        if not hmac.compare_digest(appsecret, self.creds.appsecret):
            raise KisError("EGW00105", status, oauth=oauth)

    def check_bearer(self, authorization: str | None, appkey: str, now_s: float) -> Token:
        """The token a request's ``authorization`` header carries, or the KIS error for it."""
        status = self.rules.token_error_status
        if not authorization or not authorization.startswith("Bearer "):
            raise KisError("EGW00205", status)
        token = self.tokens.get(authorization[7:].strip())
        if token is None or token.revoked or token.appkey != appkey:
            raise KisError("EGW00121", status)
        if now_s >= token.expires_s:
            raise KisError("EGW00123", status)
        return token

    # --- /oauth2/tokenP, /oauth2/revokeP ---------------------------------------------

    def issue(self, body: dict[str, Any], now_s: float) -> dict[str, Any]:
        """Answer ``/oauth2/tokenP``: the current token within 6 h, a new one, or EGW00133."""
        grant = body.get("grant_type")
        if not grant:
            raise KisError("EGW00115", 403, oauth=True)
        if grant != "client_credentials":
            raise KisError("EGW00116", 403, oauth=True)
        self.check_app(body.get("appkey"), body.get("appsecret"), oauth=True)
        if self._last_call_s is not None and now_s - self._last_call_s < self.rules.issue_interval_s:
            raise KisError("EGW00133", 403, oauth=True)
        self._last_call_s = now_s
        last = self._last_issued
        if last is not None and not last.revoked and now_s - last.issued_s < self.rules.same_token_s \
                and now_s < last.expires_s:
            return self._token_reply(last, now_s)
        if last is not None and not self.rules.keep_old_tokens:
            last.revoked = True
        token = self._mint(now_s)
        self.tokens[token.token] = token
        self._last_issued = token
        self.changed = True
        return self._token_reply(token, now_s)

    def _mint(self, now_s: float) -> Token:
        header = _b64(json.dumps({"typ": "JWT", "alg": "HS512"}, separators=(",", ":")).encode())
        iat = int(now_s)
        exp = iat + self.rules.token_lifetime_s
        claims = {"sub": "token", "aud": str(uuid.uuid4()), "prdt_cd": "", "iss": "unogw",
                  "exp": exp, "iat": iat, "jti": self.creds.appkey}
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signature = _b64(hmac.new(self._signing_key, f"{header}.{payload}".encode(), hashlib.sha512).digest())
        return Token(f"{header}.{payload}.{signature}", self.creds.appkey, now_s, float(exp))

    @staticmethod
    def _token_reply(token: Token, now_s: float) -> dict[str, Any]:
        expires = dt.datetime.fromtimestamp(token.expires_s, KST).strftime("%Y-%m-%d %H:%M:%S")
        return {"access_token": token.token, "access_token_token_expired": expires, "token_type": "Bearer",
                "expires_in": max(0, int(token.expires_s - now_s))}

    def revoke(self, body: dict[str, Any]) -> dict[str, Any]:
        """Answer ``/oauth2/revokeP``: the token named in the body is dead from now on."""
        self.check_app(body.get("appkey"), body.get("appsecret"), oauth=True)
        token = self.tokens.get(str(body.get("token") or ""))
        if token is None or token.revoked:
            raise KisError("EGW00121", 403, oauth=True)
        token.revoked = True
        self.changed = True
        return {"code": 200, "message": "접근토큰 폐기에 성공하였습니다"}

    def revoke_all(self) -> int:
        """Revoke every live token and approval key (a fault, or the weekly restart); how many tokens died."""
        n = 0
        for token in self.tokens.values():
            if not token.revoked:
                token.revoked = True
                n += 1
        self.approvals.clear()
        self.changed = True
        return n

    # --- /oauth2/Approval ----------------------------------------------------------------

    def approve(self, body: dict[str, Any], now_s: float) -> dict[str, Any]:
        """Answer ``/oauth2/Approval`` (the secret travels as ``secretkey``, not ``appsecret``)."""
        grant = body.get("grant_type")
        if grant != "client_credentials":
            raise KisError("EGW00115" if not grant else "EGW00116", 403, oauth=True)
        self.check_app(body.get("appkey"), body.get("secretkey"), oauth=True)
        key = str(uuid.uuid4())
        self.approvals[key] = (self.creds.appkey, now_s + APPROVAL_LIFETIME_S)
        self.changed = True
        return {"approval_key": key}

    def approval_owner(self, approval_key: str, now_s: float) -> str | None:
        """The app key behind a live approval key, or None."""
        entry = self.approvals.get(approval_key)
        if entry is None or now_s >= entry[1]:
            return None
        return entry[0]

    # --- persistence -----------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {
            "tokens": [asdict(t) for t in self.tokens.values()],
            "last": self._last_issued.token if self._last_issued else None,
            "last_call_s": self._last_call_s,
            "approvals": {k: list(v) for k, v in self.approvals.items()},
        }

    def restore(self, state: dict[str, Any], now_s: float) -> None:
        """Take back saved tokens and approval keys (dropping those long expired)."""
        for raw in state.get("tokens", []):
            token = Token(**raw)
            if token.expires_s > now_s - 86_400:
                self.tokens[token.token] = token
        last = state.get("last")
        self._last_issued = self.tokens.get(last) if last else None
        self._last_call_s = state.get("last_call_s")
        self.approvals = {k: (v[0], float(v[1])) for k, v in state.get("approvals", {}).items() if v[1] > now_s}
