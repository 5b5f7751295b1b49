"""The golden-trace comparison: each exchange's order within a step, not the interleaving."""

from __future__ import annotations

from emulator.capture.diff import first_difference
from emulator.capture.ladder import LadderMessage


def _trace(*rows: tuple[str, str, str, str]) -> list[LadderMessage]:
    return [LadderMessage(float(i), source, destination, "SIP", label, step)
            for i, (step, source, destination, label) in enumerate(rows)]


REGISTER = "register: REGISTER"
SEED = _trace(
    (REGISTER, "ue", "core", "REGISTER"),
    (REGISTER, "core", "ue", "200 (REGISTER)"),
    (REGISTER, "core", "mc", "REGISTER"),
    (REGISTER, "mc", "core", "200 (REGISTER)"),
    (REGISTER, "ue", "core", "SUBSCRIBE"),
    (REGISTER, "core", "ue", "200 (SUBSCRIBE)"),
)


def test_other_senders_may_interleave_differently() -> None:
    # Another placement: the UE's SUBSCRIBE reaches the core before the MC server's 200.
    swapped = _trace(*[(m.step, m.source, m.destination, m.label)
                       for m in (SEED[0], SEED[1], SEED[2], SEED[4], SEED[3], SEED[5])])
    assert first_difference(SEED, swapped) is None


def test_one_exchanges_order_is_compared() -> None:
    # The core answers the second REGISTER first: the same link and method, another order.
    twice = [*SEED[:2], SEED[0], _trace((REGISTER, "core", "ue", "403 (REGISTER)"))[0]]
    swapped = [*SEED[:1], twice[3], SEED[0], SEED[1]]
    difference = first_difference(twice, swapped)
    assert difference is not None
    assert (difference.expected, difference.actual) == ("core -> ue: 200 (REGISTER)",
                                                        "core -> ue: 403 (REGISTER)")


def test_a_missing_or_extra_message_is_named() -> None:
    shorter = SEED[:-1]
    difference = first_difference(SEED, shorter)
    assert difference is not None and difference.actual is None
    assert difference.expected == "core -> ue: 200 (SUBSCRIBE)"
    extra = first_difference(shorter, SEED)
    assert extra is not None and extra.expected is None and extra.step == REGISTER


def test_a_relay_labelled_with_the_next_step_is_the_same_trace() -> None:
    # The SIP core's last answer left just after the driver began its next step.
    late = _trace(*[(("next: something" if i == 5 else m.step), m.source, m.destination,
                     m.label) for i, m in enumerate(SEED)])
    assert first_difference(SEED, late) is None


def test_two_transactions_at_once_may_interleave_their_provisional_and_final_answers() -> None:
    """The MC server invites two group members through the SIP core at once: the core's
    100s and the members' 200s may come 100, 200, 100, 200 or 100, 100, 200, 200."""
    step = "group-call: the MC server invites the affiliated members"
    one = _trace(*[(step, "core", "mc", label) for label in
                   ("100 (INVITE)", "200 (INVITE)", "100 (INVITE)", "200 (INVITE)")])
    other = _trace(*[(step, "core", "mc", label) for label in
                     ("100 (INVITE)", "100 (INVITE)", "200 (INVITE)", "200 (INVITE)")])
    assert first_difference(one, other) is None
    missing = _trace(*[(step, "core", "mc", label) for label in
                       ("100 (INVITE)", "200 (INVITE)", "200 (INVITE)")])
    difference = first_difference(one, missing)
    assert difference is not None and difference.actual is None
