"""Start the dashboard: ``python -m dashboard`` serves it with uvicorn on settings.dashboard host:port."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import uvicorn

from bus.pidlock import LockHeld, PidLock, lock_path
from bus.service import EXIT_CONFIG, EXIT_LOCK_HELD, configure_logging
from core.config import ConfigError, endpoint_is_loopback, load_stack
from dashboard.app import create_app

log = logging.getLogger("dashboard")


class QuietServer(uvicorn.Server):
    """uvicorn's server, waking twice a second instead of ten times when nothing happens.

    Its main loop only refreshes the Date header (once a second) and looks for
    a shutdown request; a tenth of a second between looks cost an idle stack
    more CPU than the dashboard's real work.
    """

    TICK_S = 0.5

    async def main_loop(self) -> None:
        counter = 0
        should_exit = await self.on_tick(counter)
        step = round(self.TICK_S * 10)  # on_tick counts tenths of a second: counter % 10 == 0 is each second
        while not should_exit:
            counter = (counter + step) % 864000
            await asyncio.sleep(self.TICK_S)
            should_exit = await self.on_tick(counter)


def _exit_cleanly(signum: int, _frame: object) -> None:
    raise SystemExit(0)


def main() -> int:
    """Take the pid lock, build the app and serve it until SIGINT/SIGTERM; returns the exit code."""
    configure_logging()
    try:
        settings = load_stack()
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    host, port = settings.dashboard.host, settings.dashboard.port
    if not endpoint_is_loopback(f"tcp://{host}:{port}"):
        log.warning("listening beyond loopback on %s:%d as configured", host, port)
    if not settings.token():
        log.info("no TRADER_DASHBOARD_TOKEN: the dashboard is read-only")
    lock = PidLock(lock_path(settings.run_path, "dashboard"))
    try:
        lock.acquire()
    except LockHeld as exc:
        log.error("refusing to start: %s", exc)
        return EXIT_LOCK_HELD
    # uvicorn restores the handlers it found and re-raises the signal it caught once it
    # has shut down; with these, that signal ends in SystemExit and the lock is released.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGINT, _exit_cleanly)
    try:
        app = create_app(settings)
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                timeout_graceful_shutdown=2)
        QuietServer(config).run()
    finally:
        lock.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
