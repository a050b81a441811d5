"""Content addon with mitmproxy's test helpers: buffered pages, streamed replies, held-back bodies."""

import gzip
from pathlib import Path

import pytest
import yaml
from mitmproxy.test import taddons, tflow, tutils

from schoolproxy.identity.profiles import Identity
from schoolproxy.proxy.content import Content
from schoolproxy.proxy.enforce import VERDICT, Enforce
from schoolproxy.proxy.identify import IDENTITY
from schoolproxy.snapshot import SnapshotHolder

ROOT = Path(__file__).resolve().parent.parent
PUPIL = Identity("pupil1", "pupil", "proxy-auth", "group year4")
STAFF = Identity("teacher1", "staff", "proxy-auth", "user teacher1")
HARMFUL = b"<p>here is how to kill yourself, the quickest way to die, how many pills to die</p>"


@pytest.fixture
def addons(school):
    data = yaml.safe_load(school.read_text())
    data["profiles"]["pupil"]["content"] = {"scan": True, "alert_score": 100, "block_score": 150}
    data["alerts"] = {"phrases": str(ROOT / "filterlists" / "phrases")}
    school.write_text(yaml.safe_dump(data, sort_keys=False))
    snapshots = SnapshotHolder()
    snapshots.load(school)
    published = []
    return Content(snapshots, published.append), Enforce(snapshots, published.append), published


def run(addons, url, body, ident=PUPIL, headers=None):
    content, enforce, published = addons
    f = tflow.tflow(req=tutils.treq())
    f.request.url = url
    f.metadata[IDENTITY] = ident
    with taddons.context(content, enforce):
        enforce.requestheaders(f)
        f.response = tutils.tresp(content=b"")
        f.response.headers.clear()
        for k, v in (headers or {"content-type": "text/html"}).items():
            f.response.headers[k] = v
        f.response.raw_content = body
        if "content-length" not in (headers or {}):
            f.response.headers["content-length"] = str(len(body))
        content.responseheaders(f)
        content.response(f)
        enforce.response(f)
    return f, published


def test_harmful_page_becomes_the_block_page_with_the_finding_on_the_verdict(addons):
    f, [v] = run(addons, "http://forum.test/page", HARMFUL)
    assert f.response.status_code == 403 and b"content:self-harm" in f.response.content
    assert (v.action, v.rule, v.status) == ("block", "content:self-harm", 403)
    [(theme, score, words, action, threshold, kind)] = v.content
    assert (theme, action, kind) == ("self-harm", "block", "page") and "how to kill yourself" in words


def test_staff_and_benign_pages_pass_untouched(addons):
    f, [v] = run(addons, "http://forum.test/page", HARMFUL, ident=STAFF)
    assert f.response.status_code == 200 and v.content == ()
    f, _ = run(addons, "http://forum.test/page", b"<p>volcanoes</p>")
    assert f.response.status_code == 200


def test_help_site_is_scored_but_never_blocked(addons):
    f, [v] = run(addons, "http://www.childline.org.uk/page", HARMFUL)
    assert f.response.status_code == 200 and v.action == "allow" and v.content[0][3] == "alert"


def test_corrupt_compressed_page_is_blocked_to_be_safe(addons):
    f, [v] = run(addons, "http://forum.test/page", b"not gzip", headers={"content-type": "text/html",
                                                                         "content-encoding": "gzip"})
    assert f.response.status_code == 403 and v.rule == "content:unreadable"


def test_images_are_not_read(addons):
    f, [v] = run(addons, "http://forum.test/x.png", HARMFUL, headers={"content-type": "image/png"})
    assert f.response.status_code == 200 and v.content == ()


def _stream(addons, url, chunks, headers, ident=PUPIL):
    content, enforce, published = addons
    f = tflow.tflow(req=tutils.treq())
    f.request.url = url
    f.metadata[IDENTITY] = ident
    with taddons.context(content, enforce):
        enforce.requestheaders(f)
        f.response = tutils.tresp(content=b"")
        f.response.headers.clear()
        for k, v in headers.items():
            f.response.headers[k] = v
        content.responseheaders(f)
        assert callable(f.response.stream)
        out = [f.response.stream(c) for c in chunks + [b""]]
    return f, out, published


def test_streamed_reply_is_cut_at_the_crossing_chunk_and_published_at_once(addons):
    events = [f'data: {{"choices":[{{"delta":{{"content":"{t}"}}}}]}}\n\n'.encode()
              for t in ["Hello ", "there. ", "how to kill ", "yourself ", "quickest way to die ", "more ", "more "]]
    f, out, published = _stream(addons, "http://chat.test/api", events, {"content-type": "text/event-stream"})
    forwarded = b"".join(o if isinstance(o, bytes) else b"".join(o) for o in out)
    assert b"Hello" in forwarded and b"stopped by the school" in forwarded and b"quickest" not in forwarded
    [v] = published
    assert v.rule == "content:self-harm" and v.content[0][5] == "reply"
    assert VERDICT not in f.metadata                       # Enforce will not publish it a second time


def test_body_without_length_is_held_back_then_blocked_in_its_own_encoding(addons):
    body = gzip.compress(HARMFUL)
    f, out, published = _stream(addons, "http://forum.test/p", [body[:10], body[10:]],
                                {"content-type": "text/html", "content-encoding": "gzip"})
    assert out[0] == [] and out[1] == []                   # held back until the end
    page = gzip.decompress(b"".join(out[2]))
    assert b"This page is blocked" in page and b"how to kill" not in page


def test_body_without_length_passes_unchanged_when_benign(addons):
    body = gzip.compress(b"<p>volcanoes</p>")
    f, out, _ = _stream(addons, "http://forum.test/p", [body], {"content-type": "text/html", "content-encoding": "gzip"})
    assert b"".join(c for o in out for c in (o if isinstance(o, list) else [o])) == body


def test_a_page_mitmproxy_already_streams_is_still_held_back_and_scored(addons):
    # A page over proxy.limits.stream_bytes (1 MB) but under the whole-read limit (2 MB) is streamed by
    # mitmproxy before the hooks run: read whole it would have been scored as empty, and passed.
    content, enforce, _ = addons
    f = tflow.tflow(req=tutils.treq())
    f.request.url = "http://forum.test/long"
    f.metadata[IDENTITY] = PUPIL
    with taddons.context(content, enforce):
        enforce.requestheaders(f)
        f.response = tutils.tresp(content=b"")
        f.response.headers.clear()
        f.response.headers["content-type"] = "text/html"
        f.response.headers["content-length"] = str(1_500_000)
        f.response.stream = True  # as mitmproxy's stream_large_bodies sets it
        content.responseheaders(f)
        assert callable(f.response.stream)  # held back up to max_kb, scored, then passed or blocked
        out = f.response.stream(HARMFUL) + f.response.stream(b"")
    assert b"This page is blocked" in b"".join(out)


# -- the phrase lists are loaded off the event loop ------------------------------------------------------
async def _page(content, enforce, url, body, ident=PUPIL):
    """A page through the hooks on the running event loop; a hook that returns an awaitable is awaited, as
    mitmproxy does. Returns the response's status, the verdict's rule and whether the page waited."""
    f = tflow.tflow(req=tutils.treq())
    f.request.url = url
    f.metadata[IDENTITY] = ident
    enforce.requestheaders(f)
    f.response = tutils.tresp(content=body)
    f.response.headers["content-type"] = "text/html"
    waited = content.responseheaders(f)
    if waited is not None:
        await waited
    content.response(f)
    return f.response.status_code, f.metadata[VERDICT].rule, waited is not None


async def test_phrase_lists_load_in_a_worker_thread_and_the_lists_before_score_until_the_new_are_ready(
        school, tmp_path, monkeypatch, caplog):
    import asyncio
    import threading

    from schoolproxy.proxy import content as content_module

    lists = tmp_path / "phrases" / "self-harm" / "en.txt"
    lists.parent.mkdir(parents=True)
    lists.write_text("< kill yourself ><100>\n")
    data = yaml.safe_load(school.read_text())
    data["profiles"]["pupil"]["content"] = {"scan": True, "alert_score": 60, "block_score": 100}
    data["alerts"] = {"phrases": str(tmp_path / "phrases")}
    school.write_text(yaml.safe_dump(data, sort_keys=False))

    gate, threads, real = threading.Event(), [], content_module.load_phrase_lists

    def load_phrase_lists(path):
        threads.append(threading.current_thread())
        assert gate.wait(10), "the test never let the load finish"  # held: the loop must run on meanwhile
        return real(path)
    monkeypatch.setattr(content_module, "load_phrase_lists", load_phrase_lists)

    snapshots = SnapshotHolder()
    snapshots.load(school)
    content, enforce = Content(snapshots, [].append), Enforce(snapshots, [].append)
    with taddons.context(content, enforce):
        content.running()
        # Start-up, lists not ready yet: a pupil's page waits for them, then is scored (not blocked unchecked).
        page = asyncio.ensure_future(_page(content, enforce, "http://forum.test/a", b"<p>kill yourself</p>"))
        for _ in range(1000):  # the loop runs on while the lists load in their thread
            if threads:
                break
            await asyncio.sleep(0.01)
        assert threads and not page.done()
        gate.set()
        assert await page == (403, "content:self-harm", True)   # waited, then blocked by its content
        assert threads[0] is not threading.current_thread()

        # A list file edited: the new snapshot starts loading them; until they are ready, the lists
        # before score the pages (none waits, none goes unscored).
        gate.clear()
        lists.write_text("< kill yourself ><100>\n< zorblat quimbly ><100>\n")
        snapshots.swap(snapshots.build())
        assert content._loading is not None
        assert await _page(content, enforce, "http://forum.test/b", b"<p>kill yourself</p>") == \
            (403, "content:self-harm", False)
        assert await _page(content, enforce, "http://forum.test/c", b"<p>zorblat quimbly</p>") == (200, "default:pupil", False)
        gate.set()
        await content._loading
        assert len(threads) == 2 and threads[1] is not threading.current_thread()
        assert (await _page(content, enforce, "http://forum.test/c", b"<p>zorblat quimbly</p>"))[:2] == \
            (403, "content:self-harm")

        # An edit with a mistake: refused loudly; the lists before it keep scoring; scoring is not off.
        lists.write_text("< kill yourself ><100>\n< zorblat quimbly ><100>\nsnorkel 100\n")
        snapshots.swap(snapshots.build())
        await content._loading
        assert "phrase list edit REFUSED" in caplog.text and "not a weighted phrase line" in caplog.text
        assert (await _page(content, enforce, "http://forum.test/d", b"<p>zorblat quimbly</p>"))[:2] == \
            (403, "content:self-harm")
        [gauge] = [m for m in content._metrics() if m.name == "schoolproxy_content_scoring_off"]
        assert gauge.samples[0].value == 0
