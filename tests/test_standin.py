"""The stand-in internet itself must be right, or the end-to-end tests prove nothing."""

import ssl

import httpx

from standin import Internet


def test_plain_http_https_and_upstream_block_page(tmp_path):
    with Internet(tmp_path) as net:
        with httpx.Client(proxy=net.proxy_url, verify=ssl.create_default_context(cafile=str(net.ca_path))) as c:
            r = c.get("http://anything.test/x?q=1")
            assert r.status_code == 200 and "origin anything.test" in r.text
            r = c.post("https://secure.test/form", content=b"a=b")
            assert r.status_code == 200 and "origin secure.test" in r.text
            net.block_hosts.add("blocked.test")
            r = c.get("http://blocked.test/")
            assert r.status_code == 403 and "Smoothwall" in r.text
        seen = net.wait_for(lambda s: s.host == "anything.test")
        assert seen.query == {"q": ["1"]} and not seen.via_connect
        post = net.wait_for(lambda s: s.host == "secure.test")
        assert post.via_connect and post.body == b"a=b" and post.method == "POST"
