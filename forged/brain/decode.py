"""Bytes of a user's text file → str, with the encoding it was really written in.

UTF-8 is tried first because it is what nearly every tool writes and a strict decode that succeeds is proof
enough; only when it fails does charset-normalizer guess. A file that no encoding explains is refused with
one line rather than decoded into garbage that would then be trained on.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

# Byte-order marks say the encoding outright; UTF-32 before UTF-16 because UTF-32-LE's mark starts with
# UTF-16-LE's.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

# Short Western text fits several code pages equally well (cp1250, cp850, ...); Windows-1252 is what Excel
# and Notepad write on Western systems, so among equally good guesses it wins.
_PREFERRED = ("cp1252",)
_TIE = 0.01
# charset-normalizer's "chaos" (share of odd characters) below which a UTF-16 guess is taken as real text.
_CLEAN = 0.02

_RESAVE = "re-save it as UTF-8 (in Excel: Save As → 'CSV UTF-8')"


class DecodeError(ValueError):
    """The bytes are not text in any encoding we can recognise; str() is one line without the file name."""


@dataclass(frozen=True)
class Decoded:
    text: str
    encoding: str  # Python's codec name: utf-8, utf-8-sig, utf-16, cp1252, ...

    @property
    def is_utf8(self) -> bool:
        return self.encoding in ("utf-8", "utf-8-sig")


def decode(data: bytes) -> Decoded:
    """Decode a whole file. Raises DecodeError for binary data or text in no recognisable encoding."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return Decoded(data.decode(encoding).removeprefix("\ufeff"), encoding)
            except UnicodeDecodeError as exc:
                raise DecodeError(
                    f"starts with a {encoding} byte-order mark but byte {exc.start} does not decode as "
                    f"{encoding}: the file is damaged or mislabelled; {_RESAVE}"
                ) from None
    if b"\x00" not in data:
        try:
            return Decoded(data.decode("utf-8"), "utf-8")
        except UnicodeDecodeError:
            pass
    guessed = _guess(data)
    if guessed is None:
        if b"\x00" in data:
            raise DecodeError(
                "looks like a binary file (it contains NUL bytes), not text: export your data as CSV or "
                "JSONL in UTF-8"
            )
        raise DecodeError(f"is not text in any encoding Forge recognises: {_RESAVE}")
    return guessed


def _guess(data: bytes) -> Decoded | None:
    from charset_normalizer import from_bytes  # only files that are not UTF-8 pay for the import

    matches = list(from_bytes(data))
    if not matches:
        return None
    best = min(matches, key=lambda m: m.chaos)
    close = {m.encoding: m for m in matches if m.chaos <= best.chaos + _TIE}
    chosen = next((close[e] for e in _PREFERRED if e in close), best)
    text = str(chosen)
    # Only UTF-16/32 text holds NUL bytes, and binary data "decodes" as UTF-16 into CJK noise, so a
    # NUL-bearing file must read as clean text in one of them (UTF-16 without a byte-order mark).
    if b"\x00" in data and (
        not chosen.encoding.startswith(("utf_16", "utf_32")) or chosen.chaos > _CLEAN or "\x00" in text
    ):
        return None
    return Decoded(text.removeprefix("\ufeff"), chosen.encoding)
