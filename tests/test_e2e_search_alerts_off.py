"""Search alerts off is never silent: a real proxy whose ``alerts.phrases`` points nowhere serves on (pupils'
pages, which are scored, blocked to be safe), but says loudly that no search is being checked and no page
scored — at start-up, in the metrics and in the records database the console reads — and a reload with the
lists fixed turns it back on everywhere."""

from __future__ import annotations


import httpx
import pytest
import yaml
from conftest import PASSWORD, make_school, metric_value
from internet import Internet
from proxyproc import ROOT, ProxyProcess
from waits import wait_until

from schoolproxy.config import load_config
from schoolproxy.monitoring import status
from schoolproxy.records import open_database

pytestmark = pytest.mark.e2e


def gauge(config, name: str = "schoolproxy_search_alerts_off") -> float | None:
    return metric_value(config, name)


def recorded(config) -> dict | None:
    db = open_database(load_config(config).database_url())
    try:
        return status.search_alerts(db)
    except Exception:  # the proxy creates the tables as it starts
        return None
    finally:
        db.dispose()


def test_lists_that_cannot_load_turn_search_alerts_off_loudly_until_a_reload_fixes_them(tmp_path):
    with Internet(tmp_path / "internet") as internet:
        config = make_school(tmp_path, upstream=internet.proxy_url)   # alerts.phrases: a directory not there
        data = yaml.safe_load(config.read_text())
        data["profiles"]["pupil"]["content"] = {"scan": True}
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        with ProxyProcess.mitmdump(config, tmp_path, "--mode", f"upstream:{internet.proxy_url}", quiet=False) as proxy:
            wait_until(lambda: gauge(config) == 1.0, what="schoolproxy_search_alerts_off 1", detail=proxy.log)
            assert "SEARCH ALERTS ARE OFF" in proxy.log() and "phrase list directory not found" in proxy.log()
            said = wait_until(lambda: recorded(config), what="the state recorded for the console", detail=proxy.log)
            assert said["ok"] is False and "phrase list directory not found" in said["detail"]
            # Content scoring is off too: the proxy serves on (an error at start-up made mitmdump exit), and
            # the pupils' pages, which cannot be scored, are blocked to be safe; staff browse as usual.
            assert gauge(config, "schoolproxy_content_scoring_off") == 1.0
            assert "CONTENT SCORING IS OFF" in proxy.log() and "Error logged during startup" not in proxy.log()
            with httpx.Client(proxy=proxy.auth_url("pupil1", PASSWORD), timeout=15) as c:
                page = c.get("http://learning.test/")
                assert page.status_code == 403 and "could not be checked" in page.text
            with httpx.Client(proxy=proxy.auth_url("teacher1", PASSWORD), timeout=15) as c:
                assert c.get("http://learning.test/").status_code == 200

            # The network manager points alerts.phrases at the lists; the proxy reloads the changed config.
            data["alerts"] = {"phrases": str(ROOT / "filterlists" / "phrases")}
            config.write_text(yaml.safe_dump(data, sort_keys=False))
            wait_until(lambda: gauge(config) == 0.0, timeout=90, what="schoolproxy_search_alerts_off back to 0",
                       detail=proxy.log)
            said = wait_until(lambda: (r := recorded(config)) is not None and r["ok"] and r, timeout=30,
                              what="search alerts recorded as on again", detail=proxy.log)
            assert said["detail"] == ""
            assert "search alerts are on again" in proxy.log()
            with httpx.Client(proxy=proxy.auth_url("pupil1", PASSWORD), timeout=15) as c:   # scored again
                wait_until(lambda: c.get("http://learning.test/").status_code == 200, every=0.5,
                           what="a pupil's page scored and shown", detail=proxy.log)
            assert gauge(config, "schoolproxy_content_scoring_off") == 0.0
            assert proxy.proc.poll() is None
