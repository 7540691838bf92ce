"""Agents forked from the warm parent (``agents.zygote``) under a real supervisor and bus proxy: each agent its own
process (own pid lock, own ZeroMQ context, the supervisor's child), kill -9 of one touches no other, the parent's
death loses no agent, and a parent that cannot start leaves agents started the old way with an alert."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from bus.pidlock import cmdline_of
from core.config import PROJECT_ROOT
from tests.cli.conftest import Supervised, sma, wait_for
from tests.ports import free_port

AGENTS = ("fa", "fb", "fc")
PARENTS_READING = "the agent parent's reading"


def status(s: Supervised) -> dict[str, Any]:
    """The supervisor's ``status`` answer, asked the way the CLI asks it."""
    code = "import json; from services.cli.ops import supervisor_call; print(json.dumps(supervisor_call('status')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=s.env, capture_output=True, text=True,
                         timeout=30, check=True)
    return json.loads(out.stdout)


def heartbeating(s: Supervised, ids: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The ``ps`` rows once every agent of ``ids`` runs and heartbeats from its current pid ({} until then)."""
    rows = s.ps()
    ok = all(rows.get(a, {}).get("state") == "running" and rows[a].get("heartbeat_age_s") is not None
             and rows[a].get("sync") is not None for a in ids)
    return rows if ok else {}


def log_of(s: Supervised, name: str) -> str:
    path = s.run_dir / "logs" / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def start(tmp: Path, extra_env: dict[str, str] | None = None) -> Supervised:
    s = Supervised(tmp)
    s.roster.write_text("".join(sma(a, "005930", free_port()) for a in AGENTS))
    s.env.update(extra_env or {})
    s.start("bus", "bus.proxy")
    s.start("supervisor", "services.supervisor")
    return s


@pytest.fixture(scope="module")
def forked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervised]:
    s = start(tmp_path_factory.mktemp("parent"))
    try:
        wait_for(lambda: heartbeating(s, AGENTS), 60, "every agent heartbeating")
        yield s
    finally:
        s.close()
        parent = _parent_pids(s)
        for pid in parent:
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass


def _parent_pids(s: Supervised) -> list[int]:
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if "agents.zygote" in " ".join(cmdline_of(p)) and p.environ().get("TRADER_RUN_DIR") == str(s.run_dir):
                found.append(p.pid)
        except psutil.Error:
            continue
    return found


def test_every_agent_is_forked_from_the_parent_and_is_a_process_of_its_own(forked: Supervised) -> None:
    rows = heartbeating(forked, AGENTS)
    supervisor = forked.procs["supervisor"].pid
    parent = status(forked)["agent_parent"]
    assert parent["enabled"] and parent["subreaper"] and parent["forked_agents"] == len(AGENTS)
    pids = set()
    for a in AGENTS:
        row = rows[a]
        assert row["forked"] is True, row
        proc = psutil.Process(row["pid"])
        assert proc.ppid() == supervisor, "once the parent's middle process exits, the agent is the supervisor's child"
        cmd = cmdline_of(proc)
        assert cmd[1:5] == ["-m", "agents.runtime", "--id", a], cmd
        assert proc.environ().get("TRADER_RUN_DIR") == str(forked.run_dir), "its environment block stays readable"
        lock = json.loads((forked.run_dir / "run" / f"{a}.pid").read_text())
        assert lock["pid"] == row["pid"] and "agents.runtime" in lock["cmdline"], lock
        assert proc.num_threads() >= 2, "its own ZeroMQ context (an I/O thread) was created after the fork"
        assert os.getpgid(row["pid"]) == row["pid"], "a process group of its own, like an agent started by fork and exec"
        assert os.getsid(row["pid"]) == os.getsid(parent["pid"]), "in the parent's session: the agents' scheduling group"
        assert proc.nice() == min(19, psutil.Process(supervisor).nice() + 19), "agents run nicer than the back office"
        autogroup = Path(f"/proc/{row['pid']}/autogroup")  # where the kernel schedules by session groups
        if autogroup.exists():
            assert autogroup.read_text().split()[-1] == "19", "the agents' group is as nice as they are"
        assert not [f.path for f in proc.open_files() if "agent-parent" in f.path or "supervisor" in f.path]
        assert row["uss_bytes"] > 0 and row["uss_bytes"] < row["rss_bytes"] / 2, "the imported code is shared"
        pids.add(row["pid"])
        assert f"forked from the agent parent, pid {parent['pid']}" in log_of(forked, a)
        assert PARENTS_READING in log_of(forked, a), "the settings and roster the parent read, not read again"
    zygote = psutil.Process(parent["pid"])
    assert zygote.ppid() == supervisor and zygote.num_threads() == 1, "no thread in the parent: nothing lost in a fork"
    assert zygote.net_connections(kind="all") == [], "no socket of any kind in the parent"
    assert [Path(f.path).name for f in zygote.open_files()] == ["agent-parent.log"], "its stderr, no file of the stack"
    assert len(pids) == len(AGENTS)


def test_kill_9_of_one_agent_touches_no_other_and_it_comes_back_forked(forked: Supervised) -> None:
    before = heartbeating(forked, AGENTS)
    victim = before["fa"]["pid"]
    os.kill(victim, signal.SIGKILL)
    after = wait_for(lambda: (r := heartbeating(forked, AGENTS)) and r["fa"]["pid"] != victim and r, 60,
                     "fa restarted under a new pid")
    assert after["fa"]["forked"] is True
    assert [after[a]["pid"] for a in ("fb", "fc")] == [before[a]["pid"] for a in ("fb", "fc")]
    assert not psutil.pid_exists(victim) or psutil.Process(victim).status() != psutil.STATUS_ZOMBIE, "reaped"
    assert "agent fa died unexpectedly (exit code -9)" in log_of(forked, "supervisor"), "its exit code is known"


def test_the_parents_death_loses_no_agent_and_a_new_parent_takes_over(forked: Supervised) -> None:
    before = heartbeating(forked, AGENTS)
    old = status(forked)["agent_parent"]["pid"]
    os.kill(old, signal.SIGKILL)
    new = wait_for(lambda: (p := status(forked)["agent_parent"]["pid"]) not in (None, old) and p, 30, "a new parent")
    assert "agent_parent_died" in log_of(forked, "supervisor")
    rows = wait_for(lambda: heartbeating(forked, AGENTS), 30, "the agents heartbeating")
    assert {a: rows[a]["pid"] for a in AGENTS} == {a: before[a]["pid"] for a in AGENTS}, "no agent was touched"
    out = forked.trader("restart", "fb")
    assert out.returncode == 0, out.stdout + out.stderr
    rows = wait_for(lambda: (r := heartbeating(forked, AGENTS)) and r["fb"]["pid"] != before["fb"]["pid"] and r, 60,
                    "fb restarted")
    assert rows["fb"]["forked"] is True
    assert f"forked from the agent parent, pid {new}" in log_of(forked, "fb")


def test_an_agent_started_after_the_roster_changed_reads_the_roster_itself(forked: Supervised) -> None:
    before = heartbeating(forked, AGENTS)
    log = log_of(forked, "fc")
    old_dp = int(forked.roster.read_text().split('id = "fc"')[1].split("dp = ")[1].split()[0])
    new_dp = free_port()
    text = forked.roster.read_text()  # fc moves its status page: the parent read the old port
    forked.roster.write_text(text.replace(f'id = "fc"\ncode = "005930"\ndp = {old_dp}',
                                          f'id = "fc"\ncode = "005930"\ndp = {new_dp}'))
    assert forked.roster.read_text() != text
    out = forked.trader("restart", "fc")
    assert out.returncode == 0, out.stdout + out.stderr
    rows = wait_for(lambda: (r := heartbeating(forked, AGENTS)) and r["fc"]["pid"] != before["fc"]["pid"] and r, 60,
                    "fc restarted")
    assert rows["fc"]["forked"] is True
    since = log_of(forked, "fc")[len(log):]
    assert "forked from the agent parent" in since and PARENTS_READING not in since, since
    page = wait_for(lambda: _page(new_dp), 30, "fc's status page on its new port")
    assert page["dp"] == new_dp and page["pid"] == rows["fc"]["pid"], page


def _page(port: int) -> dict[str, Any] | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/status", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return None


def test_a_parent_that_cannot_start_leaves_agents_started_the_old_way_with_an_alert(tmp_path: Path) -> None:
    s = start(tmp_path, {"TRADER_SUPERVISOR__AGENT_PARENT_READY_S": "0.001"})
    try:
        rows = wait_for(lambda: heartbeating(s, AGENTS), 60, "every agent heartbeating")
        assert not any(rows[a]["forked"] for a in AGENTS)
        for a in AGENTS:
            assert cmdline_of(psutil.Process(rows[a]["pid"]))[1:3] == ["-m", "agents.runtime"]
            assert psutil.Process(rows[a]["pid"]).nice() == min(19, psutil.Process(s.procs["supervisor"].pid).nice() + 19)
        text = log_of(s, "supervisor")
        assert "alert agent_parent_failed" in text and "did not answer within" in text, text[-2000:]
        assert status(s)["agent_parent"]["forked_agents"] == 0
    finally:
        s.close()
        for pid in _parent_pids(s):
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass


def test_the_agents_group_nice_is_written_once_and_a_refusal_is_said_and_tried_again(tmp_path: Path,
                                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from agents import zygote

    zygote._group_nice_set.clear()
    group = tmp_path / "autogroup"
    group.write_text("/autogroup-1 nice 0\n")
    assert zygote.group_nice(19, str(group)) is None
    assert group.read_text() == "19"
    group.write_text("untouched")
    assert zygote.group_nice(19, str(group)) is None and group.read_text() == "untouched", "written once"
    assert zygote.group_nice(19, str(tmp_path / "absent")) is None, "no autogroups: a nice already counts everywhere"
    zygote._group_nice_set.clear()
    refused = zygote.group_nice(10, str(tmp_path))  # a directory: the write fails as a refused one does
    assert refused is not None and "tried again with the next agent" in refused
    assert refused in capsys.readouterr().err
    assert zygote.group_nice(10, str(group)) is None and group.read_text() == "10", "the next agent tries again"
    zygote._group_nice_set.clear()
    bad = {"argv": [sys.executable, "-m", "agents.runtime"], "env": {}, "cwd": "/", "log": str(tmp_path / "a.log")}
    for nice in ("19", 20, -1, True):
        assert zygote.answer(json.dumps({**bad, "nice": nice})) == {"error": f"nice is 0-19, not {nice!r}"}
