"""The base of every process on the bus: pid lock, sockets, poll loop, heartbeats, shutdown.

A subclass binds and connects in ``setup()``, registers each readable socket
with ``add_socket(sock, on_readable)``, does periodic work in ``on_timer`` and
cleans up in ``teardown()``. ``run()`` does the rest in a fixed order: take the
pid lock before anything is bound (a second bind on an ipc path silently steals
it), create the ZeroMQ context inside this process, publish
``sys.heartbeat.<name>`` every ``bus.heartbeat_interval_s`` (while
``heartbeat_idle()`` a heartbeat that would tell nothing new is skipped, up to
``bus.idle_heartbeat_intervals`` in a row, and each heartbeat says how long the
next may take), and stop within a poll interval of SIGTERM or SIGINT with every
socket on a finite LINGER, the context terminated and the lock released.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import ClassVar, NoReturn

import psutil
import zmq

from bus import security
from bus.logcount import log_counter
from bus.pidlock import LockHeld, PidLock, lock_path
from bus.pubsub import HEARTBEAT_SEQS_KEY, HEARTBEAT_TOPIC_PREFIX, Publisher, Subscriber
from bus.rpc import RpcServer
from core.config import ConfigError, StackSettings, load_stack
from core.messages import Alert, AlertLevel, Heartbeat, Message

ALERT_TOPIC = "sys.alert"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_LOCK_HELD = 3
REJECTED_FRAMES_KEY = "rejected_frames"
POLL_MS = 1000  # longest the loop sleeps; a stop (signal or ``stop()``) wakes it at once
COALESCE_S = 0.05  # the timer and the heartbeat due this close together run in one wake-up

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
# Libraries that log a line per request, connection or loop event (httpx: one INFO line per HTTP request):
# held to WARNING unless the stack logs at DEBUG, where their INFO lines come back.
LIBRARY_LOGGERS = ("httpx", "httpcore", "urllib3", "uvicorn.access", "asyncio", "websockets")


def stack_log_level() -> int:
    """The level the stack's settings ask for (``log_level``, ``TRADER_LOG_LEVEL``); INFO when they do not load.

    A process reads its settings again right after: a problem in them is reported there, with its file and key.
    """
    try:
        return log_level(load_stack().log_level)
    except (ConfigError, OSError):
        return logging.INFO


def log_level(name: str) -> int:
    """The ``logging`` level of a ``log_level`` setting (``"debug"`` -> ``logging.DEBUG``)."""
    return logging.getLevelNamesMapping()[name.upper()]


def configure_logging(level: int | None = None) -> None:
    """Log to stderr with time, logger name and level (what every process's main does).

    ``level`` defaults to the stack's ``log_level`` (INFO; ``trader up --verbose`` is DEBUG). The libraries
    of ``LIBRARY_LOGGERS`` log at WARNING and above, at INFO and above when the level is DEBUG.
    """
    if level is None:
        level = stack_log_level()
    logging.basicConfig(stream=sys.stderr, level=level, format=LOG_FORMAT, force=True)
    library_level = logging.INFO if level <= logging.DEBUG else max(level, logging.WARNING)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(library_level)


class Service:
    """One process of the stack: subclass it and fill in setup / on_timer / teardown."""

    service_name: ClassVar[str] = ""  # the default name used by ``main()``
    timer_interval_s: ClassVar[float] = 0.1  # how often ``on_timer`` runs
    heartbeat_volatile: ClassVar[tuple[str, ...]] = ()  # ``info`` keys that change with time alone: no news
    heartbeat_quiet_topics: ClassVar[tuple[str, ...]] = ()  # topics published on a clock: their numbers are no news

    def __init__(self, name: str, settings: StackSettings) -> None:
        if not name:
            raise ValueError("a service needs a name")
        self.name = name
        self.settings = settings
        self.log = logging.getLogger(name)
        log_counter()  # warnings and errors from the start on are counted for the heartbeat
        self.state = "starting"
        self.lock = PidLock(lock_path(settings.run_path, name))
        self.ctx: zmq.Context | None = None
        self.publisher: Publisher | None = None
        self._handlers: dict[zmq.Socket, Callable[[], object]] = {}
        self._wake_w: socket.socket | None = None  # see ``_wakeup``
        self._sockets: list[zmq.Socket] = []
        self._poller = zmq.Poller()
        self._stop_requested = False
        self._hb_told: tuple[str, int, dict[str, object]] | None = None  # state, queue and info last sent
        self._hb_sent_at = 0.0
        self._process = psutil.Process()

    # --- hooks for subclasses ----------------------------------------------

    def setup(self) -> None:
        """Bind, connect and register sockets (the lock is held and the context exists)."""

    def on_timer(self, now_monotonic: float) -> None:
        """Periodic work, about every ``timer_interval_s``."""

    def teardown(self) -> None:
        """Release what ``setup`` took; sockets made by ``socket()`` are closed afterwards."""

    def queue_depth(self) -> int:
        """Work waiting inside this process (reported in heartbeats)."""
        return 0

    def heartbeat_info(self) -> dict[str, object]:
        """Extra facts for the heartbeat's ``info`` (subclasses add to it)."""
        return {}

    def heartbeat_idle(self) -> bool:
        """Whether a heartbeat with nothing new may be skipped now (no by default).

        A process whose heartbeats every agent or every watcher hears (an agent, a
        publisher agents listen to) says yes while the market is closed and it
        has nothing in flight: a hundred agents' heartbeats, and the publishers'
        heartbeats to a hundred agents, are most of an idle firm's work. A
        heartbeat whose state or ``info`` (its sequence numbers included)
        changed still goes out on time, so nothing is told later.
        """
        return False

    def rejected_frames(self) -> dict[str, int]:
        """Frames this process refused, by reason code (the heartbeat's ``info["rejected_frames"]``).

        Sums the counters of every RpcServer and Subscriber held in an attribute of
        the service, so a subclass reports what its inputs refused without code of its own.
        """
        total: dict[str, int] = {}
        for value in vars(self).values():
            if not isinstance(value, (RpcServer, Subscriber)):
                continue
            for reason, n in value.rejected.items():
                total[reason] = total.get(reason, 0) + n
        return total

    # --- tools for subclasses ----------------------------------------------

    def socket(self, socket_type: int) -> zmq.Socket:
        """A socket with the stack's LINGER, closed automatically at shutdown."""
        if self.ctx is None:
            raise RuntimeError("sockets are made in setup(), once run() has created the context")
        sock = self.ctx.socket(socket_type)
        sock.setsockopt(zmq.LINGER, self.settings.bus.linger_ms)
        self._sockets.append(sock)
        return sock

    def add_socket(self, sock: zmq.Socket, on_readable: Callable[[], object]) -> None:
        """Call ``on_readable()`` whenever ``sock`` has input; it should drain what is there."""
        sock.setsockopt(zmq.LINGER, self.settings.bus.linger_ms)
        if sock not in self._sockets:
            self._sockets.append(sock)
        self._handlers[sock] = on_readable
        self._poller.register(sock, zmq.POLLIN)

    def remove_socket(self, sock: zmq.Socket) -> None:
        """Stop polling ``sock`` (it is still closed at shutdown)."""
        self._handlers.pop(sock, None)
        self._poller.unregister(sock)

    def publish(self, topic: str, msg: Message, ts_ns: int | None = None) -> int:
        """Publish on the bus; returns the message's sequence number on its topic (``ts_ns``: see Publisher)."""
        if self.publisher is None:
            raise RuntimeError("publish() is available once run() has connected the publisher")
        return self.publisher.publish(topic, msg, ts_ns)

    def alert(self, level: AlertLevel | str, kind: str, text: str) -> None:
        """Tell a person about something on ``sys.alert``."""
        self.log.log(_LOG_LEVELS.get(AlertLevel(level), logging.WARNING), "alert %s: %s", kind, text)
        self.publish(ALERT_TOPIC, Alert(level=AlertLevel(level), source=self.name, kind=kind, text=text, ts_ns=time.time_ns()))

    def stop(self) -> None:
        """Ask the loop to finish (safe from a signal handler, a handler callback or another thread)."""
        self._stop_requested = True
        wake = self._wake_w
        if wake is not None:
            try:
                wake.send(b"\0")
            except OSError:  # closed, or full: the loop is awake already
                pass

    @property
    def stopping(self) -> bool:
        """Whether a stop has been requested."""
        return self._stop_requested

    # --- the process -------------------------------------------------------

    def run(self) -> int:
        """Lock, set up, loop until stopped, shut down; returns the process exit code."""
        try:
            self.lock.acquire()
        except LockHeld as exc:
            self.log.error("refusing to start: %s", exc)
            return EXIT_LOCK_HELD
        previous = self._install_signal_handlers()
        self.ctx = zmq.Context()
        code = EXIT_OK
        security.configure(self.settings)
        try:
            self.publisher = Publisher(
                self.ctx,
                self.settings.endpoint("bus_in"),
                self.name,
                sndhwm=self.settings.bus.sndhwm,
                linger_ms=self.settings.bus.linger_ms,
            )
            self._sockets.append(self.publisher.socket)
            self.setup()
            # Start-up objects (modules, calendar, instruments, configuration) live as long as the
            # process: keep them out of the cyclic collector, whose full passes over them took about
            # 100 ms and stalled requests.
            gc.freeze()
            self.state = "running"
            self.log.info("running (pid %d)", os.getpid())
            with self._wakeup():
                self._loop()
        except security.SecurityError as exc:
            self.log.error("refusing to start: %s", exc)
            code = EXIT_CONFIG
        except Exception:
            self.log.exception("stopping after an unexpected error")
            code = EXIT_FAILED
        finally:
            self.state = "stopping"
            self._shutdown()
            _restore_signal_handlers(previous)
        return code

    def _loop(self) -> None:
        hb_interval = self.settings.bus.heartbeat_interval_s
        next_hb = time.monotonic()
        next_timer = time.monotonic() + self.timer_interval_s
        handlers = self._handlers
        while not self._stop_requested:
            # Wake for input, or when the timer or the heartbeat is next due, at most POLL_MS later
            # (how long a stop request may wait); ``timer_interval_s`` may change between rounds.
            due = min(next_timer, next_hb) - time.monotonic()
            poll_ms = max(0, min(POLL_MS, int(due * 1000) + 1))
            if not handlers:
                # zmq's poll returns at once when it has no socket to watch: sleep instead of spinning.
                time.sleep(poll_ms / 1000)
            for sock, _ in self._poller.poll(poll_ms) if handlers else ():
                handler = handlers.get(sock)
                if handler is not None:
                    handler()
                if self._stop_requested:
                    break
            now = time.monotonic()
            hb_due = now >= next_hb
            if now >= next_timer or (hb_due and next_timer - now <= COALESCE_S):
                next_timer = now + self.timer_interval_s
                self.on_timer(now)
                # A heartbeat due before the next round goes out with this one: the two keep one
                # wake-up between them (a second wake-up a second is a hundred agents' idle CPU).
                hb_due = hb_due or next_hb < next_timer - COALESCE_S
            if hb_due:
                next_hb = now + hb_interval
                self.publish_heartbeat(now)

    def publish_heartbeat(self, now: float | None = None) -> bool:
        """Announce this process's health, its per-topic last sequence numbers and how long the next may take.

        Given the loop's ``now`` while ``heartbeat_idle()``, a heartbeat whose
        state, queue depth and ``info`` are those of the last one sent is skipped,
        until ``bus.idle_heartbeat_intervals`` have passed; returns whether it went out.
        """
        assert self.publisher is not None
        bus = self.settings.bus
        info: dict[str, object] = dict(self.heartbeat_info())
        info.update(self.publisher.heartbeat_info())
        info.setdefault(REJECTED_FRAMES_KEY, self.rejected_frames())
        info.setdefault("log", log_counter().summary())
        idle = now is not None and self.heartbeat_idle()
        seqs, own = info.get(HEARTBEAT_SEQS_KEY), HEARTBEAT_TOPIC_PREFIX + self.name
        news = {k: v for k, v in info.items() if k not in self.heartbeat_volatile}
        if isinstance(seqs, dict):  # its own heartbeat's number is no news, nor a clock's
            quiet = self.heartbeat_quiet_topics
            news[HEARTBEAT_SEQS_KEY] = {t: n for t, n in seqs.items() if t != own and t not in quiet}
        told = (self.state, self.queue_depth(), news)
        if idle and told == self._hb_told and now - self._hb_sent_at < bus.heartbeat_interval_s * (
                bus.idle_heartbeat_intervals - 0.5):
            return False
        if now is not None:
            self._hb_told, self._hb_sent_at = told, now
        try:
            with self._process.oneshot():
                rss = self._process.memory_info().rss
                cpu = self._process.cpu_percent(interval=None)
        except psutil.Error:
            rss, cpu = 0, 0.0
        hb = Heartbeat(
            name=self.name,
            pid=os.getpid(),
            state=self.state,
            ts_ns=time.time_ns(),
            rss_bytes=rss,
            cpu_pct=cpu,
            last_seq=self.publisher.last_seq,
            queue_depth=told[1],
            interval_s=bus.heartbeat_interval_s * (bus.idle_heartbeat_intervals if idle else 1.0),
            info=info,
        )
        self.publisher.publish(HEARTBEAT_TOPIC_PREFIX + self.name, hb)
        return True

    def _shutdown(self) -> None:
        try:
            self.teardown()
        except Exception:
            self.log.exception("teardown failed")
        finally:
            linger = self.settings.bus.linger_ms
            for sock in self._sockets:
                if not sock.closed:
                    sock.close(linger=linger)
            if self.ctx is not None:
                security.stop_authenticator(self.ctx)
                # destroy() also closes sockets a subclass forgot (e.g. an RPC
                # client's), each with a finite LINGER, so term() cannot block.
                self.ctx.destroy(linger=linger)
            self.lock.release()
            self.log.info("stopped")

    @contextlib.contextmanager
    def _wakeup(self) -> Iterator[None]:
        """A socket pair the loop also polls: a signal or ``stop()`` ends its sleep at once.

        So the loop can sleep until its next timer or heartbeat instead of waking
        every few hundred milliseconds to look at the stop flag.
        """
        r, w = socket.socketpair()
        r.setblocking(False)
        w.setblocking(False)

        def drain() -> None:
            try:
                while r.recv(4096):
                    pass
            except OSError:
                pass

        self._handlers[r] = drain  # type: ignore[index]
        self._poller.register(r, zmq.POLLIN)
        self._wake_w = w
        previous_fd = None
        if threading.current_thread() is threading.main_thread():
            previous_fd = signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)
        try:
            yield
        finally:
            if previous_fd is not None:
                signal.set_wakeup_fd(previous_fd)
            self._wake_w = None
            self._handlers.pop(r, None)  # type: ignore[call-overload]
            self._poller.unregister(r)
            r.close()
            w.close()

    def _install_signal_handlers(self) -> dict[int, object]:
        def request_stop(signum: int, frame: FrameType | None) -> None:
            self.log.info("received %s, stopping", signal.Signals(signum).name)
            self._stop_requested = True

        previous: dict[int, object] = {}
        if threading.current_thread() is not threading.main_thread():
            return previous  # signals reach only the main thread; the owner calls stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, request_stop)
        return previous

    # --- entry point -------------------------------------------------------

    @classmethod
    def main(cls, name: str | None = None) -> NoReturn:
        """Entry point for ``__main__`` modules: logging, settings, run, exit code."""
        try:
            settings = load_stack()
        except ConfigError as exc:
            configure_logging(logging.INFO)
            logging.getLogger(name or cls.service_name or cls.__name__).error("%s", exc)
            sys.exit(EXIT_CONFIG)
        configure_logging(log_level(settings.log_level))
        sys.exit(cls(name or cls.service_name, settings).run())


def _restore_signal_handlers(previous: dict[int, object]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)  # type: ignore[arg-type]


_LOG_LEVELS = {
    AlertLevel.INFO: logging.INFO,
    AlertLevel.WARNING: logging.WARNING,
    AlertLevel.ERROR: logging.ERROR,
    AlertLevel.CRITICAL: logging.CRITICAL,
}
