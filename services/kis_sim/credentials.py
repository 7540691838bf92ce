"""The local server's credentials: a fixed app key pair per environment, an account and an HTS id.

KIS issues a 36-character app key and a 180-character app secret per
environment (KIS.md section 1); real and demo keys are not interchangeable.
The defaults below are fixed so that a client's configuration can be written
once; ``trader kis-sim --print-credentials`` shows them, and ``--appkey`` /
``--appsecret`` replace them. The other environment's default key is known to
the server too, so that using it gets KIS's cross-environment refusal.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

APPKEY_LENGTH = 36
APPSECRET_LENGTH = 180
ACCOUNT_RE = re.compile(r"^[0-9]{8}-[0-9]{2}$")


def _secret(seed: str) -> str:
    raw = b"".join(hashlib.sha512(f"{seed}:{i}".encode()).digest() for i in range(3))
    import base64

    return base64.b64encode(raw).decode("ascii").replace("+", "A").replace("/", "B")[:APPSECRET_LENGTH]


DEFAULT_APPKEYS = {"demo": "PSKISSIMDEMOAPPKEY000000000000000001", "real": "PSKISSIMREALAPPKEY000000000000000001"}
DEFAULT_APPSECRETS = {env: _secret(f"kis-sim-{env}") for env in DEFAULT_APPKEYS}
DEFAULT_ACCOUNTS = {"demo": "50000000-01", "real": "60000000-01"}
DEFAULT_HTS_ID = "kissim"


@dataclass(frozen=True, slots=True)
class Credentials:
    """Who may use this server."""

    env: str
    appkey: str
    appsecret: str
    account: str  # "CANO-ACNT_PRDT_CD"
    hts_id: str

    @property
    def cano(self) -> str:
        return self.account[:8]

    @property
    def product_code(self) -> str:
        return self.account[9:]

    @property
    def other_env_appkey(self) -> str:
        """The other environment's default key: refused here with the cross-environment code."""
        return DEFAULT_APPKEYS["real" if self.env == "demo" else "demo"]


def credentials(env: str, appkey: str = "", appsecret: str = "", account: str = "", hts_id: str = "") -> Credentials:
    """The server's credentials, defaults filled in; raises ValueError naming a malformed value."""
    appkey = appkey or DEFAULT_APPKEYS[env]
    appsecret = appsecret or DEFAULT_APPSECRETS[env]
    account = account or DEFAULT_ACCOUNTS[env]
    if len(appkey) != APPKEY_LENGTH:
        raise ValueError(f"--appkey must be {APPKEY_LENGTH} characters (KIS app keys are), not {len(appkey)}")
    if len(appsecret) != APPSECRET_LENGTH:
        raise ValueError(f"--appsecret must be {APPSECRET_LENGTH} characters (KIS app secrets are), not {len(appsecret)}")
    if not ACCOUNT_RE.match(account):
        raise ValueError(f"--account must be 8 digits, a dash and 2 digits (CANO-ACNT_PRDT_CD), not {account!r}")
    return Credentials(env, appkey, appsecret, account, hts_id or DEFAULT_HTS_ID)
