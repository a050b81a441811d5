"""The shipped Prometheus alert rules fire when they should (promtool test rules, on made-up series)."""

from __future__ import annotations

import shutil
import subprocess

import yaml
from conftest import require
from proxyproc import ROOT

RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
LABELS = {"instance": "gw:9464", "job": "schoolproxy"}


def expected(name: str, value: float) -> dict:
    """The alert as promtool reports it: labels, and annotations with their templates filled in."""
    [rule] = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if r["alert"] == name]
    fill = lambda text: text.replace("{{ $value }}", f"{value:g}").replace("{{ $labels.instance }}", LABELS["instance"])
    return {"exp_labels": {**rule["labels"], **LABELS},
            "exp_annotations": {k: fill(v) for k, v in rule["annotations"].items()}}


def promtool_test(tmp_path, series: dict[str, str], checks: list[dict]) -> subprocess.CompletedProcess:
    if not shutil.which("promtool"):
        require("promtool is not installed (Debian package 'prometheus')")
    labels = ", ".join(f'{k}="{v}"' for k, v in LABELS.items())
    test = {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": s.replace("{", "{" + labels + ", ", 1) if "{" in s else f"{s}{{{labels}}}",
                          "values": v} for s, v in series.items()],
        "alert_rule_test": checks}]}
    path = tmp_path / "test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    return subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True)


def test_high_alerts_that_reached_no_one_page_the_network_manager(tmp_path):
    r = promtool_test(tmp_path, {"schoolproxy_alerts_undelivered": "0 0 1 1 1 1 0 0"}, [
        {"eval_time": "1m", "alertname": "SchoolproxyAlertsUndelivered", "exp_alerts": []},
        {"eval_time": "4m", "alertname": "SchoolproxyAlertsUndelivered",
         "exp_alerts": [expected("SchoolproxyAlertsUndelivered", 1)]},
        {"eval_time": "7m", "alertname": "SchoolproxyAlertsUndelivered", "exp_alerts": []},   # acknowledged
    ])
    assert r.returncode == 0, r.stdout + r.stderr


def test_failing_delivery_fires_although_the_failure_counter_has_channel_labels(tmp_path):
    # Retries back off to one every 15 minutes; the outbox gauge has no channel label, the counter does.
    r = promtool_test(tmp_path, {
        "schoolproxy_alert_outbox_pending": "2x60",
        'schoolproxy_alert_deliveries_total{channel="email", result="failed"}': "0 1 2 3 4 5 6x10 7x15 8x15 9x15",
    }, [
        {"eval_time": "50m", "alertname": "SchoolproxyAlertDeliveryFailing",
         "exp_alerts": [expected("SchoolproxyAlertDeliveryFailing", 2)]},
    ])
    assert r.returncode == 0, r.stdout + r.stderr


def test_search_alerts_off_pages_the_network_manager_until_the_lists_load(tmp_path):
    r = promtool_test(tmp_path, {"schoolproxy_search_alerts_off": "0 1 1 1 1 1 0 0"}, [
        {"eval_time": "1m", "alertname": "SchoolproxySearchAlertsOff", "exp_alerts": []},   # not for a moment
        {"eval_time": "4m", "alertname": "SchoolproxySearchAlertsOff",
         "exp_alerts": [expected("SchoolproxySearchAlertsOff", 1)]},
        {"eval_time": "7m", "alertname": "SchoolproxySearchAlertsOff", "exp_alerts": []},   # reloaded, fixed
    ])
    assert r.returncode == 0, r.stdout + r.stderr


def test_content_that_cannot_be_scored_pages_the_network_manager(tmp_path):
    r = promtool_test(tmp_path, {"schoolproxy_content_scoring_off": "1 1 1 1 1"}, [
        {"eval_time": "3m", "alertname": "SchoolproxyContentScoringOff",
         "exp_alerts": [expected("SchoolproxyContentScoringOff", 1)]},
    ])
    assert r.returncode == 0, r.stdout + r.stderr
