"""A small service for the bus tests: answers RPC commands and publishes on request.

Run as ``python -m tests.bus.counter_service NAME``. Commands (``Command.name``):
``echo`` returns its args; ``add`` adds ``args["n"]`` to a counter (after
``args["delay_s"]``) and returns the new total and how many times it ran
(state-changing: retries must not add twice); ``sleep`` waits
``args["s"]`` seconds before answering; ``boom`` raises inside the handler; ``alert`` raises an alert;
``stop`` asks the service to stop; ``idle`` sets whether it may skip heartbeats with nothing new (``args["on"]``);
``publish`` sends ``args["count"]`` ticks on ``args["topic"]``.
"""

from __future__ import annotations

import sys
import time


from bus.rpc import RequestInfo, RpcServer
from bus.service import Service
from core.messages import Command, CommandResult, Message, Tick

ENDPOINT_NAME = "supervisor_rpc"


class CounterService(Service):
    """Counts, echoes, sleeps and fails on command, over RPC."""

    service_name = "counter"

    def setup(self) -> None:
        self.total = 0
        self.executions = 0
        self.idle = False
        self.server = RpcServer(self.ctx, self.settings.endpoint(ENDPOINT_NAME), self.answer, name=self.name)
        self.add_socket(self.server.socket, self.server.handle_ready)

    def answer(self, msg: Message, info: RequestInfo) -> Message:
        if not isinstance(msg, Command):
            raise TypeError(f"expected a Command, got {type(msg).__name__}")
        if msg.name == "echo":
            return CommandResult(command_id=msg.command_id, ok=True, result=msg.args)
        if msg.name == "add":
            time.sleep(float(msg.args.get("delay_s", 0)))
            self.executions += 1
            self.total += int(msg.args["n"])
            return CommandResult(
                command_id=msg.command_id, ok=True, result={"total": self.total, "executions": self.executions}
            )
        if msg.name == "sleep":
            time.sleep(float(msg.args["s"]))
            return CommandResult(command_id=msg.command_id, ok=True, result="slept")
        if msg.name == "publish":
            for i in range(int(msg.args["count"])):
                self.publish(msg.args["topic"], Tick(code="005930", ts_ns=i, price=70_000, qty=1))
            return CommandResult(command_id=msg.command_id, ok=True, result=self.publisher.last_seq)
        if msg.name == "alert":
            self.alert(msg.args["level"], msg.args["kind"], msg.args["text"])
            return CommandResult(command_id=msg.command_id, ok=True)
        if msg.name == "idle":
            self.idle = bool(msg.args["on"])
            return CommandResult(command_id=msg.command_id, ok=True)
        if msg.name == "stop":
            self.stop()
            return CommandResult(command_id=msg.command_id, ok=True)
        if msg.name == "boom":
            raise RuntimeError("asked to fail")
        return CommandResult(command_id=msg.command_id, ok=False, error=f"unknown command {msg.name}", reason_code="UNKNOWN_COMMAND")

    def heartbeat_idle(self) -> bool:
        return self.idle


if __name__ == "__main__":
    CounterService.main(sys.argv[1] if len(sys.argv) > 1 else None)
