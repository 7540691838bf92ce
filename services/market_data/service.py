"""The market-data process: broker feed in, bus out, board and bar files kept.

Reads the broker's feed (the paper exchange's PUB by default, or a replay of
recorded bars when ``market_data.source = "replay"``), republishes ``md.tick.*``,
``md.bar.1m.*``, ``md.flow.*`` and ``md.session`` (on a change of phase or
day only) on the bus, keeps the last
value of everything on a :class:`MarketBoard` served over RPC (``snapshot``,
``status``), and records bars per day per code (flushed every few seconds, at
each close and on stop, old days purged at start and at each close). At start
the board is filled from the newest recorded days, so after a restart of the
whole stack an agent still warms its bar windows from the day so far. A silent feed is dropped and
reopened with backoff (:mod:`services.market_data.link`, over the shared
``services.broker.connection.ConnectionMonitor``); each change of connection
state is an Alert ``broker_connection`` and the heartbeat's ``connection`` key,
and drops and recoveries are also announced as ``feed_dropped`` / ``feed_recovered``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bus.pubsub import Subscriber
from bus.rpc import RequestInfo, RpcServer
from bus.service import Service
from core.config import PROJECT_ROOT, StackSettings
from core.instruments import InstrumentError, load_instruments
from core.messages import AlertLevel, Bar, Command, CommandResult, Fundamentals, InvestorFlow, Message, SessionEvent, SessionPhase, market_closed
from core.venue import FEED_HEARTBEAT_TOPIC, MARKET_TOPIC_PREFIX
from services.broker.base import ConnectionState
from services.broker.connection import ALERT_KIND, broker_backoff
from services.market_data import recorder, replay
from services.market_data.board import MarketBoard, board_from_master
from services.market_data.link import FeedLink, LinkAction

FEED_TOPICS = [MARKET_TOPIC_PREFIX, FEED_HEARTBEAT_TOPIC]
UNKNOWN_COMMAND = "UNKNOWN_COMMAND"
BAD_ARGS = "BAD_ARGS"
UNSUPPORTED_REQUEST = "UNSUPPORTED_REQUEST"

LIVE_TIMER_S = 0.25  # seconds between liveness checks of a live feed
FLUSH_EVERY_S = 5.0  # bars reach their day's file at least this often (a kill -9 loses no more than this)
WARM_DAYS = 2  # recorded days read back into the board at start (a restarted agent warms from them)


class MarketDataService(Service):
    """Forwards the broker's market data to the bus, remembers it, records bars."""

    service_name = "market-data"
    timer_interval_s = 0.05  # replay pace; live it slows to LIVE_TIMER_S

    def __init__(self, name: str, settings: StackSettings) -> None:
        super().__init__(name, settings)
        cfg = settings.market_data
        self.source = cfg.source
        self.board: MarketBoard = MarketBoard(bars_kept=cfg.bars_kept)
        self.recorder = recorder.BarRecorder(settings.run_path / "bars")
        silence = cfg.silence_heartbeats * cfg.feed_heartbeat_s
        self.link = FeedLink(silence_limit_s=silence, backoff=broker_backoff(cfg.backoff_max_s),
                             start_grace_s=cfg.venue_start_grace_s)
        self.feed: Subscriber | None = None
        self.rpc: RpcServer | None = None
        self.garbage: Counter[str] = Counter()  # reason code -> bad frames from the feed
        self.gaps = 0
        self.forwarded = 0
        self.cursor: replay.ReplayCursor | None = None
        self._replay_started: float | None = None
        self._feed_was_live = False  # the current subscription has delivered something
        self._next_flush = 0.0

    # --- start and stop ------------------------------------------------------

    def setup(self) -> None:
        recorder.arrow_without_pandas()  # bars and side tables are written with Arrow alone
        self._load_base_prices()
        self._purge(recorder.newest_day(self.recorder.root))
        self._warm_board()
        self._next_flush = time.monotonic() + FLUSH_EVERY_S
        assert self.ctx is not None
        self.rpc = RpcServer(self.ctx, self.settings.endpoint("market_data_rpc"), self.handle_request, name=self.name)
        self.add_socket(self.rpc.socket, self.rpc.handle_ready)
        if self.source == "replay":
            self._open_replay()

    def teardown(self) -> None:
        written = self.recorder.flush()
        if written:
            self.log.info("wrote %d bar file(s) on stop", len(written))
        self._close_feed()

    def _load_base_prices(self) -> None:
        path = Path(self.settings.market.instruments_file)
        if not path.is_absolute():
            path = PROJECT_ROOT / path
        try:
            master = load_instruments(path)
        except (OSError, InstrumentError) as exc:
            self.log.warning("no base prices from the instrument master %s: %s", path, exc)
            return
        self.board = board_from_master(master, bars_kept=self.board.bars_kept)

    def _open_replay(self) -> None:
        folder = Path(self.settings.market_data.replay_dir)
        feed = replay.load_feed(folder) if folder.is_dir() else []
        if not feed:
            self.alert(AlertLevel.ERROR, "replay_empty", f"no recorded bars to replay under {folder}")
        self.cursor = replay.ReplayCursor(feed, speed=self.settings.market_data.replay_speed)
        self.log.info("replaying %d message(s) from %s", len(feed), folder)

    # --- the loop --------------------------------------------------------------

    def _warm_board(self) -> None:
        """The bars of the newest recorded days, oldest first, onto the board (what a snapshot serves)."""
        n = 0
        for folder in recorder.day_dirs(self.recorder.root)[-WARM_DAYS:]:
            try:
                day = recorder.read_day(self.recorder.root, folder.name)
            except (OSError, ValueError) as exc:  # a foreign or broken file: the board starts without it
                self.log.warning("recorded bars of %s not read back: %s", folder.name, exc)
                continue
            for bars in day.values():
                for bar in bars:
                    self.board.apply(bar)
                    n += 1
        if n:
            self.log.info("board filled with %d recorded bar(s)", n)

    def on_timer(self, now_monotonic: float) -> None:
        if now_monotonic >= self._next_flush:
            self._next_flush = now_monotonic + FLUSH_EVERY_S
            try:
                self.recorder.flush()
            except OSError as exc:  # a full disk: the bars stay pending and the next flush tries again
                self.log.warning("bars not written: %s", exc)
        if self.cursor is not None:
            self._replay_step(now_monotonic)
            return
        # Live, the timer only watches the feed's liveness: a few times a second is plenty.
        self.timer_interval_s = LIVE_TIMER_S
        action = self.link.poll(now_monotonic)
        if action is LinkAction.CONNECT:
            # A subscription that never delivered anything is kept: ZeroMQ goes on
            # connecting it, and reopening it would only lose what is on its way.
            if self.feed is None or self._feed_was_live:
                self._open_feed()
            self.link.connecting(now_monotonic)
        elif action is LinkAction.DROP:
            was_connected = self._feed_was_live
            if was_connected:  # a live feed fell silent: its socket may be stuck, open a fresh one next time
                self._close_feed()
                silent = self.link.seconds_silent(now_monotonic) or 0.0
                self.alert(
                    AlertLevel.WARNING,
                    "feed_dropped",
                    f"broker feed {self.settings.endpoint('exchange_feed')} silent for {silent:.1f} s; reconnecting",
                )
        self._announce_link()

    def _announce_link(self) -> None:
        """Publish each change of the feed's connection state as a ``broker_connection`` alert."""
        for t in self.link.take_transitions():
            if t.starting:  # the venue is still starting: its first attempts are no news
                self.log.debug("%s while the venue starts: %s", ALERT_KIND, t.text)
                continue
            level = AlertLevel.INFO if t.to_state is ConnectionState.CONNECTED else AlertLevel.WARNING
            self.alert(level, ALERT_KIND, t.text)

    def _open_feed(self) -> None:
        assert self.ctx is not None
        self._close_feed()
        self.feed = Subscriber(
            self.ctx,
            self.settings.endpoint("exchange_feed"),
            FEED_TOPICS,
            rcvhwm=self.settings.bus.rcvhwm,
            linger_ms=self.settings.bus.linger_ms,
            on_gap=self._on_gap,
        )
        self._feed_was_live = False
        self.add_socket(self.feed.socket, self._on_feed)
        self.log.log(logging.DEBUG if self.link.starting(time.monotonic()) else logging.INFO,
                     "subscribed to the broker feed %s (attempt %d)", self.feed.endpoint, self.link.attempts + 1)

    def _close_feed(self) -> None:
        if self.feed is None:
            return
        self.garbage.update(self.feed.rejected)
        self.remove_socket(self.feed.socket)
        self.feed.close()
        # A closed subscription must not pile up in the base's shutdown list over a long outage.
        if self.feed.socket in self._sockets:
            self._sockets.remove(self.feed.socket)
        self.feed = None

    def _on_gap(self, sender: str, topic: str, first: int, last: int) -> None:
        self.gaps += last - first + 1

    def _on_feed(self) -> None:
        feed = self.feed
        if feed is None:
            return
        envelopes = feed.drain()
        if not envelopes:
            return
        if self.link.frame_received(time.monotonic()):
            self._feed_was_live = True
            if self.link.drops > 0:
                self.alert(AlertLevel.INFO, "feed_recovered", f"broker feed back after {self.link.drops} drop(s)")
            else:
                self.log.info("broker feed connected")
            self._announce_link()
        for env in envelopes:
            if env.topic.startswith("md."):
                self.forward(env.topic, env.msg, env.ts_ns)

    def _replay_step(self, now_monotonic: float) -> None:
        assert self.cursor is not None
        if self._replay_started is None:
            self._replay_started = now_monotonic
        for topic, msg in self.cursor.due(now_monotonic - self._replay_started):
            self.forward(topic, msg)

    def forward(self, topic: str, msg: Message, venue_ts_ns: int | None = None) -> None:
        """Publish one market-data message on the bus, remember it, record bars, roll the day.

        The broker repeats the session in force with each feed heartbeat (so a
        late joiner learns it); the bus hears of a session only when its phase
        or trading date changes, so agents get one callback per change. ``venue_ts_ns``: when the venue
        published it, passed on as the header's time (an agent measures the tick's latency from the venue).
        """
        if isinstance(msg, SessionEvent) and self.board.session is not None and (
            (self.board.session.phase, self.board.session.trading_date) == (msg.phase, msg.trading_date)
        ):
            return
        if not self.board.apply(msg):
            return
        self.publish(topic, msg, venue_ts_ns)
        self.forwarded += 1
        if isinstance(msg, Bar):
            self.recorder.add(msg)
        elif isinstance(msg, InvestorFlow):
            self.recorder.add_flow(msg)
        elif isinstance(msg, Fundamentals):
            self.recorder.add_fundamentals(msg)
        elif isinstance(msg, SessionEvent) and msg.phase is SessionPhase.CLOSED:
            written = self.recorder.flush()
            self.log.info("close of %s: wrote %d bar file(s)", msg.trading_date, len(written))
            self._purge(dt.datetime.strptime(msg.trading_date, "%Y%m%d").date())

    def _purge(self, reference: dt.date | None) -> None:
        if reference is None:
            return
        removed = recorder.purge_days(self.recorder.root, reference, self.settings.retention.retention_days)
        if removed:
            self.log.info("purged %d day folder(s) of bars older than %d days", len(removed), self.settings.retention.retention_days)

    # --- RPC -------------------------------------------------------------------

    def handle_request(self, msg: Message, info: RequestInfo) -> Message:
        """Answer ``snapshot`` (args: codes?, bars?) and ``status`` commands."""
        if not isinstance(msg, Command):
            return CommandResult(command_id="-", ok=False, error=f"{type(msg).__name__} is not served here", reason_code=UNSUPPORTED_REQUEST)
        if msg.name == "snapshot":
            return self._snapshot(msg)
        if msg.name == "status":
            return CommandResult(command_id=msg.command_id, ok=True, result=self.status())
        return CommandResult(
            command_id=msg.command_id,
            ok=False,
            error=f"unknown command {msg.name!r}; known: snapshot, status",
            reason_code=UNKNOWN_COMMAND,
        )

    def _snapshot(self, cmd: Command) -> CommandResult:
        codes = cmd.args.get("codes")
        if isinstance(codes, str):
            codes = [c.strip() for c in codes.split(",") if c.strip()]
        if codes is not None and not (isinstance(codes, list) and all(isinstance(c, str) for c in codes)):
            return CommandResult(command_id=cmd.command_id, ok=False, error="codes must be a list of codes", reason_code=BAD_ARGS)
        bars = cmd.args.get("bars")
        if bars is not None and (type(bars) is not int or bars < 0):
            return CommandResult(command_id=cmd.command_id, ok=False, error="bars must be a non-negative integer", reason_code=BAD_ARGS)
        data = self.board.snapshot(codes, bars=bars)
        data["feed"] = self.link.state.value if self.cursor is None else "replay"
        return CommandResult(command_id=cmd.command_id, ok=True, result=data)

    def status(self) -> dict[str, Any]:
        """Connection state and counts (the ``status`` RPC and the heartbeat's info)."""
        feed_rejected = Counter(self.garbage)
        if self.feed is not None:
            feed_rejected.update(self.feed.rejected)
        now = time.monotonic()
        return {
            "source": self.source,
            "feed": self.link.state.value if self.cursor is None else ("replay_finished" if self.cursor.finished else "replaying"),
            "endpoint": self.settings.endpoint("exchange_feed") if self.cursor is None else self.settings.market_data.replay_dir,
            "drops": self.link.drops,
            "connect_attempts": self.link.attempts,
            "seconds_silent": self.link.seconds_silent(now),
            "forwarded": self.forwarded,
            "counts": dict(self.board.counts),
            "garbage": sum(feed_rejected.values()),
            "garbage_by_reason": dict(feed_rejected),
            "gaps": self.gaps,
            "codes": len(self.board.codes()),
            "pending_bars": self.recorder.pending,
            "bar_files_written": self.recorder.files_written,
            "session": self.board.session.phase.value if self.board.session else None,
        }

    def heartbeat_info(self) -> dict[str, object]:
        st = self.status()
        info: dict[str, object] = {k: st[k] for k in ("source", "feed", "drops", "forwarded", "garbage", "gaps", "pending_bars")}
        if self.cursor is None:
            info["connection"] = self.link.state.value
        return info

    def queue_depth(self) -> int:
        return self.recorder.pending

    def heartbeat_idle(self) -> bool:
        """No session announced yet, or the day's closed: every agent hears this heartbeat."""
        session = self.board.session
        return market_closed(session.phase if session is not None else None)

