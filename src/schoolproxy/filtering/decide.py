"""The decision for one request: :func:`decide` over plain :class:`RequestFacts`.

This is the one place that says what happens to a request. The enforce addon turns a mitmproxy flow
into facts and applies the :class:`Ruling`; ``schoolproxy explain``, the config's policy tests and the
unit tests call the same function. Nothing here imports mitmproxy.

A request is decided at the stage where the proxy first sees it:

- ``connect``: an explicit proxy's CONNECT. Refused at once when it can never be decided later: a
  blocked host this profile would not decrypt, a name that cannot be valid, or a port not allowed.
  Otherwise the tunnel opens and its contents are decided at the next stages.
- ``tls``: the TLS ClientHello inside a tunnel (or, in transparent mode, the first thing seen). An
  allowed host this profile does not decrypt is passed through; everything else is intercepted.
- ``request``: an HTTP request (plain, or decrypted from a tunnel): forwarded, or answered with the
  block page.

A block by the profile's category rules or default is lifted for the people an expiring allow in
force is for (``snapshot.expiring``: an approved unblock request, a teacher's class allow).

Every name a request carries must pass: the target, every Host header and HTTP/2 ``:authority``, an
absolute URL in the request target (inside a tunnel, or as HTTP/2 ``:path``), and the tunnel's CONNECT
name and SNI. A request that names a blocked site through an allowed tunnel (domain fronting, an
absolute target) is blocked like the site itself, and recorded against the blocked name.

The path is decided as servers resolve it (:mod:`.paths`): every reading must pass. A request to the
gateway itself (loopback, link-local, its own addresses and names: :mod:`.local`) is blocked for everyone
unless the config allows that destination.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urlsplit

from schoolproxy.filtering import safesearch
from schoolproxy.filtering.hostnames import InvalidHost, normalise_host
from schoolproxy.filtering.local import LocalDestinations
from schoolproxy.filtering.paths import readings, split_target
from schoolproxy.filtering.policy import INVALID_HOST, Decision, Policy
from schoolproxy.identity.profiles import Identity

if TYPE_CHECKING:
    from schoolproxy.snapshot import Snapshot

log = logging.getLogger(__name__)

CONNECT_PORT = "connect-port"
GATEWAY = Decision("block", "gateway", "the school gateway's own services are not reachable through the proxy")


class Stage(StrEnum):
    CONNECT = "connect"
    TLS = "tls"
    REQUEST = "request"


class Handling(StrEnum):
    """What the proxy does with the request."""
    FORWARD = "forward"          # request: send it on (with SafeSearch where it applies)
    BLOCK_PAGE = "block-page"    # request: answer with the block page; nothing goes upstream
    TUNNEL = "tunnel"            # CONNECT: open the tunnel; what runs inside is decided later
    REFUSE = "refuse"            # CONNECT: answer 403 now
    INTERCEPT = "intercept"      # TLS: decrypt, and decide each request inside
    PASSTHROUGH = "passthrough"  # TLS: relay without decrypting


# NamedTuples rather than frozen dataclasses: as immutable, and built on every request for a third
# of the cost.
class RequestFacts(NamedTuple):
    """What the proxy knows about a request, as plain values. Names are as sent (not yet normalised)."""

    stage: Stage
    client_ip: str
    #: Where the request goes: the CONNECT target, the absolute-form URL's host, or (inside a tunnel,
    #: and in transparent mode) the address the connection is for.
    host: str
    port: int
    method: str = "GET"
    scheme: str = "http"
    #: Path and query as requested; "" at the connect and tls stages.
    path: str = ""
    #: The Host header, or HTTP/2's :authority.
    authority: str | None = None
    #: The CONNECT target of the tunnel the request arrived through.
    connect_host: str | None = None
    #: The server name in the TLS ClientHello of the connection.
    sni: str | None = None
    #: True when the client did not address the proxy (transparent interception): ``host`` is then an
    #: address, and the SNI names the site.
    transparent: bool = False
    #: Further names the request carries: the request line's authority (an absolute-form target inside
    #: a tunnel), every Host header (HTTP/2 may send one beside ``:authority``).
    names: tuple[str, ...] = ()
    #: The addresses ``host`` resolved to, when the proxy connects to sites itself (no upstream filter).
    resolved: tuple[str, ...] = ()


class Ruling(NamedTuple):
    """The answer for one request: allow or block and why, about which name, and what to do."""

    identity: Identity
    #: The normalised name the decision is about: the first that blocked, else the request's target.
    host: str
    decision: Decision
    handling: Handling
    #: This profile would relay this host's TLS without decrypting it.
    passthrough: bool = False
    #: SafeSearch to enforce on a forwarded request: the query parameter and the YouTube header.
    safesearch_param: tuple[str, str] | None = None
    youtube_header: tuple[str, str] | None = None

    @property
    def blocked(self) -> bool:
        return self.decision.action == "block"


def decide(snapshot: Snapshot, identity: Identity | None, facts: RequestFacts,
           now: dt.datetime | None = None, trace: list[str] | None = None) -> Ruling:
    """Decide one request. ``identity`` None means nobody identified the client (transparent mode, or no
    identify step): the client's subnet decides the profile, else the fail-closed default. ``now`` and
    ``trace`` are for ``explain``: the moment to decide at, and a list that receives the rule trace."""
    if identity is None:
        identity = snapshot.subnets.identity_of(facts.client_ip)
    policy = snapshot.policy
    profile = identity.profile
    names = names_of(facts)
    _, path = split_target(facts.path)
    paths = readings(path) if path else ("",)
    local = snapshot.local
    expiring = snapshot.expiring
    lift = None
    if expiring:  # an approved unblock request or a teacher's class allow
        when = now.timestamp() if now is not None else time.time()

        def lift(decision: Decision, name: str, lifted_path: str, steps: list[str] | None) -> Decision:
            return expiring.apply(decision, identity, name, lifted_path or "/", when, steps)
    host, decision = decide_name(policy, profile, names[0], paths, now, trace, local, lift)
    if decision.action == "allow":
        for other in names[1:]:
            other_host, other_decision = decide_name(policy, profile, other, paths, now, None, local, lift)
            if other_decision.action == "block":
                host, decision = other_host, other_decision
                break
    if decision.action == "allow" and facts.resolved and local is not None and host not in local.allowed \
            and any(local.forbidden_address(a) for a in facts.resolved):
        if trace is not None:
            trace.append(f"0. {host} resolves to the school gateway itself ({', '.join(facts.resolved)})")
        decision = GATEWAY
    stage = facts.stage
    if stage is Stage.REQUEST:
        if decision.action == "block":
            return Ruling(identity, host, decision, Handling.BLOCK_PAGE)
        return _forward(snapshot, identity, host, decision)
    if decision.action == "allow" and stage is Stage.CONNECT \
            and not policy.connect_port_allowed(profile, facts.port):
        decision = Decision("block", CONNECT_PORT, f"tunnels to port {facts.port} are not allowed", decision.mask)
    passthrough = decision.rule != INVALID_HOST.rule and policy.passthrough(profile, host, decision.mask)
    if stage is Stage.CONNECT:
        # Inside a tunnel the block page can be shown only if it is decrypted; a port or a name that can
        # never be allowed is refused before anything else happens.
        refuse = decision.action == "block" and (passthrough or decision.rule in (CONNECT_PORT, INVALID_HOST.rule))
        return Ruling(identity, host, decision, Handling.REFUSE if refuse else Handling.TUNNEL, passthrough)
    relay = decision.action == "allow" and passthrough
    return Ruling(identity, host, decision, Handling.PASSTHROUGH if relay else Handling.INTERCEPT, passthrough)


def names_of(facts: RequestFacts) -> list[str]:
    """Every name the request carries, its target first, without repeats of the target's spelling."""
    target = facts.host
    if facts.transparent and facts.stage is Stage.TLS and facts.sni:
        target = facts.sni  # the address is not a name; the ClientHello says which site
    names = [target]
    in_target, _ = split_target(facts.path)
    for name in (facts.authority, in_target, *facts.names, facts.connect_host, facts.sni):
        if name and name not in names:
            lower, plain = name.lower(), target.lower()
            if lower != plain and lower != f"{plain}:{facts.port}":
                names.append(name)
    return names


def decide_name(policy: Policy, profile: str, raw_host: str, paths: tuple[str, ...], now: dt.datetime | None = None,
                trace: list[str] | None = None, local: LocalDestinations | None = None,
                lift: Callable[[Decision, str, str, list[str] | None], Decision] | None = None) -> tuple[str, Decision]:
    """One name's decision: (normalised host, decision), for each of the ``paths`` the request may resolve
    to (:func:`paths.readings`): a block in any of them blocks. ``lift`` may change a block (an expiring
    allow in force). A name that cannot be valid is blocked, as is the gateway itself; an internal error
    blocks too (fail closed)."""
    try:
        host, is_ip = normalise_host(raw_host)
    except InvalidHost as e:
        if trace is not None:
            trace.append(f"invalid host: {e}")
        return raw_host[:253], INVALID_HOST
    if local is not None and local.forbidden(host, is_ip):
        if trace is not None:
            trace.append(f"0. {host} is the school gateway itself (proxy.allow_local does not list it)")
        return host, GATEWAY
    try:
        decision = None
        for i, path in enumerate(paths):  # servers read some paths in more than one way: each must pass
            if i and trace is not None:
                trace.append(f"   the path may also resolve to {path}")
            decision = policy.decide(profile, host, path, is_ip, now, trace)
            if decision.action == "block" and lift is not None:
                decision = lift(decision, host, path, trace)
            if decision.action == "block":
                break
        assert decision is not None
        return host, decision
    except Exception:
        log.exception("policy decision failed for %r", host)
        return host, Decision("block", "error", "internal error — blocked to be safe")


def _forward(snapshot: Snapshot, identity: Identity, host: str, decision: Decision) -> Ruling:
    settings = snapshot.policy.profiles[identity.profile].settings.safesearch
    param = None
    if settings.search_engines:
        engine = safesearch.search_engine(host)
        if engine is not None:
            param = safesearch.PARAMS[engine]
    header = safesearch.youtube_header(host, settings.youtube)
    return Ruling(identity, host, decision, Handling.FORWARD, False, param, header)


def facts_for_url(url: str, stage: Stage = Stage.REQUEST, client_ip: str = "") -> RequestFacts:
    """The facts of a browser asking an explicit proxy for ``url`` (``explain``, the config's tests).
    At the connect and tls stages: the CONNECT for its host and the TLS handshake naming it."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    scheme = parts.scheme or "http"
    try:
        port = parts.port
    except ValueError:  # the host part is invalid anyway: decided as such
        port = None
    port = port or (443 if scheme == "https" else 80)
    if stage is not Stage.REQUEST:
        host = parts.hostname or netloc
        return RequestFacts(stage, client_ip, host, port, "CONNECT", scheme, connect_host=host,
                            sni=host if stage is Stage.TLS else None)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return RequestFacts(stage, client_ip, netloc, port, "GET", scheme, path)

