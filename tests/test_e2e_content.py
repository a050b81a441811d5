"""Real-time content end to end: a real mitmdump chained to a small upstream that serves pages and a
streamed (server-sent events) AI-chat reply, with real clients. A page whose text crosses the block
score becomes the block page for a pupil and passes for staff; a help site with the same words passes;
a streamed reply is cut off mid-stream and the alert names the words."""

from __future__ import annotations

import gzip
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from conftest import PASSWORD, make_school
from proxyproc import BIN, ProxyProcess

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent

HARMFUL = ("<html><body><h1>Forum</h1><p>Honestly the best way to die is painless. Here is how to kill "
           "yourself and how many pills to die, the quickest way to die.</p></body></html>")
BENIGN = "<html><body><h1>Volcanoes</h1><p>Lava is molten rock. Romeo and Juliet is a play.</p></body></html>"
#: An AI reply streamed token by token; the harmful part comes in the middle, "AFTERCUT" after it.
REPLY = (["I'm ", "sorry ", "you ", "feel ", "this ", "way. "] + ["Some ", "people ", "ask ", "how ", "to ", "kill ",
         "your", "self ", "and ", "the ", "best ", "way ", "to ", "die ", "is ", "painless ", "pills. "]
         + [f"AFTERCUT{i} " for i in range(40)])


class Origin:
    """Stand-in upstream proxy and origin for plain HTTP (mitmdump --mode upstream sends absolute URLs)."""

    def __init__(self):
        origin = self
        self.sse_sent = 0

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                u = urlsplit(self.path)
                if u.path == "/chat":
                    return origin.stream(self)
                page = {"/harmful": HARMFUL, "/benign": BENIGN}.get(u.path, BENIGN)
                body = page.encode()
                headers = {"Content-Type": "text/html; charset=utf-8"}
                if u.path == "/harmful-gzip":  # no length, compressed: the held-back path
                    body = gzip.compress(HARMFUL.encode())
                    headers["Content-Encoding"] = "gzip"
                    self.send_response(200)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(body)
                    self.close_connection = True
                    return
                if u.path == "/bomb":
                    body = gzip.compress(b"<p>" + b"a" * 20_000_000 + b"</p>")
                    headers["Content-Encoding"] = "gzip"
                self.send_response(200)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stream(self, h: BaseHTTPRequestHandler) -> None:
        import json
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Connection", "close")
        h.end_headers()
        try:
            for token in REPLY:
                event = {"choices": [{"delta": {"content": token}}]}
                h.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                h.wfile.flush()
                self.sse_sent += 1
                time.sleep(0.02)
            h.wfile.write(b"data: [DONE]\n\n")
        except OSError:
            pass
        h.close_connection = True

    def close(self):
        self.server.shutdown()


@pytest.fixture
def world(tmp_path):
    origin = Origin()
    config = make_school(tmp_path, upstream=origin.url, database=f"sqlite:///{tmp_path / 'records.db'}")
    data = yaml.safe_load(config.read_text())
    data["profiles"]["pupil"]["content"] = {"scan": True, "alert_score": 100, "block_score": 150}
    data["alerts"] = {"phrases": str(ROOT / "filterlists" / "phrases")}
    data["people"] = {"dsl1": {"name": "Mrs D Lawrence", "roles": ["dsl"]}}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    proxy = ProxyProcess.mitmdump(config, tmp_path, "--mode", f"upstream:{origin.url}")
    try:
        yield proxy, origin, config
    finally:
        proxy.stop()
        origin.close()


def get(proxy, user, url):
    with httpx.Client(proxy=proxy.auth_url(user, PASSWORD), timeout=20) as c:
        return c.get(url)


def alerts_list(config: Path) -> str:
    r = subprocess.run([str(BIN / "schoolproxy"), "alerts", "list", "--by", "dsl1", "--config", str(config)],
                       capture_output=True, text=True)
    return r.stdout


def wait_for_alert(config: Path, needle: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        out = alerts_list(config)
        if needle in out:
            return out
        time.sleep(0.3)
    raise AssertionError(f"no alert with {needle!r}:\n{out}")


def test_harmful_page_is_blocked_for_a_pupil_and_passes_for_staff(world):
    proxy, origin, config = world
    r = get(proxy, "pupil1", "http://forum.test/harmful")
    assert r.status_code == 403, r.text[:300]
    assert "This page is blocked" in r.text and "content:self-harm" in r.text
    assert "how to kill" not in r.text                                  # none of the page is shown
    staff = get(proxy, "teacher1", "http://forum.test/harmful")
    assert staff.status_code == 200 and "how to kill yourself" in staff.text
    assert get(proxy, "pupil1", "http://forum.test/benign").status_code == 200
    listing = wait_for_alert(config, "forum.test")
    assert "self-harm" in listing and "pupil1" in listing


def test_help_site_with_the_same_words_passes(world):
    proxy, origin, config = world
    r = get(proxy, "pupil1", "http://www.childline.org.uk/harmful")
    assert r.status_code == 200 and "how to kill yourself" in r.text


def test_compressed_page_without_length_is_held_back_and_blocked(world):
    proxy, origin, config = world
    r = get(proxy, "pupil1", "http://forum.test/harmful-gzip")
    assert "how to kill" not in r.text and "This page is blocked" in r.text


def test_compression_bomb_is_bounded(world):
    proxy, origin, config = world
    r = get(proxy, "pupil1", "http://forum.test/bomb")
    assert r.status_code == 200          # scored within its first 256 KB, nothing concerning
    assert get(proxy, "pupil1", "http://forum.test/benign").status_code == 200   # the proxy is fine


def test_streamed_reply_is_cut_off_mid_stream_and_the_alert_names_the_words(world):
    proxy, origin, config = world
    got = b""
    with httpx.Client(proxy=proxy.auth_url("pupil1", PASSWORD), timeout=20) as c:
        with c.stream("GET", "http://chat.test/chat") as r:
            assert r.status_code == 200
            for chunk in r.iter_bytes():
                got += chunk
    text = got.decode()
    assert "I'm " in text and "feel " in text                              # the start of the reply arrived
    assert "stopped by the school's internet filter" in text               # ... then the cut
    assert "AFTERCUT" not in text and "painless" not in text               # nothing after it
    listing = wait_for_alert(config, "chat.test")
    assert "self-harm" in listing
    assert "kill your" in listing or "kill yourself" in listing            # the words, as in the reply


def test_staff_get_the_whole_stream(world):
    proxy, origin, config = world
    with httpx.Client(proxy=proxy.auth_url("teacher1", PASSWORD), timeout=20) as c:
        text = c.get("http://chat.test/chat").text
    assert "AFTERCUT39" in text
