"""Weighted phrase lists per safeguarding theme, and scoring text against them through compiled
Aho-Corasick automata (ahocorasick_rs): every phrase of every theme and language is found in a single
pass over the text, whatever the number of phrases.

Files are E2Guardian/DansGuardian weighted phrase lists, imported unchanged, plus concept rules::

    #listcategory: "Self-harm and suicide"
    < how to kill myself ><100>        spaces inside the brackets are literal: whole words
    <pills>,<overdose><60>             all parts must appear, near each other (one query or sentence)
    < suicide prevention ><-40>        negative: benign context lowers the score
    .Include</path/to/other/list>
    @pills = pills | paracetamol | ibuprofen      a term set (extended wherever it is named again)
    <@pills>,<@lethal><80>             a member of each set, near each other, in any order
    < @i @desire @deadstate ><100>     a template: a member of each, one after another
    < cut~ myself >  < samobój* >      English inflections; a stem (a word start)

``filterlists/phrases/<theme>/*.txt``, ``sets.txt`` (shared term sets) and ``exceptions.txt``
(``< kill a process >``: the words it covers are taken out before scoring — "kill a process" never
scores, but "kill a process and kill myself" still does).

The index is built from *atoms*: each distinct part (a phrase, a term set, a piece of a template) is
one set of automaton keys, found once however many rules use it; an entry is looked at only when its
anchor — the atom shared by the fewest rules and least made of everyday words — is found. Templates are
never multiplied out: their pieces are atoms, chained where they follow one another.

Two ways in, one index:

- :meth:`PhraseLists.score` — what a person typed (a search term, a chat message). Word by word, with the
  normalisation children's spelling needs: case and accents folded; leetspeak inside words (``k1ll``,
  ``$uicide``); letters spaced or punctuated apart (``k i l l``, ``s-u-i-c-i-d-e``); words run together
  (``killmyself``); repeated letters (``diiie``); one-letter misspellings of longer words (``suicde``);
  chat spellings of everyday words (``wat r u``); verb forms through their base (``thinking of ending it``
  is found by a rule that lists ``thinking of`` and ``end it``).
  Each match keeps the span of the original text it came from, so the evidence is the words **as typed**,
  never a list phrase the person did not type.
- :meth:`PhraseLists.score_content` — a page or a reply (up to hundreds of KB): case and punctuation
  folded with whole-string operations, exact spelling. Accents stay on the page (folding them costs
  more than the rest together): the keys carry every accented spelling the lists use, so "nie chcę już
  żyć", "nie chce juz zyc" and any mix match alike; a page with combining marks (Arabic harakat, accents
  typed apart) or styled letters (fullwidth, mathematical) is folded whole first. The page is searched
  for anchors only, and the text around an anchor of a combination for its other parts. The words shown
  for a theme are then recovered from the page text around the matches.

Words are matched on boundaries, so ``Scunthorpe`` and ``skill`` stay clean.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from bisect import bisect_right
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import product
from math import prod
from pathlib import Path

import ahocorasick_rs

MAX_TEXT = 1000          # what :meth:`score` reads of a typed text
MAX_CONTENT = 512 * 1024  # what :meth:`score_content` reads of a page's text
FUZZY_MIN = 6  # list words at least this long also match with one letter wrong, missing, extra or swapped
GLUE_MIN = 8   # multi-word phrases this long also match run together ("killmyself")
COMBO_SPAN = 120  # characters within which all parts of a combination must lie
_PLACES = 16      # places of one atom kept from a page
_WINDOWS = 64     # stretches of a page searched again around anchors
_EVIDENCE_WINDOW = 3000  # characters either side of a content match searched for the words as written

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "@": "a",
                       "$": "s", "!": "i", "|": "l", "+": "t", "€": "e", "£": "l"})
_LINE = re.compile(r"^((?:<[^<>]+>)(?:,<[^<>]+>)*)<(-?\d+)>$")
_PART = re.compile(r"<([^<>]+)>")
_CATEGORY = re.compile(r'^#listcategory:\s*"?([^"]*)"?', re.IGNORECASE)


def _mark_ranges() -> str:
    """A regex class body of every combining mark (categories Mn, Mc, Me): vowel signs of Gurmukhi,
    Devanagari-family, Bengali, Gujarati, Tamil scripts are marks, and a word must not break at them."""
    ranges, start, prev = [], None, None
    for cp in range(0x300, sys.maxunicode + 1):
        if unicodedata.category(chr(cp))[0] == "M":
            if start is None:
                start = cp
            elif cp != prev + 1:
                ranges.append((start, prev))
                start = cp
            prev = cp
    if start is not None:
        ranges.append((start, prev))
    return "".join(f"\\U{a:08x}-\\U{b:08x}" if a != b else f"\\U{a:08x}" for a, b in ranges)


_MARKS = _mark_ranges()
#: A raw word as typed: letters, digits, marks, and what leetspeak and intra-word punctuation use.
_EMOJI = "\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF"
_RAW_WORD = re.compile(rf"[\w{_MARKS}@$!|+€£.\-*'’·]+|[{_EMOJI}][{_MARKS}]*")
#: The same for ASCII text (most of what is typed): the class above, tested character by character
#: against hundreds of ranges of marks, costs more than the rest of tokenising.
_RAW_WORD_ASCII = re.compile(r"[\w@$!|+.\-*']+")
_INTRA = re.compile(r"[.\-_*'’·]+")
_EDGE = "!?.,;:'’\"*()-_·"
_EDGE_RIGHT = _EDGE + "@$|+"
_UNDERSCORE = re.compile(r"_+")


#: Diacritics taken off after NFKD: Latin, Greek, Cyrillic, Hebrew and Arabic combining marks (accents,
#: harakat). Spacing vowel signs of Indic scripts are letters of the word and stay.
_DIACRITICS = re.compile("[\u0300-\u036f\u0483-\u0489\u0591-\u05c7\u0610-\u061a\u064b-\u065f\u0670"
                         "\u06d6-\u06ed\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]+")
#: Content path: ASCII punctuation, symbols and controls become spaces (bytes.translate, at C speed).
_BYTE_SPACES = bytes(c if (48 <= c <= 57 or 97 <= c <= 122) else (c + 32 if 65 <= c <= 90 else 32)
                     for c in range(128)) + bytes(range(128, 256))
#: Two literal spaces first, then any more: the regex engine skips to each pair itself and tries a match
#: only there ("  +" is tried at every space, ~1.5x slower on a page; " {2,}" at every character, 3x).
_SPACE_RUNS = re.compile("   *")
#: The first bytes, in UTF-8, of every character outside ASCII that case folding changes (Latin, Greek,
#: Cyrillic, Armenian, Georgian letters, ligatures, fullwidth and circled letters …); a test checks the
#: list against the running Python's Unicode tables. A text with none of them needs no ``str.casefold``.
_CASED_LEADS = bytes.fromhex("c2 c3 c4 c5 c6 c7 c8 c9 cd ce cf d0 d1 d2 d3 d4 d5 d6 e1 e2 ea ef f0")
_CASED_LEAD = re.compile(b"[" + b"".join(re.escape(bytes([b])) for b in _CASED_LEADS) + b"]")
_NOT_CASED_LEAD = bytes(b for b in range(256) if b not in _CASED_LEADS)   # deleted by bytes.translate
#: Unicode punctuation and spaces that become spaces too (one ``in`` each, a few µs over a page; the
#: quads U+2000/U+2001 and the ideographic space are left out: rare in our languages, and a search for a
#: character whose low byte is 0 is ~20x slower in text stored two bytes a character).
_UNICODE_SPACES = ("“”‘’«»—–…،؟؛·•¡¿„‚‹›\u0085\u00a0\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
                   "\u200a\u200b\u2028\u2029\u202f\u205f")
#: The same by the first byte of their UTF-8: a text without that byte (one search of the bytes) has
#: none of the group, and most texts lack whole groups (Arabic and Polish text has no U+20xx).
_UNICODE_SPACES_BY_LEAD = {lead: "".join(c for c in _UNICODE_SPACES if c.encode()[:1] == lead)
                           for lead in {c.encode()[:1] for c in _UNICODE_SPACES}}

#: Characters that folding changes but that the page's own spelling (:func:`page_string`) keeps, and
#: that no key is written in: combining marks (Arabic harakat, accents typed as separate marks, "zalgo"
#: text) and compatibility letters (fullwidth, mathematical and circled letters, ligatures, Arabic
#: presentation forms). A page with one of them is folded whole before it is searched. Accented letters
#: as one character are not among them: the keys carry the lists' own accented spellings.
_FOLD_MARKER_BLOCKS = ((0x300, 0x36f), (0x483, 0x489), (0x591, 0x5c7), (0x610, 0x61a), (0x64b, 0x65f),
                       (0x670, 0x670), (0x6d6, 0x6ed), (0x1ab0, 0x1aff), (0x1dc0, 0x1dff), (0x20d0, 0x20ff),
                       (0xfe20, 0xfe2f), (0x2100, 0x214f), (0x2460, 0x24ff), (0xfb00, 0xfdff),
                       (0xfe70, 0xfefc), (0xff01, 0xff5e), (0x1d400, 0x1d7ff), (0x1f130, 0x1f189))


#: Words common on any page, in the languages of the lists: a part made only of these is never the
#: anchor a page is searched for (see :meth:`PhraseLists.content_hits`).
_EVERYDAY = frozenset("""
a about after all also am an and any are as at be because been before but by can cant could did do does
dont down each for from get gets getting go going got had has have he her here him his how i if im in into
is it its just know like me more most my no not now of off on one only or other our out over own people
she should so some than that the their them then there these they this those through to too up very was we
were what when where which who why will with would you your make made take took give want need use used
find say said tell see look time day year way thing new old good bad best first last long little big high
right back still even much many well really always never every everyone someone anyone nobody something
school class lesson teacher student pupil homework work home house family friend friends mum mom dad
parents brother sister kid kids child children boy boys girl girls man men woman women person world life
online internet video videos photo photos picture pictures pic pics game games play phone app website
site page free help news story read write book food money buy shop near today tomorrow night week lunch
trip team report explain explained brought packed built
el la los las un una de del y que en por para con se su es como pero mas muy no si yo mi me te lo le
os as um uma do da dos das e em na com sem seu sua ser mais nao eu meu minha
w z na do nie sie to jak ze co jest ale czy tak ja ty mnie mi go dla od po za o u
si cu pe din nu da eu el ea ce cum sa mai dar sau
ir ne kaip kad tai as su is
""".split())


class PhraseError(ValueError):
    """A phrase list cannot be read; the message names file and line."""


# -- normalisation ----------------------------------------------------------------------------------
def fold(text: str) -> str:
    """Case and accents off: NFKD, then the diacritics go (Latin accents, Arabic vowel marks — the same on
    both sides, so the match is unaffected); Indic vowel signs stay. Polish ł/Ł does not decompose."""
    if text.isascii():
        return text.lower()
    text = _DIACRITICS.sub("", unicodedata.normalize("NFKD", text.casefold()))
    return text.replace("ł", "l") if "ł" in text else text


def _fold_markers() -> frozenset[str]:
    return frozenset(c for lo, hi in _FOLD_MARKER_BLOCKS for c in map(chr, range(lo, hi + 1))
                     if fold(c) != c.casefold())


_FOLD_MARKERS = _fold_markers()


def _wordish(c: str) -> bool:
    """A character that is part of a word: a letter, a digit, or a mark (Indic vowel signs)."""
    return bool(c) and (c.isalnum() or unicodedata.category(c)[0] == "M")


_RUN = re.compile(r"([^\W\d_])\1+")   # letters only: "2000 calories" is not "200 calories"


def squeeze(word: str) -> str:
    """Runs of one letter become one letter ("diiiie" → "die", "kill" → "kil"), on both sides; digits
    stay as typed (a number's zeros are its meaning)."""
    # Most words have no run: a search is cheaper than a substitution that finds nothing.
    return _RUN.sub(r"\1", word) if len(word) > 1 and _RUN.search(word) else word


def _word(raw: str) -> str:
    """One raw word, folded: leetspeak inside words that also have letters ("k1ll"; "year 7" stays)."""
    w = fold(raw)
    if not w.isalpha() and any(c.isalpha() for c in w):
        w = w.translate(_LEET)
    return w


@lru_cache(maxsize=32_768)
def _normal_word(raw: str) -> str:
    """One raw word as it is matched: folded, leetspeak undone, underscores out, repeats squeezed ("" if
    nothing is left). Cached: people type the same few thousand words, and a look-up costs a tenth of
    the normalisation (bounded: search terms are anyone's text)."""
    w = _word(raw)
    w = _UNDERSCORE.sub("", w) if "_" in w else w
    return squeeze(w) if w else ""


#: Chat spellings of everyday words, as one word each (after squeezing: "wot"; "wat"), on both sides
#: like every step of :func:`tokenise`, so a list's "what happens if you" is also "wat happens if u".
#: Not the ambiguous ones ("ur": your or you're; "y": why, or "and" in Spanish).
_TEXTSPEAK = {"u": "you", "r": "are", "wat": "what", "wot": "what", "wht": "what", "whut": "what",
              "cuz": "because", "coz": "because", "bc": "because", "bcoz": "because", "bcos": "because",
              "pls": "please", "plz": "please", "tmrw": "tomorrow", "tmr": "tomorrow", "tomoz": "tomorrow",
              "tonite": "tonight", "2nite": "tonight", "abt": "about", "wiv": "with", "wen": "when",
              "hw": "how", "luv": "love"}


@dataclass(slots=True)
class Token:
    text: str    # normalised
    start: int   # span in the original text
    end: int


def tokenise(text: str, join_intra: bool = True) -> list[Token]:
    """Normalised words of ``text`` with their spans in it. ``join_intra``: "self-harm" → "selfharm"
    (else "self", "harm"); "k.i.l.l" and "s-u-i-c-i-d-e" become one word either way."""
    out: list[Token] = []
    for m in (_RAW_WORD_ASCII if text.isascii() else _RAW_WORD).finditer(text):
        raw, start = m.group(), m.start()
        if raw.isalnum():  # most words: no punctuation at the edges or inside
            parts, pos = [raw], start
        else:
            # Edge punctuation is not part of the word ("myself!!!", "'kill'"); a leading $, @, ! or | is leet.
            left, right = 0, len(raw)
            while left < right and raw[left] in _EDGE:
                left += 1
            while right > left and raw[right - 1] in _EDGE_RIGHT:
                right -= 1
            if left == right:
                continue
            core = raw[left:right]
            parts = _INTRA.split(core)
            if len(parts) > 1 and (join_intra or all(len(p) == 1 for p in parts)):
                parts = ["".join(parts)]
            pos = start + left
        for p in parts:
            if p and (w := _normal_word(p)):
                out.append(Token(w, pos, pos + len(p)))
            pos += len(p) + 1
    if sum(len(t.text) == 1 for t in out) >= 3:   # else no letters can be spaced apart
        out = _join_spaced_letters(out)
    for t in out:
        if t.text in _TEXTSPEAK:
            t.text = _TEXTSPEAK[t.text]
    return out


def _join_spaced_letters(toks: list[Token]) -> list[Token]:
    """Letters spaced apart ("k i l l myself"): three or more one-letter words in a row become one word."""
    merged: list[Token] = []
    run: list[Token] = []
    for t in toks + [None]:  # type: ignore[list-item]
        if t is not None and len(t.text) == 1 and t.text.isalpha():
            run.append(t)
            continue
        if len(run) >= 3:
            merged.append(Token(squeeze("".join(r.text for r in run)), run[0].start, run[-1].end))
        else:
            merged.extend(run)
        run = []
        if t is not None:
            merged.append(t)
    return merged


def tokens(text: str, join_intra: bool = True) -> list[str]:
    """The normalised words of ``text`` (for tests and tools)."""
    return [t.text for t in tokenise(text[:MAX_TEXT], join_intra)]


def _spaced(text: str, encoded: bytes | None = None) -> str:
    """Text whose case is already folded (but for ASCII letters: they are lowered here) → the content
    path's form, with whole-string operations only (no per-word Python): punctuation, symbols and
    whitespace spaces, one space between words and at each end (the phrases' keys are space-delimited).
    ``encoded``: the text in UTF-8 (surrogatepass), if the caller has it."""
    if text.isascii():
        text = text.encode().translate(_BYTE_SPACES).decode()
    else:
        raw = encoded or text.encode("utf-8", "surrogatepass")
        for lead, chars in _UNICODE_SPACES_BY_LEAD.items():
            if lead in raw:
                for c in chars:
                    if c in text:  # a search of the str, replaced in the bytes (UTF-8 sequences never overlap)
                        raw = raw.replace(c.encode(), b" ")
        text = raw.translate(_BYTE_SPACES).decode("utf-8", "replace")
    return " " + _SPACE_RUNS.sub(" ", text).strip(" ") + " "


def content_string(text: str) -> str:
    """The content path's folded form (case, accents, marks and compatibility letters folded, as
    :func:`fold`): what the keys are made of, and what a page is searched as when it holds a character
    of :data:`_FOLD_MARKER_BLOCKS`."""
    return _spaced(fold(text))


def page_string(text: str) -> str:
    """A page's text as it is searched: case folded, accents kept — folding accents costs more than the
    rest of the search together (NFKD and a regex over every character), so the keys carry each
    accented spelling the lists use instead (see :attr:`PhraseLists.spellings`). ``str.casefold`` is
    skipped for text with no cased letter outside ASCII (Arabic, Hebrew, Indic scripts): :func:`_spaced`
    lowers ASCII letters anyway, and the check costs less than the fold (0.1 against 0.3 ms a page)."""
    if text.isascii():
        return _spaced(text)
    # Latin, Greek or Cyrillic text shows a cased letter within its first words (and is encoded once,
    # after folding); else the whole text is checked, at C speed.
    if _CASED_LEAD.search(text[:2048].encode("utf-8", "surrogatepass")):
        return _spaced(text.casefold())
    raw = text.encode("utf-8", "surrogatepass")
    if raw.translate(None, _NOT_CASED_LEAD):
        return _spaced(text.casefold())
    return _spaced(text, raw)


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
        return a[i + 1:] == b[i + 1:] or (i + 1 < la and a[i] == b[i + 1] and a[i + 1] == b[i]
                                           and a[i + 2:] == b[i + 2:])
    return a[i + 1:] == b[i:] if la > lb else a[i:] == b[i + 1:]


def _deletions(word: str) -> list[str]:
    """Each one-letter deletion of ``word``, in the order of the deleted letter, once each (an ordered
    list: which correction wins must not depend on the interpreter's hash seed)."""
    return list(dict.fromkeys(word[:i] + word[i + 1:] for i in range(len(word))))


def _lemma(word: str, vocabulary: set[str]) -> str:
    """An English verb form → its base, when the lists use that base ("ending" → "end", "hated" → "hate",
    "dying" → "die", "tried" → "try"); else the word. Words are squeezed ("cutting" is "cuting"). Only
    -ing and -ed: a plural's singular often means something else ("weeds", "weed")."""
    if len(word) < 5 or not word.isascii():
        return word
    if word.endswith("ing"):
        stem = word[:-3]
        candidates = (stem, stem + "e", word[:-4] + "ie")
    elif word.endswith("ed"):
        stem = word[:-2]
        candidates = (stem, word[:-1], word[:-3] + "y") if word.endswith("ied") else (stem, word[:-1])
    else:
        return word
    return next((c for c in candidates if len(c) >= 3 and c in vocabulary), word)


# -- the lists --------------------------------------------------------------------------------------
#: One spelling a part of an entry matches: (typed words, content words, starts at a word start, ends at
#: a word end — False for a stem). A plain tuple: tens of thousands are kept, and the cyclic garbage
#: collector leaves tuples of strings alone (a class instance would be walked at every full collection).
Form = tuple[tuple[str, ...], tuple[str, ...], bool, bool]
WORDS, PLAIN, LEFT, RIGHT = range(4)


@dataclass(frozen=True, slots=True)
class Phrase:
    text: str                    # as written in the list
    forms: tuple[Form, ...]      # what it matches (one spelling, or the members of a term set)
    seq: tuple["Phrase", ...] = ()  # a template ("< @i @want to @die >"): these, one after another

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(w for p in self.seq for w in p.forms[0][WORDS]) if self.seq else self.forms[0][WORDS]


@dataclass(frozen=True, slots=True)
class Entry:
    parts: tuple[Phrase, ...]    # all must match, near each other
    weight: int
    source: str                  # file:line

    concept: bool = field(init=False)   # written with term sets, inflections or stems: one of a tier

    def __post_init__(self) -> None:
        object.__setattr__(self, "concept", any(p.seq or len(p.forms) > 1 or "@" in p.text for p in self.parts))


@dataclass
class ThemeList:
    theme: str
    label: str = ""
    entries: list[Entry] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Score:
    theme: str
    score: int
    matched: tuple[str, ...]     # the words of the text that matched, as written there
    phrases: tuple[str, ...] = ()  # the list phrases behind them (for tools and tests; not evidence)


_SET_LINE = re.compile(r"^@([\w-]+)\s*=\s*(.*)$")
_SET_REF = re.compile(r"@([\w-]+)")
MAX_FORMS = 20_000   # one part's expansion of term sets; a larger product is a mistake in the list
_VOWELS = set("aeiou")


def inflections(word: str) -> set[str]:
    """An English word and its regular inflections (``cut~`` in a list): -s/-es/-ies, -ed/-d/-ied,
    -ing with e dropped, and a doubled final consonant both ways ("cuting" is typed too)."""
    w = word
    out = {w}
    if len(w) < 2 or not w.isalpha():
        return out
    out.add(w + "es" if w.endswith(("s", "x", "z", "ch", "sh", "o")) else w + "s")
    if w.endswith("o"):
        out.add(w + "s")
    if w[-1] == "y" and w[-2] not in _VOWELS:
        out |= {w[:-1] + "ies", w[:-1] + "ied", w + "ing"}
    elif w.endswith("ie"):
        out |= {w + "d", w[:-2] + "ying"}
    elif w.endswith("e"):
        out |= {w + "d", (w if w.endswith("ee") else w[:-1]) + "ing"}
    else:
        out |= {w + "ed", w + "ing"}
        if len(w) >= 3 and w[-1] not in _VOWELS | {"w", "x", "y"} and w[-2] in _VOWELS and w[-3] not in _VOWELS:
            out |= {w + w[-1] + "ed", w + w[-1] + "ing"}
    return out


_Spelling = tuple[tuple[str, ...], tuple[str, ...], bool]   # typed words, content words, ends at a word end


#: Folded word → the spellings with accents it was written in, in any list loaded in this process. A
#: page keeps its accents, so each key is also added in these spellings; each folds back to the word, so
#: a key in one matches exactly what the folded key matches in folded text (spellings learnt from other
#: lists add no match that folding the page would not make).
_WRITTEN: dict[str, set[str]] = {}


@lru_cache(maxsize=None)
def _normal(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A piece of a phrase in both paths' spelling (cached: set members recur in many templates)."""
    plain = tuple(content_string(text).split())
    if not text.isascii():
        written = page_string(unicodedata.normalize("NFC", text.casefold())).split()
        if len(written) == len(plain):
            for folded, as_written in zip(plain, written):
                if folded != as_written:
                    # As written, and with its marks taken off but ł kept (what stripping accents the
                    # usual way, NFKD, does to Polish: "popełnic").
                    stripped = _DIACRITICS.sub("", unicodedata.normalize("NFKD", as_written))
                    _WRITTEN.setdefault(folded, set()).update({as_written, stripped} - {folded})
    return tuple(t.text for t in tokenise(text, join_intra=False)), plain


def _member(raw: str) -> list[_Spelling]:
    """A literal template word → its spellings: ``stem*`` a word start only; ``word~`` with its English
    inflections; else itself."""
    if raw.endswith("*") and len(raw) > 1:
        return [(*_normal(raw[:-1]), False)]
    if raw.endswith("~") and len(raw) > 1:
        return [(*_normal(w), True) for w in sorted(inflections(fold(raw[:-1])))]
    return [(*_normal(raw), True)]


def _expand(raw: str, sets: dict[str, list[str]], where: str, _seen: tuple[str, ...] = ()) -> list[_Spelling]:
    """A template's spellings: every ``@set`` replaced by each of its members (recursively)."""
    out: list[_Spelling] = [((), (), True)]
    for tok in raw.split():
        m = _SET_REF.fullmatch(tok)
        if m:
            name = m.group(1)
            if name not in sets:
                raise PhraseError(f"{where}: unknown term set @{name} (define it as '@{name} = a | b')")
            if name in _seen:
                raise PhraseError(f"{where}: term set @{name} refers to itself")
            alts = [a for member in sets[name] for a in _expand(member, sets, where, _seen + (name,))]
        else:
            alts = _member(tok)
        out = [(w1 + w2, p1 + p2, right) for w1, p1, _ in out for w2, p2, right in alts]
        if len(out) > MAX_FORMS:
            raise PhraseError(f"{where}: {raw!r} expands to more than {MAX_FORMS} spellings")
    return out


def _phrase(raw: str, sets: dict[str, list[str]] | None = None, where: str = "",
            known: dict[str, tuple[Form, ...]] | None = None) -> Phrase | None:
    """One ``<...>`` part. Spaces inside the brackets are literal, as in E2Guardian: ``< x >`` whole
    words, ``< x>`` a word start (a stem), ``<x>`` anywhere. A template — with a term set (``@name``)
    or a word written ``word~`` or ``stem*`` — is whole words, a sequence of pieces each matched on its
    own (the sets' members are not multiplied out: "< @i @want to @die >" is four pieces in a row).
    ``known``: the forms of pieces already expanded with these sets — a set is named in many rules, and
    each keeping its own copy of the set's spellings was a third of the lists' memory."""
    if not ("@" in raw or "~" in raw or raw.strip().endswith("*")):
        words, plain = _normal(raw.strip())
        return Phrase(raw.strip(), ((words, plain, raw.startswith(" "), raw.endswith(" ")),)) if words else None
    pieces: list[str] = []
    literal: list[str] = []
    for tok in raw.split():
        if tok.startswith("@") or tok.endswith(("~", "*")):
            if literal:
                pieces.append(" ".join(literal))
                literal = []
            pieces.append(tok)
        else:
            literal.append(tok)
    if literal:
        pieces.append(" ".join(literal))
    seq = []
    for piece in pieces:
        forms = known.get(piece) if known is not None else None
        if forms is None:
            unique: dict[Form, None] = {}
            for words, plain, right in _expand(piece, sets or {}, where):
                if words:
                    unique[(words, plain, True, right)] = None
            forms = tuple(unique)
            if known is not None:
                known[piece] = forms
        if forms:
            seq.append(Phrase(piece, forms))
    if not seq:
        return None
    if len(seq) == 1:
        return Phrase(raw.strip(), seq[0].forms)
    return Phrase(raw.strip(), (), tuple(seq))


def read_sets(path: Path, sets: dict[str, list[str]]) -> None:
    """``@name = a | b | c`` lines of a list file, added to ``sets`` (a name defined again is extended:
    each language's file adds its own words to a shared set)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise PhraseError(f"{path}: cannot read phrase list: {e.strerror}") from None
    for n, line in enumerate(lines, 1):
        m = _SET_LINE.match(line.strip().lstrip("\ufeff"))
        if m:
            members = [x.strip() for x in m.group(2).split("|") if x.strip()]
            if not members:
                raise PhraseError(f"{path}:{n}: term set @{m.group(1)} has no members")
            sets.setdefault(m.group(1), []).extend(x for x in members if x not in sets.get(m.group(1), ()))


def parse_list(path: Path, theme: str, _depth: int = 0, sets: dict[str, list[str]] | None = None,
               known: dict[str, tuple[Form, ...]] | None = None) -> ThemeList:
    """A list file's entries; ``sets`` the term sets it sees, ``known`` the pieces expanded with them
    (see :func:`_phrase`)."""
    if sets is None:
        sets = {}
        read_sets(path, sets)
    if known is None:
        known = {}
    tl = ThemeList(theme)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise PhraseError(f"{path}: cannot read phrase list: {e.strerror}") from None
    for n, line in enumerate(lines, 1):
        line = line.strip().lstrip("\ufeff")
        if not line or _SET_LINE.match(line):
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
            inc = inc if inc.is_absolute() else path.parent / inc
            read_sets(inc, sets)
            known.clear()   # the included file may extend a set
            tl.entries.extend(parse_list(inc, theme, _depth + 1, sets, known).entries)
            continue
        m = _LINE.match(line)
        if not m:
            raise PhraseError(f"{path}:{n}: not a weighted phrase line (expected '< phrase ><weight>'): {line[:80]!r}")
        where = f"{path}:{n}"
        raws = _PART.findall(m.group(1))
        if any(" | " in raw for raw in raws):   # would be matched as the literal words, i.e. never
            raise PhraseError(f"{where}: alternatives go in a term set ('@name = a | b', then '<@name>'), "
                              f"not inside a part: {line[:80]!r}")
        parts = tuple(p for p in (_phrase(raw, sets, where, known) for raw in raws) if p is not None)
        if len(parts) > 15:
            raise PhraseError(f"{where}: at most 15 parts in a combination")
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
        p = _phrase(" " + line[1:-1].strip() + " ")
        if p is not None:
            out.append(p)
    return out


_Place = tuple[int, int, str, int, int]   # start, end, the words there, its first unit, the next unit


def _near_places(places: list[list[_Place]], span: int = 0) -> list[_Place] | None:
    """One place of each part of a combination, all within ``span`` (default :data:`COMBO_SPAN`)
    characters — the first such window — or None: the parts of "robux … for pics" must be in one query
    or sentence, not anywhere on a page."""
    span = span or COMBO_SPAN
    if all(len(ps) == 1 for ps in places):   # most often each part is found once: no window to slide
        only = [ps[0] for ps in places]
        return only if max(pl[1] for pl in only) - min(pl[0] for pl in only) <= span else None
    items = sorted((pl[0], pl[1], part, k) for part, ps in enumerate(places) for k, pl in enumerate(ps))
    need, count, lo = len(places), {}, 0
    for hi in range(len(items)):
        part = items[hi][2]
        count[part] = count.get(part, 0) + 1
        while len(count) == need:
            if max(x[1] for x in items[lo:hi + 1]) - items[lo][0] <= span:
                first: dict[int, _Place] = {}
                for _, _, p, k in items[lo:hi + 1]:
                    first.setdefault(p, places[p][k])
                return [first[p] for p in range(need)]
            p = items[lo][2]
            count[p] -= 1
            if not count[p]:
                del count[p]
            lo += 1
    return None


def _in_a_row(pieces: list[list[_Place]], text: str, limit: int = _PLACES) -> list[_Place]:
    """Places where the pieces of a template follow one another, word after word (a place's fourth
    field is where it starts, its fifth where the next word must start)."""
    chains = [(p[0], p[1], p[3], p[4]) for p in pieces[0]]
    for places in pieces[1:]:
        chains = [(c[0], q[1], c[2], q[4]) for c in chains for q in places if q[3] == c[3]][:limit]
        if not chains:
            return []
    return [(s, e, text[s:e], first, nxt) for s, e, first, nxt in chains]


def _counted(matched: list[tuple[int, Entry, list[Hit]]]) -> list[tuple[int, Entry, list[Hit]]]:
    """The entries of one theme that count. A phrase found inside a longer phrase is not counted again:
    "how to kill myself" scores as itself, not plus "kill myself" — so a benign context word can outweigh
    it; likewise a combination all of whose parts lie inside one such phrase that weighs as much. Concept rules come in tiers
    ("make"+"bomb" 70, then "how to"+"make"+"bomb" 90): one whose words all lie within the words of a
    weightier rule is not counted again, and a plain phrase a concept rule also covers counts once — so
    tiers do not add up past what a benign context word can take back. Negative entries always count."""
    info = []
    for i, e, hits in matched:
        if e.weight > 0:
            s, end = min(h.start for h in hits), max(h.end for h in hits)
            info.append((i, e, hits, s, end, (e.weight, len(e.parts), sum(h.end - h.start for h in hits), -i)))
    singles = [(s, end, i, e.weight) for i, e, _, s, end, _ in info if len(e.parts) == 1]
    dropped = set()
    for i, e, hits, s, end, rank in info:
        combo = len(e.parts) > 1
        # A combination inside a phrase is dropped only when the phrase weighs as much: the strongest
        # evidence wins ("isis beheading" 40 does not hide "beheading" x "isis" 80; then the loop
        # below drops the lighter phrase instead).
        if any(i2 != i and s2 <= s and end <= e2 and ((combo and w2 >= e.weight) or (e2 - s2) > (end - s))
               for s2, e2, i2, w2 in singles):
            dropped.add(i)
    for i, e, hits, s, end, rank in info:
        if i in dropped:
            continue
        for j, other, f, s2, e2, rank2 in info:
            if s < s2 or end > e2 or j == i or j in dropped or rank2 <= rank or not (e.concept or other.concept):
                continue
            if all(any(g.start <= h.start and h.end <= g.end for g in f) for h in hits) \
                    or (len(hits) == 1 and any(g.start == s for g in f) and any(g.end == end for g in f)):
                dropped.add(i)   # its words lie within the other's (a phrase may span its parts)
                break
    return [m for m in matched if m[0] not in dropped]


# -- the index --------------------------------------------------------------------------------------
_EXCEPTION = -1
_MAX_SPELLINGS = 64   # accented spellings of one key at most (each word as written or folded)


def _spellings(words: tuple[str, ...], spell: dict[str, tuple[str, ...]]) -> list[tuple[str, ...]]:
    """The words, and the same with each word in any accented spelling of it (``spell``): "nie chce juz
    zyc" is also "nie chcę już żyć" and any mix of the two. Bounded: past :data:`_MAX_SPELLINGS`
    mixes, only the folded words and each spelling throughout."""
    options = [(w, *spell[w]) if w in spell else (w,) for w in words]
    if all(len(o) == 1 for o in options):
        return [words]
    if prod(map(len, options)) <= _MAX_SPELLINGS:
        return list(product(*options))
    width = max(map(len, options))
    return [tuple(o[min(i, len(o) - 1)] for o in options) for i in range(width)]


class _Automaton:
    """Aho-Corasick over a fixed set of keys: every occurrence of every key in a text, overlapping ones
    included, as (key number, start, end) in characters.

    ahocorasick_rs (the Rust aho-corasick crate, a contiguous NFA): over a 100 KB page ~1.3x faster than
    pyahocorasick with the same keys, and it stays fast with thousands of distinct first characters
    (accented spellings, the fold markers), where pyahocorasick's search slows ~10x. ``ascii`` (the page
    automaton): ASCII text is searched as bytes by a full DFA of the ASCII keys only, ~2x faster again
    (a str is searched as UTF-8 and its offsets mapped back to characters; a 100 KB page's pass goes
    from ~0.5 to ~0.25 ms for ~13 MB more than an NFA)."""

    __slots__ = ("refs", "based_refs", "_ac", "_ascii")

    def __init__(self, keys: dict[str, tuple[int, ...]], ascii: bool = False, based: set[str] = frozenset()):
        # ASCII keys first: their numbers are the same in both automata.
        order = sorted(keys, key=lambda k: not k.isascii())
        #: Each key's refs; the ``based`` keys, which only the base-form pass of typed text looks at (see
        #: PhraseLists._automaton), have none here and theirs in :attr:`based_refs`.
        self.based_refs: list[tuple[int, ...]] = [keys[k] for k in order]
        self.refs = [() if k in based else refs for k, refs in zip(order, self.based_refs)] if based \
            else self.based_refs
        impl = ahocorasick_rs.Implementation.ContiguousNFA
        self._ac = ahocorasick_rs.AhoCorasick(order, implementation=impl) if order else None
        plain = [k.encode() for k in order if k.isascii()] if ascii else []
        self._ascii = ahocorasick_rs.BytesAhoCorasick(plain, implementation=ahocorasick_rs.Implementation.DFA) \
            if plain else None

    def find(self, text: str) -> list[tuple[int, int, int]]:
        if self._ac is None or not text:
            return []
        if self._ascii is not None and text.isascii():
            return self._ascii.find_matches_as_indexes(text.encode(), overlapping=True)
        return self._ac.find_matches_as_indexes(text, overlapping=True)


@dataclass(slots=True)
class Hit:
    """One part of one entry found in a text: ``start:end`` is its span in the text searched."""
    entry: int
    part: int
    start: int
    end: int
    words: str   # the text's own words for it


class PhraseLists:
    """All themes' lists compiled into two automata (typed text, page text); see the module doc."""

    def __init__(self, themes: list[ThemeList], exceptions: list[Phrase]):
        self.themes = themes
        self.exceptions = exceptions
        self.entries: list[Entry] = []
        self.entry_theme: list[int] = []
        for i, tl in enumerate(themes):
            for e in tl.entries:
                self.entries.append(e)
                self.entry_theme.append(i)
        # Parts shared by many entries ("@secret" is in fifteen) are one atom, searched once; each entry
        # is looked at only when its anchor — its atom shared by the fewest entries — is found.
        atom_of: dict[tuple, int] = {}
        self.atoms: list[Phrase] = []
        self.entry_parts: list[tuple[tuple[int, ...], ...]] = []   # per part, its atoms in a row
        self.entry_atoms: list[tuple[int, ...]] = []               # every atom an entry needs
        for e in self.entries:
            parts = []
            for p in e.parts:
                ids = []
                for piece in p.seq or (p,):
                    key = tuple((f[WORDS], f[LEFT], f[RIGHT]) for f in piece.forms)
                    if key not in atom_of:
                        atom_of[key] = len(self.atoms)
                        self.atoms.append(piece)
                    ids.append(atom_of[key])
                parts.append(tuple(ids))
            self.entry_parts.append(tuple(parts))
            self.entry_atoms.append(tuple(dict.fromkeys(a for part in parts for a in part)))
        users: dict[int, int] = {}
        for ids in self.entry_atoms:
            for a in set(ids):
                users[a] = users.get(a, 0) + 1
        self._anchored: dict[int, list[int]] = {}
        for i, ids in enumerate(self.entry_atoms):
            anchor = min(ids, key=lambda a: (self._everyday(a), self._single_words(a), users[a]))
            self._anchored.setdefault(anchor, []).append(i)
        self.vocabulary: set[str] = {w for p in self.atoms for f in p.forms for w in f[WORDS]}
        # Words a list names on their own keep the sense it gave them ("blocked", "gaming"): not reduced
        # to their base form (see _base_of).
        self._own_words = {f[WORDS][0] for p in self.atoms for f in p.forms if len(f[WORDS]) == 1}
        self._lemmas: dict[str, str] = {}   # typed word → its base (see _base_of), cached
        self._refs: dict[tuple[int, ...], tuple[int, ...]] = {}
        self._typed = self._automaton(lambda f: f[WORDS], glue=True, lemmas=True)
        #: Folded word → its accented spellings (from every list parsed so far; see _WRITTEN).
        self.spellings: dict[str, tuple[str, ...]] = {w: tuple(sorted(v)) for w, v in list(_WRITTEN.items())}
        # The automata for page text are made when a page is first scored (most processes that load the
        # lists score only what people type).
        self._pages: tuple[_Automaton, _Automaton, int] | None = None
        # Misspelling index: every one-letter deletion of every long list word → the words it came from.
        self._protected = {w for p in exceptions for f in p.forms for w in f[WORDS]}  # never "corrected"
        deletes: dict[str, list[str]] = {}
        for w in sorted(self.vocabulary):
            if len(w) >= FUZZY_MIN and w.isalpha():
                for d in [w, *_deletions(w)]:
                    deletes.setdefault(d, []).append(w)
        self._deletes: dict[str, tuple[str, ...]] = {d: tuple(ws) for d, ws in deletes.items()}
        self._corrections: dict[str, str] = {}

    def _single_words(self, atom: int) -> int:
        """How many of an atom's spellings are one word: a word of a set ("trip", "form") turns up on
        ordinary pages far more often than a phrase of several, so it makes a poor anchor."""
        return sum(1 for f in self.atoms[atom].forms if len(f[PLAIN]) == 1)

    def _everyday(self, atom: int) -> int:
        """How many of an atom's spellings are made of everyday words only (common in any page)."""
        return sum(1 for f in self.atoms[atom].forms if all(w in _EVERYDAY or len(w) <= 2 for w in f[PLAIN]))

    def _automaton(self, words_of, glue: bool, only: set[int] | None = None, written: bool = False,
                   markers: bool = False, lemmas: bool = False) -> _Automaton:
        """``written``: each key also in the accented spellings of its words (page text keeps its
        accents); ``markers``: the characters of :data:`_FOLD_MARKER_BLOCKS` as keys of their own, with
        no refs (a page that has one is folded and searched again); ``lemmas``: each phrase of several
        whole words also with its verb forms as their base (:func:`_lemma`: "thinking of" as "think of"),
        a key of its own that only the typed text's base-form pass looks at (:attr:`_Automaton.based_refs`):
        text typed in the base form does not match a phrase written inflected ("how to stop a bully at
        school" is not "bullied at school"). Not for single words, which keep their own sense ("fasting"
        is not "fast"), nor where the base form is a phrase of its own, or another's base form."""
        keys: dict[str, list[int]] = {}
        spell = self.spellings if written else {}
        based: dict[str, int] = {}   # base-form key → the one atom (or exception) it is for
        claimed: set[str] = set()

        def add_based(words: tuple[str, ...], ref: int) -> None:
            lemma = tuple(self._base_of(w) for w in words)
            if lemma != words:
                key = " " + " ".join(lemma) + " "
                if based.get(key, ref) != ref:
                    claimed.add(key)   # two phrases' base form: one would count twice
                if ref == _EXCEPTION or key not in based:
                    based[key] = ref   # a look-alike's base form stays one ("dying laughing")

        def add(key: str, ref: int) -> None:
            refs = keys.setdefault(key, [])
            if ref not in refs:
                refs.append(ref)

        for a, p in enumerate(self.atoms):
            if only is not None and a not in only:
                continue
            for f in p.forms:
                words = words_of(f)
                if not words:
                    continue
                for spelling in _spellings(words, spell):
                    add((" " if f[LEFT] else "") + " ".join(spelling) + (" " if f[RIGHT] else ""), a)
                if lemmas and f[LEFT] and f[RIGHT] and len(words) > 1:
                    add_based(words, a)
                # Written run together ("killmyself"): only for plain phrases, not set expansions.
                if glue and f[LEFT] and f[RIGHT] and len(p.forms) == 1 and len(words) > 1 \
                        and len("".join(words)) >= GLUE_MIN:
                    add(" " + "".join(words) + " ", a)
        for p in self.exceptions:
            for f in p.forms:
                words = words_of(f)
                if words:
                    for spelling in _spellings(words, spell):
                        add(" " + " ".join(spelling) + " ", _EXCEPTION)
                    if lemmas and len(words) > 1:
                        add_based(words, _EXCEPTION)
        based_keys = {k: ref for k, ref in based.items()
                      if k not in keys and (k not in claimed or ref == _EXCEPTION)}
        for k, ref in based_keys.items():
            add(k, ref)
        if markers:
            for c in sorted(_FOLD_MARKERS - keys.keys()):
                keys[c] = []
        # Most keys name one atom, and the three automata name the same ones: one tuple for each.
        shared = self._refs
        return _Automaton({k: shared.setdefault(t, t) for k, t in ((k, tuple(r)) for k, r in keys.items())},
                          ascii=markers, based=set(based_keys))

    def _page_automata(self) -> tuple[_Automaton, _Automaton, int]:
        """(anchors and markers, every atom, the number of the first marker key) for page text. Pages
        are searched for anchors only, then the text around each anchor for the other parts of its
        combinations: everyday words ("school", "how to") are parts of many rules and occur thousands of
        times on a long page."""
        if self._pages is None:
            page = self._automaton(lambda f: f[PLAIN], glue=False, only=set(self._anchored), written=True,
                                   markers=True)
            first_marker = next((i for i, refs in enumerate(page.refs) if not refs), len(page.refs))
            self._pages = (page, self._automaton(lambda f: f[PLAIN], glue=False, written=True), first_marker)
        return self._pages

    def prepare_content(self) -> None:
        """Make the page automata now (at start-up), not on the first page scored."""
        self._page_automata()

    def _part_places(self, atoms: tuple[int, ...], found: dict[int, list[_Place]], text: str) -> list[_Place]:
        return found[atoms[0]] if len(atoms) == 1 else _in_a_row([found[a] for a in atoms], text)

    def _entry_hits(self, found: dict[int, list[_Place]], text: str) -> list[Hit]:
        """Atom places → a hit for each place of each part of each entry all of whose parts were found."""
        out: list[Hit] = []
        for a in found:
            for i in self._anchored.get(a, ()):
                if all(map(found.__contains__, self.entry_atoms[i])):
                    for j, part in enumerate(self.entry_parts[i]):
                        out.extend(Hit(i, j, pl[0], pl[1], pl[2]) for pl in self._part_places(part, found, text))
        return out

    def _matched(self, found: dict[int, list[_Place]], text: str) -> list[tuple[int, Entry, list[Hit]]]:
        """Atom places → each entry whose parts are all found near each other, with one hit per part."""
        out = []
        entries, entry_parts = self.entries, self.entry_parts
        for a in found:
            for i in self._anchored.get(a, ()):
                parts = entry_parts[i]
                if len(parts) == 1 and len(parts[0]) == 1:
                    s, e, w = found[a][0][:3]
                    out.append((i, entries[i], [Hit(i, 0, s, e, w)]))
                elif all(map(found.__contains__, self.entry_atoms[i])):
                    places = [self._part_places(part, found, text) for part in parts]
                    if not all(places):
                        continue
                    near = places[0][:1] if len(places) == 1 else _near_places(places)
                    if near:
                        out.append((i, entries[i], [Hit(i, j, pl[0], pl[1], pl[2]) for j, pl in enumerate(near)]))
        return out

    @property
    def size(self) -> int:
        return len(self.entries)

    # -- typed text ---------------------------------------------------------------------------------
    def score(self, text: str, fuzzy: bool = True) -> list[Score]:
        """Scores per theme (only themes with a positive score), highest first."""
        if not text or not self.entries:
            return []
        text = text[:MAX_TEXT]
        return self._scores(self._matched(self._found(text, fuzzy), text))

    def hits(self, text: str, fuzzy: bool = True, limit: int = MAX_TEXT) -> list[Hit]:
        """Every part of every entry found in ``text`` (with the original words), exceptions applied."""
        if not text or not self.entries:
            return []
        text = text[:limit]
        return self._entry_hits(self._found(text, fuzzy), text)

    def _found(self, text: str, fuzzy: bool) -> dict[int, list[_Place]]:
        found: dict[int, list[_Place]] = {}
        joined = tokenise(text, join_intra=True)
        variants = [joined]
        if _INTRA.search(text):   # punctuation inside a word: split there too
            split = tokenise(text, join_intra=False)
            if len(split) != len(joined):
                variants.append(split)
        for n, toks in enumerate(variants):
            if fuzzy:
                self._correct(toks)
            self._search_tokens(text, toks, found, n * (MAX_TEXT + 1))
        # Verb forms as their base ("thinking of ending it" as "think of end it", found by "@desire
        # @deadstate" whose sets hold "thinking of" and "end it"): a list phrase covers its inflections.
        based = self._based(joined)
        if based is not None:
            self._search_tokens(text, based, found, 2 * (MAX_TEXT + 1), based=True)
        return found

    def _base_of(self, word: str) -> str:
        """A verb form's base if the lists use it (:func:`_lemma`), unless a list names the word on its
        own ("blocked" in @blockword is not "block", "gaming" is not "game")."""
        return word if word in self._own_words else _lemma(word, self.vocabulary)

    def _based(self, toks: list[Token]) -> list[Token] | None:
        """The tokens with verb forms as their base (see :meth:`_base_of`), or None if none is one."""
        cache = self._lemmas
        out = None
        for i, t in enumerate(toks):
            w = t.text
            if not w.endswith(("ing", "ed")):   # most words: no look-up at all
                continue
            base = cache.get(w)
            if base is None:
                base = self._base_of(w)
                if len(cache) < 100_000:
                    cache[w] = base
            if base != w:
                out = out or list(toks)
                out[i] = Token(base, t.start, t.end)
        return out

    def _correct(self, toks: list[Token]) -> None:
        """One-letter misspellings of long list words ("suicde", "sucide") become the list word; the
        token keeps its span, so the evidence still shows what was typed. The first letter must agree
        ("putting" is not "cutting"), and words from the exception list are never corrected."""
        vocab, cache = self.vocabulary, self._corrections
        for t in toks:
            w = t.text
            if len(w) < FUZZY_MIN - 1 or w in vocab or not w.isalpha():
                continue
            fixed = cache.get(w)
            if fixed is None:
                fixed = w
                if w not in self._protected:
                    # The typed word first (a letter left out), then its deletions in order.
                    for d in [w, *_deletions(w)]:
                        for cand in self._deletes.get(d, ()):
                            if cand[0] == w[0] and _near(cand, w):
                                fixed = cand
                                break
                        if fixed != w:
                            break
                if len(cache) < 100_000:
                    cache[w] = fixed
            t.text = fixed

    def _search_tokens(self, text: str, toks: list[Token], found: dict[int, list[_Place]], base: int,
                       based: bool = False) -> None:
        """Atoms found in the tokens, as places (span in ``text``, the words there, and token numbers —
        ``base`` apart for each tokenisation, so that pieces of a template only chain within one).
        ``based``: the tokens are in their base form; the keys in base form are looked at too."""
        if not toks:
            return
        line = " " + " ".join([t.text for t in toks]) + " "
        starts, pos = [], 1
        for t in toks:
            starts.append(pos)
            pos += len(t.text) + 1
        raw: list[tuple[int, int, tuple[int, ...]]] = []
        masked: list[tuple[int, int]] = []
        keys = self._typed.based_refs if based else self._typed.refs
        for k, start, end in self._typed.find(line):
            refs, end = keys[k], end - 1
            first = bisect_right(starts, start) - 1   # the token the key starts in (or before)
            if line[start] == " ":
                first += 1
            last = bisect_right(starts, end if line[end] != " " else end - 1) - 1
            first, last = max(first, 0), max(last, max(first, 0))
            if _EXCEPTION in refs:
                masked.append((first, last))
            raw.append((first, last, refs))
        for first, last, refs in raw:
            if masked and any(a <= last and first <= b for a, b in masked):
                continue
            s, e = toks[first].start, toks[last].end
            for ref in refs:
                if ref != _EXCEPTION:
                    found.setdefault(ref, []).append((s, e, text[s:e], base + first, base + last + 1))

    # -- page text ----------------------------------------------------------------------------------
    def content_hits(self, text: str) -> tuple[str, list[Hit]]:
        """Hits in page text (exact spelling, case folded; accents as on the page or none): (the normal
        form searched, hits with spans in it). Bounded: at most :data:`MAX_CONTENT` characters are read,
        a few places of each atom kept and at most :data:`_WINDOWS` stretches around anchors searched
        again for combinations."""
        text = text[:MAX_CONTENT]
        line = page_string(text)
        if not self.entries:
            return line, []
        page, _, first_marker = self._page_automata()
        matches = page.find(line)
        if matches and not line.isascii() and max(matches)[0] >= first_marker:
            line = content_string(text)  # combining marks or compatibility letters: folded whole
            matches = page.find(line)
        return line, self._line_hits(line, matches)

    def line_hits(self, line: str) -> list[Hit]:
        """Hits in text already in the content path's normal form (see :meth:`stream_form`), with spans
        in it; a streamed reply is searched so, piece by piece."""
        if not self.entries:
            return []
        return self._line_hits(line, self._page_automata()[0].find(line))

    def stream_form(self, piece: str) -> str:
        """A piece of a streamed text in the content path's normal form, without the spaces that pad a
        whole text: pieces so normalised join into the normal form of the whole (but for a run of
        spaces across two pieces, which the caller makes one). Folded whole if it holds a character
        that folding changes and no key is written in (pieces are short: a check per character)."""
        folded = not piece.isascii() and not _FOLD_MARKERS.isdisjoint(piece)
        spaced = content_string(piece) if folded else _spaced(piece.casefold())
        if not spaced.strip(" "):
            return " "
        # " words ": a pad stays only where the piece ends in a separator (else a word goes on)
        return spaced[1 if _wordish(piece[:1]) else 0:-1 if _wordish(piece[-1:]) else None]

    def _line_hits(self, line: str, matches: list[tuple[int, int, int]]) -> list[Hit]:
        page, content, _ = self._page_automata()
        found = self._page_places(page, matches, line, 0)
        # Around each anchor of a combination, the other parts (only the atoms of combinations whose
        # anchor was found: everyday words of other rules are left alone).
        stretches: list[list[int]] = []
        wanted: set[int] = set()
        for a, places in found.items():
            combos = [i for i in self._anchored.get(a, ()) if len(self.entry_atoms[i]) > 1]
            if combos:
                wanted.update(x for i in combos for x in self.entry_atoms[i])
                for s, e, *_ in places:
                    stretches.append([max(0, s - COMBO_SPAN), e + COMBO_SPAN])
        if stretches:
            stretches.sort()
            merged = [stretches[0]]
            for s, e in stretches[1:]:
                if s <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], e)
                else:
                    merged.append([s, e])
            for s, e in merged[:_WINDOWS]:
                window = line[s:e]
                for atom, places in self._page_places(content, content.find(window), window, s, wanted).items():
                    have = found.setdefault(atom, [])
                    for pl in places:
                        if pl not in have and len(have) < _PLACES:
                            have.append(pl)
        return self._entry_hits(found, line)

    @staticmethod
    def _page_places(automaton: _Automaton, matches: list[tuple[int, int, int]], line: str,
                     offset: int, wanted: set[int] | None = None) -> dict[int, list[_Place]]:
        """Matches in ``line`` (at ``offset`` in the page's line) → the places of each atom (of the
        ``wanted`` atoms only, if given)."""
        keys = automaton.refs
        masked = [(start, end - 1) for k, start, end in matches if _EXCEPTION in keys[k]]
        found: dict[int, list[_Place]] = {}
        seen: dict[int, int] = {}   # places taken from each key: past _PLACES, its atoms have theirs
        for k, start, end in matches:
            refs = keys[k]
            # Around an anchor most keys found are everyday words of other rules: passed over first.
            if (wanted is not None and wanted.isdisjoint(refs)) or seen.get(k, 0) >= _PLACES:
                continue
            end -= 1
            if masked and any(a <= end and start <= b for a, b in masked):
                continue
            seen[k] = seen.get(k, 0) + 1
            place = None
            for ref in refs:
                if ref != _EXCEPTION and (wanted is None or ref in wanted):
                    places = found.setdefault(ref, [])
                    if len(places) < _PLACES:
                        if place is None:
                            s = start + 1 if line[start] == " " else start
                            e = end if line[end] == " " else end + 1
                            after = line.find(" ", e)
                            place = (offset + s, offset + e, line[s:e], offset + s,
                                     offset + (after + 1 if after >= 0 else len(line) + 1))
                        places.append(place)
        return found

    def score_content(self, text: str, evidence_at: int | None = 0) -> list[Score]:
        """Scores of a page's text. For themes scoring at least ``evidence_at`` (None: none) the matched
        words are looked up in the text as written, which costs a little more than the score itself."""
        text = text[:MAX_CONTENT]
        line, found = self.content_hits(text)
        scores = self.aggregate(found)
        wanted = set() if evidence_at is None else {s.theme for s in scores if s.score >= evidence_at}
        if not wanted:
            return scores
        out = []
        for s in scores:
            if s.theme in wanted:
                s = Score(s.theme, s.score, self._as_written(text, line, found, s.theme) or s.matched, s.phrases)
            out.append(s)
        return out

    def _as_written(self, text: str, line: str, found: list[Hit], theme: str) -> tuple[str, ...]:
        """The page's own words for a theme's matches (at most five): a search of the text for the
        matched words with any punctuation between them; where folding changed letters (a page with
        combining marks), the typed-text path over a window around where the match lies proportionally."""
        idx = next((i for i, t in enumerate(self.themes) if t.theme == theme), None)
        ratio = len(text) / max(len(line), 1)
        low = text.lower()
        same = len(low) == len(text)
        words: list[str] = []
        tried: set[str] = set()
        for h in sorted(found, key=lambda h: -len(h.words)):  # whole phrases before single words
            if self.entry_theme[h.entry] != idx or self.entries[h.entry].weight <= 0 or h.words in tried:
                continue
            tried.add(h.words)
            got = None
            # A pattern that starts with a literal is found at C speed; word edges checked after.
            rx = re.compile(r"[\W_]+".join(map(re.escape, h.words.split())))
            for m in rx.finditer(low):
                a, b = m.start(), m.end()
                if (a == 0 or not low[a - 1].isalnum()) and (b == len(low) or not low[b].isalnum()):
                    got = text[a:b] if same else m.group()
                    break
            if got is None:
                centre = int(h.start * ratio)
                window = text[max(0, centre - 1500):centre + 1500]
                got = next((g.words for g in self.hits(window, fuzzy=False, limit=len(window))
                            if g.entry == h.entry and g.part == h.part), None)
            if got and got not in words:
                words.append(got)
            if len(words) >= 5 or len(tried) >= 10:
                break
        return tuple(words)

    # -- scores -------------------------------------------------------------------------------------
    def aggregate(self, found: list[Hit]) -> list[Score]:
        """Hits → scores: each entry counts once, when all its parts are present within
        :data:`COMBO_SPAN` characters of each other; per theme the weights add up (see :func:`_counted`);
        themes with a positive total, highest first."""
        occurrences: dict[int, dict[int, list[_Place]]] = {}
        for h in found:
            occurrences.setdefault(h.entry, {}).setdefault(h.part, []).append((h.start, h.end, h.words))
        matched = []
        for i, got in occurrences.items():
            e = self.entries[i]
            n = len(e.parts)
            if len(got) < n:
                continue
            near = [got[0][0]] if n == 1 else _near_places([got[j] for j in range(n)])
            if near:
                matched.append((i, e, [Hit(i, j, s, end, w) for j, (s, end, w) in enumerate(near)]))
        return self._scores(matched)

    def _scores(self, matched: list[tuple[int, Entry, list[Hit]]]) -> list[Score]:
        by_theme: dict[int, list[tuple[int, Entry, list[Hit]]]] = {}
        for m in matched:
            by_theme.setdefault(self.entry_theme[m[0]], []).append(m)
        out = []
        for t, ms in by_theme.items():
            if len(ms) > 1:
                ms = _counted(ms)
            total = sum(e.weight for _, e, _ in ms)
            spans = [h for _, e, hits in ms if e.weight > 0 for h in hits]
            if total <= 0 or not spans:
                continue
            words: list[str] = []
            for h in sorted(spans, key=lambda h: (h.start, -h.end)):
                if h.words not in words and not any(h.words in w for w in words):
                    words.append(h.words)
            phrases = tuple(",".join(p.text for p in e.parts) for _, e, _ in ms if e.weight > 0)
            out.append(Score(self.themes[t].theme, total, tuple(words), phrases))
        return sorted(out, key=lambda s: -s.score)

    def label(self, theme: str) -> str:
        return next((t.label for t in self.themes if t.theme == theme and t.label), theme)


def load_phrase_lists(root: Path) -> PhraseLists:
    """``root/<theme>/*.txt``, ``root/exceptions.txt`` and the term sets of ``root/sets.txt`` (sets may
    be defined or extended in any file; every theme sees them all)."""
    if not root.is_dir():
        raise PhraseError(f"{root}: phrase list directory not found")
    dirs = sorted(p for p in root.iterdir() if p.is_dir())
    sets: dict[str, list[str]] = {}
    if (root / "sets.txt").exists():
        read_sets(root / "sets.txt", sets)
    for d in dirs:
        for f in sorted(d.glob("*.txt")):
            read_sets(f, sets)
    themes = []
    known: dict[str, tuple[Form, ...]] = {}   # one copy of each set's spellings, however many rules name it
    for d in dirs:
        tl = ThemeList(d.name)
        for f in sorted(d.glob("*.txt")):
            part = parse_list(f, d.name, sets=sets, known=known)
            tl.label = tl.label or part.label
            tl.entries.extend(part.entries)
        # One entry per normalised form: "zabić się" and "zabic sie" are the same phrase once folded.
        seen: set = set()
        unique = []
        for e in tl.entries:
            key = tuple(tuple(tuple((f[WORDS], f[LEFT], f[RIGHT]) for f in x.forms) for x in p.seq or (p,))
                        for p in e.parts)
            if key not in seen:
                seen.add(key)
                unique.append(e)
        tl.entries = unique
        if tl.entries:
            themes.append(tl)
    exc = root / "exceptions.txt"
    return PhraseLists(themes, parse_exceptions(exc) if exc.exists() else [])
