"""A sweep's back-tests as tasks on a Ray cluster, and a two-node Ray cluster on this machine to try it on.

``ClusterRunner`` connects to the cluster (``ray.init(address=...)``), puts
each market data in Ray's object store once (``ray.put``) and runs one task per
parameter set, each handed the data's ObjectRef and the params; a worker
deserialises a data once and keeps it for the tasks after. A task whose worker
or node dies is run again elsewhere (``max_retries``: Ray retries on system
failures, not on exceptions); a task that still fails, or raises, comes back as
its set's row with the ``error``. Rows are returned in the sets' order, so the
sorted table is the local pool's.

Ray is imported only here, and only when a cluster is asked for: it is the
optional ``cluster`` extra. The workers import the project's modules from
their own Python: start every node from the project's venv with the project
installed (``pip install -e '.[cluster]'``), as ``LocalCluster`` does; no
code is shipped with the tasks.

Addresses: ``host:port`` of a running cluster's GCS (what ``ray start --head
--port`` printed), checked with a TCP connect first so that a cluster that does
not answer fails in seconds rather than in ray.init's long retries (and
``ray.init`` itself is given ``INIT_TIMEOUT_S``, for a port that answers but
is no Ray); ``auto``
the cluster already started on this machine (``ray start``); ``local`` a
throw-away single-node Ray in this process with ``workers`` CPUs.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import psutil

from backtest.data import MarketData
from backtest.sweep import SweepJob, SweepRow

CONNECT_TIMEOUT_S = 3.0  # the TCP check of the GCS address
INIT_TIMEOUT_S = 20.0  # ray.init against something that accepts TCP but is no Ray GCS retries for minutes
TASK_RETRIES = 3  # runs of a task again after its worker or node died

_DATA: dict[str, MarketData] = {}  # in a Ray worker: the last data it read from the object store, by ObjectRef id


class ClusterError(RuntimeError):
    """A Ray cluster that cannot be used: names the address and the reason."""


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ClusterError(f"cluster address {address!r}: expected host:port (the head's GCS port), auto or local")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raise ClusterError unless a TCP connection to ``host:port`` opens within ``timeout_s``."""
    host, port = _split_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ClusterError(f"Ray cluster at {address} does not answer: {reason} "
                           f"(is `ray start --head --port={port}` running there?)") from None


def _init(ray: Any, address: str, kwargs: dict[str, Any]) -> None:
    """``ray.init`` with a deadline: it runs in a daemon thread, left behind (with the process) when it overruns."""
    failed: list[Exception] = []
    # the driver's SIGTERM handler can only be set from the main thread; without it SIGTERM still ends the process
    logging.getLogger("ray._private.worker").addFilter(lambda r: "SIGTERM handler is not set" not in r.getMessage())

    def connect() -> None:
        try:
            ray.init(**kwargs)
        except Exception as exc:  # noqa: BLE001 - handed to the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=connect, name="ray-init", daemon=True)
    thread.start()
    thread.join(INIT_TIMEOUT_S)
    if thread.is_alive():
        raise ClusterError(f"Ray cluster at {address} accepts connections but did not answer as a Ray cluster "
                           f"within {INIT_TIMEOUT_S:.0f} s (the head's GCS port? the same Ray version?)")
    if failed:
        raise ClusterError(f"Ray cluster at {address}: {failed[0]}") from None


def _row_of(job: SweepJob, holder: list[Any], params: dict[str, Any]) -> SweepRow:
    """The task's body: the data from the object store (once per worker) and one back-test."""
    import ray

    ref = holder[0]
    data = _DATA.get(ref.hex())
    if data is None:
        data = ray.get(ref)
        _DATA.clear()  # one sweep's data at a time: a worker does not pile up old sweeps' data
        _DATA[ref.hex()] = data
    return job.run(data, params)


class ClusterRunner:
    """Parameter sets as Ray tasks on the cluster at an address; a context manager that connects and disconnects."""

    def __init__(self, job: SweepJob, address: str, workers: int = 2) -> None:
        self.job, self.address, self.workers = job, address, workers
        self._refs: dict[int, Any] = {}  # id(data) -> (data, ObjectRef): each data put once
        self._task: Any = None

    def __enter__(self) -> Self:
        if self.address == "local" and "RAY_AUTH_MODE" not in os.environ:
            # a token of this process's own rather than one Ray would write to ~/.ray; before Ray reads its config
            os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
        try:
            import ray
        except ImportError:
            raise ClusterError("--cluster needs Ray: pip install -e '.[cluster]'") from None
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if self.address not in ("auto", "local"):
            check_reachable(self.address)
        kwargs: dict[str, Any] = {"logging_level": "WARNING", "log_to_driver": False}
        if self.address == "local":
            kwargs.update(num_cpus=self.workers, include_dashboard=False)
        else:
            kwargs["address"] = self.address
        if self.address == "local":  # starts its own Ray here: nothing to wait for, and it must be the main thread
            ray.init(**kwargs)
        else:
            _init(ray, self.address, kwargs)
        self._task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES, retry_exceptions=False)(_row_of)
        return self

    def __exit__(self, *_: object) -> None:
        import ray

        self._refs.clear()
        ray.shutdown()

    def _ref(self, data: MarketData) -> Any:
        import ray

        got = self._refs.get(id(data))
        if got is None or got[0] is not data:
            got = self._refs[id(data)] = (data, ray.put(data))
        return got[1]

    def run(self, data: MarketData, sets: Sequence[Mapping[str, Any]],
            progress: Callable[[int, int], None] | None = None) -> list[SweepRow]:
        """The rows of ``sets``, in their order; a task that failed is its set's row with the error."""
        import ray

        holder = [self._ref(data)]  # inside a list: Ray hands the task the ref, not the data
        refs = [self._task.remote(self.job, holder, dict(params)) for params in sets]
        index = {ref: k for k, ref in enumerate(refs)}
        rows: list[SweepRow | None] = [None] * len(sets)
        pending, done = list(refs), 0
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                k = index[ref]
                try:
                    rows[k] = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the task raised, or its retries ran out
                    rows[k] = SweepRow(dict(sets[k]), None, f"task failed: {type(exc).__name__}: {_first_line(exc)}")
                done += 1
                if progress:
                    progress(done, len(sets))
        return [r for r in rows if r is not None]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


# --- a two-node cluster on this machine ---------------------------------------------------


def free_port(taken: set[int]) -> int:
    """A loopback TCP port the kernel says is free now and not in ``taken`` (then added to it)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in taken:
            taken.add(port)
            return port


class LocalCluster:
    """A Ray head and ``nodes - 1`` more nodes on this machine, each its own ``ray start`` process group and temp dir.

    For tests and benchmarks: every node has its own ports (GCS, agents,
    workers) so that two clusters on one machine do not meet; ``stop`` kills
    exactly the processes it started (their groups, and every process under
    their raylets: workers make groups of their own), never another ray.
    """

    def __init__(self, root: Path, nodes: int = 2, cpus: int = 1, object_store_bytes: int = 80_000_000) -> None:
        self.root, self.nodes, self.cpus, self.object_store_bytes = root, nodes, cpus, object_store_bytes
        self._ports: set[int] = set()
        self.port = free_port(self._ports)
        self.address = f"127.0.0.1:{self.port}"
        self.groups: list[int] = []  # one process group per node, in start order
        self.env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}

    def _port(self) -> int:
        return free_port(self._ports)

    @property
    def ray(self) -> str:
        return str(Path(sys.executable).with_name("ray"))

    def _start_node(self, n: int) -> None:
        temp = self.root / f"n{n}"
        args = [self.ray, "start", f"--num-cpus={self.cpus}", "--disable-usage-stats", f"--temp-dir={temp}",
                f"--object-store-memory={self.object_store_bytes}", "--node-ip-address=127.0.0.1",
                f"--dashboard-agent-listen-port={self._port()}", f"--dashboard-agent-grpc-port={self._port()}",
                f"--runtime-env-agent-port={self._port()}", f"--metrics-export-port={self._port()}",
                f"--node-manager-port={self._port()}", f"--object-manager-port={self._port()}",
                "--min-worker-port=0", "--max-worker-port=0"]  # workers: ports the kernel picks
        if n == 0:
            args += ["--head", f"--port={self.port}", "--include-dashboard=false", f"--ray-client-server-port={self._port()}"]
        else:
            args += [f"--address={self.address}"]
        env = {**os.environ, **self.env}
        log = (self.root / f"start-{n}.log").open("wb")
        with log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            self.groups.append(proc.pid)
            code = proc.wait(timeout=60)
        if code != 0:
            raise ClusterError(f"ray start of node {n} exited {code}: {(self.root / f'start-{n}.log').read_text()[-2000:]}")

    def start(self) -> LocalCluster:
        """Start the head, then the other nodes; stops what started if one fails."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            for n in range(self.nodes):
                self._start_node(n)
        except BaseException:
            self.stop()
            raise
        return self

    def processes(self, node: int | None = None) -> list[psutil.Process]:
        """The live processes of one node (or all): its group's and everything under its raylet."""
        found: dict[int, psutil.Process] = {}
        for n, group in enumerate(self.groups):
            if node is not None and n != node:
                continue
            for proc in psutil.process_iter(["pid", "status"]):
                try:
                    if os.getpgid(proc.pid) == group and proc.info["status"] != psutil.STATUS_ZOMBIE:
                        found[proc.pid] = proc
                        for child in proc.children(recursive=True):
                            if child.status() != psutil.STATUS_ZOMBIE:
                                found[child.pid] = child
                except (ProcessLookupError, psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
        return list(found.values())

    def kill_node(self, node: int) -> None:
        """Kill one node at once (SIGKILL to its raylet, agents and workers), as a machine that dies."""
        for proc in self.processes(node):
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs(self.processes(node), timeout=5)

    def stop(self) -> None:
        """Kill every process of every node (the other nodes before the head) and wait until they are gone."""
        for node in reversed(range(len(self.groups))):
            procs = self.processes(node)
            for proc in procs:
                try:
                    proc.send_signal(signal.SIGKILL)
                except psutil.NoSuchProcess:
                    continue
            psutil.wait_procs(procs, timeout=10)
        deadline = time.monotonic() + 10
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.1)
