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
        self._versions: tuple[object, dict[str, str]] = (None, {})

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        verdict = flow.metadata.get(VERDICT)
        if verdict is None or verdict.action != "allow" or verdict.rule == "helpsite" or not self.state.loaded:
            return
        snap = self.snapshots.snapshot
        config = snap.config
        req = flow.request
        if not config.notice.enabled or not notice.is_navigation(req.method, req.headers):
            return
        role = config.profiles[verdict.profile].role if verdict.profile in config.profiles else "pupil"
        version = self._version(config, role)
        if self.state.has_accepted(subject(verdict.username, verdict.client_ip), version):
            return
        target = f"{req.scheme}://{config.block_page.pages_host}/notice?next={quote(req.url, safe='')}"
        flow.response = http.Response.make(302, b"", {"Location": target, "Cache-Control": "no-store"})

    def _version(self, config, role: str) -> str:
        made_for, versions = self._versions
        if made_for is not config:
            versions = {}
            self._versions = (config, versions)
        version = versions.get(role)
        if version is None:
            version = versions[role] = notice.version(notice.text_for(config, role))
        return version
