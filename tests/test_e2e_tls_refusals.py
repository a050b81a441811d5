"""A refused HTTPS inspection, end to end with a real mitmdump: only a *client* refusing the school's
certificate (a VPN app, a pinned client) counts toward the circumvention alert — an upstream site whose
certificate the proxy does not trust is the site's problem, never the pupil's."""

from __future__ import annotations

import ssl
import time

import httpx
import pytest
import yaml
from conftest import PASSWORD, make_school
from internet import Internet
from proxyproc import ROOT, ProxyProcess
from sqlalchemy import select

from schoolproxy.config import load_config
from schoolproxy.records import open_database
from schoolproxy.records.schema import alerts

pytestmark = pytest.mark.e2e


def alerts_of(config, user: str) -> list[dict]:
    db = open_database(load_config(config).database_url())
    try:
        with db.connect() as conn:
            return [dict(r) for r in conn.execute(select(alerts).where(alerts.c.username == user)).mappings()]
    except Exception:  # the table is created by the proxy at start-up
        return []
    finally:
        db.dispose()


def wait_for_alert(config, user: str, predicate, timeout: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [a for a in alerts_of(config, user) if predicate(a)]
        if found:
            return found
        time.sleep(0.2)
    return []


def trusting_the_school(root) -> ssl.SSLContext:
    """A client that trusts the school's CA (mitmdump may still be writing it as it starts listening)."""
    ca = root / "ca" / "mitmproxy-ca-cert.pem"
    deadline = time.monotonic() + 10
    while not ca.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return ssl.create_default_context(cafile=str(ca))


def school(root, internet):
    return make_school(root, f"alerts: {{phrases: {ROOT / 'filterlists' / 'phrases'}}}\n", upstream=internet.proxy_url,
                       database=f"sqlite:///{root / 'records.db'}")


def start(how: str, config, root, internet, trust_upstream: bool = True) -> ProxyProcess:
    """The proxy as `mitmdump -s` runs it, or as `schoolproxy run` does (its own master); trusting the
    stand-in internet's CA for the upstream side, or not."""
    if how == "mitmdump":
        trust = ("--set", f"ssl_verify_upstream_trusted_ca={internet.ca_path}") if trust_upstream else ()
        return ProxyProcess.mitmdump(config, root, "--mode", f"upstream:{internet.proxy_url}", *trust)
    if trust_upstream:
        data = yaml.safe_load(config.read_text())
        data["proxy"]["upstream_ca"] = str(internet.ca_path)
        config.write_text(yaml.safe_dump(data, sort_keys=False))
    return ProxyProcess.schoolproxy_run(config, root)


@pytest.mark.parametrize("how", ["mitmdump", "schoolproxy run"])
def test_upstream_certificate_failures_are_not_a_pupil_refusing_inspection(tmp_path, how):
    with Internet(tmp_path / "internet") as internet:
        config = school(tmp_path, internet)
        # The proxy is NOT told to trust the stand-in internet's CA: every upstream certificate fails.
        with start(how, config, tmp_path, internet, trust_upstream=False) as proxy:
            with httpx.Client(proxy=proxy.auth_url("pupil1", PASSWORD), verify=trusting_the_school(tmp_path),
                              timeout=15) as c:
                for i in range(6):
                    assert c.get(f"https://learning.test/page{i}").status_code == 502
                # Alerts are stored in the order their requests finished: once this one is in, any alert
                # the failures above were going to raise is in too.
                assert c.get("http://www.google.com/search", params={"q": "how to kill myself"}).status_code == 200
            assert wait_for_alert(config, "pupil1", lambda a: a["theme"] == "self-harm"), proxy.log()
            assert [a["rule"] for a in alerts_of(config, "pupil1") if a["theme"] == "circumvention"] == []


@pytest.mark.parametrize("how", ["mitmdump", "schoolproxy run"])
def test_a_client_refusing_the_schools_certificate_five_times_is_reported(tmp_path, how):
    with Internet(tmp_path / "internet") as internet:
        config = school(tmp_path, internet)
        with start(how, config, tmp_path, internet) as proxy:
            # A client that trusts the sites' real certificates only, as a VPN app or a pinned client does.
            pinned = ssl.create_default_context(cafile=str(internet.ca_path))
            for i in range(5):
                with httpx.Client(proxy=proxy.auth_url("pupil1", PASSWORD), verify=pinned, timeout=15) as c, \
                        pytest.raises(httpx.ConnectError):
                    c.get(f"https://learning.test/page{i}")
            found = wait_for_alert(config, "pupil1", lambda a: a["rule"] == "interception-refused")
            assert found, proxy.log()
            [alert] = found
            assert alert["theme"] == "circumvention" and "learning.test" in alert["evidence"]
