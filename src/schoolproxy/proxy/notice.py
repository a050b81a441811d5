"""Notice addon: a person who has not accepted the acceptable-use notice since it was last due is sent
to it (on the proxy's own pages) instead of the page they opened, then straight on once they accept.

Only a browser's page navigation is answered this way — never a script's request, an image, an app's
API call or a download — and never a help site: nothing stands between a child and Childline. Blocked
requests get the block page as before. Who has accepted is held in memory (``LiveState``), so the
check costs a set lookup.
"""

from __future__ import annotations

from urllib.parse import quote

from mitmproxy import http

from schoolproxy.proxy.enforce import VERDICT
from schoolproxy.snapshot import SnapshotHolder
from schoolproxy.standards import notice
from schoolproxy.standards.live import LiveState
from schoolproxy.standards.pages import subject


class Notice:
    def __init__(self, snapshots: SnapshotHolder, live: LiveState):
        self.snapshots = snapshots
        self.state = live
        #: The notice's version for each profile, for the config it was worked out for (None: no notice).
        self._versions: tuple[object, dict[str, str | None]] = (None, {})

    def wants(self, event: str) -> bool:
        snap = self.snapshots.snapshot
        return snap is None or snap.config.notice.enabled

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        verdict = flow.metadata.get(VERDICT)
        if verdict is None or verdict.action != "allow" or not self.state.loaded:
            return
        config = self.snapshots.snapshot.config
        version = self._version(config, verdict.profile)
        if version is None or verdict.rule == "helpsite":
            return
        # Most requests come from people who have accepted: a set lookup, before any header is read.
        if self.state.has_accepted(subject(verdict.username, verdict.client_ip), version):
            return
        req = flow.request
        if not notice.is_navigation(req.method, req.headers.fields):
            return
        target = f"{req.scheme}://{config.block_page.pages_host}/notice?next={quote(req.url, safe='')}"
        flow.response = http.Response.make(302, b"", {"Location": target, "Cache-Control": "no-store"})

    def _version(self, config, profile: str) -> str | None:
        made_for, versions = self._versions
        if made_for is not config:
            versions = {}
            self._versions = (config, versions)
        if profile not in versions:
            p = config.profiles.get(profile)
            versions[profile] = (notice.version(notice.text_for(config, p.role if p else "pupil"))
                                 if config.notice.enabled else None)
        return versions[profile]
