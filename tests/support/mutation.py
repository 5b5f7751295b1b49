"""Mutations that stay valid UTF-8: they get past the parser's UTF-8 check and reach the
header grammar and the node handlers (raw-byte mutations live in tests/sip/test_fuzz.py)."""

from __future__ import annotations

import random

# Snippets on the grammar's seams, and an alphabet for random text: the separators, token
# characters, escapes and some characters beyond ASCII.
INTERESTING_TEXT = [
    "\r", "\n", "\r\n", "\r\n\r\n", " ", "\t", ":", ";", ",", "<", ">", '"', "\\", "%", "@",
    "=", "?", "/", "[", "]", "\x00", "0", "9" * 12, "-1", "z9hG4bK", "SIP/2.0",
    "Content-Length: ", "l:", "Via: SIP/2.0/UDP ", ";rport", ";tag=", "sip:", "*",
    "é", "€", "²", "\u200b", "\u00a0", "%C3%A9", "%00", "sips:", "tel:+1", ";lr", ";q=0.5",
    ";expires=", "<sip:a@b>", '"x"', '\\"', ";transport=tcp", "received=", ";maddr="]
ALPHABET = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
            "-.!%*_+`'~()<>@,;:\\\"/[]?={} \t\r\néü€²\u200b")


def random_text(rng: random.Random, most: int = 6) -> str:
    if rng.random() < 0.6:
        return rng.choice(INTERESTING_TEXT)
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, most)))


def utf8_mutate(text: str, rng: random.Random, count: int) -> bytes:
    """``count`` random edits of ``text`` as text: the result is always valid UTF-8."""
    out = text
    for _ in range(count):
        pos = rng.randint(0, len(out))
        op = rng.random()
        if op < 0.4:
            out = out[:pos] + random_text(rng) + out[pos:]
        elif op < 0.7:
            out = out[:pos] + out[pos + rng.randint(1, 8):]
        else:
            chunk = random_text(rng)
            out = out[:pos] + chunk + out[pos + len(chunk):]
    return out.encode()
