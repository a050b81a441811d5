"""``schoolproxy lists update``: a verified download-and-import that never replaces working lists with a
broken or truncated set. Downloads come from a real local HTTP server."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from conftest import PASSWORD, free_port, make_school
from proxyproc import ProxyProcess

from schoolproxy.config import load_config
from schoolproxy.filtering.listupdate import UpdateRefused, age_days, read_status, update

BIN = Path(sys.executable).parent / "schoolproxy"


def ut1_tarball(categories: dict[str, int], extra: dict[str, bytes] | None = None) -> bytes:
    """A UT1-style archive: blacklists/<category>/domains with n entries each."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        # Random names, so the archive has a realistic size once compressed.
        files = {f"blacklists/{c}/domains": (f"site1.{c}.test\n" + "".join(
            f"site-{os.urandom(5).hex()}.{c}.test\n" for _ in range(n - 1))).encode() for c, n in categories.items()}
        files.update(extra or {})
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


FULL = {"adult": 3000, "gambling": 800, "social_networks": 400}


class Server:
    """Serves ``files`` (path → bytes); as a forward proxy too, recording the URLs it was asked for."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.lie_about_length = False
        self.asked: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.asked.append(self.path)
                path = self.path.split("://", 1)[-1].split("/", 1)[-1]
                data = server.files.get("/" + path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data) * (2 if server.lie_about_length else 1)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def config(tmp_path, server):
    path = make_school(tmp_path)
    text = path.read_text().replace(
        "lists: {sources: [lists], metadata: lists/categories.yaml}",
        "lists: {sources: [lists, ut1], metadata: lists/categories.yaml, update: "
        f"{{source: '{server.url}/blacklists.tar.gz', dest: ut1, history: lists-update.log}}}}")
    path.write_text(text)
    server.files["/blacklists.tar.gz"] = ut1_tarball(FULL)
    return path


def in_use(config: Path) -> dict[str, str]:
    dest = config.parent / "ut1"
    return {str(p.relative_to(dest)): p.read_text() for p in sorted(dest.rglob("domains"))}


def test_update_downloads_checks_and_switches_atomically(config, server):
    new = update(load_config(config), log=lambda *_: None)
    dest = config.parent / "ut1"
    assert new.total == 4200 and dest.is_symlink() and (dest / "adult" / "domains").is_file()
    status = read_status(dest)
    assert status["last_result"] == "ok" and status["entries"] == 4200 and status["categories"] == 3
    assert age_days(dest) < 0.01
    assert "ok (4200 entries, 3 categories)" in (config.parent / "lists-update.log").read_text()
    first = dest.resolve()
    server.files["/blacklists.tar.gz"] = ut1_tarball({**FULL, "adult": 3100})
    update(load_config(config), log=lambda *_: None)
    assert dest.resolve() != first and first.is_dir()  # the previous set is kept for going back by hand


@pytest.mark.parametrize("break_it, why", [
    (lambda s: s.files.update({"/blacklists.tar.gz": s.files["/blacklists.tar.gz"][:2000]}), "damaged or truncated"),
    (lambda s: setattr(s, "lie_about_length", True), "stopped early"),
    (lambda s: s.files.update({"/blacklists.tar.gz": ut1_tarball({**FULL, "adult": 30})}), "far fewer than the 4,200 in use"),
    (lambda s: s.files.update({"/blacklists.tar.gz": ut1_tarball({"adult": 3000, "gambling": 2000})}),
     "categories in use would vanish or be empty: social_networks"),
    (lambda s: s.files.pop("/blacklists.tar.gz"), "the server answered 404"),
    (lambda s: s.files.update({"/blacklists.tar.gz": b"<html>Service unavailable</html>" * 40}), "damaged or truncated"),
    (lambda s: s.files.update({"/blacklists.tar.gz": ut1_tarball(FULL, {"../../evil": b"x"})}), "unsafe entry"),
])
def test_a_broken_set_never_replaces_the_lists_in_use(config, server, break_it, why):
    update(load_config(config), log=lambda *_: None)
    before, target = in_use(config), (config.parent / "ut1").resolve()
    break_it(server)
    with pytest.raises(UpdateRefused, match=why):
        update(load_config(config), log=lambda *_: None)
    assert in_use(config) == before and (config.parent / "ut1").resolve() == target
    status = read_status(config.parent / "ut1")
    assert status["last_result"].startswith("refused: ") and status["entries"] == 4200
    assert not (config.parent / "evil").exists() and not list(config.parent.glob(".ut1-incoming-*"))


def test_force_accepts_a_smaller_set_a_person_has_checked(config, server):
    update(load_config(config), log=lambda *_: None)
    server.files["/blacklists.tar.gz"] = ut1_tarball({"adult": 100, "gambling": 10, "social_networks": 5})
    assert update(load_config(config), force=True, log=lambda *_: None).total == 115


def test_unreachable_url_and_checksums(config, server):
    cfg = load_config(config)
    with pytest.raises(UpdateRefused, match="cannot download http://127.0.0.1:.*(refused|Connection)"):
        update(cfg, source=f"http://127.0.0.1:{free_port()}/blacklists.tar.gz", log=lambda *_: None)
    digest = hashlib.sha256(server.files["/blacklists.tar.gz"]).hexdigest()
    server.files["/SHA256SUMS"] = f"{'0' * 64}  other.tar.gz\n{digest}  blacklists.tar.gz\n".encode()
    with_sum = cfg.lists.update.model_copy(update={"checksum_url": f"{server.url}/SHA256SUMS"})
    cfg = cfg.model_copy(update={"lists": cfg.lists.model_copy(update={"update": with_sum})})
    assert update(cfg, log=lambda *_: None).total == 4200
    server.files["/SHA256SUMS"] = f"{'0' * 64}  blacklists.tar.gz\n".encode()
    with pytest.raises(UpdateRefused, match="does not match its published sha256 checksum"):
        update(cfg, log=lambda *_: None)


def test_a_file_put_there_by_hand(config, tmp_path):
    hand = tmp_path / "incoming.tar.gz"
    hand.write_bytes(ut1_tarball(FULL))
    assert update(load_config(config), source=str(hand), log=lambda *_: None).total == 4200


def test_download_goes_through_the_upstream_filter_when_there_is_one(tmp_path, server):
    path = make_school(tmp_path, upstream=server.url)
    path.write_text(path.read_text().replace(
        "lists: {sources: [lists], metadata: lists/categories.yaml}",
        "lists: {sources: [lists], metadata: lists/categories.yaml, "
        "update: {source: 'http://lists.example/blacklists.tar.gz', dest: ut1}}"))
    server.files["/blacklists.tar.gz"] = ut1_tarball(FULL)
    update(load_config(path), log=lambda *_: None)
    assert server.asked == ["http://lists.example/blacklists.tar.gz"]  # asked as a proxy, absolute-form


def test_cli_says_plainly_what_happened(config, server):
    r = subprocess.run([str(BIN), "lists", "update", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "lists updated: 4,200 entries in 3 categories" in r.stdout, r.stderr
    server.files["/blacklists.tar.gz"] = server.files["/blacklists.tar.gz"][:3000]
    r = subprocess.run([str(BIN), "lists", "update", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "lists NOT updated: the archive is damaged or truncated" in r.stderr
    assert "The lists in use are unchanged." in r.stderr and "Traceback" not in r.stderr


@pytest.mark.e2e
def test_the_running_proxy_uses_the_updated_lists(config, server, tmp_path):
    update(load_config(config), log=lambda *_: None)
    with ProxyProcess.mitmdump(config, tmp_path) as proxy:
        client = httpx.Client(proxy=proxy.auth_url("pupil1", PASSWORD), timeout=10)
        assert client.get("http://site1.adult.test/").status_code == 403
        assert client.get("http://newsite.example.test/").status_code == 502  # allowed (no internet here)
        server.files["/blacklists.tar.gz"] = ut1_tarball(FULL, {"blacklists/adult/urls": b"newsite.example.test/\n"})
        update(load_config(config), log=lambda *_: None)
        deadline = time.monotonic() + 20
        while client.get("http://newsite.example.test/").status_code != 403:
            assert time.monotonic() < deadline, proxy.log()
            time.sleep(0.2)
