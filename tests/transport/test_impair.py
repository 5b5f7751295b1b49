"""Link impairments decided by the sending node (netem's model), in simulated time."""

from __future__ import annotations

import asyncio

import pytest

from emulator.sip import Address
from emulator.topology import Impairment
from emulator.transport.impair import Impairer
from emulator.transport.impair import _Link

UDP = Address("udp", "127.0.50.2", 5060)
TCP = Address("tcp", "127.0.50.2", 5060)


def link(**values: float) -> _Link:
    import random

    impairment = Impairment(**values, seed=7)  # type: ignore[arg-type]
    return _Link(impairment, random.Random(impairment.seed))


def test_loss_drops_about_its_share_and_repeats_with_the_seed() -> None:
    runs = []
    for _ in range(2):
        lossy = link(loss=0.2)
        runs.append([lossy.delays(100, now=float(i), stream=False) for i in range(5000)])
    assert runs[0] == runs[1]  # the same seed, the same packets lost
    lost = sum(1 for delays in runs[0] if delays == [])
    assert 900 < lost < 1100  # 20 % of 5000, within four standard deviations
    assert all(delays in ([], [0.0]) for delays in runs[0])  # no delay asked, none given


def test_delay_and_jitter_stay_in_their_window() -> None:
    jittery = link(delay=0.05, jitter=0.01)
    delays = [jittery.delays(100, now=0.0, stream=False)[0] for _ in range(1000)]
    assert min(delays) >= 0.04 and max(delays) <= 0.06
    assert max(delays) - min(delays) > 0.015  # it does vary


def test_duplicate_sends_twice_and_reorder_sends_at_once() -> None:
    twice = link(duplicate=1.0, delay=0.05)
    assert twice.delays(100, now=0.0, stream=False) == [0.05, 0.05]
    early = link(reorder=1.0, delay=0.05)
    assert early.delays(100, now=0.0, stream=False) == [0.0]


def test_a_stream_only_delays_and_keeps_its_order() -> None:
    stream = link(loss=1.0, duplicate=1.0, reorder=1.0, delay=0.05, jitter=0.05)
    times = []
    for i in range(200):
        [delay] = stream.delays(100, now=i * 0.001, stream=True)  # never lost or doubled
        times.append(i * 0.001 + delay)
    assert times == sorted(times)


def test_rate_makes_a_packet_wait_for_the_ones_before_it() -> None:
    slow = link(rate=8000.0)  # 1000 bytes per second
    assert slow.delays(100, now=0.0, stream=False) == [pytest.approx(0.1)]
    assert slow.delays(100, now=0.0, stream=False) == [pytest.approx(0.2)]
    assert slow.delays(100, now=1.0, stream=False) == [pytest.approx(0.1)]  # the queue drained


async def test_the_impairer_sends_later_only_what_the_link_lets_through() -> None:
    sent: list[bytes] = []
    three = asyncio.Event()

    def send(data: bytes, destination: Address) -> None:
        sent.append(data)
        if len(sent) == 4:
            three.set()

    impairer = Impairer()
    impairer.set(UDP.host, Impairment(delay=0.01))
    impairer.send(send, b"elsewhere", Address("udp", "127.0.50.9", 5060))  # not impaired
    for data in (b"1", b"2", b"3"):
        impairer.send(send, data, UDP)
    assert sent == [b"elsewhere"]  # the impaired ones are still on their way
    await asyncio.wait_for(three.wait(), 5)
    assert sent == [b"elsewhere", b"1", b"2", b"3"]
    impairer.set(UDP.host, Impairment(loss=1.0))
    impairer.send(send, b"lost", UDP)
    impairer.set(UDP.host, Impairment(delay=60.0))
    impairer.send(send, b"in flight at close", UDP)
    impairer.close()  # the transports are closing: nothing goes later
    impairer.set(UDP.host, None)
    impairer.send(send, b"free again", UDP)
    assert sent[-1] == b"free again" and b"lost" not in sent
    assert impairer._pending == set()
