"""host-local config parsing: golden cases in tests/data/host_local/config (one file per case).

A case holds the network config (and optionally cniArgs / cniVersion) and either the parts of
the parsed config to compare (`expect`) or the error (`error`: code, msg, details). Cases marked
`reference` carry the reference plugin's message, checked against it by the integration suite.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cni_bridge.cni.errors import CniError, ConfigError
from cni_bridge.cni.result import route_dict
from cni_bridge.ipam.host_local.config import (
    HostLocalConfig,
    load_config,
    load_location,
    parse_resolv_conf,
)

CASES_DIR = Path(__file__).resolve().parents[1] / "data" / "host_local" / "config"
CASES = sorted(CASES_DIR.glob("*.json"))


def load_case(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(path.read_text())
    return case


def summarize(cfg: HostLocalConfig, keys: list[str]) -> dict[str, Any]:
    full: dict[str, Any] = {
        "rangeSets": [[f"{r.subnet} {r} gw {r.gateway}" for r in s.ranges] for s in cfg.range_sets],
        "dataDir": cfg.location.data_dir,
        "requested": [str(ip) for ip in cfg.requested],
        "routes": [route_dict(r) for r in cfg.routes],
        "resolvConf": cfg.resolv_conf,
    }
    return {k: full[k] for k in keys}


def parse_case(case: dict[str, Any]) -> HostLocalConfig:
    return load_config(case["config"], case.get("cniVersion", "1.0.0"), case.get("cniArgs", ""))


def test_there_are_golden_cases() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden_case(path: Path) -> None:
    case = load_case(path)
    if "error" in case:
        with pytest.raises(CniError) as info:
            parse_case(case)
        want = case["error"]
        got = {"code": info.value.code, "msg": info.value.msg}
        if "details" in want:
            got["details"] = info.value.details
        assert got == want
    else:
        cfg = parse_case(case)
        assert summarize(cfg, list(case["expect"])) == case["expect"]


def base(**ipam: Any) -> dict[str, Any]:
    return {"name": "n", "ipam": {"type": "host-local", "subnet": "10.0.0.0/24", **ipam}}


def test_unknown_cni_args_fail_unless_the_caller_knows_them() -> None:
    with pytest.raises(CniError, match="unknown args"):
        load_config(base(), "1.0.0", "MAC=0a:58:0a:00:00:05")
    # In-process under the bridge, the bridge declares its own keys.
    cfg = load_config(base(), "1.0.0", "MAC=0a:58:0a:00:00:05;IP=10.0.0.7", frozenset({"MAC"}))
    assert [str(ip) for ip in cfg.requested] == ["10.0.0.7"]


def test_range_helpers() -> None:
    cfg = load_config(base(rangeStart="10.0.0.1", rangeEnd="10.0.0.6"), "1.0.0")
    (r,) = cfg.range_sets[0].ranges
    assert r.allocatable() == 5  # .1 is the gateway
    assert cfg.range_sets[0].is_gateway(r.gateway)
    assert str(r.interface(r.range_end)) == "10.0.0.6/24"
    assert cfg.range_for(r.range_end) is r


def test_location_ignores_invalid_ranges() -> None:
    """DEL and GC only need the name and dataDir."""
    loc = load_location({"name": "n", "ipam": {"subnet": "bogus", "dataDir": "/x"}})
    assert (loc.network, loc.data_dir) == ("n", "/x")
    with pytest.raises(ConfigError, match="invalid characters"):
        load_location({"name": "../etc", "ipam": {}})


def test_resolv_conf() -> None:
    text = """# comment
; also a comment
nameserver 10.0.0.53
nameserver   fd00::53
domain a.example
domain b.example
search x.example y.example
search z.example
options ndots:2 timeout:1
bogus
"""
    dns = parse_resolv_conf(text)
    assert dns.nameservers == ("10.0.0.53", "fd00::53")
    assert dns.domain == "b.example"
    assert dns.search == ("x.example", "y.example", "z.example")
    assert dns.options == ("ndots:2", "timeout:1")
