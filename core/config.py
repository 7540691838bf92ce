"""The stack's settings: one pydantic-settings tree read from ``configs/stack.toml``.

Environment variables ``TRADER_*`` override the file (nested keys with ``__``,
e.g. ``TRADER_CLOCK__SPEED=60``). Endpoints may contain ``{run_dir}``, which is
replaced by the run directory. Secrets come only from the environment or a
``.env`` file and are masked whenever settings are shown.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def project_path(path: str) -> Path:
    """A configured path; relative ones are taken from the project root."""
    p = Path(path)
    return p if p.is_absolute() else PROJECT_ROOT / p


DEFAULT_CONFIG_DIR = PROJECT_ROOT / "configs"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


class ConfigError(Exception):
    """A configuration problem, naming the file, the key and the reason."""

    def __init__(self, problems: list[tuple[str, str, str]]):
        self.problems = problems
        lines = [f"{file}: {key}: {reason}" for file, key, reason in problems]
        super().__init__("invalid configuration:\n  " + "\n  ".join(lines))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Endpoints(_Section):
    """Where each process binds. ``{run_dir}`` expands to the run directory."""

    bus_in: str = "ipc://{run_dir}/bus-in.sock"  # proxy XSUB: publishers connect here
    bus_out: str = "ipc://{run_dir}/bus-out.sock"  # proxy XPUB: subscribers connect here
    exchange_rpc: str = "ipc://{run_dir}/exchange-rpc.sock"
    exchange_feed: str = "ipc://{run_dir}/exchange-feed.sock"
    market_data_rpc: str = "ipc://{run_dir}/market-data-rpc.sock"
    order_manager_rpc: str = "ipc://{run_dir}/order-manager-rpc.sock"
    risk_guard_rpc: str = "ipc://{run_dir}/risk-guard-rpc.sock"
    reconciler_rpc: str = "ipc://{run_dir}/reconciler-rpc.sock"
    supervisor_rpc: str = "ipc://{run_dir}/supervisor-rpc.sock"

    @field_validator("*")
    @classmethod
    def _known_transport(cls, v: str) -> str:
        if not (v.startswith("ipc://") or v.startswith("tcp://") or v.startswith("inproc://")):
            raise ValueError(f"endpoint {v!r} must start with ipc://, tcp:// or inproc://")
        return v


class Clock(_Section):
    """The paper world's clock: how fast market time runs against wall time."""

    speed: float = Field(default=60.0, gt=0, le=100_000)
    start_date: str = ""  # YYYY-MM-DD; empty = the next XKRX trading day from today
    start_time: str = "08:55"  # KST, shortly before the opening auction
    seed: int = 42


class Market(_Section):
    codes: list[str] = Field(default_factory=list)  # empty = every code in the master
    instruments_file: str = "configs/instruments.csv"
    tick_interval_ms: int = Field(default=250, gt=0)  # market time between ticks per code


class Retention(_Section):
    retention_days: int = Field(default=30, ge=1)


class MarketData(_Section):
    """The market-data feed: where it reads from, how much it keeps, when the feed counts as dropped."""

    source: Literal["broker", "replay"] = "broker"  # broker = the broker's feed (paper exchange by default)
    replay_dir: str = ""  # replay source: a folder of recorded bars (<dir>/<YYYYMMDD>/<code>.parquet)
    replay_speed: float = Field(default=60.0, ge=0)  # market seconds per wall second; 0 = as fast as possible
    bars_kept: int = Field(default=390, ge=1)  # last bars per code kept for snapshots
    feed_heartbeat_s: float = Field(default=1.0, gt=0)  # the broker feed's heartbeat interval (sys.heartbeat.venue)
    silence_heartbeats: int = Field(default=3, ge=1)  # feed heartbeat intervals of silence that count as a drop
    backoff_max_s: float = Field(default=30.0, gt=0)
    venue_start_grace_s: float = Field(default=30.0, ge=0)  # from start, a venue not up yet is no warning (DEBUG)


class Dashboard(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    allowed_hosts: list[str] = Field(default_factory=list)  # more Host names it answers, "name" or "name:port"

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        for h in v:
            if not h or "/" in h or any(c.isspace() for c in h):
                raise ValueError(f"{h!r} is not a host name: a name or name:port, e.g. trader.lan:8000, no scheme")
        return [h.lower() for h in v]


KIS_URLS = {  # KIS.md section 1
    "real": ("https://openapi.koreainvestment.com:9443", "ws://ops.koreainvestment.com:21000"),
    "demo": ("https://openapivts.koreainvestment.com:29443", "ws://ops.koreainvestment.com:31000"),
}
KIS_APPKEY_LENGTH = 36  # KIS.md section 1
KIS_APPSECRET_LENGTH = 180
KIS_ACCOUNT_RE = re.compile(r"^[0-9]{8}-[0-9]{2}$")  # CANO-ACNT_PRDT_CD


def _kis_sim_secret(seed: str) -> str:
    raw = b"".join(hashlib.sha512(f"{seed}:{i}".encode()).digest() for i in range(3))
    return base64.b64encode(raw).decode("ascii").replace("+", "A").replace("/", "B")[:KIS_APPSECRET_LENGTH]


# The local KIS server's fixed credentials per environment (``trader kis-sim --print-credentials``):
# fixed so that a rehearsal needs no configuration, and known to the gateway for the same reason.
KIS_SIM_APPKEYS = {"demo": "PSKISSIMDEMOAPPKEY000000000000000001", "real": "PSKISSIMREALAPPKEY000000000000000001"}
KIS_SIM_APPSECRETS = {env: _kis_sim_secret(f"kis-sim-{env}") for env in KIS_SIM_APPKEYS}
KIS_SIM_ACCOUNTS = {"demo": "50000000-01", "real": "60000000-01"}
KIS_SIM_HTS_ID = "kissim"
KIS_SIM_REST_PORT = 29443  # where `trader kis-sim` listens by default (127.0.0.1)
KIS_SIM_WS_PORT = 31000


class Kis(_Section):
    """The KIS venue (``broker.kind = "kis"``): which server the gateway talks to and how.

    ``server = "kis-sim"`` (the default) rehearses against the local KIS server
    the stack starts itself; ``"kis"`` is Korea Investment & Securities' own
    server of ``env`` (demo = 모의투자, real = 실전). Keys, the account and the
    HTS id come from the environment or ``.env`` only (``TRADER_KIS_APP_KEY``,
    ``TRADER_KIS_APP_SECRET``, ``TRADER_KIS_ACCOUNT``, ``TRADER_KIS_HTS_ID``).
    """

    env: Literal["demo", "real"] = "demo"
    server: Literal["kis-sim", "kis"] = "kis-sim"
    rest_url: str = ""  # "" = the env's KIS URL, or the local kis-sim's
    ws_url: str = ""
    sim_speed: float = Field(default=60.0, gt=0)  # the local kis-sim's market clock (market seconds per wall second)
    rate_per_s: float = Field(default=0.0, ge=0)  # 0 = KIS's published rate for env, less a margin
    order_timeout_s: float = Field(default=5.0, gt=0)  # an order reply later than this leaves the order UNKNOWN
    # account queries answered from a reading this recent (within KIS's rate limit); a fresh query reads anew
    balance_max_age_s: float = Field(default=1.0, ge=0)  # KIS's balance (cash, holdings)
    daily_max_age_s: float = Field(default=2.0, ge=0)  # KIS's daily orders (the day's orders and fills)
    max_registrations: int = Field(default=41, ge=1, le=41)  # WebSocket registrations per app key (KIS: 41)

    @field_validator("rest_url", "ws_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and not v.startswith(("http://", "https://", "ws://", "wss://")):
            raise ValueError(f"{v!r} must start with http(s):// (REST) or ws(s):// (WebSocket)")
        return v.rstrip("/")

    def urls(self) -> tuple[str, str]:
        """(REST base, WebSocket base) the gateway connects to."""
        if self.server == "kis-sim":
            rest, ws = f"http://127.0.0.1:{KIS_SIM_REST_PORT}", f"ws://127.0.0.1:{KIS_SIM_WS_PORT}"
        else:
            rest, ws = KIS_URLS[self.env]
        return self.rest_url or rest, self.ws_url or ws


class Broker(_Section):
    kind: Literal["paper", "kis"] = "paper"
    account_cash_won: int = Field(default=1_000_000_000, ge=0)
    kis: Kis = Field(default_factory=Kis)


class Bus(_Section):
    sndhwm: int = Field(default=100_000, ge=0)
    rcvhwm: int = Field(default=100_000, ge=0)
    linger_ms: int = Field(default=200, ge=0)
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    # An agent in sync with the market closed and no order open heartbeats this many intervals apart (a
    # hundred agents' heartbeats are most of an idle firm's work); anything it hears brings the next forward.
    idle_heartbeat_intervals: float = Field(default=5.0, ge=1)
    rpc_timeout_ms: int = Field(default=1000, gt=0)
    rpc_retries: int = Field(default=2, ge=0)


class Reconcile(_Section):
    """The reconciler: how often it runs and which holdings of the account the firm does not manage."""

    interval_s: float = Field(default=60.0, gt=0)  # wall seconds between scheduled reconciliations
    confirm_delay_s: float = Field(default=0.5, ge=0)  # a difference that needs a halt must still be there this much later
    unmanaged: dict[str, int] = Field(default_factory=dict)  # code -> shares in the account that are not the firm's
    agent_books: bool = True  # also compare each agent's own book (GET http://127.0.0.1:<dp>/status)
    break_policy: Literal["halt", "reduce"] = "halt"  # what a break that needs a halt does: halt, or reduce-only
    pending_limit_s: float = Field(default=30.0, gt=0)  # a pending difference that has not moved this long is a break


class ExchangeFaults(_Section):
    """Faults the paper exchange starts with (the ``fault`` command changes them at run time)."""

    delay_ms: int = Field(default=0, ge=0, le=60_000)
    reject_fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    notice_before_reply: bool = False
    duplicate_notice: bool = False


class Exchange(_Section):
    faults: ExchangeFaults = Field(default_factory=ExchangeFaults)


class Supervisor(_Section):
    """The supervisor: how it stops and restarts agents, and when a heartbeat counts as late."""

    kill_timeout_s: float = Field(default=5.0, gt=0)  # graceful stop, then SIGTERM, then SIGKILL after this
    restart_backoff_s: float = Field(default=0.5, ge=0)  # first delay before restarting a process that died
    restart_backoff_max_s: float = Field(default=30.0, gt=0)
    flap_restarts: int = Field(default=5, ge=1)  # this many restarts ...
    flap_window_s: float = Field(default=60.0, gt=0)  # ... within this many seconds: flapping, stop trying
    heartbeat_late_intervals: float = Field(default=3.0, gt=0)  # a heartbeat older than this many intervals is late
    health_interval_s: float = Field(default=1.0, gt=0)  # how often sys.health is published
    closing_check_delay_s: float = Field(default=1.0, ge=0)  # wall seconds after closing/closed before checking orders
    # agents forked from a warm parent that has imported everything once (agents.zygote); false: fork and exec each
    agent_parent: bool = True
    agent_parent_ready_s: float = Field(default=15.0, gt=0)  # the parent not ready by then: agents start the old way
    agent_parent_retry_s: float = Field(default=60.0, gt=0)  # after the parent failed, try starting it again this late
    # agents run this much nicer than the back office (0-19): a hundred strategies waking on one bar never queue the
    # order manager, the risk guard or the market data feed behind them on the CPU (19: bench.scale at 100 agents
    # measured the order ack p50 and the tick p99 lower than at 5 or 10)
    agent_nice: int = Field(default=19, ge=0, le=19)


AlertLevelName = Literal["info", "warning", "error", "critical"]
# Kinds that reach every channel whatever its min_level (a channel's muted_kinds still stops them): a process
# died or flaps, trading halted or came back, a reconciliation break, the summary of the day at the close.
ALWAYS_SENT_KINDS = (
    "agent_died", "agent_flapping", "process_died", "trading_halt", "trading_reduce", "trading_resume", "loss_limit",
    "recon_break", "recon_halt", "recon_halt_failed", "day_summary",
)
# (channel, key) of the alert channels' secrets: environment or .env only (TRADER_ALERTS__<CHANNEL>__<KEY>)
ALERT_SECRET_KEYS = (("telegram", "bot_token"), ("discord", "webhook_url"), ("slack", "webhook_url"))
TELEGRAM_TOKEN_RE = re.compile(r"^[0-9]+:[A-Za-z0-9_-]+$")  # BotFather's form: <bot id>:<secret>
TELEGRAM_CHAT_RE = re.compile(r"^(-?[0-9]+|@[A-Za-z0-9_]{4,})$")  # a numeric chat id or @channelusername


def _http_url(v: str, what: str) -> str:
    if v and not v.startswith(("https://", "http://")):
        raise ValueError(f"{what} must start with https:// (or http:// for a local test server)")
    return v.rstrip("/")


def _kind_names(v: list[str]) -> list[str]:
    for i, kind in enumerate(v):
        if not kind or kind != kind.strip() or any(c.isspace() for c in kind):
            raise ValueError(f"entry {i}: {kind!r} is not an alert kind (a name such as heartbeat_late)")
    return v


class AlertChannel(_Section):
    """What one channel sends: alerts at or above ``min_level`` and the always-sent kinds, never ``muted_kinds``."""

    enabled: bool = True  # false: configured but silent
    min_level: AlertLevelName = "warning"
    muted_kinds: list[str] = Field(default_factory=list)  # alert kinds this channel never sends (e.g. heartbeat_late)

    @field_validator("muted_kinds")
    @classmethod
    def _muted(cls, v: list[str]) -> list[str]:
        return _kind_names(v)


class TelegramAlerts(AlertChannel):
    """A Telegram bot's messages to one chat (Bot API ``sendMessage``).

    The bot token comes from the environment or ``.env`` only:
    ``TRADER_ALERTS__TELEGRAM__BOT_TOKEN``. The channel is on once both the
    token and ``chat_id`` are set; one without the other is a configuration error.
    """

    base_url: str = "https://api.telegram.org"
    chat_id: str = ""  # the chat's numeric id (a group's starts with -) or @channelusername
    parse_mode: Literal["", "HTML"] = ""  # "": plain text; HTML: the heading in bold
    bot_token: SecretStr = SecretStr("")

    @field_validator("base_url")
    @classmethod
    def _base(cls, v: str) -> str:
        return _http_url(v, "alerts.telegram.base_url") or "https://api.telegram.org"

    @field_validator("chat_id")
    @classmethod
    def _chat(cls, v: str) -> str:
        if v and not TELEGRAM_CHAT_RE.match(v):
            raise ValueError(f"{v!r} is not a chat id: a number (groups start with -) or @channelusername")
        return v

    @field_validator("bot_token")
    @classmethod
    def _token(cls, v: SecretStr) -> SecretStr:
        if v.get_secret_value() and not TELEGRAM_TOKEN_RE.match(v.get_secret_value()):
            raise ValueError("not a bot token: BotFather gives <digits>:<letters, digits, - and _>")
        return v

    @model_validator(mode="after")
    def _complete(self) -> TelegramAlerts:
        if not self.enabled:
            return self
        if self.chat_id and not self.bot_token.get_secret_value():
            raise ValueError("chat_id is set but the bot token is missing: set TRADER_ALERTS__TELEGRAM__BOT_TOKEN in "
                             "the environment or .env")
        if self.bot_token.get_secret_value() and not self.chat_id:
            raise ValueError("the bot token is set but alerts.telegram.chat_id is missing")
        return self

    @property
    def configured(self) -> bool:
        return self.enabled and bool(self.chat_id)


class WebhookAlerts(AlertChannel):
    """A chat webhook (Discord or Slack): the whole URL, which embeds its secret, from the environment or ``.env``."""

    webhook_url: SecretStr = SecretStr("")

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, v: SecretStr) -> SecretStr:
        _http_url(v.get_secret_value(), "the webhook URL")
        return v

    @property
    def configured(self) -> bool:
        return self.enabled and bool(self.webhook_url.get_secret_value())


class Alerts(_Section):
    """Alert delivery to a person: a generic JSON webhook and the Telegram, Discord and Slack channels.

    ``webhook_url``, ``min_level`` and ``webhook_muted_kinds`` are the generic
    webhook's (each alert as a JSON POST); ``timeout_s`` and ``retries`` apply
    to every channel. See docs/alerts.md.
    """

    webhook_url: str = ""
    min_level: AlertLevelName = "warning"
    webhook_muted_kinds: list[str] = Field(default_factory=list)
    timeout_s: float = Field(default=3.0, gt=0)
    retries: int = Field(default=3, ge=0)
    always_kinds: list[str] = Field(default_factory=lambda: list(ALWAYS_SENT_KINDS))  # sent whatever the min_level
    startup_grace_s: float = Field(default=15.0, ge=0)  # a process's first heartbeat is not late before this
    telegram: TelegramAlerts = Field(default_factory=TelegramAlerts)
    discord: WebhookAlerts = Field(default_factory=WebhookAlerts)
    slack: WebhookAlerts = Field(default_factory=WebhookAlerts)

    @field_validator("webhook_muted_kinds", "always_kinds")
    @classmethod
    def _kinds(cls, v: list[str]) -> list[str]:
        return _kind_names(v)


def alert_secrets_in_file(data: dict[str, Any]) -> list[str]:
    """The alert channels' secrets written in the stack file (they belong in the environment or .env)."""
    alerts = data.get("alerts") if isinstance(data.get("alerts"), dict) else {}
    return [f"alerts.{channel}.{key}" for channel, key in ALERT_SECRET_KEYS
            if isinstance(alerts.get(channel), dict) and key in alerts[channel]]


class Secrets(_Section):
    dashboard_token: SecretStr = SecretStr("")
    kis_app_key: SecretStr = SecretStr("")
    kis_app_secret: SecretStr = SecretStr("")


Z85_ALPHABET = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")
CURVE_KEY_LENGTH = 40  # a 32-byte CURVE key in Z85 text
SECURITY_SECRET_KEYS = ("curve_server_secret_key", "curve_client_secret_key")
# read from the environment or .env only: KIS's credentials, and the switch that allows real money
ENV_ONLY_KEYS = ("kis_app_key", "kis_app_secret", "kis_account", "kis_hts_id", "live")


def _z85_key_problem(key: str) -> str:
    """Why ``key`` is not a Z85-encoded CURVE key ('' when it is one or is empty)."""
    if key and (len(key) != CURVE_KEY_LENGTH or not set(key) <= Z85_ALPHABET):
        return f"not a CURVE key: expected {CURVE_KEY_LENGTH} Z85 characters (zmq.curve_keypair()), got {len(key)}"
    return ""


class Security(_Section):
    """CURVE keys for bus and RPC endpoints beyond loopback (see bus/security.py).

    Every socket that binds a ``tcp://`` endpoint beyond loopback is a CURVE
    server with the server key pair and accepts only the client public keys in
    ``authorized_client_keys`` plus ``curve_client_public_key``; every socket
    that connects to one uses the client key pair. Secret keys come only from
    the environment or ``.env`` (``TRADER_SECURITY__CURVE_SERVER_SECRET_KEY``).
    """

    curve_server_public_key: str = ""
    curve_server_secret_key: SecretStr = SecretStr("")
    curve_client_public_key: str = ""
    curve_client_secret_key: SecretStr = SecretStr("")
    authorized_client_keys: list[str] = Field(default_factory=list)  # client public keys allowed to connect

    @field_validator("curve_server_public_key", "curve_client_public_key")
    @classmethod
    def _public_key(cls, v: str) -> str:
        problem = _z85_key_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("curve_server_secret_key", "curve_client_secret_key")
    @classmethod
    def _secret_key(cls, v: SecretStr) -> SecretStr:
        problem = _z85_key_problem(v.get_secret_value())
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("authorized_client_keys")
    @classmethod
    def _authorized_keys(cls, v: list[str]) -> list[str]:
        for i, key in enumerate(v):
            problem = _z85_key_problem(key) or ("" if key else "an empty key")
            if problem:
                raise ValueError(f"entry {i}: {problem}")
        return v


class _TomlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]):
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field, field_name):  # pragma: no cover - unused by __call__
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self._data


class StackSettings(BaseSettings):
    """The whole stack's settings (``configs/stack.toml`` + ``TRADER_*`` overrides)."""

    model_config = SettingsConfigDict(
        env_prefix="TRADER_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="forbid",
    )

    run_dir: str = "var"
    config_dir: str = str(DEFAULT_CONFIG_DIR)
    roster_file: str = "configs/agents.toml"  # the agent roster (relative paths are from the project root)
    risk_file: str = "configs/risk.toml"  # the risk limits read by the risk guard
    log_level: Literal["debug", "info", "warning", "error"] = "info"  # TRADER_LOG_LEVEL; `trader up --verbose`: debug
    endpoints: Endpoints = Field(default_factory=Endpoints)
    clock: Clock = Field(default_factory=Clock)
    market: Market = Field(default_factory=Market)
    retention: Retention = Field(default_factory=Retention)
    market_data: MarketData = Field(default_factory=MarketData)
    dashboard: Dashboard = Field(default_factory=Dashboard)
    broker: Broker = Field(default_factory=Broker)
    bus: Bus = Field(default_factory=Bus)
    reconcile: Reconcile = Field(default_factory=Reconcile)
    exchange: Exchange = Field(default_factory=Exchange)
    supervisor: Supervisor = Field(default_factory=Supervisor)
    alerts: Alerts = Field(default_factory=Alerts)
    secrets: Secrets = Field(default_factory=Secrets)
    security: Security = Field(default_factory=Security)
    # Flat secret aliases read straight from the environment.
    dashboard_token: SecretStr = SecretStr("")
    kis_app_key: SecretStr = SecretStr("")  # TRADER_KIS_APP_KEY
    kis_app_secret: SecretStr = SecretStr("")  # TRADER_KIS_APP_SECRET
    kis_account: SecretStr = SecretStr("")  # TRADER_KIS_ACCOUNT: CANO-ACNT_PRDT_CD, e.g. 50012345-01
    kis_hts_id: SecretStr = SecretStr("")  # TRADER_KIS_HTS_ID: the HTS id execution notices are subscribed with
    live: str = ""  # TRADER_LIVE=yes allows broker.kis.env = "real" (real money); environment or .env only

    _toml_data: ClassVar[dict[str, Any]] = {}

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        return (init_settings, env_settings, dotenv_settings, _TomlSource(settings_cls, cls._toml_data))

    # --- derived -----------------------------------------------------------

    @property
    def run_path(self) -> Path:
        p = Path(self.run_dir)
        return p if p.is_absolute() else (Path.cwd() / p)

    def endpoint(self, name: str) -> str:
        """An endpoint by name, with ``{run_dir}`` expanded to an absolute path."""
        raw = getattr(self.endpoints, name)
        return raw.replace("{run_dir}", str(self.run_path / "run"))

    def kis_credentials(self) -> dict[str, str]:
        """The gateway's app key, secret, account and HTS id (the local kis-sim's when rehearsing and unset)."""
        kis = self.broker.kis
        values = {
            "appkey": self.kis_app_key.get_secret_value() or self.secrets.kis_app_key.get_secret_value(),
            "appsecret": self.kis_app_secret.get_secret_value() or self.secrets.kis_app_secret.get_secret_value(),
            "account": self.kis_account.get_secret_value(),
            "hts_id": self.kis_hts_id.get_secret_value(),
        }
        if kis.server == "kis-sim":
            defaults = {"appkey": KIS_SIM_APPKEYS[kis.env], "appsecret": KIS_SIM_APPSECRETS[kis.env],
                        "account": KIS_SIM_ACCOUNTS[kis.env], "hts_id": KIS_SIM_HTS_ID}
            values = {k: v or defaults[k] for k, v in values.items()}
        return values

    def kis_credential_problems(self) -> list[tuple[str, str]]:
        """(environment variable, reason) for every KIS credential that is missing or malformed; never a secret."""
        c = self.kis_credentials()
        out = []
        checks = (("TRADER_KIS_APP_KEY", "appkey", KIS_APPKEY_LENGTH), ("TRADER_KIS_APP_SECRET", "appsecret",
                                                                      KIS_APPSECRET_LENGTH))
        for var, key, length in checks:
            if not c[key]:
                out.append((var, "missing: set it in the environment or .env"))
            elif len(c[key]) != length:
                out.append((var, f"must be {length} characters (KIS issues them so), not {len(c[key])}"))
        if not c["account"]:
            out.append(("TRADER_KIS_ACCOUNT", "missing: the account as CANO-ACNT_PRDT_CD, e.g. 50012345-01"))
        elif not KIS_ACCOUNT_RE.match(c["account"]):
            out.append(("TRADER_KIS_ACCOUNT", f"must be 8 digits, a dash and 2 digits (CANO-ACNT_PRDT_CD), "
                                              f"not {len(c['account'])} characters of that shape"))
        if not c["hts_id"]:
            out.append(("TRADER_KIS_HTS_ID", "missing: execution notices are subscribed with the HTS id"))
        return out

    def token(self) -> str:
        return self.dashboard_token.get_secret_value() or self.secrets.dashboard_token.get_secret_value()

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain data, secrets masked."""
        data = self.model_dump(mode="json")

        def mask(d: Any) -> Any:
            if isinstance(d, dict):
                return {k: mask(v) for k, v in d.items()}
            return d

        out = mask(data)
        for key in ("dashboard_token",):
            out[key] = "********" if getattr(self, key).get_secret_value() else ""
        for key, val in self.secrets:
            out["secrets"][key] = "********" if val.get_secret_value() else ""
        for key in SECURITY_SECRET_KEYS:
            out["security"][key] = "********" if getattr(self.security, key).get_secret_value() else ""
        return out


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([(str(path), "-", f"not valid TOML: {exc}")]) from exc


def stack_config_path() -> Path:
    """The stack file: ``TRADER_CONFIG`` if set, else ``configs/stack.toml``."""
    env = os.environ.get("TRADER_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG_DIR / "stack.toml"


def load_stack(path: str | Path | None = None, **overrides: Any) -> StackSettings:
    """Read the stack settings; a problem raises ConfigError naming file, key and reason."""
    p = Path(path) if path else stack_config_path()
    data = _read_toml(p)
    in_file = [k for k in SECURITY_SECRET_KEYS if isinstance(data.get("security"), dict) and k in data["security"]]
    secrets = data.get("secrets") if isinstance(data.get("secrets"), dict) else {}
    in_file = [f"security.{k}" for k in in_file]
    in_file += [k for k in ENV_ONLY_KEYS if k in data] + [f"secrets.{k}" for k in ENV_ONLY_KEYS if k in secrets]
    in_file += alert_secrets_in_file(data)
    if in_file:
        raise ConfigError([(str(p), k, "a secret (or the live switch) belongs in the environment or .env, never in "
                                       "the file") for k in in_file])
    StackSettings._toml_data = data
    try:
        return StackSettings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(x) for x in err["loc"]) or "-"
            problems.append((str(p), key, err["msg"]))
        raise ConfigError(problems) from exc
    finally:
        StackSettings._toml_data = {}


def endpoint_is_loopback(endpoint: str) -> bool:
    """Whether an endpoint can only be reached from this machine."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    host = endpoint.removeprefix("tcp://").rsplit(":", 1)[0]
    return host in LOOPBACK_HOSTS
