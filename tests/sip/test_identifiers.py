"""Tags, branches and Call-IDs: random, unique, and never shared with a forked child."""

from __future__ import annotations

import os

from emulator.sip.builder import BRANCH_MAGIC_COOKIE
from emulator.sip.builder import new_branch
from emulator.sip.builder import new_call_id
from emulator.sip.builder import new_tag
from emulator.sip.builder import random_hex


def test_identifiers_have_their_rfc_3261_shape_and_do_not_repeat() -> None:
    # 64-bit branches: 5,000 of them (past a few 4 kB reads of the kernel's bytes) never
    # collide by chance, where 32-bit tags would about once in 350 runs.
    branches = [new_branch() for _ in range(5000)]
    assert len(set(branches)) == len(branches)
    assert all(b.startswith(BRANCH_MAGIC_COOKIE) and len(b) == len(BRANCH_MAGIC_COOKIE) + 16
               for b in branches)
    tag = new_tag()
    assert len(tag) == 8 and int(tag, 16) >= 0  # 32 random bits (§19.3)
    assert new_call_id("192.0.2.1").endswith("@192.0.2.1")
    assert len(random_hex(5000)) == 10000  # more than a pool's worth at once


def test_a_forked_child_draws_its_own_identifiers() -> None:
    """Node processes are forked from one zygote: a pool of random bytes read before the
    fork must not give two nodes the same tags and branches."""
    new_tag()  # the pool is read here, before the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, " ".join(new_tag() for _ in range(8)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    parent = [new_tag() for _ in range(8)]
    assert len(child) == 8
    assert not set(child) & set(parent)
