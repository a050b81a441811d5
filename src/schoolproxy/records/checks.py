"""The checks log: when the filter was checked, by whom, what was tested and the result (the DfE
standards ask for exactly this record of regular checks)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Engine, insert, select, update

from schoolproxy.records.schema import check_results, check_runs

UTC = dt.timezone.utc
OUTCOMES = ("pass", "fail", "skip")


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str         # short and stable: "policy-test[3]", "proxy-blocks", "upstream"
    what: str         # what was tested, in words
    outcome: str      # pass | fail | skip (not tested, and why in detail)
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome == "fail"


def record_run(engine: Engine, run_by: str, started: dt.datetime, results: list[CheckResult]) -> int:
    """Store one run and its results; returns the run's number."""
    failed = sum(r.failed for r in results)
    with engine.begin() as conn:
        run_id = conn.execute(insert(check_runs).values(
            started_at=started, finished_at=dt.datetime.now(UTC), run_by=run_by[:256], passed=failed == 0,
            tested=sum(r.outcome != "skip" for r in results), failed=failed).returning(check_runs.c.id)).scalar_one()
        if results:
            conn.execute(insert(check_results), [
                {"run_id": run_id, "name": r.name[:64], "what": r.what[:512], "outcome": r.outcome,
                 "detail": r.detail[:4000]} for r in results])
    return run_id


def set_alert(engine: Engine, run_id: int, alert_ref: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(check_runs).where(check_runs.c.id == run_id).values(alert_ref=alert_ref))


def list_runs(engine: Engine, since: dt.datetime, limit: int = 1000) -> list[dict]:
    """Runs since a moment, newest first."""
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(check_runs).where(check_runs.c.started_at >= since)
                                              .order_by(check_runs.c.started_at.desc(), check_runs.c.id.desc())
                                              .limit(limit)).mappings()]


def results_of(engine: Engine, run_ids: list[int]) -> dict[int, list[dict]]:
    """Each run's results, in the order they were tested."""
    out: dict[int, list[dict]] = {i: [] for i in run_ids}
    if not run_ids:
        return out
    with engine.connect() as conn:
        for r in conn.execute(select(check_results).where(check_results.c.run_id.in_(run_ids))
                              .order_by(check_results.c.id)).mappings():
            out[r["run_id"]].append(dict(r))
    return out
