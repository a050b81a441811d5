"""The labelled detection corpus as a regression: recall and false alerts at the example config's pupil
threshold must not get worse than the committed figures (tests/data/detection_baseline.json)."""

import json
from pathlib import Path

import pytest

from schoolproxy.monitoring.evaluation import CORPUS, evaluate, load_corpus, pupil_threshold
from schoolproxy.monitoring.phrases import load_phrase_lists

ROOT = Path(__file__).resolve().parent.parent
BASELINE = json.loads((ROOT / "tests" / "data" / "detection_baseline.json").read_text())
THEMES = ("self-harm", "grooming", "extremism", "bullying", "pornography", "drugs", "weapons", "hate", "violence",
          "circumvention", "eating-disorders")
LANGUAGES = ("en", "pl", "ur", "pa", "ro", "bn", "ar", "pt", "es", "so", "gu", "lt", "ta")


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(CORPUS)


@pytest.fixture(scope="module")
def lists():
    return load_phrase_lists(ROOT / "filterlists" / "phrases")


@pytest.fixture(scope="module")
def threshold():
    return pupil_threshold(ROOT / "config" / "schoolproxy.yaml")


def test_the_corpus_covers_every_theme_and_language(corpus):
    assert len(corpus) >= 600
    themes = {t for q in corpus for t in q.themes}
    assert set(THEMES) <= themes
    assert set(LANGUAGES) <= {q.language for q in corpus if q.themes}
    assert sum(1 for q in corpus if not q.themes) >= 200   # benign look-alikes


def test_overall_figures_hold(corpus, lists, threshold):
    r = evaluate(lists, corpus, threshold)
    want = BASELINE["overall"]
    assert r.overall.recall >= want["recall"], [q.text for q in r.missed]
    assert r.overall.false_rate <= want["false_rate"], r.false


@pytest.mark.parametrize("split", sorted(BASELINE["splits"]))
def test_each_split_holds(corpus, lists, threshold, split):
    r = evaluate(lists, [q for q in corpus if q.split == split], threshold)
    want = BASELINE["splits"][split]
    assert r.overall.recall >= want["recall"], [q.text for q in r.missed]
    assert r.overall.false_rate <= want["false_rate"], r.false


def test_every_theme_holds(corpus, lists, threshold):
    r = evaluate(lists, corpus, threshold)
    want = BASELINE["theme_recall"]
    low = {t: v.recall for t, v in r.themes.items() if v.concerning and v.recall < want.get(t, 1.0)}
    assert not low, low
