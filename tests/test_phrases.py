"""Scoring search terms against the shipped phrase lists, with what children really type."""

from pathlib import Path

import pytest

from schoolproxy.monitoring.phrases import PhraseError, load_phrase_lists, parse_list, tokens

ROOT = Path(__file__).resolve().parent.parent / "filterlists" / "phrases"


@pytest.fixture(scope="module")
def lists():
    return load_phrase_lists(ROOT)


def top(lists, text):
    scores = lists.score(text)
    return (scores[0].theme, scores[0].score) if scores else (None, 0)


@pytest.mark.parametrize("text,theme", [
    ("how to kill myself", "self-harm"), ("how to k1ll myself", "self-harm"), ("HOW TO KILL MYSELF!!!", "self-harm"),
    ("k.i.l.l m.y.s.e.l.f", "self-harm"), ("k i l l myself", "self-harm"), ("i want to diiiie", "self-harm"),
    ("sucide methods", "self-harm"), ("su1c1de note", "self-harm"), ("kíll mysélf", "self-harm"),
    ("zabić się", "self-harm"), ("zabic sie", "self-harm"), ("vreau să mor", "self-harm"),
    ("khudkushi kaise kare", "self-harm"), ("خودکشی کیسے", "self-harm"), ("ਮਰਨਾ ਚਾਹੁੰਦਾ", "self-harm"),
    ("send me nudes", "grooming"), ("my boyfriend wants pics", "grooming"), ("nie mów rodzicom", "grooming"),
    ("how to join isis", "extremism"), ("how to make a bomb", "extremism"), ("where to buy drugs", "drugs"),
    ("everyone hates me", "bullying"), ("free porn", "pornography"), ("hitler was right", "hate"),
    ("bring a knife to school", "weapons"),
])
def test_concerning_searches_reach_the_pupil_threshold(lists, text, theme):
    got, score = top(lists, text)
    assert got == theme and score >= 60


@pytest.mark.parametrize("text", [
    "how to kill a process in linux", "sex education year 6", "Scunthorpe United fixtures", "bath bomb recipe",
    "suicide squad trailer", "history of the holocaust homework", "photo shoot ideas", "cut the rope game",
    "dying hair purple", "middlesex university", "to kill a mockingbird summary", "killer whale facts",
    "skill builder maths", "essex weather", "knife and fork drawing", "putting myself first", "nerf gun",
    "suicide prevention helpline", "anti bullying week", "talk to frank drugs", "how many legs does a spider have",
])
def test_benign_look_alikes_do_not(lists, text):
    assert top(lists, text)[1] < 60, lists.score(text)


def test_an_exception_covers_only_its_own_words(lists):
    assert top(lists, "kill a process and kill myself") == ("self-harm", 100)


def test_duplicate_spellings_count_once(lists):
    assert top(lists, "zabić się")[1] == 100


def test_normalisation():
    assert tokens("K1LL  my-self") == ["kil", "myself"]
    assert tokens("s-u-i-c-i-d-e") == ["suicide"]
    assert tokens("year 7 maths") == ["year", "7", "maths"]


def test_e2guardian_lists_import_unchanged(tmp_path):
    other = tmp_path / "more.txt"
    other.write_text("< extra phrase ><70>\n")
    f = tmp_path / "weightedphraselist"
    f.write_text('#listcategory: "Test"\n< one two ><50>\n<three>,<four><20>\n< benign ><-10>\n.Include<more.txt>\n')
    tl = parse_list(f, "t")
    assert tl.label == "Test" and [e.weight for e in tl.entries] == [50, 20, -10, 70]
    f.write_text("< broken <50>\n")
    with pytest.raises(PhraseError, match="weightedphraselist:1"):
        parse_list(f, "t")


def test_enormous_or_binary_input_is_bounded(lists):
    lists.score("\x00\xff" * 100_000)
    lists.score("kill " * 100_000)
    assert top(lists, "a" * 1_000_000)[1] == 0


def test_gurmukhi_words_are_not_broken_at_vowel_signs(lists):
    assert tokens("ਮੈਂ ਮਰਨਾ ਚਾਹੁੰਦਾ ਹਾਂ") == ["ਮੈਂ", "ਮਰਨਾ", "ਚਾਹੁੰਦਾ", "ਹਾਂ"]
    assert top(lists, "ਮੈਂ ਮਰਨਾ ਚਾਹੁੰਦਾ ਹਾਂ")[0] == "self-harm"
