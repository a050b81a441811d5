"""Identify addon, with mitmproxy's test helpers."""

import base64

import pytest
from conftest import PASSWORD
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow
from prometheus_client import CollectorRegistry

from schoolproxy.proxy.identify import IDENTITY, Identify, parse_basic
from schoolproxy.snapshot import SnapshotHolder


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def addon(school):
    snapshots = SnapshotHolder()
    snapshots.load(school)
    return Identify(snapshots, CollectorRegistry())


async def call(hook, f):
    """Run a hook as mitmproxy does: await what it returns, if anything."""
    res = hook(f)
    if res is not None:
        await res


def flow_with(header: str | None = None, ip: str = "192.168.0.5"):
    f = tflow.tflow()
    f.client_conn.peername = (ip, 50000)
    if header is not None:
        f.request.headers["Proxy-Authorization"] = header
    return f


async def test_valid_credentials_identify_and_are_stripped(addon):
    f = flow_with(basic("pupil1", PASSWORD))
    with taddons.context(addon):
        await call(addon.requestheaders, f)
    ident = f.metadata[IDENTITY]
    assert (ident.username, ident.profile, ident.source) == ("pupil1", "pupil", "proxy-auth")
    assert "Proxy-Authorization" not in f.request.headers
    assert f.response is None


@pytest.mark.parametrize("header", [basic("pupil1", "wrong"), basic("ghost", PASSWORD), None, "Basic !!!",
                                    "Bearer abc", "Basic " + "A" * 10000, basic("pupil1\x00", PASSWORD)])
async def test_bad_or_missing_credentials_get_407(addon, header):
    f = flow_with(header)
    with taddons.context(addon):
        await call(addon.requestheaders, f)
    assert f.response.status_code == 407
    assert f.response.headers["Proxy-Authenticate"] == 'Basic realm="Test School"'
    assert IDENTITY not in f.metadata


async def test_every_proxy_authorization_header_is_stripped_and_two_are_refused(addon):
    # Two credentials in one request (any case): neither is chosen, both are removed, the other
    # headers are kept in order.
    f = flow_with()
    f.request.headers.fields = ((b"Host", b"a.test"), (b"Proxy-Authorization", basic("pupil1", PASSWORD).encode()),
                                (b"X-One", b"1"), (b"proxy-authorization", basic("teacher1", PASSWORD).encode()),
                                (b"X-Two", b"2"))
    with taddons.context(addon):
        await call(addon.requestheaders, f)
    assert f.response.status_code == 407
    assert [k for k, _ in f.request.headers.fields] == [b"Host", b"X-One", b"X-Two"]


async def test_bcrypt_checked_once_per_credential(addon, monkeypatch):
    calls = []
    real = addon.snapshots.snapshot.authenticator.check
    monkeypatch.setattr(addon.snapshots.snapshot.authenticator, "check", lambda u, p: calls.append(u) or real(u, p))
    with taddons.context(addon):
        for _ in range(5):
            await call(addon.requestheaders, flow_with(basic("pupil1", PASSWORD)))
            await call(addon.requestheaders, flow_with(basic("pupil1", "wrong")))
    assert calls == ["pupil1", "pupil1"]


async def test_connect_identity_applies_inside_the_tunnel(addon):
    connect = flow_with(basic("teacher1", PASSWORD))
    connect.request.method = "CONNECT"
    with taddons.context(addon):
        await call(addon.http_connect, connect)
        inner = tflow.tflow()
        inner.client_conn = connect.client_conn
        await call(addon.requestheaders, inner)
    assert inner.metadata[IDENTITY].profile == "staff"


async def test_mapped_subnet_needs_no_login(addon):
    f = flow_with(None, ip="10.9.1.2")
    with taddons.context(addon):
        await call(addon.requestheaders, f)
    assert f.response is None and f.metadata[IDENTITY].profile == "guest"


async def test_transparent_mode_falls_back_to_default_profile(addon):
    f = flow_with(None)
    f.client_conn.proxy_mode = ProxyMode.parse("transparent")
    with taddons.context(addon):
        await call(addon.requestheaders, f)
    assert f.response is None
    assert (f.metadata[IDENTITY].profile, f.metadata[IDENTITY].source) == ("pupil", "default")


def test_parse_basic():
    assert parse_basic(basic("a", "b:c")) == ("a", "b:c")
    assert parse_basic("basic " + base64.b64encode(b"x:").decode()) == ("x", "")
    for bad in ("", "Basic", "Basic ====", "Digest abc", "Basic " + base64.b64encode(b"nocolon").decode(),
                "Basic " + base64.b64encode(b"\xff\xfe:x").decode()):
        assert parse_basic(bad) is None


async def test_known_credentials_are_handled_without_a_coroutine(addon):
    with taddons.context(addon):
        await call(addon.requestheaders, flow_with(basic("pupil1", PASSWORD)))   # bcrypt once
        f = flow_with(basic("pupil1", PASSWORD))
        assert addon.requestheaders(f) is None                                  # then synchronous
    assert f.metadata[IDENTITY].username == "pupil1"


async def test_a_remembered_header_is_checked_again_once_its_answer_expires(addon, monkeypatch):
    auth = addon.snapshots.snapshot.authenticator
    calls = []
    real = auth.check
    monkeypatch.setattr(auth, "check", lambda u, p: calls.append(u) or real(u, p))
    with taddons.context(addon):
        await call(addon.requestheaders, flow_with(basic("pupil1", PASSWORD)))
        other_spelling = "basic  " + basic("pupil1", PASSWORD).split()[1]   # same credential: no second check
        await call(addon.requestheaders, flow_with(other_spelling))
        assert calls == ["pupil1"]
        for entry in addon._cache.values():  # cache_seconds have passed…
            entry.expires = 0.0
        monkeypatch.setattr(auth, "check", lambda u, p: False)  # …and the password was changed meanwhile
        f = flow_with(basic("pupil1", PASSWORD))
        await call(addon.requestheaders, f)
    assert f.response.status_code == 407 and IDENTITY not in f.metadata


async def test_any_case_of_a_name_is_identified_by_its_one_spelling(addon):
    f = flow_with(basic("PUPIL1", PASSWORD))
    with taddons.context(addon):
        await call(addon.requestheaders, f)
    assert f.metadata[IDENTITY].username == "pupil1"


def reload_without(addon, school, user: str) -> None:
    users = school.parent / "users.htpasswd"
    users.write_text("".join(l + "\n" for l in users.read_text().splitlines() if not l.startswith(f"{user}:")))
    addon.snapshots.swap(addon.snapshots.build())


async def test_a_user_removed_from_the_users_file_is_refused_at_the_reload(addon, school):
    with taddons.context(addon):
        first = flow_with(basic("pupil1", PASSWORD))
        await call(addon.requestheaders, first)
        assert first.response is None
        reload_without(addon, school, "pupil1")
        again = flow_with(basic("pupil1", PASSWORD))
        await call(addon.requestheaders, again)
        other = flow_with(basic("teacher1", PASSWORD))
        await call(addon.requestheaders, other)
    assert again.response.status_code == 407  # not in 300 s, when the cached answer expires
    assert other.response is None


async def test_a_removed_users_open_tunnel_is_closed_at_the_reload(addon, school):
    connect = flow_with(basic("pupil1", PASSWORD))
    connect.request.method = "CONNECT"
    with taddons.context(addon):
        await call(addon.http_connect, connect)
        reload_without(addon, school, "teacher1")  # someone else: the tunnel goes on
        inner = tflow.tflow()
        inner.client_conn = connect.client_conn
        await call(addon.requestheaders, inner)
        assert inner.metadata[IDENTITY].username == "pupil1" and inner.error is None
        reload_without(addon, school, "pupil1")
        inner = tflow.tflow()
        inner.client_conn = connect.client_conn
        await call(addon.requestheaders, inner)
    assert inner.error is not None and IDENTITY not in inner.metadata


async def test_parallel_guesses_take_turns_and_are_bounded(addon, monkeypatch):
    # 40 guesses sent at once used to be checked at once (the slow-down was computed as each arrived).
    import asyncio
    checked = []
    real = addon.snapshots.snapshot.authenticator.check
    monkeypatch.setattr(addon.snapshots.snapshot.authenticator, "check", lambda u, p: checked.append(p) or real(u, p))
    monkeypatch.setattr(asyncio, "sleep", _no_sleep)  # the slow-down's waits, without waiting
    flows = [flow_with(basic("pupil1", f"guess{i}")) for i in range(40)]
    with taddons.context(addon):
        await asyncio.gather(*(call(addon.requestheaders, f) for f in flows))
    assert all(f.response.status_code == 407 for f in flows)
    assert len(checked) <= 9  # one checking, 8 waiting; the rest refused without a check
    assert addon.signin_problems["slowed"] >= 31


async def test_one_accounts_guesses_from_many_addresses_are_slowed(addon, monkeypatch):
    import asyncio
    slept = []
    monkeypatch.setattr(asyncio, "sleep", lambda d: slept.append(d) or _no_sleep(d))
    with taddons.context(addon):
        for i in range(12):  # one guess each from 12 addresses, one after another
            await call(addon.requestheaders, flow_with(basic("pupil1", f"guess{i}"), ip=f"10.1.0.{i}"))
    assert slept and max(slept) >= 2  # the account's failures slow the next address's attempt


async def _no_sleep(delay):
    return None


async def test_a_guess_whose_client_gave_up_waiting_is_not_checked(addon, monkeypatch):
    from mitmproxy.connection import ConnectionState
    checked = []
    monkeypatch.setattr(addon.snapshots.snapshot.authenticator, "check", lambda u, p: checked.append(p))
    f = flow_with(basic("pupil1", "guess"))
    f.client_conn.state = ConnectionState.CLOSED
    with taddons.context(addon):
        await call(addon.requestheaders, f)
    assert checked == [] and f.response.status_code == 407 and IDENTITY not in f.metadata


async def test_a_new_sign_in_while_the_directory_is_down_gets_the_default_profile_never_staff(tmp_path):
    # The directory cannot be asked, so nobody's password or groups can be checked: a name the config
    # maps to staff still browses as the fail-closed default, marked unverified.
    from conftest import free_port, make_school
    config = make_school(tmp_path)
    config.write_text(config.read_text().replace("  users: {teacher1: staff}", "  users: {teacher1: staff, head: staff}")
                      .replace("  default_profile: pupil",
                               f'  directory:\n    url: "ldap://127.0.0.1:{free_port()}"\n'
                               '    user_base: "ou=people,dc=school,dc=test"\n    bind: direct\n'
                               '    direct_bind_template: "uid={username},ou=people,dc=school,dc=test"\n'
                               "    timeout_seconds: 1\n  default_profile: pupil"))
    snapshots = SnapshotHolder()
    snapshots.load(config)
    addon = Identify(snapshots, CollectorRegistry())
    f = flow_with(basic("head", "anything"))
    with taddons.context(addon):
        await call(addon.requestheaders, f)
    ident = f.metadata[IDENTITY]
    assert f.response is None
    assert (ident.username, ident.profile, ident.source) == ("head", "pupil", "unverified")
