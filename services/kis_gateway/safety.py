"""What must hold before the KIS gateway may start, and how an account number is shown: one place for both.

Used by the gateway, ``trader up`` and ``trader config check`` alike.
"""

from __future__ import annotations

import os

from core.config import StackSettings

LIVE_ENV = "TRADER_LIVE"


def mask_account(account: str) -> str:
    """An account number fit for logs and the dashboard: 5001****-01."""
    return account[:4] + "****" + account[8:] if len(account) >= 10 else "****"


def start_problems(settings: StackSettings, environ: dict[str, str] | None = None) -> list[str]:
    """Why the gateway must not start with these settings ([] when it may)."""
    environ = dict(os.environ) if environ is None else environ
    problems = []
    if settings.broker.kind != "kis":
        problems.append(f"broker.kind is {settings.broker.kind!r}: the paper exchange is this stack's venue "
                        "(set broker.kind = \"kis\" to trade through KIS)")
    kis_cfg = settings.broker.kis
    if kis_cfg.env == "real" and (environ.get(LIVE_ENV) or settings.live) != "yes":
        problems.append(f"broker.kis.env is \"real\" (real money) but {LIVE_ENV}=yes is not set; "
                        f"set it to trade live, or use env = \"demo\"")
    problems += [f"{var}: {why}" for var, why in settings.kis_credential_problems()]
    return problems
