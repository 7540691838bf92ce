"""The local server's credentials: a fixed app key pair per environment, an account and an HTS id.

KIS issues a 36-character app key and a 180-character app secret per
environment (KIS.md section 1); real and demo keys are not interchangeable.
The defaults below are fixed so that a client's configuration can be written
once; ``trader kis-sim --print-credentials`` shows them, and ``--appkey`` /
``--appsecret`` replace them. The other environment's default key is known to
the server too, so that using it gets KIS's cross-environment refusal.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.config import KIS_ACCOUNT_RE as ACCOUNT_RE
from core.config import KIS_APPKEY_LENGTH as APPKEY_LENGTH
from core.config import KIS_APPSECRET_LENGTH as APPSECRET_LENGTH
from core.config import KIS_SIM_ACCOUNTS as DEFAULT_ACCOUNTS
from core.config import KIS_SIM_APPKEYS as DEFAULT_APPKEYS
from core.config import KIS_SIM_APPSECRETS as DEFAULT_APPSECRETS
from core.config import KIS_SIM_HTS_ID as DEFAULT_HTS_ID


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
