"""``schoolproxy alerts try``: what a DSL reads when checking how a phrase would be judged (a real subprocess)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent / "schoolproxy"


def try_(text: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), "alerts", "try", text, "--config", "config/schoolproxy.yaml", *extra],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_one_line_per_alert_with_the_words_as_typed():
    r = try_("how to K1LL myself")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["self-harm high 100: how to K1LL myself"]


def test_grooming_secrecy_phrasing_is_caught():
    r = try_("my new friend says keep our chats secret")
    line = r.stdout.strip()
    assert line.startswith("grooming high ") and "keep our chats secret" in line


def test_evidence_never_shows_a_phrase_that_was_not_typed():
    # Polish "wyślij mi nudesy" matches the Polish list; the English "send nudes" must not be shown.
    r = try_("wyślij mi nudesy")
    assert r.stdout.strip() == "grooming high 100: wyślij mi nudesy"
    r = try_("send nudes")
    assert "nudesy" not in r.stdout and "send nudes" in r.stdout


@pytest.mark.parametrize("text", ["this homework is killing me", "Scunthorpe United", "romeo and juliet suicide scene"])
def test_benign_says_no_alert(text):
    r = try_(text)
    assert (r.returncode, r.stdout) == (0, "no alert\n")


def test_profile_threshold_applies():
    assert try_("everyone hates me", "--profile", "pupil").stdout.startswith("bullying medium")
    assert try_("everyone hates me", "--profile", "staff").stdout == "no alert\n"
    r = try_("x", "--profile", "nobody")
    assert r.returncode == 2 and "unknown profile 'nobody'" in r.stderr
