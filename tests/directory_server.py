"""A real OpenLDAP ``slapd`` with a small school directory, for the identity tests.

Debian's ``slapd`` package provides the binary; this starts a private instance (its own config, database
and ports on 127.0.0.1, plain LDAP and LDAPS with a test CA) so nothing on the machine is touched.

The directory::

    dc=school,dc=test
      ou=people    jsmith (pupil), bjones (pupil), amiller (staff), head (staff),
                   Supply1, Student1 (shared logons), oldpupil (disabled: employeeType=disabled);
                   with a displayName, and pupils their class in departmentNumber (AD: department)
      ou=groups    pupils ⊃ year4 ⊃ jsmith; pupils ⊃ year6 ⊃ bjones      (nested groups)
                   staff ⊃ teaching-staff ⊃ amiller; staff ⊃ head         (nested groups)
                   supply ⊃ Supply1, Student1
      ou=service   schoolproxy (the read-only service account)
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from internet import make_test_ca

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
BASE = "dc=school,dc=test"
SERVICE_DN = f"cn=schoolproxy,ou=service,{BASE}"
SERVICE_PASSWORD = "service-pass-123"
PASSWORD = "Dir3ctory-pass"

#: displayName and class (departmentNumber; AD keeps it in department) as a school's directory has them.
DISPLAY = {"jsmith": ("Jamie Smith", "Year 4"), "bjones": ("Billie Jones", "Year 6"), "amiller": ("Mrs A Miller", None),
           "head": ("Mr P Head", None)}
PEOPLE = {  # uid: (cn, employeeType)
    "jsmith": ("Jamie Smith", "pupil"),
    "bjones": ("Billie Jones", "pupil"),
    "amiller": ("Alex Miller", "staff"),
    "head": ("Pat Head", "staff"),
    "Supply1": ("Supply teacher logon 1", "shared"),
    "Student1": ("Student teacher logon 1", "shared"),
    "oldpupil": ("Left Last Year", "disabled"),
}
GROUPS = {  # cn: members (uids or group cns)
    "year4": ["jsmith"],
    "year6": ["bjones"],
    "pupils": ["group:year4", "group:year6"],
    "teaching-staff": ["amiller"],
    "staff": ["group:teaching-staff", "head"],
    "supply": ["Supply1", "Student1"],
}


def available() -> bool:
    return Path(SLAPD).exists() and Path(SLAPADD).exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ldif() -> str:
    out = [f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: school\no: Test School\n"]
    for ou in ("people", "groups", "service"):
        out.append(f"dn: ou={ou},{BASE}\nobjectClass: organizationalUnit\nou: {ou}\n")
    out.append(f"dn: {SERVICE_DN}\nobjectClass: person\ncn: schoolproxy\nsn: service\n"
               f"userPassword: {SERVICE_PASSWORD}\n")
    for uid, (cn, kind) in PEOPLE.items():
        out.append(f"dn: uid={uid},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {cn}\n"
                   f"sn: {cn.split()[-1]}\nemployeeType: {kind}\nuserPassword: {PASSWORD}\n"
                   + _display(uid))
    for cn, members in GROUPS.items():
        lines = [f"dn: cn={cn},ou=groups,{BASE}", "objectClass: groupOfNames", f"cn: {cn}"]
        for m in members:
            dn = f"cn={m[6:]},ou=groups,{BASE}" if m.startswith("group:") else f"uid={m},ou=people,{BASE}"
            lines.append(f"member: {dn}")
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def _display(uid: str) -> str:
    if uid not in DISPLAY:
        return ""
    name, group = DISPLAY[uid]
    return f"displayName: {name}\n" + (f"departmentNumber: {group}\n" if group else "")


class Slapd:
    """``with Slapd(tmp) as d:`` — d.url (ldap://), d.ldaps_url, d.ca_file; stop()/start() for outages."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.tls_port = _free_port()
        ca = make_test_ca(self.dir / "ca")
        self.ca_file = ca.path
        self.cert, self.key = ca.issue(["localhost"])
        (self.dir / "db").mkdir(exist_ok=True)
        self.conf = self.dir / "slapd.conf"
        self.conf.write_text(f"""\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {self.dir}/slapd.pid
TLSCACertificateFile {self.ca_file}
TLSCertificateFile {self.cert}
TLSCertificateKeyFile {self.key}
database mdb
maxsize 10485760
suffix "{BASE}"
rootdn "cn=admin,{BASE}"
rootpw admin-secret
directory {self.dir}/db
access to attrs=userPassword by anonymous auth by self read by * none
access to * by dn.exact="{SERVICE_DN}" read by users read by * none
""")
        ldif = self.dir / "school.ldif"
        ldif.write_text(_ldif())
        subprocess.run([SLAPADD, "-f", str(self.conf), "-l", str(ldif)], check=True, capture_output=True)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://localhost:{self.tls_port}"

    def start(self) -> "Slapd":
        log = open(self.dir / "slapd.log", "ab")
        self.proc = subprocess.Popen(
            [SLAPD, "-f", str(self.conf), "-h", f"ldap://127.0.0.1:{self.port}/ ldaps://127.0.0.1:{self.tls_port}/",
             "-d", "0"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"slapd exited: {(self.dir / 'slapd.log').read_text()[-2000:]}")
                time.sleep(0.1)
        raise RuntimeError("slapd did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> "Slapd":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def yaml(self, *, bind: str = "search", url: str | None = None, extra: str = "") -> str:
        """The ``identity.directory`` block for this server (OpenLDAP filters instead of AD's)."""
        (self.dir / "service-password").write_text(SERVICE_PASSWORD + "\n")
        common = (f'url: "{url or self.url}"\n    user_base: "ou=people,{BASE}"\n    group_base: "ou=groups,{BASE}"\n'
                  f'    user_filter: "(&(objectClass=inetOrgPerson)(uid={{username}})(!(employeeType=disabled)))"\n'
                  f'    group_filter: "(&(objectClass=groupOfNames)(member={{dn}}))"\n'
                  f'    ca_file: "{self.ca_file}"\n    timeout_seconds: 2\n')
        if bind == "search":
            common += f'    bind: search\n    service_dn: "{SERVICE_DN}"\n    service_password_file: "{self.dir}/service-password"\n'
        else:
            common += f'    bind: direct\n    direct_bind_template: "uid={{username}},ou=people,{BASE}"\n'
        return "  directory:\n    " + common + extra
