"""Names and tags that must never change (values checked against the reference plugins)."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from cni_bridge.firewall import names


def test_chain_names_match_the_reference() -> None:
    # Observed with the reference plugins (REFERENCE.md 2.3 and 4.2).
    assert names.masq_chain_name("mynet", "abc123") == "CNI-70a29d9dc18bc4d652ea5d59"
    assert names.dnat_chain_name("mynet", "abc123") == "CNI-DN-70a29d9dc18bc4d652ea5"
    assert names.old_snat_chain_name("mynet", "abc123").startswith("CNI-SN-70a29d9dc18b")


@given(st.text(min_size=1), st.text(min_size=1))
def test_chain_names_are_28_chars_of_sha512(network: str, cid: str) -> None:
    digest = hashlib.sha512((network + cid).encode()).hexdigest()
    assert names.masq_chain_name(network, cid) == "CNI-" + digest[:24]
    assert names.dnat_chain_name(network, cid) == "CNI-DN-" + digest[:21]


def test_comments_use_go_quoting() -> None:
    assert names.masq_comment("mynet", "abc123") == 'name: "mynet" id: "abc123"'
    assert names.dnat_comment("mynet", "abc123") == 'dnat name: "mynet" id: "abc123"'
    assert names.go_quote('a"b\\c\n\x01é') == '"a\\"b\\\\c\\n\\x01é"'


def test_long_dnat_comment_is_trimmed_like_the_reference() -> None:
    comment = names.dnat_comment("n" * 300, "c")
    assert len(comment) == 256 and comment.endswith("...")
    assert comment[:253] == ('dnat name: "' + "n" * 300)[:253]


def test_owner_tag_is_the_reference_nft_comment_format() -> None:
    tag = names.owner_tag("mynet", "eth0", "abc123")
    net = hashlib.sha512(b"mynet").hexdigest()[:16]
    inst = hashlib.sha512(b"eth0:abc123").hexdigest()[:16]
    assert tag == f"{net}-{inst}, net: mynet, if: eth0, id: abc123"
    assert names.instance_hash("mynet", "eth0", "abc123") == f"{net}-{inst}"


def test_owner_tag_is_cut_at_128_and_keeps_its_hash() -> None:
    tag = names.owner_tag("n" * 200, "eth0", "c" * 64)
    assert len(tag) == 128
    assert tag.startswith(names.instance_hash("n" * 200, "eth0", "c" * 64) + ", ")


def test_owner_id_is_32_bits_and_depends_on_every_part() -> None:
    ids = {names.owner_id(n, i, c) for n in ("a", "b") for i in ("eth0", "eth1") for c in "xy"}
    assert len(ids) == 8 and all(0 <= v < 2**32 for v in ids)
