"""HeaderCheck addon: a request whose head a server could read two ways is refused (400), never passed on.

mitmproxy's HTTP/1 parser keeps a bare CR or a NUL inside a header value and joins folded (obs-fold)
continuation lines with ``"\\r\\n "``: the upstream filter and the site would then each decide where a
header ends, and need not agree with us (RFC 9112 5.2 says to refuse obs-fold or replace it). Smuggling
shapes mitmproxy already refuses (Content-Length with Transfer-Encoding, two Content-Lengths) stay
refused by it. First in the chain, before a password is checked or a policy decided.
"""

from __future__ import annotations

import logging
import re
import time

from mitmproxy import http

log = logging.getLogger(__name__)

# Control characters other than horizontal tab (RFC 9110 5.5: field values are VCHAR, SP, HTAB, obs-text).
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# A request target never holds a raw space or control character (they must be percent-encoded).
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")
_TEXT = {"Content-Type": "text/plain; charset=utf-8", "Connection": "close"}
LOG_EVERY = 60.0  # seconds between log lines about one client address


def problem(request: http.Request) -> str | None:
    """Why this request head is ambiguous to a server, or None."""
    if _BAD_TARGET.search(request.data.path) or _BAD_TARGET.search(request.data.authority):
        return "a control character or space in the request target"
    fields = request.headers.fields
    # One search over every name and value, joined by a tab (which is allowed): a clean head, nearly
    # all of them, costs that alone; the loop below only says which header is at fault.
    if not _BAD_VALUE.search(b"\t".join([b"\t".join(field) for field in fields])):
        return None
    for name, value in fields:
        if _BAD_VALUE.search(name) or _BAD_VALUE.search(value):
            if b"\r\n" in value and value.split(b"\r\n", 1)[1][:1] in (b" ", b"\t"):
                return f"a folded (obs-fold) header line in {name[:40].decode('latin-1')!r}"
            return f"a CR, LF, NUL or other control character in header {name[:40].decode('latin-1')!r}"
    return None


class HeaderCheck:
    def __init__(self) -> None:
        self._logged: dict[str, float] = {}

    def http_connect(self, flow: http.HTTPFlow) -> None:
        self.requestheaders(flow)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        why = problem(flow.request)
        if why is None:
            return
        self._log(flow.client_conn.peername[0], why)
        flow.response = http.Response.make(400, f"Bad request: {why}.\n", _TEXT)

    def _log(self, address: str, why: str) -> None:
        now = time.monotonic()
        if now - self._logged.get(address, -LOG_EVERY) < LOG_EVERY:
            return
        if len(self._logged) > 10_000:
            self._logged.clear()
        self._logged[address] = now
        log.warning("refused a request from %s: %s (passing it on could let a server read it differently)",
                    address, why)
