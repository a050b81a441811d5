"""Weighted phrase lists per safeguarding theme, and scoring what a child typed against them.

Files are E2Guardian/DansGuardian weighted phrase lists, imported unchanged::

    #listcategory: "Self-harm and suicide"
    < how to kill myself ><100>        spaces inside the brackets: whole words only
    <pills>,<overdose><60>             all parts must appear
    < suicide prevention ><-40>        negative: benign context lowers the score
    .Include</path/to/other/list>

``filterlists/phrases/<theme>/*.txt`` (one file per language) and ``exceptions.txt`` (``< kill a
process >``: the words it covers are taken out before scoring — "kill a process" never scores, but
"kill a process and kill myself" still does).

Normalisation catches what children type, applied identically to phrases and to text: case and accents
folded; leetspeak inside words (``k1ll``, ``$uicide``); letters spaced or punctuated apart
(``k.i.l.l``, ``s-u-i-c-i-d-e``); repeated letters (``diiie``); and one-letter misspellings of longer
words (``suicde``). Words are matched on boundaries, so ``Scunthorpe`` and ``skill`` stay clean.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

MAX_TEXT = 1000
FUZZY_MIN = 6  # words at least this long also match with one letter wrong, missing or extra

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "@": "a",
                       "$": "s", "!": "i", "|": "l", "+": "t", "€": "e", "£": "l"})
_LINE = re.compile(r"^((?:<[^<>]+>)(?:,<[^<>]+>)*)<(-?\d+)>$")
_PART = re.compile(r"<([^<>]+)>")
_CATEGORY = re.compile(r'^#listcategory:\s*"?([^"]*)"?', re.IGNORECASE)
_INTRA = re.compile(r"(?<=\w)[.\-_*'’·](?=\w)")


class PhraseError(ValueError):
    """A phrase list cannot be read; the message names file and line."""


def _fold(text: str) -> str:
    """Lower case, accents off (Polish ł kept apart: NFKD does not split it), leetspeak in words."""
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(c for c in text if not unicodedata.combining(c)).replace("ł", "l")
    # Leetspeak only inside tokens that also have letters: "k1ll" → "kill", but "year 7" stays.
    return " ".join(t.translate(_LEET) if any(c.isalpha() for c in t) and not t.isalpha() else t
                    for t in text.split())


def _squeeze(word: str) -> str:
    """Runs of one letter become one letter ("diiiie" → "die", "kill" → "kil"), on both sides."""
    out = []
    for c in word:
        if not out or out[-1] != c:
            out.append(c)
    return "".join(out)


def tokens(text: str, join_intra: bool = True) -> list[str]:
    """Normalised words of ``text``. ``join_intra``: "self-harm" → "selfharm" (else two words)."""
    text = _fold(text[:MAX_TEXT])
    text = _INTRA.sub("" if join_intra else " ", text)
    # Split on anything that is not a letter, digit or combining mark: Gurmukhi, Devanagari and Urdu
    # vowel signs are marks, and a word must not be broken at them.
    words = "".join(c if c.isalnum() or c == "_" or unicodedata.category(c)[0] == "M" else " "
                    for c in text).split()
    # Letters spaced apart ("k i l l myself"): three or more one-letter words in a row become one word.
    merged: list[str] = []
    run: list[str] = []
    for w in words + [""]:
        if len(w) == 1 and w.isalpha():
            run.append(w)
            continue
        if len(run) >= 3:
            merged.append("".join(run))
        else:
            merged.extend(run)
        run = []
        if w:
            merged.append(w)
    return [_squeeze(w) for w in merged]


def _near(a: str, b: str) -> bool:
    """Edit distance at most 1 (substitution, insertion, deletion, or adjacent swap)."""
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    i = 0
    while i < min(la, lb) and a[i] == b[i]:
        i += 1
    if la == lb:
        return a[i + 1:] == b[i + 1:] or (i + 1 < la and a[i] == b[i + 1] and a[i + 1] == b[i] and a[i + 2:] == b[i + 2:])
    return a[i + 1:] == b[i:] if la > lb else a[i:] == b[i + 1:]


@dataclass(frozen=True, slots=True)
class Phrase:
    text: str                    # as written in the list
    words: tuple[str, ...]       # normalised
    bounded: bool                # `< x >`: whole words; `<x>`: anywhere in the text


@dataclass(frozen=True, slots=True)
class Entry:
    parts: tuple[Phrase, ...]    # all must match
    weight: int
    source: str                  # file:line, for the alert's evidence


@dataclass
class ThemeList:
    theme: str
    label: str = ""
    entries: list[Entry] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Score:
    theme: str
    score: int
    matched: tuple[str, ...]     # the phrases that matched, as written in the lists


def _phrase(raw: str) -> Phrase | None:
    bounded = raw.startswith(" ") or raw.endswith(" ")
    words = tuple(tokens(raw, join_intra=False))
    return Phrase(raw.strip(), words, bounded) if words else None


def parse_list(path: Path, theme: str, _depth: int = 0) -> ThemeList:
    tl = ThemeList(theme)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise PhraseError(f"{path}: cannot read phrase list: {e.strerror}") from None
    for n, line in enumerate(lines, 1):
        line = line.strip().lstrip("\ufeff")
        if not line:
            continue
        if line.startswith("#"):
            m = _CATEGORY.match(line)
            if m:
                tl.label = m.group(1).strip()
            continue
        if line.startswith(".Include<") and line.endswith(">"):
            if _depth > 5:
                raise PhraseError(f"{path}:{n}: .Include nested too deeply")
            inc = Path(line[9:-1])
            tl.entries.extend(parse_list(inc if inc.is_absolute() else path.parent / inc, theme, _depth + 1).entries)
            continue
        m = _LINE.match(line)
        if not m:
            raise PhraseError(f"{path}:{n}: not a weighted phrase line (expected '< phrase ><weight>'): {line[:80]!r}")
        parts = tuple(p for p in (_phrase(raw) for raw in _PART.findall(m.group(1))) if p is not None)
        if parts:
            tl.entries.append(Entry(parts, int(m.group(2)), f"{path.name}:{n}"))
    return tl


def parse_exceptions(path: Path) -> list[Phrase]:
    out = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise PhraseError(f"{path}: cannot read exception list: {e.strerror}") from None
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not (line.startswith("<") and line.endswith(">")):
            raise PhraseError(f"{path}:{n}: expected '< phrase >': {line[:80]!r}")
        p = _phrase(line[1:-1])
        if p is not None:
            out.append(p)
    return out


class PhraseLists:
    """All themes' lists, compiled; :meth:`score` a search term against every theme."""

    def __init__(self, themes: list[ThemeList], exceptions: list[Phrase]):
        self.themes = themes
        self.exceptions = exceptions

    @property
    def size(self) -> int:
        return sum(len(t.entries) for t in self.themes)

    def score(self, text: str) -> list[Score]:
        """Scores per theme (only themes with a positive score), highest first."""
        if not text:
            return []
        variants = [tokens(text, join_intra=True), tokens(text, join_intra=False)]
        variants = [self._mask(words) for words in variants]
        # Cheap pre-check per phrase: its first word must be present (or, for a word long enough to be
        # misspelt, some word must start with the same letter) — most entries stop here.
        present = {w for words in variants for w in words}
        initials = {w[0] for w in present if w}
        results = []
        for tl in self.themes:
            total, matched = 0, []
            for entry in tl.entries:
                if all(_possible(p, present, initials) and any(_matches(p, words) for words in variants)
                       for p in entry.parts):
                    total += entry.weight
                    matched.append(",".join(p.text for p in entry.parts))
            if total > 0 and matched:
                results.append(Score(tl.theme, total, tuple(matched)))
        return sorted(results, key=lambda s: -s.score)

    def _mask(self, words: list[str]) -> list[str]:
        """Take out the words covered by an exception phrase (replaced by a gap no phrase can match)."""
        out = list(words)
        for p in self.exceptions:
            n = len(p.words)
            for i in range(len(out) - n + 1):
                if all(out[i + k] == p.words[k] for k in range(n)):
                    for k in range(n):
                        out[i + k] = "\x00"
        return out


def _possible(p: Phrase, present: set[str], initials: set[str]) -> bool:
    if not p.bounded:
        return True
    first = p.words[0]
    return first in present or (len(first) >= FUZZY_MIN or len(p.words) > 1) and first[:1] in initials


def _matches(p: Phrase, words: list[str]) -> bool:
    n = len(p.words)
    if not p.bounded:
        joined = " ".join(words)
        return " ".join(p.words) in joined or "".join(p.words) in "".join(words)
    for i in range(len(words) - n + 1):
        if all(_word_eq(p.words[k], words[i + k]) for k in range(n)):
            return True
    # Words run together ("killmyself"): the whole phrase as one word.
    if n > 1:
        glued = "".join(p.words)
        return any(_word_eq(glued, w) for w in words)
    return False


def _word_eq(phrase_word: str, word: str) -> bool:
    if phrase_word == word:
        return True
    # Misspellings keep the first letter ("suicde", "sucide"); "putting" is not "cutting".
    return len(phrase_word) >= FUZZY_MIN and word[:1] == phrase_word[:1] and _near(phrase_word, word)


def load_phrase_lists(root: Path) -> PhraseLists:
    """``root/<theme>/*.txt`` and ``root/exceptions.txt``."""
    if not root.is_dir():
        raise PhraseError(f"{root}: phrase list directory not found")
    themes = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        tl = ThemeList(d.name)
        for f in sorted(d.glob("*.txt")):
            part = parse_list(f, d.name)
            tl.label = tl.label or part.label
            tl.entries.extend(part.entries)
        # One entry per normalised form: "zabić się" and "zabic sie" are the same phrase once folded.
        seen: set = set()
        unique = []
        for e in tl.entries:
            key = tuple((p.words, p.bounded) for p in e.parts)
            if key not in seen:
                seen.add(key)
                unique.append(e)
        tl.entries = unique
        if tl.entries:
            themes.append(tl)
    exc = root / "exceptions.txt"
    return PhraseLists(themes, parse_exceptions(exc) if exc.exists() else [])
