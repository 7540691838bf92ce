"""The bus process: forwards every published message from ``bus_in`` to ``bus_out``.

Publishers connect to ``bus_in`` (XSUB), subscribers to ``bus_out`` (XPUB);
subscriptions travel upstream so publishers filter at the source. Forwarding
runs in libzmq (``zmq.proxy_steerable``) on a thread of its own, so the Python
loop of :class:`~bus.service.Service` only handles the pid lock, heartbeats and
signals; on stop it sends TERMINATE on the proxy's control socket.

Run it with ``python -m bus.proxy``.
"""

from __future__ import annotations

import threading

import zmq

from bus import security
from bus.service import Service

CONTROL_ENDPOINT = "inproc://bus-proxy-control"


class BusProxy(Service):
    """The XSUB/XPUB forwarder at the centre of the bus."""

    service_name = "bus"
    timer_interval_s = 0.5

    def setup(self) -> None:
        """Bind both ends (the pid lock is already held) and start forwarding."""
        bus = self.settings.bus
        self.frontend = self.socket(zmq.XSUB)
        self.frontend.setsockopt(zmq.RCVHWM, bus.rcvhwm)
        security.bind(self.frontend, self.settings.endpoint("bus_in"))
        self.backend = self.socket(zmq.XPUB)
        self.backend.setsockopt(zmq.SNDHWM, bus.sndhwm)
        security.bind(self.backend, self.settings.endpoint("bus_out"))
        proxy_control = self.socket(zmq.PAIR)
        proxy_control.bind(CONTROL_ENDPOINT)
        self.control = self.socket(zmq.PAIR)
        self.control.connect(CONTROL_ENDPOINT)
        self.thread = threading.Thread(
            target=self._forward, args=(proxy_control,), name="bus-proxy", daemon=True
        )
        self.thread.start()
        self.log.info(
            "forwarding %s -> %s", self.settings.endpoint("bus_in"), self.settings.endpoint("bus_out")
        )

    def _forward(self, control: zmq.Socket) -> None:
        try:
            zmq.proxy_steerable(self.frontend, self.backend, None, control)
        except zmq.ContextTerminated:
            pass
        except zmq.ZMQError as exc:
            self.log.error("forwarding stopped: %s", exc)
            self.stop()

    def on_timer(self, now_monotonic: float) -> None:
        """Stop the process if the forwarding thread has died."""
        if not self.thread.is_alive() and not self.stopping:
            self.log.error("forwarding thread ended; stopping")
            self.stop()

    def teardown(self) -> None:
        """Stop forwarding before the sockets are closed."""
        if getattr(self, "thread", None) is None:
            return  # setup did not get as far as starting it (e.g. an endpoint refused)
        if self.thread.is_alive():
            self.control.send(b"TERMINATE")
            self.thread.join(timeout=2.0)
            if self.thread.is_alive():
                self.log.error("forwarding thread did not stop within 2 s")


if __name__ == "__main__":
    BusProxy.main()
