"""The alert service: two background threads beside the proxy.

- The *rules* thread drains verdicts the bus handed over (a deque append on the request path, nothing
  more), evaluates the rules, names the person behind a shared logon from the supply register, and
  stores each alert with its outbox rows in one transaction. If the database is down, raised alerts
  wait in memory (bounded) and are stored when it is back.
- The *delivery* thread sends what is due in the outbox (SMTP, webhook, the mailbox folder), marks it
  sent, or schedules a retry with backoff — a restart loses nothing, since the outbox is in the database.
  It counts the high alerts that have reached no one (``pending``), queues the weekly digest when it
  falls due, and records for the console whether search alerts are on (``status``: off when the phrase
  lists could not be loaded; the metrics say it too).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import deque
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import Engine as DbEngine

from schoolproxy.identity.register import NO_ONE, Register, is_shared_logon
from schoolproxy.monitoring import evidence, pending, status, store
from schoolproxy.monitoring.delivery import DeliveryError, send_email, send_webhook, write_to_mailbox
from schoolproxy.monitoring.phrases import PhraseError, PhraseLists, load_phrase_lists
from schoolproxy.monitoring.rules import AlertRules, Candidate
from schoolproxy.records.visits import load_register
from schoolproxy.snapshot import SnapshotHolder
from schoolproxy.verdict import Verdict

log = logging.getLogger(__name__)
UTC = dt.timezone.utc
QUEUE_MAX = 100_000
PENDING_MAX = 10_000
REPEATS_EVERY = 2.0  # seconds between storing throttled repeat counts
UNDELIVERED_EVERY = 5.0  # seconds between counts of the alerts that have reached no one


class AlertService:
    def __init__(self, snapshots: SnapshotHolder, db: DbEngine, retry_seconds: float = 30.0,
                 poll_seconds: float = 0.25, deliver: bool = True):
        self.snapshots = snapshots
        self.db = db
        self.retry_seconds = retry_seconds
        self.poll = poll_seconds
        self._queue: deque[Verdict] = deque()
        self._pending: deque[tuple[Candidate, str]] = deque()
        self._repeats: dict[tuple[str | None, str, str], int] = {}  # counted, not yet stored
        self._repeat_evidence: dict[tuple[str | None, str, str], list[dict]] = {}  # what they were (bounded)
        self._repeats_at = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._rules: AlertRules | None = None
        self._rules_for = None
        #: The phrase lists in use (None: not loaded), the directory they came from, and the stamps of the list
        #: files last tried (a snapshot's ``phrase_files``).
        self._phrases: tuple[Path, PhraseLists | None, tuple] | None = None
        self._register: Register | None = None
        self._register_at = 0.0
        self._last_digest: dt.datetime | None = None
        # Counters for the metrics (read at scrape time).
        self.raised: dict[tuple[str, str], int] = {}
        self.deliveries: dict[tuple[str, str], int] = {}
        self.repeats = self.skipped = 0
        self.outbox_pending = 0
        self.undelivered = 0  # high and critical alerts that have reached no one (monitoring/pending.py)
        self._undelivered_at = 0.0
        #: Why search alerts are off (the phrase lists could not be loaded), or None while they are on.
        self.search_alerts_off: str | None = None
        #: Why the last edit of the phrase lists was refused (the lists before it still in use), or None.
        self.phrase_edit_refused: str | None = None
        self._status_said: tuple[str | None, float] | None = None  # recorded for the console, and when
        self._threads = [threading.Thread(target=self._rules_loop, name="schoolproxy-alerts", daemon=True)]
        if deliver:  # one process delivers (worker 0 of `run --workers N`); all of them raise
            self._threads.append(threading.Thread(target=self._delivery_loop, name="schoolproxy-alert-delivery",
                                                  daemon=True))

    # -- event loop side --------------------------------------------------------------------------
    def submit(self, v: Verdict) -> None:
        """Bus subscriber on the request path: append and return."""
        if len(self._queue) < QUEUE_MAX:
            self._queue.append(v)
        else:
            self.skipped += 1  # the record of the request is still kept; only rule evaluation is skipped

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> "AlertService":
        snap = self.snapshots.snapshot
        if snap is not None and snap.config.alerts.enabled:
            # Load the phrase lists here, on the starting thread, so a problem with them is reported at
            # start-up every time (from the rules thread it raced mitmdump's start-up error check).
            self._rules_of(snap)
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(10)

    # -- rules thread -----------------------------------------------------------------------------
    def _rules_loop(self) -> None:
        while True:
            stopping = self._stop.wait(self.poll)
            try:
                self.process()
                if stopping:
                    self._flush_repeats()
            except Exception:
                log.exception("alert rules failed")
            if stopping:
                return

    def process(self) -> int:
        """Evaluate everything queued; store what it raises. Returns the number of alerts stored."""
        snap = self.snapshots.snapshot
        if snap is None or not snap.config.alerts.enabled:
            self._queue.clear()
            self.search_alerts_off = self.phrase_edit_refused = None  # switched off on purpose, not failing
            return 0
        rules = self._rules_of(snap)
        roles = {name: p.role for name, p in snap.config.profiles.items()}
        while self._queue:
            v = self._queue.popleft()
            for c in rules.evaluate(v):
                self._pending.append((c, roles.get(v.profile, "pupil")))
            if len(self._pending) > PENDING_MAX:
                self._pending.popleft()
                self.skipped += 1
        return self._store_pending(snap)

    def _store_pending(self, snap) -> int:
        stored = 0
        if self._pending and time.monotonic() >= self._register_at:
            self._refresh_register()
        try:
            while self._pending:
                c, role = self._pending[0]
                if c.repeat_of is not None:
                    key = (c.verdict.username, c.verdict.client_ip, c.theme)
                    self._repeats[key] = self._repeats.get(key, 0) + 1
                    kept = self._repeat_evidence.setdefault(key, [])
                    if len(kept) < evidence.MAX_PER_ALERT:
                        kept.append(evidence.row_of(c))
                    self.repeats += 1
                else:
                    self._flush_repeats()  # onto the alert they repeat, before a newer one exists
                    row = store.raise_alert(self.db, snap.config, c, role, self._person(c.verdict, role))
                    if row is None:  # already alerted by another worker (or before a restart)
                        self.repeats += 1
                        self._pending.popleft()
                        continue
                    key = (row["theme"], row["severity"])
                    self.raised[key] = self.raised.get(key, 0) + 1
                    stored += 1
                    self._wake.set()
                    log.warning("alert %s: %s %s about %s", row["ref"], row["severity"], row["theme"],
                                row["username"] or row["client_ip"])
                self._pending.popleft()
            if time.monotonic() >= self._repeats_at:
                self._flush_repeats()
        except Exception as e:
            log.error("cannot store alerts yet (%d waiting): %s", len(self._pending), str(e).splitlines()[0][:200])
        return stored

    def _flush_repeats(self) -> None:
        # Every REPEATS_EVERY seconds (and before a new alert, and at shutdown): one transaction every
        # poll held the GIL for ~1 ms four times a second under a flood of blocked requests.
        self._repeats_at = time.monotonic() + REPEATS_EVERY
        if self._repeats:
            store.count_repeats(self.db, self._repeats, self._repeat_evidence)
            self._repeats, self._repeat_evidence = {}, {}

    def _person(self, v: Verdict, role: str) -> str | None:
        if v.person:
            return v.person
        if not v.username or not is_shared_logon(v.identity_rule, role):
            return None
        visit = self._register.who(v.username, dt.datetime.fromtimestamp(v.time, UTC)) if self._register else None
        return visit.person if visit else NO_ONE

    def _refresh_register(self) -> None:
        self._register_at = time.monotonic() + 15
        try:
            self._register = load_register(self.db, dt.datetime.now(UTC) - dt.timedelta(days=2))
        except Exception as e:
            log.debug("supply register not refreshed: %s", e)

    def _rules_of(self, snap) -> AlertRules:
        if self._rules is None or self._rules_for is not snap:
            cfg = snap.config
            path = cfg.path(cfg.alerts.phrases)
            # Loaded again when a list file changed (the snapshot watches them), and when they failed last
            # time: a reload after fixing a list file turns them back on.
            if self._phrases is None or self._phrases[0] != path or self._phrases[1] is None \
                    or self._phrases[2] != snap.phrase_files \
                    or self._rules_for is None or cfg.alerts != self._rules_for.config.alerts:
                self._load_phrases(path, snap.phrase_files)
            themes = {name: (info.theme, info.severity) for name, info in snap.lists.info.items() if info.theme}
            old = self._rules
            self._rules = AlertRules(cfg.alerts, self._phrases[1], themes,
                                     {n: p.role for n, p in cfg.profiles.items()})
            if old is not None:  # a reload keeps who was alerted about recently (throttling)
                self._rules._until, self._rules._blocks, self._rules._refusals = old._until, old._blocks, old._refusals
            self._rules_for = snap
        return self._rules

    def _load_phrases(self, path: Path, files: tuple) -> None:
        try:
            lists = load_phrase_lists(path)
        except PhraseError as e:
            if self._phrases is not None and self._phrases[1] is not None:
                # Lists were running: a mistake in an edit must not turn search alerts off. The running
                # lists are kept (search alerts stay on, and the gauge says so); the edit is refused loudly.
                log.error("schoolproxy: alerts: phrase list edit REFUSED — still checking searches with the "
                          "previous phrase lists: %s. Fix it (schoolproxy check says what is wrong)", e)
                self._phrases = (self._phrases[0], self._phrases[1], files)  # tried: again at the next edit
                self.phrase_edit_refused = str(e)
                return
            # A warning, not an error: the proxy and the other alert rules keep working (and mitmdump ends
            # a start-up that logs an error). Said loudly, and counted in the metrics.
            log.warning("schoolproxy: SEARCH ALERTS ARE OFF — alerts: phrase lists not loaded, search alerts "
                        "are off: %s. No search is checked for concerns until they load: fix them "
                        "(schoolproxy check says what is wrong), then reload the proxy", e)
            self._phrases = (path, None, files)
            self.search_alerts_off = str(e)
            return
        if self._phrases is not None and self._phrases[1] is not None:
            log.info("schoolproxy: alerts: phrase lists loaded again (%s)", path)
        if self.search_alerts_off is not None:
            log.info("schoolproxy: alerts: phrase lists loaded, search alerts are on again")
        self._phrases = (path, lists, files)
        self.search_alerts_off = self.phrase_edit_refused = None

    # -- delivery thread --------------------------------------------------------------------------
    def _delivery_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                self.deliver()
                self._maybe_digest()
                self._record_status()  # last: never in the way of a delivery
            except Exception as e:
                log.error("alert delivery: %s", str(e).splitlines()[0][:200])

    def deliver(self) -> int:
        snap = self.snapshots.snapshot
        if snap is None:
            return 0
        cfg = snap.config
        sent = 0
        for row in store.due(self.db):
            try:
                if row["channel"] == "email":
                    if cfg.alerts.smtp is None:
                        raise DeliveryError("no email server is set up (alerts.smtp)")
                    send_email(cfg.alerts.smtp, cfg.base_dir, row["recipient"], row["subject"], row["body"],
                               f"{row['ref'] or 'digest'}-{row['id']}")
                elif row["channel"] == "mailbox":
                    write_to_mailbox(Path(row["recipient"]), row["subject"], row["body"],
                                     f"{row['ref'] or 'digest'}-{row['id']}")
                else:
                    if cfg.alerts.webhook is None:
                        raise DeliveryError("no webhook is set up (alerts.webhook)")
                    send_webhook(cfg.alerts.webhook, cfg.base_dir, {
                        "alert": row["ref"], "kind": row["kind"], "subject": row["subject"], "text": row["body"]})
            except DeliveryError as e:
                store.mark_failed(self.db, row["id"], row["attempts"] + 1, str(e), self.retry_seconds)
                self._count(row["channel"], "failed")
                if row["attempts"] == 0:
                    log.error("alert %s to %s not delivered yet (will retry): %s", row["ref"], row["recipient"], e)
                continue
            store.mark_sent(self.db, row["id"])
            self._count(row["channel"], "sent")
            sent += 1
        if time.monotonic() >= self._undelivered_at:
            self._count_undelivered(cfg)
        self.outbox_pending = store.pending_count(self.db)
        return sent

    def _count_undelivered(self, cfg) -> None:
        """Every few seconds: withdraw failing messages about alerts someone has acknowledged, and count the
        high and critical alerts that have reached no one (a gauge, and an error line when it grows)."""
        self._undelivered_at = time.monotonic() + UNDELIVERED_EVERY
        if self.outbox_pending:
            pending.withdraw_acknowledged(self.db)
        n = pending.count_undelivered(self.db, cfg)
        if n > self.undelivered:
            why = "no email or webhook is set up" if not pending.ways_to_tell(cfg) else "sending has failed"
            log.error("schoolproxy: %d high or critical alert(s) have reached no one (%s): they are in the "
                      "incident log (the console, schoolproxy report weekly --by LOGON) until someone "
                      "acknowledges them", n, why)
        self.undelivered = n

    def _record_status(self) -> None:
        """Whether search alerts are on, for the console (monitoring/status.py): when it changes, and restamped
        every ``status.REPORT_EVERY`` seconds so that an old word is seen to be old."""
        snap = self.snapshots.snapshot
        if snap is None or not snap.config.alerts.enabled or self._rules_for is None:
            return  # nothing loaded yet: nothing to say
        said = self._status_said
        if said is not None and said[0] == self.search_alerts_off and time.monotonic() < said[1] + status.REPORT_EVERY:
            return
        status.record(self.db, self.search_alerts_off)
        self._status_said = (self.search_alerts_off, time.monotonic())

    def _count(self, channel: str, result: str) -> None:
        self.deliveries[(channel, result)] = self.deliveries.get((channel, result), 0) + 1

    def _maybe_digest(self) -> None:
        snap = self.snapshots.snapshot
        if snap is None:
            return
        cfg = snap.config
        tz = ZoneInfo(cfg.timezone)
        now = dt.datetime.now(tz)
        due_at = digest_time(now, cfg.alerts.digest.day, cfg.alerts.digest.at)
        if now < due_at or (self._last_digest is not None and self._last_digest >= due_at):
            return
        self._last_digest = now
        if pending.digest_queued_since(self.db, due_at):
            return  # queued before this process started
        _, _, queued = store.queue_digest(self.db, cfg, due_at - dt.timedelta(days=7), due_at)
        if queued:
            log.info("weekly alert digest queued for %d recipient(s)", queued)
            self._wake.set()


def digest_time(now: dt.datetime, day: str, at: dt.time) -> dt.datetime:
    """This week's digest moment (the most recent ``day`` at ``at``, not after now unless today)."""
    days = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    back = (now.weekday() - days.index(day)) % 7
    return (now - dt.timedelta(days=back)).replace(hour=at.hour, minute=at.minute, second=0, microsecond=0)
