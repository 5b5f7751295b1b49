"""RFC 3261 timer values (§17, Table 4) and RFC 6026 Timers L and M.

All values are in seconds.  T1, T2 and T4 are configurable (§17.1.1.1 allows
a smaller T1 on networks known to be fast; the tests shrink them to run in
microseconds of simulated time).  Reliable transports set the "wait"
timers (D, I, J, K) to zero and never retransmit (Timers A, E and G are not
armed: §17.1.1.2, §17.1.2.2, §17.2.1).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """Base timer values; every transaction timer is derived from these."""

    t1: float = 0.5
    """RTT estimate (§17.1.1.1); 500 ms by default."""
    t2: float = 4.0
    """Maximum retransmit interval for non-INVITE requests and INVITE responses."""
    t4: float = 5.0
    """Maximum duration a message will remain in the network."""

    # -- client INVITE (§17.1.1.2, Figure 5) --
    def timer_a(self) -> float:
        """Initial INVITE retransmit interval, UDP only; doubles each time."""
        return self.t1

    def timer_b(self) -> float:
        """INVITE transaction timeout: 64*T1."""
        return 64 * self.t1

    def timer_d(self, reliable: bool) -> float:
        """Wait time for response retransmits: at least 32 s on UDP, 0 on reliable."""
        return 0.0 if reliable else max(32.0, 64 * self.t1)

    def timer_m(self) -> float:
        """RFC 6026 §8.4: wait time for retransmitted 2xx in the Accepted state."""
        return 64 * self.t1

    # -- client non-INVITE (§17.1.2.2, Figure 6) --
    def timer_e(self) -> float:
        """Initial non-INVITE retransmit interval, UDP only; doubles up to T2."""
        return self.t1

    def timer_f(self) -> float:
        """Non-INVITE transaction timeout: 64*T1."""
        return 64 * self.t1

    def timer_k(self, reliable: bool) -> float:
        """Wait time for response retransmits: T4 on UDP, 0 on reliable."""
        return 0.0 if reliable else self.t4

    # -- server INVITE (§17.2.1, Figure 7) --
    def timer_g(self) -> float:
        """Initial INVITE final-response retransmit interval, UDP only; doubles up to T2."""
        return self.t1

    def timer_h(self) -> float:
        """Wait time for ACK receipt: 64*T1."""
        return 64 * self.t1

    def timer_i(self, reliable: bool) -> float:
        """Wait time for ACK retransmits: T4 on UDP, 0 on reliable."""
        return 0.0 if reliable else self.t4

    def timer_l(self) -> float:
        """RFC 6026 §8.7: wait time for accepted INVITE request retransmits."""
        return 64 * self.t1

    # -- server non-INVITE (§17.2.2, Figure 8) --
    def timer_j(self, reliable: bool) -> float:
        """Wait time for request retransmits: 64*T1 on UDP, 0 on reliable."""
        return 0.0 if reliable else 64 * self.t1


DEFAULT_TIMERS = TimerConfig()
