"""Which languages a data file is written in: Unicode scripts, then stopwords for Latin-script languages.

No model and nothing to download: the daemon answers offline and in milliseconds. It tells the planner and
the user "mostly English, some German", not a verdict on every row; a row whose script is Latin but whose
words match no list is counted as undetermined Latin text rather than guessed.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

# The commonest short words of each language, chosen so that lists overlap little ("de" is Spanish,
# Portuguese and French, so it is in none of them).
_STOPWORDS: dict[str, frozenset[str]] = {
    code: frozenset(words.split())
    for code, words in {
        "en": "the and is are was were of to in that it for with you this not have be on what how my your "
        "his her thou thee thy shall will but from they which",
        "de": "der die das und ist nicht ich sie mit auf für ein eine den dem zu auch sich wie",
        "fr": "le la les et est une des du pour pas que qui dans sur avec vous je il nous ce",
        "es": "el los las y es una por para con que del se lo como pero más está muy su",
        "it": "il di che è per una sono non con gli della del alla anche come questo ma",
        "pt": "o os as e é uma para com não que do da em um se por mais como você",
        "nl": "de het een en is van ik niet dat zijn op te met voor ook maar wat",
        "pl": "w nie na się jest to że z do jak co ale tak po za",
        "sv": "och att det som är en på för med inte jag har av till om",
        "tr": "ve bir bu da de için ile ne çok ama gibi daha olarak var ben",
    }.items()
}

NAMES: dict[str, str] = {
    "en": "English",
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "nl": "Dutch",
    "pl": "Polish",
    "sv": "Swedish",
    "tr": "Turkish",
    "ru": "Russian (Cyrillic)",
    "el": "Greek",
    "ar": "Arabic",
    "he": "Hebrew",
    "hi": "Hindi (Devanagari)",
    "th": "Thai",
    "zh": "Chinese",
    "ja": "Japanese",
    "ko": "Korean",
    "latin": "Latin script, language undetermined",
    "other": "other or no script",
}

# Scripts we tell apart, as character classes: counting matches is done in C, a million times faster than
# looking each character up in Python. Digits, punctuation and emoji belong to none.
_SCRIPTS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (code, re.compile(f"[{chars}]"))
    for code, chars in (
        ("latin", "A-Za-z\u00c0-\u024f"),
        ("el", "\u0370-\u03ff"),
        ("ru", "\u0400-\u04ff"),
        ("he", "\u0590-\u05ff"),
        ("ar", "\u0600-\u06ff"),
        ("hi", "\u0900-\u097f"),
        ("th", "\u0e00-\u0e7f"),
        ("ja", "\u3040-\u30ff"),  # hiragana and katakana: Japanese even among kanji
        ("zh", "\u4e00-\u9fff"),
        ("ko", "\u1100-\u11ff\uac00-\ud7af"),
    )
)

_WORD = re.compile(r"[^\W\d_]+")
# Enough of a row to judge it; a 26 KB answer says nothing more than its first kilobyte.
_ROW_CHARS = 1000
# Fewer words than this (a speaker's name, a number) say nothing about the language.
_MIN_WORDS = 3
# Stopword hits needed before a Latin-script row is called that language.
_MIN_STOPWORDS = 2


def row_language(text: str) -> str:
    """The language code (or script name) of one text; "other" when it has too few words to tell."""
    text = text[:_ROW_CHARS]
    if text.isascii():
        scripts = Counter({"latin": 1})
    else:
        scripts = Counter({code: len(pattern.findall(text)) for code, pattern in _SCRIPTS})
    # Japanese writes with kanji (counted as zh) plus kana: any kana makes it Japanese.
    if scripts["ja"] and scripts["zh"]:
        return "ja"
    script, count = scripts.most_common(1)[0]
    if script != "latin":
        # Chinese and Japanese put no spaces between words, so letters count here rather than words.
        return script if count >= _MIN_WORDS else "other"
    words = _WORD.findall(text)
    if len(words) < _MIN_WORDS:
        return "other"
    seen = Counter(w.lower() for w in words)
    hits = Counter({code: sum(seen[w] for w in stop) for code, stop in _STOPWORDS.items()})
    code, found = hits.most_common(1)[0]
    return code if found >= _MIN_STOPWORDS else "latin"


def language_mix(texts: Iterable[str]) -> list[tuple[str, float]]:
    """(code, share of rows) for every language seen, most common first; rows without letters are left out
    unless nothing else is there."""
    counts = Counter(row_language(t) for t in texts if t.strip())
    total = sum(counts.values())
    if not total:
        return []
    if counts.keys() - {"other"}:
        total -= counts.pop("other", 0)
    return [(code, n / total) for code, n in counts.most_common()]
