"""/metrics: the firm's figures in the Prometheus text format, read from the state at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dashboard.state import FirmState


class FirmCollector(Collector):
    """Per-process and per-agent gauges, order and reject counts, bus rates and gaps."""

    def __init__(self, state: FirmState, now_ns: Callable[[], int]) -> None:
        self.state = state
        self.now_ns = now_ns

    def collect(self) -> Iterator[Metric]:
        """Build every family from one consistent read of the state."""
        f = self.state.metric_families(self.now_ns())
        up = GaugeMetricFamily("trader_process_up", "1 if the process's heartbeat is fresh", labels=["process"])
        age = GaugeMetricFamily("trader_process_heartbeat_age_seconds", "Seconds since the last heartbeat", labels=["process"])
        cpu = GaugeMetricFamily("trader_process_cpu_percent", "CPU use reported in the heartbeat", labels=["process"])
        rss = GaugeMetricFamily("trader_process_rss_bytes", "Resident memory reported in the heartbeat", labels=["process"])
        for p in f["processes"]:
            up.add_metric([p["name"]], 1.0 if p["up"] else 0.0)
            if p["heartbeat_age_s"] is not None:
                age.add_metric([p["name"]], p["heartbeat_age_s"])
            cpu.add_metric([p["name"]], p["cpu_pct"])
            rss.add_metric([p["name"]], p["rss_mb"] * 2**20)
        yield from (up, age, cpu, rss)
        agent_figures = {
            "cash_won": "Cash of the agent's book (won)",
            "holding": "Shares held in the agent's code",
            "realized_pnl_won": "Realised PnL (won)",
            "unrealized_pnl_won": "Unrealised PnL (won)",
            "open_orders": "Open orders",
        }
        for key, text in agent_figures.items():
            fam = GaugeMetricFamily(f"trader_agent_{key}", text, labels=["agent", "code"])
            for row in f["agents"]:
                if isinstance(row.get(key), (int, float)):
                    fam.add_metric([row["id"], row["code"]], float(row[key]))
            yield fam
        agent_up = GaugeMetricFamily("trader_agent_up", "1 if the agent's heartbeat is fresh", labels=["agent"])
        for row in f["agents"]:
            agent_up.add_metric([row["id"]], 1.0 if row["up"] else 0.0)
        yield agent_up
        orders = GaugeMetricFamily("trader_orders", "Orders seen on the bus by their latest state", labels=["state"])
        for status, n in sorted(f["orders_by_state"].items()):
            orders.add_metric([status], n)
        yield orders
        rejects = CounterMetricFamily("trader_order_rejects", "Orders rejected, by reason code", labels=["reason"])
        for reason, n in sorted(f["rejects"].items()):
            rejects.add_metric([reason], n)
        yield rejects
        msgs = CounterMetricFamily("trader_bus_messages", "Bus messages received, by topic class", labels=["topic"])
        rate = GaugeMetricFamily("trader_bus_rate_per_second", "Bus messages per second, by topic class", labels=["topic"])
        for topic, n in sorted(f["msg_counts"].items()):
            msgs.add_metric([topic], n)
            rate.add_metric([topic], f["rates"].get(topic, 0.0))
        yield from (msgs, rate)
        gaps = CounterMetricFamily("trader_bus_gap_messages", "Messages missed (sequence gaps), by sender", labels=["sender"])
        for sender, n in sorted(f["gaps"].items()):
            gaps.add_metric([sender], n)
        yield gaps
        bad = CounterMetricFamily("trader_bus_bad_frames", "Frames dropped as undecodable, by reason", labels=["reason"])
        for reason, n in sorted(f["bad_frames"].items()):
            bad.add_metric([reason], n)
        yield bad
        alerts = CounterMetricFamily("trader_alerts", "Alerts seen on sys.alert, by level", labels=["level"])
        for level, n in sorted(f["alerts"].items()):
            alerts.add_metric([level], n)
        yield alerts
