"""The default network the demo runs is the one conf/10-cni-bridge.conflist documents."""

from __future__ import annotations

import json
from pathlib import Path

from cni_bridge.deploy.confdir import parse_network_list
from cni_bridge.deploy.defaults import DEFAULT_CONFLIST
from cni_bridge.deploy.install import DEFAULT_CONF_NAME

CONF = Path(__file__).resolve().parents[2] / "conf"


def test_conf_file_equals_the_built_in_default() -> None:
    assert json.loads((CONF / DEFAULT_CONF_NAME).read_text()) == DEFAULT_CONFLIST


def test_conf_file_is_written_as_install_writes_it() -> None:
    assert (CONF / DEFAULT_CONF_NAME).read_text().strip() == json.dumps(DEFAULT_CONFLIST,
                                                                         indent=2)


def test_the_default_is_the_first_example_a_runtime_reads() -> None:
    assert sorted(p.name for p in CONF.glob("*.conflist"))[0] == DEFAULT_CONF_NAME


def test_every_example_parses_and_names_a_distinct_network_and_bridge() -> None:
    lists = [parse_network_list(p.read_bytes()) for p in sorted(CONF.glob("*.conflist"))]
    names = [n.name for n in lists]
    bridges = [p.get("bridge") for n in lists for p in n.plugins if p["type"] == "bridge"]
    assert len(set(names)) == len(names)
    assert len(set(bridges)) == len(bridges)
