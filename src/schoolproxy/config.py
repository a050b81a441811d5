"""The one YAML configuration file: schema, loading and validation.

Errors name the file, the key path and what is wrong, e.g.::

    config/schoolproxy.yaml: profiles.pupil.block_categories[2]: unknown category 'socal-networking'

Structural checks live here (pydantic, unknown keys refused so a typo never silently does nothing);
checks that need the compiled lists (category names, help sites) are in :mod:`schoolproxy.filtering.policy`.
Relative paths in the file are relative to the file's own directory.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Role = Literal["pupil", "staff", "supply", "guest"]
#: What a person may do in the console and the incident log (SPEC 5.8). ``dsl`` includes deputies;
#: ``chair_of_governors`` receives concerns about the head teacher; ``slt`` concerns about supply staff;
#: a ``teacher`` may allow a site for their own classes for a lesson.
StaffRole = Literal["dsl", "computing_lead", "head", "chair_of_governors", "slt", "network_manager", "governor",
                    "office", "teacher"]
STAFF_ROLES: tuple[str, ...] = StaffRole.__args__  # type: ignore[attr-defined]
NonEmpty = Annotated[str, Field(min_length=1)]


class ConfigError(ValueError):
    """The configuration cannot be used; the message says where and why."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class LimitSettings(_Model):
    """What one client can make the proxy hold, and for how long. The defaults suit a school LAN."""

    #: Request line and headers, in bytes: before the client has signed in, and after (431 beyond).
    header_bytes_before_signin: int = Field(32 * 1024, ge=4096, le=1 << 20)
    header_bytes: int = Field(64 * 1024, ge=4096, le=1 << 20)
    #: A request's headers must all arrive within this many seconds of their first byte (408 beyond).
    header_timeout_seconds: float = Field(20.0, gt=0, le=600)
    #: A connection with nothing sent either way for this long is closed (browsers reconnect).
    idle_timeout_seconds: int = Field(300, ge=5, le=86400)
    #: Request bodies declared larger than this, and any body or response larger than
    #: ``stream_bytes``, go through as they arrive instead of being held in memory.
    request_buffer_bytes: int = Field(64 * 1024, ge=0, le=64 << 20)
    stream_bytes: int = Field(1 << 20, ge=64 * 1024, le=256 << 20)
    #: Connections one client address may hold open; of those, connections that have not yet sent a
    #: complete request (before sign-in). A terminal server with many users on one address needs more.
    connections_per_client: int = Field(512, ge=16, le=1_000_000)
    unidentified_connections_per_client: int = Field(64, ge=4, le=1_000_000)
    #: Requests one client address may have waiting for an answer at once (HTTP/2 multiplexes many on
    #: one connection); beyond it, 503. And of those, how many may have a body held whole in memory
    #: (up to ``stream_bytes`` each); the others stream.
    requests_in_flight_per_client: int = Field(512, ge=16, le=1_000_000)
    buffered_bodies_per_client: int = Field(32, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _ordered(self) -> "LimitSettings":
        if self.header_bytes_before_signin > self.header_bytes:
            raise ValueError("header_bytes_before_signin must not be larger than header_bytes")
        if self.unidentified_connections_per_client > self.connections_per_client:
            raise ValueError("unidentified_connections_per_client must not be larger than connections_per_client")
        return self


_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_DOMAIN = re.compile(r"^(\*\.)?[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})*\.?$")


class TransparentSettings(_Model):
    """Transparent mode: the gateway's firewall sends the LAN's web traffic to the proxy (deploy/nftables/)."""

    #: The port the firewall redirects the LAN's TCP 80 and 443 to (on proxy.listen_host).
    port: int = Field(8081, ge=1, le=65535)
    #: Interfaces facing the school's devices (e.g. [eth1, eth1.20]): web traffic arriving there is redirected.
    lan_interfaces: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:@+-]{1,15}$")]] = []
    #: Source networks whose web traffic is redirected wherever it arrives (e.g. [10.0.0.0/16]).
    lan_subnets: list[ipaddress.IPv4Network] = []

    @model_validator(mode="after")
    def _somewhere(self) -> "TransparentSettings":
        if not self.lan_interfaces and not self.lan_subnets:
            raise ValueError("give lan_interfaces (e.g. [eth1]) and/or lan_subnets (e.g. [10.0.0.0/16]): "
                             "the firewall rules redirect the web traffic that arrives there")
        return self


class UpstreamIdentitySettings(_Model):
    """Who is browsing, told to the upstream filter on the requests it sees (plain HTTP, and the CONNECT
    of an HTTPS tunnel). Sent only to proxy.upstream, never to a site."""

    #: Header carrying the device's address; Smoothwall reads X-Forwarded-For. null: not sent.
    client_address_header: str | None = "X-Forwarded-For"
    #: Header carrying the user's logon name (unknown users are not named). null: not sent.
    username_header: str | None = "X-Authenticated-User"
    #: How the logon name is written: "{username}", "SCHOOL\\{username}", "{username}@school.local".
    username_format: str = "{username}"

    @field_validator("client_address_header", "username_header")
    @classmethod
    def _header(cls, v: str | None) -> str | None:
        if v is not None and not _HEADER_NAME.match(v):
            raise ValueError(f"{v!r} is not an HTTP header name (letters, digits and '-')")
        if v is not None and v.lower() in ("host", "proxy-authorization", "authorization", "cookie",
                                           "content-length", "transfer-encoding", "connection"):
            raise ValueError(f"{v!r} is a header HTTP itself uses: choose another name")
        return v

    @field_validator("username_format")
    @classmethod
    def _format(cls, v: str) -> str:
        if "{username}" not in v or any(c in v for c in "\r\n"):
            raise ValueError("must contain {username} (e.g. 'SCHOOL\\{username}') on one line")
        return v


class ProxySettings(_Model):
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(8080, ge=1, le=65535)
    #: "explicit": browsers are set to use the proxy (PAC/WPAD, Group Policy) and sign in; "transparent":
    #: the gateway's firewall redirects the LAN's web traffic to ``transparent.port``; "both".
    mode: Literal["explicit", "transparent", "both"] = "explicit"
    transparent: TransparentSettings | None = None
    #: The school's upstream filter (Smoothwall / SWGfL), e.g. http://10.0.0.2:800. Every request is
    #: chained through it; schoolproxy never provides a path around it.
    upstream: str | None = None
    #: Where mitmproxy keeps its CA (the certificate clients must trust for HTTPS interception).
    ca_dir: Path = Path("../var/ca")
    #: Text that identifies the upstream filter's own block page (in a 403/451 HTML answer); such a
    #: request is recorded as blocked upstream and raises a critical alert.
    upstream_block_markers: list[NonEmpty] = [
        "This site has been blocked by your upstream filter", "Smoothwall", "Internet Watch Foundation",
        "SWGfL", "blocked by your network filter"]
    limits: LimitSettings = LimitSettings()
    #: Destinations on the gateway itself (its addresses, loopback, its names) that clients may reach
    #: through the proxy, e.g. an intranet served by the gateway. Everything else local is blocked.
    allow_local: list[NonEmpty] = []

    #: Tell the upstream filter who is browsing (every request reaches it from the gateway's address).
    upstream_identity: UpstreamIdentitySettings | None = None
    #: The CA of the upstream filter's own HTTPS inspection (PEM), trusted as well as the usual public
    #: CAs when the proxy checks sites' certificates. Verification is never turned off.
    upstream_ca: Path | None = None
    #: Names the proxy answers to for its own pages (PAC/WPAD file, certificate page), besides its
    #: addresses: e.g. [wpad.school.local, proxy.school.local].
    own_names: list[NonEmpty] = []
    #: Reached directly, never through the proxy, says the PAC file: the school's own domains and networks.
    pac_direct: list[NonEmpty] = []

    @field_validator("upstream")
    @classmethod
    def _upstream_url(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if not (v.startswith("http://") or v.startswith("https://")):
            raise ValueError("must be a proxy URL such as http://10.0.0.2:800")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "ProxySettings":
        if self.mode != "explicit" and self.transparent is None:
            raise ValueError(f"mode {self.mode}: needs a transparent section naming the LAN "
                             "(transparent: {port: 8081, lan_interfaces: [eth1]})")
        if self.mode == "both" and self.transparent is not None and self.transparent.port == self.listen_port:
            raise ValueError("mode both: transparent.port must differ from listen_port")
        if self.upstream_identity is not None and not self.upstream:
            raise ValueError("upstream_identity: needs proxy.upstream — these headers are only ever sent "
                             "to the upstream filter, never to a site")
        for entry in self.pac_direct + self.own_names:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                if not _DOMAIN.match(entry):
                    raise ValueError(f"{entry!r} is not a domain or network (e.g. school.local, 10.0.0.0/8)") from None
        return self

    def transparent_port(self) -> int | None:
        """Where the transparent listener is, or None in explicit mode."""
        return self.transparent.port if self.mode != "explicit" and self.transparent is not None else None


class ListUpdateSettings(_Model):
    """``schoolproxy lists update`` (daily, by the schoolproxy-lists-update timer): the UT1 lists, checked
    before they replace the ones in use."""

    #: An http(s) URL of a .tar.gz (fetched through proxy.upstream when one is set), or a file or
    #: directory put on the gateway by hand.
    source: NonEmpty = "https://dsi.ut-capitole.fr/blacklists/download/blacklists.tar.gz"
    #: A checksum file published beside the download (md5sum / sha256sum format), checked if given.
    checksum_url: str | None = None
    #: Where the lists go (a symbolic link to the set in use): add it to lists.sources.
    dest: Path = Path("../var/lists/ut1")
    #: A new set with fewer entries than this share of the set in use is refused (a truncated download).
    min_ratio: float = Field(0.8, gt=0, le=1)
    max_download_mb: int = Field(500, ge=1, le=20_000)
    max_unpacked_mb: int = Field(3000, ge=1, le=100_000)
    timeout_seconds: float = Field(600, gt=0, le=7200)
    #: A line per update attempt, kept as evidence that the lists are kept up to date.
    history: Path | None = None


class ListSettings(_Model):
    sources: list[Path] = [Path("../filterlists")]
    metadata: Path = Path("../filterlists/categories.yaml")
    #: Where the lists are compiled to (a memory-mapped trie: a 3M-entry list opens in milliseconds
    #: and is shared by all workers). Recompiled when a list file changes. null: parse into memory.
    cache_dir: Path | None = Path("../var/lists-cache")
    #: Daily updates of the UT1 lists (schoolproxy lists update); null: lists change only by hand.
    update: ListUpdateSettings | None = None


class ProxyAuthSettings(_Model):
    enabled: bool = True
    #: htpasswd-style file of bcrypt hashes (``htpasswd -B`` or ``schoolproxy users add``). With a
    #: directory as well, users in this file are checked here and everyone else against the directory.
    users_file: Path | None = None
    realm: str = "School internet"
    #: How long a checked username/password pair is trusted before bcrypt is asked again.
    cache_seconds: int = Field(300, ge=0, le=86400)
    #: Without credentials and outside every mapped subnet: challenge (407) rather than fall back
    #: to the default profile.
    required: bool = True
    #: Password guessing: this many different wrong credentials from one client address within
    #: ``failure_window_seconds`` and its sign-ins are slowed (and reported) until the window passes.
    max_failures: int = Field(10, ge=1, le=10_000)
    failure_window_seconds: int = Field(300, ge=10, le=86400)


_AD_USER_FILTER = ("(&(objectCategory=person)(objectClass=user)(sAMAccountName={username})"
                   "(!(userAccountControl:1.2.840.113556.1.4.803:=2)))")


class DirectorySettings(_Model):
    """Active Directory / LDAP for proxy sign-in and group membership. Defaults suit AD."""

    #: ldaps://dc1.school.local (636) or ldap://... (389, with start_tls). Several = fallbacks in order.
    url: NonEmpty | list[NonEmpty]
    start_tls: bool = False
    #: CA that signed the domain controllers' certificates (PEM). Without it, the system CAs are used.
    ca_file: Path | None = None
    verify_certificate: bool = True
    #: "search": a service account finds the user, then we bind as them; "direct": bind as the user.
    bind: Literal["search", "direct"] = "search"
    service_dn: str | None = None
    #: File holding the service account's password (kept out of the YAML; chmod 600).
    service_password_file: Path | None = None
    #: For bind: direct, e.g. "{username}@school.local" (AD UPN) or "uid={username},ou=people,dc=...".
    direct_bind_template: str | None = None
    user_base: NonEmpty
    #: Finds one enabled person by logon name; the default excludes disabled AD accounts.
    user_filter: NonEmpty = _AD_USER_FILTER
    group_base: str | None = None
    #: Groups that list the user (or a group) as a member. AD users' memberOf is read as well.
    group_filter: NonEmpty = "(&(objectClass=group)(member={dn}))"
    group_name_attribute: NonEmpty = "cn"
    nested_groups: bool = True
    #: The directory is asked at most once per user per this many seconds.
    cache_seconds: int = Field(300, ge=0, le=86400)
    timeout_seconds: float = Field(5.0, gt=0, le=60)

    @property
    def urls(self) -> list[str]:
        return [self.url] if isinstance(self.url, str) else list(self.url)

    @model_validator(mode="after")
    def _consistent(self) -> "DirectorySettings":
        for u in self.urls:
            if not (u.startswith("ldap://") or u.startswith("ldaps://")):
                raise ValueError(f"url {u!r}: must start with ldap:// or ldaps://")
        if "{username}" not in self.user_filter:
            raise ValueError("user_filter must contain {username}")
        if "{dn}" not in self.group_filter:
            raise ValueError("group_filter must contain {dn}")
        if self.bind == "search" and not (self.service_dn and self.service_password_file):
            raise ValueError("bind: search needs service_dn and service_password_file "
                             "(or use bind: direct with direct_bind_template)")
        if self.bind == "direct" and (not self.direct_bind_template or "{username}" not in self.direct_bind_template):
            raise ValueError("bind: direct needs direct_bind_template containing {username}")
        return self


class LogonFeedSettings(_Model):
    """HTTP endpoint for logon/logoff scripts: ip → user for clients that do not sign in to the proxy."""

    #: host:port on the gateway's admin/LAN address — never a wildcard address.
    listen: str = "127.0.0.1:9465"
    #: File holding the shared secret the logon scripts send (at least 16 characters).
    secret_file: Path
    #: A logon with no logoff expires after this long (a pupil who shut the lid and went home).
    ttl_hours: float = Field(10.0, gt=0, le=24 * 7)
    #: Where live logons are kept across a proxy restart.
    state_file: Path = Path("../var/logons.json")
    #: How long a sign-in on the console's sign-in page (BYOD, guest Wi-Fi) lasts on that device.
    sign_in_hours: float = Field(8.0, gt=0, le=24 * 7)
    #: Staff PCs' subnets. A logon for an account whose profile is staff, supply or unfiltered is accepted
    #: only for an address in one of these, reported from that address: whoever learns the secret cannot
    #: name a teacher from a pupil's PC. Empty: the feed never names such an account (the console's
    #: sign-in page, which checks the password, still can).
    staff_subnets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    #: Login servers that report logons for other addresses (an "ip" in the call, for thin clients). The
    #: gateway itself always may; any other caller may only report its own address.
    relays: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []

    @field_validator("listen")
    @classmethod
    def _admin_address(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port on the gateway's admin address, e.g. 10.0.0.1:9465")
        if host in ("0.0.0.0", "::", "*"):
            raise ValueError("must be a specific admin address, not every interface")
        return v


class GroupSettings(_Model):
    profile: NonEmpty
    #: Local members; directory (LDAP) membership is added by the directory identity source.
    members: list[NonEmpty] = []


class PatternSettings(_Model):
    match: NonEmpty  # shell-style, case-insensitive: "Supply*"
    profile: NonEmpty


class SubnetSettings(_Model):
    cidr: ipaddress.IPv4Network | ipaddress.IPv6Network
    profile: NonEmpty
    name: str = ""


class IdentitySettings(_Model):
    proxy_auth: ProxyAuthSettings | None = None
    directory: DirectorySettings | None = None
    logon_feed: LogonFeedSettings | None = None
    users: dict[NonEmpty, NonEmpty] = {}
    groups: dict[NonEmpty, GroupSettings] = {}
    patterns: list[PatternSettings] = []
    subnets: list[SubnetSettings] = []
    #: Profile for anyone not identified. Must be a filtered profile (checked against the lists).
    default_profile: NonEmpty

    @model_validator(mode="after")
    def _auth_source(self) -> "IdentitySettings":
        pa = self.proxy_auth
        if pa is not None and pa.enabled and pa.users_file is None and self.directory is None:
            raise ValueError("proxy_auth: needs a users_file, an identity.directory, or both")
        if self.logon_feed is not None and self.directory is not None and self.directory.bind == "direct":
            raise ValueError("logon_feed: the feed checks that a reported user exists in the directory, which "
                             "needs its service account: use directory.bind: search with service_dn")
        return self


class WindowSettings(_Model):
    name: NonEmpty
    days: list[Day] = list(DAYS[:5])
    start: dt.time = Field(alias="from")
    end: dt.time = Field(alias="to")
    allow_categories: list[NonEmpty] = []
    block_categories: list[NonEmpty] = []

    @model_validator(mode="after")
    def _not_empty(self) -> "WindowSettings":
        if self.start == self.end:
            raise ValueError("'from' and 'to' are the same time: the window would be empty")
        if not self.allow_categories and not self.block_categories:
            raise ValueError("a window must allow or block at least one category")
        return self


class SafeSearchSettings(_Model):
    #: SafeSearch on Google, Bing and DuckDuckGo (strict, not removable by the client).
    search_engines: bool = True
    youtube: Literal["off", "moderate", "strict"] = "strict"


class TlsSettings(_Model):
    #: Decrypt HTTPS (needed for block pages, SafeSearch and path-level rules). Clients must trust the CA.
    intercept: bool = True
    #: Never decrypted for this profile (banking, health): blocked at CONNECT/SNI when blocked at all.
    passthrough_categories: list[NonEmpty] = []
    passthrough_sites: list[NonEmpty] = []


class ContentSettings(_Model):
    """Real-time content: the text of allowed, intercepted responses scored with the phrase lists."""

    #: Score pages, JSON and streamed (AI chat) replies for this profile.
    scan: bool = False
    #: A theme's score in one response at which an alert is raised (with the site and the words).
    alert_score: int = Field(100, ge=1)
    #: ... and at which the page is replaced by the block page (a streamed reply is cut off there).
    block_score: int = Field(150, ge=1)
    #: How much of each response's decoded body is read (the rest passes unscored).
    max_kb: int = Field(256, ge=16, le=16 * 1024)


class ContentExceptionSettings(_Model):
    """A site whose content is not blocked (``no-block``: still scored and alerted) or not scored at all
    (``no-scan``), for the listed profiles; like overrides, with rationale, author and date."""
    site: NonEmpty
    action: Literal["no-block", "no-scan"] = "no-block"
    profiles: list[NonEmpty] = ["*"]
    rationale: Annotated[str, Field(min_length=3)]
    author: NonEmpty
    date: dt.date


class ProfileSettings(_Model):
    description: str = ""
    role: Role
    default: Literal["allow", "block"] = "allow"
    block_categories: list[NonEmpty] = []
    allow_categories: list[NonEmpty] = []
    windows: list[WindowSettings] = []
    safesearch: SafeSearchSettings = SafeSearchSettings()
    tls: TlsSettings = TlsSettings()
    #: Ports a CONNECT tunnel may go to; empty = any. Other ports are how tunnelling tools escape.
    connect_ports: list[Annotated[int, Field(ge=1, le=65535)]] = [443]
    content: ContentSettings = ContentSettings()


class OverrideSettings(_Model):
    site: NonEmpty  # domain (and subdomains) or domain/path prefix
    action: Literal["allow", "block"]
    profiles: list[NonEmpty] = ["*"]
    rationale: Annotated[str, Field(min_length=3)]
    author: NonEmpty
    date: dt.date


class PolicyTestSettings(_Model):
    url: NonEmpty
    expect: Literal["allow", "block"]
    user: str | None = None
    profile: str | None = None
    at: dt.datetime | None = None

    @model_validator(mode="after")
    def _who(self) -> "PolicyTestSettings":
        if (self.user is None) == (self.profile is None):
            raise ValueError("give exactly one of 'user' or 'profile'")
        return self


class MetricsSettings(_Model):
    #: host:port for the Prometheus /metrics endpoint; keep it on a management address.
    listen: str = "127.0.0.1:9464"
    enabled: bool = True

    @field_validator("listen")
    @classmethod
    def _hostport(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port, e.g. 127.0.0.1:9464")
        return v


class RecordSettings(_Model):
    #: Off only for measuring (make bench): schools must keep records (DfE filtering & monitoring standards).
    enabled: bool = True
    #: SQLAlchemy URL. SQLite paths are relative to this file; for PostgreSQL use e.g.
    #: postgresql+psycopg://schoolproxy@db.trust.local/schoolproxy
    database: str = "sqlite:///../var/schoolproxy.db"
    #: Where records wait when the database cannot take them; replayed when it can.
    spool_dir: Path = Path("../var/spool")
    #: "batch": fsync each spooled batch (a crash loses at most what is still in memory); "none": faster.
    fsync: Literal["batch", "none"] = "batch"
    retention_days: int = Field(365, ge=1, le=3650)
    #: Alerts and the incident log are safeguarding records: kept much longer.
    alert_retention_days: int = Field(2555, ge=1, le=36500)
    #: Drop query-string values except recognised search parameters (data minimisation).
    redact_query: bool = True
    keep_params: list[NonEmpty] = ["p", "q", "query", "search", "search_query", "text", "wd"]
    batch_size: int = Field(200, ge=1, le=100_000)
    batch_ms: int = Field(500, ge=10, le=60_000)
    queue_size: int = Field(10_000, ge=100, le=10_000_000)
    purge_every_hours: int = Field(24, ge=1, le=24 * 7)

    @field_validator("database")
    @classmethod
    def _url(cls, v: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError
        try:
            url = make_url(v)
        except ArgumentError:
            raise ValueError("not a database URL (e.g. sqlite:///../var/schoolproxy.db or "
                             "postgresql+psycopg://user@host/db)") from None
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError("only SQLite and PostgreSQL are supported")
        return v


Severity = Literal["low", "medium", "high", "critical"]


class SmtpSettings(_Model):
    host: NonEmpty
    port: int = Field(587, ge=1, le=65535)
    #: "starttls" (port 587), "tls" (implicit, port 465) or "none" (a relay on the trust's own network).
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    #: File holding the SMTP password (kept out of the YAML).
    password_file: Path | None = None
    sender: NonEmpty = Field(alias="from")
    #: CA file to verify the mail server; default: the system's CAs.
    ca_file: Path | None = None
    timeout_seconds: float = Field(20.0, gt=0, le=300)


class WebhookSettings(_Model):
    """JSON POST of each alert (e.g. into a MIS/CPOMS integration or a Teams/Slack relay)."""
    url: NonEmpty
    #: If set, the body is signed: header X-Schoolproxy-Signature: sha256=<hex HMAC of the body>.
    secret_file: Path | None = None
    timeout_seconds: float = Field(10.0, gt=0, le=120)
    #: Concerns about staff are the head teacher's alone, and a webhook usually feeds a system the DSL team
    #: reads (CPOMS, a Teams channel), so they never go to it — unless this says it reaches the head alone.
    staff_concerns: bool = False

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not (v.startswith("https://") or v.startswith("http://")):
            raise ValueError("must be an http(s) URL")
        return v


class DigestSettings(_Model):
    day: Day = "mon"
    at: dt.time = dt.time(7, 30)


_DEFAULT_THEME_SEVERITY: dict[str, str] = {
    "self-harm": "high", "grooming": "high", "extremism": "high", "pornography": "medium", "bullying": "medium",
    "drugs": "medium", "weapons": "medium", "violence": "medium", "hate": "medium", "circumvention": "medium",
    "gambling": "low", "repeated-blocks": "low", "upstream-block": "critical",
}


class AlertSettings(_Model):
    enabled: bool = True
    #: Weighted phrase lists: <dir>/<theme>/*.txt (E2Guardian format) and <dir>/exceptions.txt.
    phrases: Path = Path("../filterlists/phrases")
    #: Phrase score at which a search raises an alert: by profile name, else by the profile's role.
    thresholds: dict[NonEmpty, Annotated[int, Field(ge=1)]] = {"pupil": 60, "supply": 80, "staff": 100, "guest": 60}
    #: Severity of each theme when its threshold is met (a score of twice the threshold goes one up).
    themes: dict[NonEmpty, Severity] = {}
    #: One alert per user per theme per this many minutes; repeats are counted on it.
    throttle_minutes: int = Field(60, ge=1, le=7 * 24 * 60)
    #: "N blocked attempts in M minutes" (per user) → a repeated-blocks alert.
    repeated_blocks: int = Field(20, ge=2)
    repeated_blocks_minutes: int = Field(10, ge=1)
    #: Connections whose client refused the school's certificate (a VPN app, a pinned client) per user
    #: within 10 minutes → circumvention. An upstream site's certificate failing never counts.
    interception_refusals: int = Field(5, ge=1)
    #: Who is told: role name → email addresses.
    recipients: dict[NonEmpty, list[NonEmpty]] = {}
    #: The subject's role → recipient roles. Staff misuse goes to the head teacher only.
    routes: dict[Role, list[NonEmpty]] = {"pupil": ["dsl", "computing_lead"], "staff": ["head"],
                                          "supply": ["slt"], "guest": ["dsl", "computing_lead"]}
    #: Sent at once; the rest wait for the weekly digest.
    immediate: list[Severity] = ["high", "critical"]
    digest: DigestSettings = DigestSettings()
    smtp: SmtpSettings | None = None
    webhook: WebhookSettings | None = None
    #: A folder on the gateway (Maildir: read it with ``mutt -f FOLDER``) where a copy of every alert and
    #: digest message is written, private to the service. A copy kept, not a way of telling anyone: without
    #: smtp or webhook, high alerts still count as reaching no one until someone acknowledges them.
    mailbox: Path | None = None
    #: A link to the school's online-safety / incident procedure, put at the foot of every alert.
    procedure: str = ""

    def severity_of(self, theme: str) -> str:
        return self.themes.get(theme) or _DEFAULT_THEME_SEVERITY.get(theme, "medium")

    @model_validator(mode="after")
    def _routes_known(self) -> "AlertSettings":
        for role, targets in self.routes.items():
            for t in targets:
                if self.recipients and t not in self.recipients:
                    raise ValueError(f"routes.{role}: no recipients named {t!r} "
                                     f"(recipients: {', '.join(sorted(self.recipients))})")
        for role, targets in self.routes.items():
            unknown = [t for t in targets if t not in STAFF_ROLES]
            if unknown:
                raise ValueError(f"routes.{role}: unknown role(s) {', '.join(unknown)} (roles: {', '.join(STAFF_ROLES)})")
        if self.routes.get("staff", ["head"]) != ["head"]:
            raise ValueError("routes.staff: concerns about staff go to the head teacher only: routes.staff must be "
                             "[head] (a concern about the head goes to the chair of governors by itself)")
        return self


class PersonSettings(_Model):
    """Someone who acts on what the filter sees (the DSL, the head…): their name is stamped on every
    change they make, and their roles decide what they may see."""
    #: Display name, e.g. "Mrs C Lawrence".
    name: NonEmpty
    roles: list[StaffRole] = Field(min_length=1)
    email: str | None = None
    #: For a teacher: the classes they may allow a site for, by identity group (year4) or profile name.
    classes: list[NonEmpty] = []


class ConsoleSigninSettings(_Model):
    """Slowing password guessing at the console's sign-in page."""
    #: Failed sign-ins to one account within ``window_minutes`` before each further try must wait
    #: (30 s, doubling, up to the window), from any computer.
    max_failures: int = Field(5, ge=1, le=1000)
    #: The same, for all accounts tried from one computer (address).
    max_failures_per_address: int = Field(20, ge=1, le=100_000)
    window_minutes: int = Field(15, ge=1, le=24 * 60)


class ConsoleNameSettings(_Model):
    """Where people's display names and classes come from ("Jamie Smith (Year 4)" instead of jsmith)."""
    #: A CSV exported from the school's MIS (SIMS, Arbor, Bromcom…) with a header row: a logon column
    #: (logon/username/login), a name (display name, or forename + surname) and a class (class/reg
    #: group/form/tutor group/year). Wins over the directory for the logons it lists.
    mis_csv: Path | None = None
    #: Directory (AD) attributes read for a person's name and class.
    name_attribute: NonEmpty = "displayName"
    class_attribute: NonEmpty = "department"


def _host_port(v: str, example: str) -> tuple[str, int]:
    host, sep, port = v.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"must be host:port on the gateway's admin address, e.g. {example}")
    if host in ("0.0.0.0", "::", "*"):
        raise ValueError("must be a specific admin address, not every interface")
    return host, int(port)


class ConsoleSettings(_Model):
    """The safeguarding console (``schoolproxy console``): a web app for the DSL, the head and others."""
    #: host:port on the gateway's admin address (HTTPS), never a wildcard address.
    listen: str = "127.0.0.1:8443"
    #: Names staff type to reach the console (console.school.local); put on its certificate beside the
    #: listen address.
    hostnames: list[NonEmpty] = []
    #: The console's own certificate and key (PEM). Default: issued by the proxy's CA (proxy.ca_dir),
    #: which school devices already trust, and renewed by itself.
    certificate: Path | None = None
    key: Path | None = None
    #: Where the issued certificate is kept (private to the service).
    state_dir: Path = Path("../var/console")
    #: Local console accounts (bcrypt, as ``schoolproxy users add NAME --file FILE`` writes), for people
    #: without a school account. School accounts sign in through the directory or the proxy's users file.
    users_file: Path | None = None
    #: Signed out after this long without using the console.
    idle_minutes: int = Field(15, ge=1, le=8 * 60)
    #: Signed out after this long whatever the activity.
    session_hours: float = Field(10, gt=0, le=24)
    #: The browsing shown either side of an alert (adjustable on the page).
    timeline_minutes: int = Field(30, ge=1, le=240)
    signin: ConsoleSigninSettings = ConsoleSigninSettings()
    names: ConsoleNameSettings = ConsoleNameSettings()

    @field_validator("listen")
    @classmethod
    def _admin_address(cls, v: str) -> str:
        _host_port(v, "10.0.0.1:8443")
        return v

    @model_validator(mode="after")
    def _certificate_pair(self) -> "ConsoleSettings":
        if (self.certificate is None) != (self.key is None):
            raise ValueError("give both certificate and key, or neither (a certificate from the proxy's CA)")
        return self

    @property
    def host(self) -> str:
        return _host_port(self.listen, "")[0]

    @property
    def port(self) -> int:
        return _host_port(self.listen, "")[1]


class BlockPageSettings(_Model):
    #: Who to tell, shown on the block page ("your teacher", an email address for staff).
    report_to: str = ""
    report_email: str = ""
    #: The name the proxy answers its own pages on (the unblock request form, the acceptable-use notice):
    #: a reserved name no website can own. In transparent mode, make the school's DNS resolve it to the
    #: gateway.
    pages_host: NonEmpty = "schoolproxy.invalid"

    @field_validator("pages_host")
    @classmethod
    def _hostname(cls, v: str) -> str:
        v = v.strip().lower().rstrip(".")
        if not v or "/" in v or ":" in v or " " in v or "." not in v:
            raise ValueError("must be a hostname such as schoolproxy.invalid or filter.school.local")
        return v


class TermSettings(_Model):
    name: NonEmpty
    start: dt.date = Field(alias="from")
    end: dt.date = Field(alias="to")

    @model_validator(mode="after")
    def _order(self) -> "TermSettings":
        if self.end < self.start:
            raise ValueError("'to' is before 'from'")
        return self


class UnblockSettings(_Model):
    """Unblock requests from the block page, decided by the approvers; teachers' class allows."""
    enabled: bool = True
    #: Who may approve or refuse a request (roles in ``people:``).
    approvers: list[StaffRole] = ["computing_lead", "dsl"]
    #: Longest reason a pupil may give, in characters.
    max_reason: int = Field(500, ge=20, le=2000)
    #: Requests one user may make in a day (a flood of requests is refused, politely).
    per_user_per_day: int = Field(5, ge=1, le=100)
    #: How long "a lesson" is, for approvals and teachers' class allows.
    lesson_minutes: int = Field(60, ge=10, le=240)


class NoticeSettings(_Model):
    """The acceptable-use notice: shown to each user on first use and again each term (or year), before
    their first page; acceptance is recorded with the version of the text they saw."""
    enabled: bool = True
    #: Shown again each "term" (needs ``terms:``), each school "year" (from 1 September), or "once".
    #: Default: each term if the config has term dates, else each year.
    renew: Literal["term", "year", "once"] | None = None
    title: NonEmpty = "Using the school internet"
    #: The text everyone is shown (plain text; a blank line starts a new paragraph, "- " a list item).
    text: NonEmpty = (
        "Our school internet is for learning. To keep everyone safe:\n\n"
        "- Everything you do on the school internet is monitored and recorded, and can be checked by staff.\n"
        "- Only use websites your teacher has said are right for your work.\n"
        "- Never try to get around the school's filter.\n"
        "- Never give out your name, address, school or photos to anyone online.\n"
        "- Be kind online. Never send or share anything hurtful.\n"
        "- If you see something that worries or upsets you, tell a grown-up you trust straight away.\n\n"
        "If something online has worried you, you can also call Childline free on 0800 1111.")
    #: A different text for a role (e.g. staff: the staff code of conduct), else ``text``.
    by_role: dict[Role, NonEmpty] = {}
    accept_label: NonEmpty = "I understand and agree"


class ChecksSettings(_Model):
    """``schoolproxy checks run``: the config's policy tests plus self-tests of the running proxy, as a
    pupil's browser meets it. Each run is recorded (the checks log); a failure raises a high alert to the
    network manager and the DSL."""
    #: The proxy as clients reach it, e.g. http://10.0.0.1:8080 (default: proxy.listen_host and listen_port).
    proxy: str | None = None
    #: A logon kept for the checks, mapped to the pupil profile, so they test what pupils get.
    user: str | None = None
    #: File holding that logon's password (chmod 600; never in this file).
    password_file: Path | None = None
    #: A page the checks' profile blocks: the proxy must answer with its block page.
    blocked_url: NonEmpty = "http://www.facebook.com/"
    #: A search: the proxy must enforce SafeSearch on it.
    safesearch_url: NonEmpty = "https://www.google.com/search?q=schoolproxy+check"
    #: A help site: it must be reachable.
    help_url: NonEmpty = "https://www.childline.org.uk/"
    #: An ordinary allowed page: it must come back through the upstream filter.
    allowed_url: NonEmpty = "https://www.bbc.co.uk/"
    #: A page the upstream filter blocks (a test page your filtering provider gives you): asked of the
    #: upstream filter directly, its block page must come back. Unset: that check is not made.
    upstream_test_url: str | None = None
    timeout_seconds: float = Field(15.0, gt=0, le=120)
    #: An alert still undelivered after this long means delivery is stuck.
    outbox_stuck_minutes: int = Field(30, ge=1, le=24 * 60)

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, v: str | None) -> str | None:
        if v and not v.startswith("http://"):
            raise ValueError("must be the proxy's address as clients use it, e.g. http://10.0.0.1:8080")
        return v or None

    @model_validator(mode="after")
    def _password_with_user(self) -> "ChecksSettings":
        if (self.user is None) != (self.password_file is None):
            raise ValueError("give both user and password_file (a logon kept for the checks), or neither")
        return self


class Config(_Model):
    school: NonEmpty
    timezone: str = "Europe/London"
    proxy: ProxySettings = ProxySettings()
    lists: ListSettings = ListSettings()
    #: Extra help sites (local services) added to the never-blocked ``helpsites`` category.
    help_sites: list[NonEmpty] = []
    identity: IdentitySettings
    profiles: dict[NonEmpty, ProfileSettings]
    overrides: list[OverrideSettings] = []
    #: Sites or profiles whose content is not blocked or not scored (real-time content), with rationale.
    content_exceptions: list[ContentExceptionSettings] = []
    block_page: BlockPageSettings = BlockPageSettings()
    metrics: MetricsSettings = MetricsSettings()
    records: RecordSettings = RecordSettings()
    alerts: AlertSettings = AlertSettings()
    #: The people with a safeguarding or admin role, by logon username (case-insensitive).
    people: dict[NonEmpty, PersonSettings] = {}
    #: Directory (AD) groups whose members hold a role, e.g. {dsl: [Safeguarding Team]}.
    role_groups: dict[StaffRole, list[NonEmpty]] = {}
    console: ConsoleSettings = ConsoleSettings()
    tests: list[PolicyTestSettings] = []
    checks: ChecksSettings = ChecksSettings()
    #: The school's terms, for "until the end of term" approvals and the once-a-term notice.
    terms: list[TermSettings] = []
    unblock: UnblockSettings = UnblockSettings()
    notice: NoticeSettings = NoticeSettings()

    #: Directory of the config file; relative paths resolve against it. Set by :func:`load_config`.
    base_dir: Path = Path(".")
    source: str = "<config>"

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (e.g. Europe/London)") from None
        return v

    @model_validator(mode="after")
    def _profiles_exist(self) -> "Config":
        names = set(self.profiles)
        refs: list[tuple[str, str]] = [("identity.default_profile", self.identity.default_profile)]
        refs += [(f"identity.users.{u}", p) for u, p in self.identity.users.items()]
        refs += [(f"identity.groups.{g}.profile", s.profile) for g, s in self.identity.groups.items()]
        refs += [(f"identity.patterns[{i}].profile", s.profile) for i, s in enumerate(self.identity.patterns)]
        refs += [(f"identity.subnets[{i}].profile", s.profile) for i, s in enumerate(self.identity.subnets)]
        refs += [(f"overrides[{i}].profiles", p) for i, o in enumerate(self.overrides) for p in o.profiles if p != "*"]
        refs += [(f"tests[{i}].profile", t.profile) for i, t in enumerate(self.tests) if t.profile]
        refs += [(f"content_exceptions[{i}].profiles", p) for i, c in enumerate(self.content_exceptions)
                 for p in c.profiles if p != "*"]
        for where, p in refs:
            if p not in names:
                raise ValueError(f"{where}: unknown profile {p!r} (profiles: {', '.join(sorted(names))})")
        if self.notice.enabled and self.notice.renew == "term" and not self.terms:
            raise ValueError("notice.renew: term needs the school's term dates (terms:), or use renew: year")
        known = names | set(self.identity.groups)
        for u, p in self.people.items():
            for i, c in enumerate(p.classes):
                if c not in known:
                    raise ValueError(f"people.{u}.classes[{i}]: {c!r} is neither a group in identity.groups nor "
                                     f"a profile")
        if self.profiles[self.identity.default_profile].role == "staff":
            raise ValueError("identity.default_profile: must not be a staff profile — anyone "
                             "unidentified gets it, so it must fail closed")
        return self

    def database_url(self) -> str:
        """The records database URL, with a relative SQLite path resolved against this file."""
        url = self.records.database
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
            db = self.path(Path(url[len(prefix):]))
            db.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            return prefix + str(db)
        return url

    def path(self, p: Path) -> Path:
        """A path from the file, resolved against the file's directory. A symbolic link at the end is kept
        as a link (the list updater switches one to a new set: watching the link sees the switch)."""
        return p if p.is_absolute() else Path(os.path.normpath(self.base_dir / p))


def load_config(path: str | Path) -> Config:
    """Read and validate the YAML file; raise :class:`ConfigError` with file and key path."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{path}: not UTF-8 text: byte 0x{data[e.start]:02x} on line {line} — save the file "
                          f"as UTF-8 (a Windows editor may have saved it as ANSI or UTF-16)") from None
    return parse_config(text, path)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML would silently keep the last)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[object, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice (first at line {seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def parse_config(text: str, path: Path = Path("<config>")) -> Config:
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level")
    for key in ("base_dir", "source"):
        data.pop(key, None)
    data["base_dir"] = path.parent.resolve()
    data["source"] = str(path)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(path, e)) from None


def _format_errors(path: Path, e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        loc = ""
        for part in err["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "string_type" and isinstance(err.get("input"), bool):
            msg += " (YAML reads yes/no/on/off/true/false as a boolean: put the text in quotes)"
        lines.append(f"{path}: {loc or '(top level)'}: {msg}")
    return "\n".join(lines)
