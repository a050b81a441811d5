import pytest

from schoolproxy.filtering.hostnames import InvalidHost, normalise_entry, normalise_host


@pytest.mark.parametrize("raw, expected", [
    ("www.Facebook.COM", ("www.facebook.com", False)),
    ("facebook.com.", ("facebook.com", False)),
    ("facebook.com:443", ("facebook.com", False)),
    ("bücher.example", ("xn--bcher-kva.example", False)),
    ("XN--BCHER-KVA.example", ("xn--bcher-kva.example", False)),
    ("ｆａｃｅｂｏｏｋ.com", ("facebook.com", False)),      # full-width letters fold (UTS-46)
    ("1.1.1.1", ("1.1.1.1", True)),
    ("0x01010101", ("1.1.1.1", True)),
    ("16843009", ("1.1.1.1", True)),
    ("127.1", ("127.0.0.1", True)),
    ("0177.0.0.1", ("127.0.0.1", True)),
    ("[2606:4700:4700::1111]:443", ("2606:4700:4700::1111", True)),
    ("[::ffff:1.1.1.1]", ("1.1.1.1", True)),
    ("_dmarc.example.com", ("_dmarc.example.com", False)),
])
def test_normalise_host(raw, expected):
    assert normalise_host(raw) == expected


@pytest.mark.parametrize("raw", ["", ".", "a" * 64 + ".com", "x." * 130 + "com", "exa mple.com",
                                 "evil.com\r\nX: y", "host:port", "[::1", "256.1.1.1", "a..b", "-bad-.com"])
def test_invalid_hosts_are_refused(raw):
    with pytest.raises(InvalidHost):
        normalise_host(raw)


@pytest.mark.parametrize("raw, expected", [
    ("bbc.co.uk/bitesize", ("bbc.co.uk", "/bitesize")),
    ("https://BBC.co.uk/Bitesize/", ("bbc.co.uk", "/bitesize/")),
    ("*.example.com", ("example.com", "")),
    (".example.com", ("example.com", "")),
    ("example.org/%7Euser/./a//b", ("example.org", "/~user/a/b")),  # stored as requests are resolved
    ("example.org/x/../private-page", ("example.org", "/private-page")),
])
def test_normalise_entry(raw, expected):
    assert normalise_entry(raw) == expected
