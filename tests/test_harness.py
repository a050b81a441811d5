"""The test harness's own promises: in CI a missing tool or service fails the run instead of skipping
the tests that need it, and PostgreSQL is started before the suite, so its outage tests always run."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import require

ROOT = Path(__file__).resolve().parent.parent


def test_a_missing_tool_skips_on_a_users_machine_and_fails_in_ci(monkeypatch):
    monkeypatch.delenv("SCHOOLPROXY_REQUIRE_ALL", raising=False)
    with pytest.raises(pytest.skip.Exception, match="slapd is not installed"):
        require("slapd is not installed")
    monkeypatch.setenv("SCHOOLPROXY_REQUIRE_ALL", "1")
    with pytest.raises(pytest.fail.Exception, match="required in CI but unavailable: slapd is not installed"):
        require("slapd is not installed")


def test_ci_requires_everything_and_starts_postgresql_before_the_suite():
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "export SCHOOLPROXY_REQUIRE_ALL=1" in lines
    started = next(i for i, line in enumerate(lines) if line.startswith("pg_ctlcluster"))
    checked = max(i for i, line in enumerate(lines) if line == "pg_isready -h 127.0.0.1 -p 5432")
    suite = lines.index("make test")
    assert started < checked < suite      # set -e: the suite does not start unless PostgreSQL answers
    assert "set -euo pipefail" in lines
