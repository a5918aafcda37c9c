"""Personal data and secrets in user text: found for `study`, redacted before any sample leaves the machine.

Patterns, not a model: they run on every row of a million-row file inside the daemon, and a false positive
only costs a redacted sample or a line in the report. Each kind is replaced by a fixed tag (`<EMAIL>`), so
a redacted sample still shows the brain the shape of the data.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Literal

PiiKind = Literal["email", "phone", "secret", "card", "ip"]

# Order matters: secrets before phones, so a long digit run inside a key is not reported as a phone number.
_PATTERNS: tuple[tuple[PiiKind, re.Pattern[str]], ...] = (
    ("email", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")),
    (
        "secret",
        re.compile(
            r"\b(?:sk-[A-Za-z0-9_-]{16,}"  # OpenAI-style
            r"|AIza[0-9A-Za-z_-]{35}"  # Google API key
            r"|AKIA[0-9A-Z]{16}"  # AWS access key id
            r"|gh[pousr]_[A-Za-z0-9]{36,}"  # GitHub token
            r"|hf_[A-Za-z0-9]{30,}"  # Hugging Face token
            r"|xox[abprs]-[A-Za-z0-9-]{10,})\b"  # Slack token
            r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
        ),
    ),
    ("card", re.compile(r"\b(?:\d[ -]?){13,16}\b")),
    ("ip", re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")),
    (
        "phone",
        re.compile(
            r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\d{2,4}[ .-]\d{3,4}[ .-]?\d{3,4}(?!\w)"
        ),
    ),
)

TAGS: dict[PiiKind, str] = {
    "email": "<EMAIL>",
    "phone": "<PHONE>",
    "secret": "<SECRET>",
    "card": "<CARD_NUMBER>",
    "ip": "<IP_ADDRESS>",
}


def _luhn_ok(digits: str) -> bool:
    """Card numbers pass the Luhn check; order ids and timestamps of the same length mostly do not."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _is_card(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    return 13 <= len(digits) <= 16 and _luhn_ok(digits)


def _scan(text: str) -> tuple[str, Counter[PiiKind]]:
    """Replace kind by kind, so a span is counted once, as the first kind in `_PATTERNS` that claims it."""
    found: Counter[PiiKind] = Counter()
    for kind, pattern in _PATTERNS:

        def tag(m: re.Match[str], kind: PiiKind = kind) -> str:
            if kind == "card" and not _is_card(m.group()):
                return m.group()
            found[kind] += 1
            return TAGS[kind]

        text = pattern.sub(tag, text)
    return text, found


def find(text: str) -> Counter[PiiKind]:
    """How many of each kind `text` holds."""
    return _scan(text)[1]


def redact(text: str) -> str:
    """`text` with every e-mail, phone number, secret, card number and IP address replaced by its tag."""
    return _scan(text)[0]


def count_rows(texts: Iterable[str]) -> Counter[PiiKind]:
    """Per kind, how many of `texts` hold at least one; what a report shows ("e-mails in 8,469 rows")."""
    rows: Counter[PiiKind] = Counter()
    for text in texts:
        rows.update(set(find(text)))
    return rows
