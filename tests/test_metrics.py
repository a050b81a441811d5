from conftest import make_verdict as verdict
from prometheus_client import CollectorRegistry, generate_latest

from schoolproxy.metrics import Metrics
from schoolproxy.proxy.loadconfig import LoadConfig
from schoolproxy.proxy.reload import Reload
from schoolproxy.snapshot import SnapshotHolder


def test_requests_counted_by_profile_action_category_and_nothing_personal(school):
    snapshots, registry = SnapshotHolder(), CollectorRegistry()
    snapshots.load(school)
    LoadConfig(snapshots, registry)   # the lists' metrics
    Reload(snapshots, registry)       # reload counts
    m = Metrics(registry)
    for _ in range(3):
        m.on_verdict(verdict(username="jsmith", client_ip="10.1.2.3", host="socialsite.test", decision_seconds=4e-6))
    m.on_verdict(verdict(username="kid2", action="allow", rule="default:pupil", categories=(), host="ok.test"))
    m.on_verdict(verdict(action="allow", rule="helpsite", categories=("helpsites",)))
    text = generate_latest(registry).decode()
    assert 'schoolproxy_requests_total{action="block",category="social-networking",profile="pupil"} 3.0' in text
    assert 'schoolproxy_requests_total{action="allow",category="none",profile="pupil"} 1.0' in text
    assert 'schoolproxy_requests_total{action="allow",category="helpsites",profile="pupil"} 1.0' in text
    assert "schoolproxy_decision_seconds_count 5.0" in text
    assert "schoolproxy_active_users 2.0" in text
    assert 'schoolproxy_list_entries{category="social-networking"} 3.0' in text
    assert 'schoolproxy_config_reloads_total{result="refused"} 0.0' in text
    for personal in ("jsmith", "kid2", "10.1.2.3", "socialsite.test", "ok.test"):
        assert personal not in text
