"""The venue protocol: how the firm talks to the one venue process it trades through.

A venue is the process that stands for the market and the broker: the paper
exchange (``services.exchange``) or the KIS gateway (``services.kis_gateway``),
whichever ``broker.kind`` names. The order manager, the market-data feed and
the reconciler speak only this protocol (through ``services.broker.venue``),
so nothing else in the firm changes with the venue.

Requests: a ROUTER on the ``exchange_rpc`` endpoint (RPC envelopes of
``bus.rpc``; an order carries its client order id as the idempotency key)

=================  ===============================  =============================================
request            arguments                        answer
=================  ===============================  =============================================
``OrderRequest``   the order                        ``OrderEvent`` ACCEPTED (broker order id) or
                                                    REJECTED (reason); the same id twice is one
                                                    order (the second answer is its record)
``CancelRequest``  client order id, qty (0 = all)   ``OrderEvent`` CANCELED / CANCEL_PENDING, or
                                                    REJECTED with the reason; an order the venue
                                                    never saw: ``CommandResult`` UNKNOWN_ORDER
``ping``           -                                {ts_ns, trading_date, session, clock_speed,
                                                    venue}
``account``        -                                {cash_won, buying_power_won, ...} (won)
``positions``      -                                {code: {qty, avg_price}}
``open_orders``    -                                [OrderEvent as dict]
``orders_today``   {trading_date?}                  [OrderEvent as dict]: every order of the day
``fills_today``    {trading_date?}                  [Fill as dict]: every execution, venue exec ids
``order_status``   {client_order_id}                OrderEvent as dict, or None (never arrived)
``quote``          {code}                           {last, bid, ask, tick, upper, lower, ...}
``fault``          venue specific                   what was injected (tests and chaos runs)
=================  ===============================  =============================================

Commands are ``core.messages.Command`` named as above and answered with a
``CommandResult`` (``ok`` False with a ``reason_code`` when refused).

Notices and market data: a PUB on the ``exchange_feed`` endpoint

* ``exec.event`` ``OrderEvent`` and ``exec.fill`` ``Fill``: what happened to
  an order after its answer (fills, cancels, expiry). A venue may send a
  notice before the answer to the request that caused it, or twice; the
  order manager applies each once (fills by execution id).
* ``md.session`` ``SessionEvent`` (and again once a second with the
  heartbeat, so a late joiner learns the session), ``md.tick.<code>``
  ``Tick``, ``md.bar.1m.<code>`` ``Bar``, ``md.flow.<code>`` ``InvestorFlow``
  (the day's running totals by investor class, provisional or final).
* ``md.quote.<code>`` ``Quote``: the code's book, best bid and ask and up to
  10 levels a side, when it changes (and a VI in force).
* ``md.fund.<code>`` ``Fundamentals``: an earnings announcement (EPS, BPS,
  DPS), when the venue learns it and again at each pre-open.
* ``md.ref.<code>`` ``DayReference``: the code's base price and limits for
  the trading day, as the venue has them (the paper exchange's day, KIS's
  inquire-price), sent when the venue learns them and again every
  ``REFERENCE_REPEAT_S`` seconds, so a late joiner learns them too.
* ``sys.heartbeat.venue`` ``Heartbeat`` once a second: a feed silent for a
  few heartbeats counts as dropped.

Execution ids are the venue's and stable: the same execution seen twice (a
notice and a query) carries the same id.
"""

from __future__ import annotations

EXEC_EVENT_TOPIC = "exec.event"
EXEC_FILL_TOPIC = "exec.fill"
EXEC_TOPIC_PREFIX = "exec."
SESSION_TOPIC = "md.session"
MARKET_TOPIC_PREFIX = "md."
FEED_HEARTBEAT_TOPIC = "sys.heartbeat.venue"

QUERIES = ("ping", "clock", "account", "positions", "open_orders", "orders_today", "fills_today", "order_status",
           "quote")

# reason codes of refused requests
UNKNOWN_COMMAND = "UNKNOWN_COMMAND"
UNKNOWN_REQUEST = "UNKNOWN_REQUEST"
UNKNOWN_ORDER = "UNKNOWN_ORDER"
UNKNOWN_CODE = "UNKNOWN_CODE"
BAD_ARGS = "BAD_ARGS"


def tick_topic(code: str) -> str:
    """The topic of a code's trades."""
    return f"md.tick.{code}"


def bar_topic(code: str) -> str:
    """The topic of a code's 1-minute bars."""
    return f"md.bar.1m.{code}"


REFERENCE_REPEAT_S = 2.0  # how often a venue repeats the day's references on its feed


def reference_topic(code: str) -> str:
    """The topic of a code's reference price and limits for the day."""
    return f"md.ref.{code}"


def flow_topic(code: str) -> str:
    """The topic of a code's investor flows."""
    return f"md.flow.{code}"


def quote_topic(code: str) -> str:
    """The topic of a code's order book (best bid and ask and the levels behind them)."""
    return f"md.quote.{code}"


def fundamentals_topic(code: str) -> str:
    """The topic of a code's earnings announcements (EPS, BPS, DPS)."""
    return f"md.fund.{code}"
