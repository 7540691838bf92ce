"""One command from the terminal to one of the stack's services, with errors a person can act on.

Every ``trader`` command that asks a running service goes through :func:`call`:
a refusal is printed with its reason, a service that is down is named together
with how to start it, and both exit 1; a broken configuration exits 2.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import typer
from rich.console import Console

from core.config import ConfigError, StackSettings, load_stack

err = Console(stderr=True)  # messages are printed unwrapped (soft_wrap) so scripts can match them

# endpoint setting -> (what a person calls the service, how to start it alone)
SERVICES: dict[str, tuple[str, str]] = {
    "supervisor_rpc": ("supervisor", "python -m services.supervisor"),
    "order_manager_rpc": ("order manager", "python -m services.order_manager"),
    "risk_guard_rpc": ("risk guard", "python -m services.risk_guard"),
    "reconciler_rpc": ("reconciler", "python -m services.reconciler"),
    "market_data_rpc": ("market-data service", "python -m services.market_data"),
    "exchange_rpc": ("venue (the paper exchange or the KIS gateway)", "trader up"),
}


def load_settings() -> StackSettings:
    """The stack settings, or exit 2 naming file, key and reason."""
    try:
        return load_stack()
    except ConfigError as exc:
        err.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None


def who() -> str:
    """Who is acting, for journals and alerts."""
    return f"cli:{os.environ.get('USER', 'unknown')}"


class ServiceError(Exception):
    """A service that did not answer (``down``) or refused or failed a command; the text says which and why."""

    def __init__(self, text: str, down: bool) -> None:
        super().__init__(text)
        self.text = text
        self.down = down


def call(
    endpoint_name: str,
    name: str,
    args: dict[str, Any] | None = None,
    *,
    timeout_ms: int | None = None,
    retries: int = 1,
    settings: StackSettings | None = None,
) -> Any:
    """Send ``Command(name, args)`` to a service; its result, or exit 1 with the reason.

    The command id doubles as the idempotency key, so a retry never acts twice.
    """
    try:
        return ask(endpoint_name, name, args, timeout_ms=timeout_ms, retries=retries, settings=settings)
    except ServiceError as exc:
        err.print(f"[bold red]error:[/] {exc.text}", soft_wrap=True)
        raise typer.Exit(1) from None


def ask(
    endpoint_name: str,
    name: str,
    args: dict[str, Any] | None = None,
    *,
    timeout_ms: int | None = None,
    retries: int = 1,
    settings: StackSettings | None = None,
) -> Any:
    """Like :func:`call`, but a service that is down or refuses raises :class:`ServiceError` (for ``--watch``)."""
    import zmq

    from bus.rpc import RpcClient, RpcError, RpcFailure
    from core.messages import Command, CommandResult

    settings = settings or load_settings()
    label, start = SERVICES[endpoint_name]
    args = args or {}
    ctx = zmq.Context()
    client = RpcClient(ctx, settings.endpoint(endpoint_name), timeout_ms=timeout_ms or settings.bus.rpc_timeout_ms,
                       retries=retries, sender="trader-cli")
    command_id = f"cli-{uuid.uuid4().hex[:12]}"
    command = Command(command_id=command_id, name=name, args=args, who=args.get("who") or who(), ts_ns=time.time_ns())
    try:
        reply = client.call(command, idempotency_key=command_id)
    except RpcError as exc:
        raise ServiceError(f"the {label} failed on {name}: {exc}", down=False) from None
    except RpcFailure as exc:
        raise ServiceError(f"the {label} is not running ({exc}).\n"
                           f"Start the stack with `trader up`, or only the {label} with `{start}`.", down=True) from None
    finally:
        client.close()
        ctx.destroy(linger=0)
    if not isinstance(reply, CommandResult) or not reply.ok:
        text = reply.error if isinstance(reply, CommandResult) else type(reply).__name__
        code = f" ({reply.reason_code})" if isinstance(reply, CommandResult) and reply.reason_code else ""
        raise ServiceError(f"the {label} refused {name}{code}: {text}", down=False)
    return reply.result
