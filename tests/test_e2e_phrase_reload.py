"""Editing a phrase list takes effect in a running proxy, as a category list edit does: a real mitmdump
whose ``alerts.phrases`` is a list directory of the test's own. A phrase added to a list file makes a
search with it raise an alert and a page with it be scored (blocked), with no SIGHUP and no config change;
an edit with a mistake in it is refused loudly and the lists before it keep working."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import PASSWORD, make_school, metric_value
from proxyproc import ProxyProcess
from sqlalchemy import select
from waits import wait_until

from schoolproxy.config import load_config
from schoolproxy.records import open_database
from schoolproxy.records.schema import alerts

pytestmark = pytest.mark.e2e

SELF_HARM = "< how to kill myself ><100>\n< kill yourself ><100>\n"
BULLYING = "< you are worthless ><100>\n"
NEW = "zorblat quimbly"        # a phrase in no list until the test adds it
LATER = "snorkel wumpus"       # added in an edit with a mistake in it: not in effect until that is fixed
PAGES = {"/old": "<p>Someone wrote: kill yourself.</p>", "/new": f"<p>They said {NEW}.</p>",
         "/later": f"<p>They said {LATER}.</p>"}


class Origin:
    """Stand-in upstream proxy and origin (mitmdump --mode upstream sends it absolute URLs)."""

    def __init__(self):
        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                path = self.path.split("://", 1)[-1].partition("/")[2].partition("?")[0]
                body = PAGES.get("/" + path, "<p>Volcanoes are mountains.</p>").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def gauge(config: Path, name: str) -> float | None:
    return metric_value(config, name)


def search_alerts(config: Path, user: str, term: str) -> list[dict]:
    db = open_database(load_config(config).database_url())
    try:
        with db.connect() as c:
            rows = c.execute(select(alerts).where(alerts.c.username == user)).mappings().all()
        return [dict(r) for r in rows if term in (r["search_term"] or "")]
    finally:
        db.dispose()


def test_a_phrase_list_edit_takes_effect_without_a_reload_and_a_broken_edit_keeps_the_lists_before(tmp_path):
    phrases = tmp_path / "phrases"
    (phrases / "self-harm").mkdir(parents=True)
    (phrases / "self-harm" / "en.txt").write_text(SELF_HARM)
    (phrases / "bullying").mkdir()
    edited = phrases / "bullying" / "en.txt"
    edited.write_text(BULLYING)
    origin = Origin()
    config = make_school(tmp_path, upstream=origin.url, database=f"sqlite:///{tmp_path / 'records.db'}")
    data = yaml.safe_load(config.read_text())
    data["profiles"]["pupil"]["content"] = {"scan": True, "alert_score": 60, "block_score": 100}
    data["alerts"] = {"phrases": str(phrases)}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        with ProxyProcess.mitmdump(config, tmp_path, "--mode", f"upstream:{origin.url}", quiet=False) as proxy, \
                httpx.Client(proxy=proxy.auth_url("pupil1", PASSWORD), timeout=20) as pupil, \
                httpx.Client(proxy=proxy.auth_url("teacher1", PASSWORD), timeout=20) as teacher:
            def page(path: str) -> int:
                return pupil.get(f"http://forum.test{path}").status_code

            def search(client: httpx.Client, user: str, term: str) -> list[dict]:
                assert client.get("http://www.bing.com/search", params={"q": term}).status_code == 200
                return search_alerts(config, user, term)

            # The lists as they start: their phrases raise alerts and are scored; the new one is in no list.
            wait_until(lambda: search(pupil, "pupil1", "how to kill myself"), every=0.3,
                       what="a search alert for a listed phrase", detail=proxy.log)
            assert page("/old") == 403 and page("/new") == 200

            # The network manager adds a phrase to a list file: no SIGHUP, the config untouched.
            edited.write_text(BULLYING + f"< {NEW} ><100>\n")
            [alert] = wait_until(lambda: search(pupil, "pupil1", NEW), every=0.3,
                                 what="a search alert for the added phrase", detail=proxy.log)
            assert alert["theme"] == "bullying"
            wait_until(lambda: page("/new") == 403, every=0.3, what="a page with the added phrase blocked",
                       detail=proxy.log)

            # An edit with a mistake in it (and another phrase): refused loudly, and the lists before it
            # are kept — searches still checked, pages still scored, neither gauge says off.
            edited.write_text(BULLYING + f"< {NEW} ><100>\n< {LATER} ><100>\n{LATER} 100\n")
            log = wait_until(lambda: (text := proxy.log()).count("phrase list edit REFUSED") >= 2 and text,
                             timeout=30, what="the edit refused by content scoring and by the alerts",
                             detail=proxy.log)
            assert "content scoring: phrase list edit REFUSED" in log and "alerts: phrase list edit REFUSED" in log
            assert "not a weighted phrase line" in log
            assert page("/old") == 403 and page("/new") == 403 and page("/later") == 200
            assert search(teacher, "teacher1", LATER) == []
            # Evaluated in order: once the search after it has raised its alert, the one before was judged.
            wait_until(lambda: search(teacher, "teacher1", NEW), every=0.3,
                       what="search alerts still on with the lists before the edit", detail=proxy.log)
            assert search_alerts(config, "teacher1", LATER) == []
            assert gauge(config, "schoolproxy_search_alerts_off") == 0.0
            assert gauge(config, "schoolproxy_content_scoring_off") == 0.0
            assert "SEARCH ALERTS ARE OFF" not in log and "CONTENT SCORING IS OFF" not in log
            wait_until(lambda: gauge(config, "schoolproxy_phrase_lists_edit_refused") == 1.0,
                       what="the refused edit in the metrics (not only the log)", detail=proxy.log)

            # Fixed: the phrase of that edit is in effect too.
            edited.write_text(BULLYING + f"< {NEW} ><100>\n< {LATER} ><100>\n")
            wait_until(lambda: page("/later") == 403, every=0.3, what="the fixed edit in effect", detail=proxy.log)
            wait_until(lambda: gauge(config, "schoolproxy_phrase_lists_edit_refused") == 0.0,
                       what="the refused edit cleared from the metrics", detail=proxy.log)
            assert proxy.proc.poll() is None
    finally:
        origin.close()
