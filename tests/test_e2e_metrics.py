"""Metrics end to end: a real proxy serves /metrics, a real Prometheus server scrapes it, and the
shipped alert rules pass promtool."""

from __future__ import annotations

import shutil
import subprocess
import time

import httpx
import pytest
from conftest import PASSWORD, free_port, make_school, metrics_url, require
from internet import Internet
from proxyproc import ROOT, ProxyProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def proxy_with_traffic(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics")
    with Internet(root / "internet") as internet:
        config = make_school(root, upstream=internet.proxy_url)
        with ProxyProcess.schoolproxy_run(config, root) as proxy:
            with httpx.Client(proxy=proxy.auth_url("pupil1", PASSWORD), timeout=10) as c:
                for _ in range(3):
                    c.get("http://socialsite.test/")
                c.get("http://learning.test/")
            yield config, proxy


def scrape(url: str) -> str:
    deadline = time.monotonic() + 10
    while True:
        try:
            return httpx.get(url, timeout=5).text
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_proxy_serves_metrics_without_personal_data(proxy_with_traffic):
    config, _ = proxy_with_traffic
    text = scrape(metrics_url(config))
    assert 'schoolproxy_requests_total{action="block",category="social-networking",profile="pupil"} 3.0' in text
    assert 'schoolproxy_requests_total{action="allow",category="education",profile="pupil"} 1.0' in text
    assert "schoolproxy_decision_seconds_bucket" in text and "schoolproxy_active_users 1.0" in text
    for personal in ("pupil1", "127.0.0.1", "socialsite.test", "learning.test"):
        assert personal not in text
    # The record writer process reports its counters back to the proxy's metrics.
    deadline = time.monotonic() + 15
    while 'schoolproxy_records_total{outcome="written"} 4.0' not in text and time.monotonic() < deadline:
        time.sleep(0.2)
        text = scrape(metrics_url(config))
    assert 'schoolproxy_records_total{outcome="written"} 4.0' in text
    assert "schoolproxy_record_writer_restarts_total 0.0" in text


def test_real_prometheus_scrapes_the_proxy(proxy_with_traffic, tmp_path):
    if not shutil.which("prometheus"):
        require("Prometheus is not installed (Debian package 'prometheus')")
    config, _ = proxy_with_traffic
    target = metrics_url(config).removeprefix("http://").removesuffix("/metrics")
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s}\n"
        f"rule_files: [{ROOT / 'deploy' / 'prometheus' / 'alerts.yml'}]\n"
        f"scrape_configs:\n  - job_name: schoolproxy\n    static_configs: [{{targets: ['{target}']}}]\n")
    port = free_port()
    prom = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        api = f"http://127.0.0.1:{port}/api/v1/query"
        deadline = time.monotonic() + 30
        value = None
        while time.monotonic() < deadline:
            try:
                r = httpx.get(api, params={"query": 'sum(schoolproxy_requests_total{action="block"})'}, timeout=5).json()
                if r["data"]["result"]:
                    value = float(r["data"]["result"][0]["value"][1])
                    break
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            time.sleep(0.5)
        assert value == 3.0
        up = httpx.get(api, params={"query": 'up{job="schoolproxy"}'}, timeout=5).json()["data"]["result"]
        assert up[0]["value"][1] == "1"
        rules = httpx.get(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5).json()["data"]["groups"]
        assert {r["name"] for g in rules for r in g["rules"]} >= {"SchoolproxyDown", "SchoolproxyDecisionLatencyHigh"}
    finally:
        prom.terminate()
        prom.wait(10)


def test_alert_rules_pass_promtool():
    if not shutil.which("promtool"):
        require("promtool is not installed (Debian package 'prometheus')")
    r = subprocess.run(["promtool", "check", "rules", str(ROOT / "deploy" / "prometheus" / "alerts.yml")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
