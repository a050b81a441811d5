"""Alert rules: from one finished Verdict to the alerts it should raise. Pure (no I/O, no threads);
the alert service calls :meth:`AlertRules.evaluate` from its own thread, in arrival order.

Rules, each producing (theme, severity, evidence):
- a search term whose phrase score for a theme reaches the subject's threshold (by role);
- a request to a category tied to a theme (``categories.yaml``: adult → pornography …);
- ``repeated_blocks`` blocked attempts within ``repeated_blocks_minutes``;
- real-time content: a page or streamed reply whose text scored over the profile's content alert score
  (the content addon puts its findings on the Verdict), with the site and the words as on the page;
- circumvention: VPN/proxy and DNS-over-HTTPS categories (their theme), tunnels to bare IP addresses,
  and repeated refusals of TLS interception: the *client* refusing the school's certificate (a VPN app,
  a pinned client), as the enforce addon marks it — never an upstream site's certificate failing;
- the upstream filter's block page (Smoothwall/SWGfL, possibly IWF-listed content) → critical, evidence
  limited to the site and the record's reference — never the content.

Throttling: one alert per subject per theme per ``throttle_minutes``; later matches in the window are
counted as repeats on that alert, so a flood of searches makes one alert, not hundreds.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from schoolproxy.config import AlertSettings
from schoolproxy.monitoring.phrases import PhraseLists
from schoolproxy.monitoring.searchterms import engine_of, extract
from schoolproxy.verdict import Verdict

SEVERITIES = ("low", "medium", "high", "critical")
MAX_SUBJECTS = 50_000


@dataclass(slots=True)
class Candidate:
    """An alert to raise (or, if ``repeat_of`` is set, a repeat to count on an earlier one)."""
    theme: str
    severity: str
    rule: str
    evidence: str
    verdict: Verdict
    score: int | None = None
    search_term: str | None = None
    repeat_of: tuple[str, str] | None = None   # (subject, theme) of the alert this repeats
    words: tuple[str, ...] = ()   # what matched, as typed (a search) or as on the page (content): the evidence


def _up(severity: str) -> str:
    """A high score lifts low→medium→high; it never makes an alert critical, nor lowers one."""
    i = SEVERITIES.index(severity)
    return SEVERITIES[max(i, min(i + 1, 2))]


class AlertRules:
    def __init__(self, settings: AlertSettings, phrases: PhraseLists | None,
                 category_themes: dict[str, tuple[str, str]], roles: dict[str, str]):
        """``category_themes``: category → (theme, severity); ``roles``: profile → role."""
        self.s = settings
        self.phrases = phrases
        self.category_themes = category_themes
        self.roles = roles
        self._until: dict[tuple[str, str], float] = {}
        self._blocks: dict[str, deque[float]] = {}
        self._refusals: dict[str, deque[float]] = {}

    def evaluate(self, v: Verdict) -> list[Candidate]:
        found = self._find(v)
        out, seen = [], set()
        for c in found:
            if c.theme in seen:
                continue
            seen.add(c.theme)
            key = (subject_of(v), c.theme)
            until = self._until.get(key, 0.0)
            if v.time < until:
                c.repeat_of = key
            else:
                if len(self._until) >= MAX_SUBJECTS:
                    self._forget(v.time)
                self._until[key] = v.time + self.s.throttle_minutes * 60
            out.append(c)
        return out

    # -- the rules --------------------------------------------------------------------------------
    def _find(self, v: Verdict) -> list[Candidate]:
        found: list[Candidate] = []
        role = self.roles.get(v.profile, "pupil")
        if v.rule == "upstream-block":
            found.append(Candidate("upstream-block", "critical", "upstream-block",
                                   f"the upstream filter blocked {v.host} (record {v.ref}); the content is "
                                   f"not kept or shown here", v))
        term = v.search_term if v.search_term is not None else (extract(v.host, v.path) if v.path else None)
        if term:
            found.extend(self._search(v, term, role))
        found.extend(self._content(v))
        for category in v.categories:
            if category == "ip-address" and v.layer != "http":
                found.append(Candidate("circumvention", "medium", "bare-ip",
                                       f"opened a tunnel to the bare IP address {v.host}:{v.port}", v))
                continue
            themed = self.category_themes.get(category)
            if themed is not None:
                theme, severity = themed
                verb = "tried to visit" if v.blocked else "visited"
                found.append(Candidate(theme, severity, f"category:{category}",
                                       f"{verb} {v.host} (category {category})", v))
        if v.blocked and v.rule != "upstream-block" and self._count(self._blocks, v, self.s.repeated_blocks_minutes) \
                >= self.s.repeated_blocks:
            found.append(Candidate("repeated-blocks", self.s.severity_of("repeated-blocks"), "repeated-blocks",
                                   f"{self.s.repeated_blocks} or more blocked attempts within "
                                   f"{self.s.repeated_blocks_minutes} minutes (latest: {v.host})", v))
        if v.client_refused_certificate and self._count(self._refusals, v, 10) >= self.s.interception_refusals:
            found.append(Candidate("circumvention", "medium", "interception-refused",
                                   f"{self.s.interception_refusals} or more connections refused the school's "
                                   f"HTTPS inspection certificate within 10 minutes (latest: {v.host}) — possibly "
                                   f"a VPN app, or a device without the school's certificate installed", v))
        return found

    def _search(self, v: Verdict, term: str, role: str) -> list[Candidate]:
        if self.phrases is None:
            return []
        threshold = self.s.thresholds.get(v.profile) or self.s.thresholds.get(role, 60)
        out = []
        for sc in self.phrases.score(term):
            if sc.score < threshold:
                continue
            severity = self.s.severity_of(sc.theme)
            if sc.score >= 2 * threshold:
                severity = _up(severity)
            where = engine_of(v.host) or v.host
            out.append(Candidate(sc.theme, severity, "search-phrases",
                                 f'searched for "{term}" on {where} (matched: {", ".join(sc.matched[:5])}; '
                                 f"score {sc.score}, threshold {threshold})", v, sc.score, term,
                                 words=sc.matched))
        return out

    def _content(self, v: Verdict) -> list[Candidate]:
        out = []
        for theme, score, words, action, threshold, kind in v.content:
            verb = "was stopped from reading" if action == "block" else "read"
            what = "an AI or chat reply streamed from" if kind == "reply" else "a page on"
            shown = " / ".join(f'"{w}"' for w in words[:5])
            out.append(Candidate(theme, self.s.severity_of(theme), "content",
                                 f"{verb} {what} {v.host} containing {shown} (score {score}, "
                                 f"{'blocked' if action == 'block' else 'alert'} at {threshold})", v, score,
                                 words=tuple(words[:5])))
        return out

    def _count(self, table: dict[str, deque[float]], v: Verdict, minutes: int) -> int:
        who = subject_of(v)
        q = table.get(who)
        if q is None:
            if len(table) >= MAX_SUBJECTS:
                table.clear()
            q = table[who] = deque(maxlen=1000)
        q.append(v.time)
        cutoff = v.time - minutes * 60
        while q and q[0] < cutoff:
            q.popleft()
        return len(q)

    def _forget(self, now: float) -> None:
        for k in [k for k, t in self._until.items() if t <= now]:
            del self._until[k]
        if len(self._until) >= MAX_SUBJECTS:
            self._until.clear()


def subject_of(v: Verdict) -> str:
    """Who an alert is about: the logon, else the client address."""
    return v.username.lower() if v.username else f"ip:{v.client_ip}"
