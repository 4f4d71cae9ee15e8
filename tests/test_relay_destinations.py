"""The onward scheduler's pure parts: per-destination window, dead-destination back-off, round-robin."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.queue.destinations import DEAD, DEFERRED, OK, DestinationState, RoundRobin


def dest(**kw) -> DestinationState:
    return DestinationState("mx.example:25", **{"cap": 8, "initial": 2, "dead_after": 3,
                                                 "backoff_base": 60.0, "backoff_max": 1800.0, **kw})


def test_window_starts_at_initial_and_grows_by_one_per_delivery_up_to_cap():
    d = dest()
    assert d.limit() == 2
    for expected in (3, 4, 5, 6, 7, 8, 8, 8):
        d.message_delivered()
        assert d.limit() == expected
    assert d.delivered == 8


def test_initial_window_never_exceeds_the_cap():
    assert dest(cap=1, initial=5).limit() == 1


def test_failure_halves_the_window_but_never_below_one():
    d = dest(initial=8)
    d.connection_failed(0.0, "refused")
    assert d.limit() == 4
    d.connected()  # a good connection resets the failure count, not the window
    d.connection_failed(1.0, "refused")
    assert d.limit() == 2
    d.connected()
    d.connection_failed(2.0, "refused")
    d.connected()
    d.connection_failed(3.0, "refused")
    assert d.limit() == 1 and not d.is_dead(3.0)


def test_may_open_counts_active_connections():
    d = dest()
    assert d.may_open(0.0)
    d.opening()
    d.opening()
    assert not d.may_open(0.0)
    d.closed()
    assert d.may_open(0.0)
    d.closed()
    d.closed()  # never negative
    assert d.active == 0


def test_dead_after_n_failures_in_a_row_with_doubling_backoff():
    d = dest()
    assert not d.connection_failed(100.0, "connect to x failed: connection refused")
    assert not d.connection_failed(101.0, "again")
    assert d.connection_failed(102.0, "third") is True
    assert d.is_dead(102.0) and d.dead_until == 162.0 and not d.may_open(150.0)
    assert d.status(150.0) == DEAD and d.last_error == "third"
    # after the dead period one probe: a failure kills it again, for twice as long
    assert d.may_open(162.0) and d.limit() == 1
    assert d.connection_failed(163.0, "probe failed")
    assert d.dead_until == 163.0 + 120.0
    # a good probe revives it and resets the back-off
    d.connected()
    assert d.connection_failed(400.0, "x") is False
    d.connection_failed(401.0, "x")
    assert d.connection_failed(402.0, "x") and d.dead_until == 462.0


def test_backoff_is_capped():
    d = dest(dead_after=1, backoff_base=60.0, backoff_max=200.0)
    for i in range(6):
        d.connection_failed(1000.0 * i, "x")
    assert d.dead_until - 5000.0 == 200.0


def test_revive_makes_a_dead_destination_usable_now():
    d = dest(dead_after=1)
    d.connection_failed(10.0, "x")
    assert d.is_dead(11.0)
    d.revive()
    assert not d.is_dead(11.0) and d.may_open(11.0) and d.limit() == 2


def test_deferred_until_is_the_earliest_future_retry():
    d = dest()
    assert d.status(0.0) == OK and d.deferred_until(0.0) == 0.0
    d.waiting("Q1", 500.0)
    d.waiting("Q2", 300.0)
    assert d.deferred_until(100.0) == 300.0 and d.status(100.0) == DEFERRED
    assert d.deferred_until(400.0) == 500.0
    d.forget("Q1")
    assert d.deferred_until(400.0) == 0.0 and d.status(400.0) == OK


def test_snapshot_is_plain_data():
    d = dest(dead_after=1)
    d.domains.add("example")
    d.connection_failed(10.0, "connect to mx.example:25 failed: timed out")
    snap = d.snapshot(11.0, queued=3, sending=1, idle=0)
    assert snap["state"] == "dead" and snap["dead_until"] == 70.0 and snap["queued"] == 3
    assert snap["domains"] == ["example"] and snap["last_error"].endswith("timed out")
    assert d.snapshot(80.0)["dead_until"] is None


def test_round_robin_serves_each_waiter_once_per_round():
    rr = RoundRobin()
    for k in ("a", "b", "a", "c"):
        rr.want(k)
    assert len(rr) == 3
    assert [rr.next() for _ in range(3)] == ["a", "b", "c"]
    assert not rr
    rr.want("b")
    rr.want("c")
    rr.drop("b")
    assert rr.next() == "c" and not rr


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["ok", "fail", "open", "close", "connected"]), max_size=60),
       st.integers(1, 10), st.integers(1, 10), st.integers(1, 5))
def test_window_stays_within_bounds(events, cap, initial, dead_after):
    d = dest(cap=cap, initial=initial, dead_after=dead_after)
    now = 0.0
    for ev in events:
        now += 1.0
        if ev == "ok":
            d.message_delivered()
        elif ev == "fail":
            d.connection_failed(now, "x")
        elif ev == "open":
            d.opening()
        elif ev == "close":
            d.closed()
        else:
            d.connected()
        assert 1 <= d.limit() <= cap
        assert d.active >= 0
        assert d.dead_until <= now + d.backoff_max


def test_delivery_keys_in_relay_toml():
    import pytest

    from relay.config import DeliveryConfig, parse_config
    from relay.errors import ConfigError
    from relay.remote import timeouts_for

    d = parse_config("", None, "/tmp/x").delivery
    assert d == DeliveryConfig()
    assert (d.greeting_timeout, d.command_timeout, d.data_timeout, d.data_block_timeout, d.data_done_timeout) == \
        (300.0, 300.0, 120.0, 180.0, 600.0)  # RFC 5321 4.5.3.2
    cfg = parse_config('[delivery]\ninitial_concurrency = 1\nmax_connections = 7\ndead_after = 5\n'
                       'greeting_timeout = "2s"\ndata_done_timeout = "1m"\n', None, "/tmp/x")
    assert (cfg.delivery.initial_concurrency, cfg.delivery.max_connections, cfg.delivery.dead_after) == (1, 7, 5)
    t = timeouts_for(cfg)
    assert (t.greeting, t.data_done, t.command, t.connect) == (2.0, 60.0, 300.0, 30.0)
    # one source for the defaults: the wire's Timeouts() are relay.toml's [delivery] defaults
    from relay.smtp_client import Timeouts
    assert Timeouts() == Timeouts.from_config(d) == timeouts_for(parse_config("", None, "/tmp/x"))
    with pytest.raises(ConfigError, match="delivery.greeting_timeout"):
        parse_config('[delivery]\ngreeting_timeout = "soon"\n', None, "/tmp/x")
    with pytest.raises(ConfigError, match="delivery.dead_after"):
        parse_config('[delivery]\ndead_after = 0\n', None, "/tmp/x")
