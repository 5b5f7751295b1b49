"""The two policies that face hostile load, driven in simulated time: the gateway's
per-source token bucket (nodes.flood) and the IdMS's login throttle
(emulator.identity.lockout)."""

from __future__ import annotations

from emulator.identity.lockout import LoginThrottle
from emulator.sip import Headers
from emulator.sip import Request
from emulator.topology.model import FloodLimit
from emulator.topology.model import LoginLimit
from emulator.topology.model import OverloadLimit
from nodes.flood import SourcePolicer
from nodes.flood import Verdict
from nodes.overload import OverloadGate

FLOOD = FloodLimit(rate=10.0, burst=20, retry_after=5, max_sources=100)


def test_a_flooding_source_is_refused_then_dropped_and_a_quiet_one_never_is() -> None:
    policer = SourcePolicer(FLOOD)
    verdicts = [policer.check("127.0.60.66", now=0.0) for _ in range(100)]
    assert verdicts[:20] == [Verdict.PASS] * 20  # the burst
    assert verdicts[20:40] == [Verdict.REFUSE] * 20  # 503s, as many as the burst...
    assert set(verdicts[40:]) == {Verdict.DROP}  # ...then silence, before any parsing
    # Meanwhile a UE sending 5 messages a second (under its rate) passes every time.
    for tick in range(200):
        assert policer.check("127.0.60.1", now=tick * 0.2) is Verdict.PASS
        policer.check("127.0.60.66", now=tick * 0.2)  # the flood goes on
    assert policer.refused >= 20 and policer.dropped > 0


def test_a_bucket_refills_at_the_rate_and_never_beyond_the_burst() -> None:
    policer = SourcePolicer(FLOOD)
    for _ in range(20):
        policer.check("127.0.60.2", now=0.0)
    assert policer.check("127.0.60.2", now=0.0) is Verdict.REFUSE
    # 0.5 s later: 5 tokens back.
    assert [policer.check("127.0.60.2", now=0.5) for _ in range(6)] == \
        [Verdict.PASS] * 5 + [Verdict.REFUSE]
    # An hour of silence refills to the burst, not to 36,000.
    passes = sum(policer.check("127.0.60.2", now=3600.0) is Verdict.PASS for _ in range(50))
    assert passes == 20


def test_the_bucket_table_is_bounded() -> None:
    policer = SourcePolicer(FLOOD)
    for n in range(1000):
        policer.check(f"127.1.{n // 256}.{n % 256}", now=n / 1000)
    assert len(policer) == FLOOD.max_sources


def test_a_bucket_idle_until_refilled_is_let_go_and_a_busy_one_kept() -> None:
    """10,000 registered UEs, each heard from once, leave no bucket once they are quiet:
    a full bucket is what a source never heard from gets anyway."""
    policer = SourcePolicer(FLOOD)
    for _ in range(30):
        policer.check("127.0.60.66", now=0.0)  # a flooder, 10 over its burst
    for n in range(50):
        policer.check(f"127.1.0.{n}", now=0.5)
    assert len(policer) == 51
    # 2 s (burst / rate) after the flood's last message: its bucket is full again.
    assert policer.check("127.1.1.1", now=2.0) is Verdict.PASS
    assert len(policer) == 51  # the flooder's went; the others are not full yet
    assert policer.check("127.1.1.1", now=2.6) is Verdict.PASS
    assert len(policer) == 1
    # Forgetting changed nothing a source could notice: the flooder starts full.
    assert [policer.check("127.0.60.66", now=2.6) for _ in range(21)][-2:] == \
        [Verdict.PASS, Verdict.REFUSE]


LOGIN = LoginLimit(max_failures=5, window=300.0, lockout=60.0, slowdown=0.5,
                   max_tracked=100)


def test_failures_slow_down_then_lock_the_user_out_until_the_lockout_ends() -> None:
    throttle = LoginThrottle(LOGIN)
    delays = []
    for n in range(4):
        assert throttle.locked("alice", f"127.0.60.{n}", now=float(n)) is None
        delay, started = throttle.failed("alice", f"127.0.60.{n}", now=float(n))
        delays.append(delay)
        assert started == []
    assert delays == [0.0, 0.5, 1.0, 2.0]
    delay, started = throttle.failed("alice", "127.0.60.9", now=4.0)
    assert delay == 4.0 and [s.key for s in started] == ["user:alice"]
    locked = throttle.locked("alice", "127.0.60.10", now=30.0)  # from anywhere
    assert locked is not None and locked.remaining == 34.0
    assert throttle.locked("bob", "127.0.60.10", now=30.0) is None  # others log in
    assert throttle.locked("alice", "127.0.60.10", now=64.5) is None  # it ended
    assert throttle.lockouts == 1


def test_one_source_guessing_many_users_is_locked_out_by_source() -> None:
    throttle = LoginThrottle(LOGIN)
    for n in range(5):
        _, started = throttle.failed(f"user{n}", "127.0.60.66", now=float(n))
    assert [s.key for s in started] == ["source:127.0.60.66"]
    assert throttle.locked("alice", "127.0.60.66", now=10.0) is not None
    assert throttle.locked("alice", "127.0.60.1", now=10.0) is None


def test_failures_outside_the_window_and_after_a_success_do_not_count() -> None:
    throttle = LoginThrottle(LOGIN)
    for n in range(4):
        throttle.failed("alice", "127.0.60.1", now=n * 100.0)  # spread over 300 s+
    _, started = throttle.failed("alice", "127.0.60.1", now=400.0)
    assert started == []  # only 4 within any 300 s
    throttle.succeeded("alice", "127.0.60.1")
    assert throttle.failed("alice", "127.0.60.1", now=401.0) == (0.0, [])


def test_the_throttle_table_is_bounded() -> None:
    throttle = LoginThrottle(LOGIN)
    for n in range(1000):
        throttle.failed(f"user{n}", f"127.1.{n // 256}.{n % 256}", now=float(n))
    assert len(throttle) == LOGIN.max_tracked


# -- overload control (nodes/overload.py) -----------------------------------------------

def _request(to_tag: str | None = None, method: str = "REGISTER") -> Request:
    to = "<sip:alice@partner.example>" + (f";tag={to_tag}" if to_tag else "")
    return Request(method, "sip:partner.example", Headers([
        ("Via", "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKov"), ("Max-Forwards", 70),
        ("From", "<sip:alice@partner.example>;tag=a"), ("To", to),
        ("Call-ID", "ov"), ("CSeq", f"1 {method}")]))


def test_a_burst_or_a_pause_does_not_shed_a_standing_queue_does() -> None:
    gate = OverloadGate(OverloadLimit(target=0.05, interval=0.2))
    # A garbage collection's worth of backlog: waits above target, drained within 0.2 s.
    for step in range(10):
        gate.observe(0.08, now=step * 0.015)
    gate.observe(0.01, now=0.16)
    gate.observe(0.09, now=0.3)  # another, shorter one
    gate.observe(0.02, now=0.35)
    assert not gate.shedding and not gate.refuses(_request())
    # A queue that stands: above target from 1.0 s on, for the interval.
    gate.observe(0.2, now=1.0)
    gate.observe(0.3, now=1.19)
    assert not gate.shedding
    gate.observe(0.3, now=1.25)
    assert gate.shedding and gate.episodes == 1
    assert gate.refuses(_request()) and gate.shed == 1
    # One datagram read within target ends it.
    gate.observe(0.04, now=1.3)
    assert not gate.shedding and not gate.refuses(_request())
    assert gate.state() == {"shedding": False, "shed": 1, "episodes": 1, "wait_ms": 40.0}


def test_shedding_spares_dialogs_acks_and_cancels_and_can_be_switched_off() -> None:
    gate = OverloadGate(OverloadLimit(target=0.05, interval=0.0))
    gate.observe(1.0, now=0.0)
    assert gate.shedding
    assert gate.refuses(_request(method="INVITE"))
    assert not gate.refuses(_request(to_tag="b", method="BYE"))
    assert not gate.refuses(_request(method="ACK"))
    assert not gate.refuses(_request(method="CANCEL"))
    off = OverloadGate(OverloadLimit(enabled=False, interval=0.0))
    off.observe(10.0, now=0.0)
    assert not off.shedding and not off.refuses(_request())
