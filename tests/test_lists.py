from pathlib import Path

import pytest
import yaml

from schoolproxy.filtering.listcache import load_compiled
from schoolproxy.filtering.lists import IP_ADDRESS, CategoryInfo, ListError, load_lists, load_metadata

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["memory", "compiled"])
def load(request, tmp_path_factory):
    """Every behaviour holds for lists parsed into memory and for the compiled, memory-mapped cache."""
    if request.param == "memory":
        return load_lists
    work = tmp_path_factory.mktemp("cache")
    metadata = work / "categories.yaml"

    def compiled(sources, info):
        metadata.write_text(yaml.safe_dump({n: {"aliases": list(i.aliases)} for n, i in info.items()}))
        return load_compiled(sources, metadata, info, work / "cache")
    return compiled


def tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        f = tmp_path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return tmp_path


def test_domain_matches_itself_and_subdomains_only(tmp_path, load):
    lists = load([tree(tmp_path, {"social/domains": "facebook.com\n"})], {})
    names = lambda h: lists.names(lists.classify(h, "/"))
    assert names("facebook.com") == {"social"}
    assert names("www.m.facebook.com") == {"social"}
    assert names("notfacebook.com") == frozenset()
    assert names("facebook.com.evil.test") == frozenset()


def test_url_entries_match_path_prefixes_on_segment_boundaries(tmp_path, load):
    lists = load([tree(tmp_path, {"edu/urls": "bbc.co.uk/bitesize\n"})], {})
    names = lambda h, p: lists.names(lists.classify(h, p))
    assert names("www.bbc.co.uk", "/bitesize") == {"edu"}
    assert names("bbc.co.uk", "/Bitesize/maths?x=1") == {"edu"}
    assert names("www.bbc.co.uk", "/bitesizeX") == frozenset()
    assert names("www.bbc.co.uk", "/news") == frozenset()
    assert names("www.bbc.co.uk", "") == frozenset()  # CONNECT: no path known yet


def test_a_domain_in_several_categories_keeps_them_all(tmp_path, load):
    lists = load([tree(tmp_path, {"a/domains": "x.test\n", "b/domains": "x.test\n"})], {})
    assert lists.names(lists.classify("x.test")) == {"a", "b"}


def test_ip_literals_and_idn_entries(tmp_path, load):
    lists = load([tree(tmp_path, {"doh/domains": "1.1.1.1\nbücher.example\n# c\n\n"})], {})
    assert lists.names(lists.classify("1.1.1.1", "/", is_ip=True)) == {"doh", IP_ADDRESS}
    assert lists.names(lists.classify("8.8.8.8", "/", is_ip=True)) == {IP_ADDRESS}
    assert lists.names(lists.classify("xn--bcher-kva.example")) == {"doh"}


def test_ut1_tree_used_unchanged_with_aliases(tmp_path, load):
    src = tree(tmp_path, {
        "blacklists/social_networks/domains": "facebook.com\nINVALID host line\n",
        "blacklists/social_networks/urls": "example.com/facebook\n",
        "blacklists/adult/domains": "porn.test\n",
        "blacklists/adult/expressions": "(porn|xxx)\n",
        "blacklists/adult/usage": "black\n",
        "blacklists/cooking/domains": "recipes.test\n",
    })
    info = {"social-networking": CategoryInfo("social-networking", aliases=("social_networks",))}
    lists = load([src / "blacklists"], info)
    assert lists.names(lists.classify("facebook.com")) == {"social-networking"}
    assert lists.names(lists.classify("example.com", "/facebook/x")) == {"social-networking"}
    assert lists.names(lists.classify("recipes.test")) == {"cooking"}
    assert lists.stats.invalid == 1 and lists.stats.expressions_ignored == 1


def test_missing_source_is_a_clear_error(tmp_path, load):
    with pytest.raises(ListError, match="not a directory"):
        load([tmp_path / "nope"], {})


def test_metadata_errors_name_the_problem(tmp_path):
    f = tmp_path / "categories.yaml"
    f.write_text("adult: {descripton: typo}\n")
    with pytest.raises(ListError, match="unknown key"):
        load_metadata(f)
    f.write_text("adult: [unclosed\n")
    with pytest.raises(ListError, match="not valid YAML"):
        load_metadata(f)


def test_shipped_starter_lists_cover_the_required_categories(load):
    info = load_metadata(ROOT / "filterlists" / "categories.yaml")
    lists = load([ROOT / "filterlists"], info)
    required = {"adult", "gambling", "social-networking", "chat", "forums", "games", "dating", "drugs",
                "violence", "hate", "malware", "phishing", "vpn-proxy", "doh", "piracy", "helpsites",
                "education", "banking"}
    assert required <= set(info)
    for c in required:
        assert lists.stats.domains.get(c, 0) + lists.stats.urls.get(c, 0) > 0, c
    assert lists.stats.invalid == 0
    for host in ("www.childline.org.uk", "ceop.police.uk", "www.nspcc.org.uk", "www.samaritans.org"):
        assert "helpsites" in lists.names(lists.classify(host, "/")), host
    assert "social-networking" in lists.names(lists.classify("www.tiktok.com", "/"))
