"""The real plugin classes under fuzzing, in-process, with their system side replaced.

Each call goes through the dispatcher with the plugin the CLI would build for the role. The
sandbox (sandbox.py) stubs the container namespace, firewall tools, delegated IPAM and the store
location, and guards netlink, setns, sysctl writes and process starts: a guard that trips fails
the test. Properties, on top of the output contract: no exception escapes plugin code (the
dispatcher's last-resort 999 never fires), and an invalid call fails before any stub is reached
and before any file is written.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cni_bridge.call import plugin_factory
from cni_bridge.cni.dispatch import MAX_STDIN, Outcome, dispatch
from tests.fuzz.conftest import fuzz_settings
from tests.fuzz.sandbox import STUB_CODE, Sandbox, files_under
from tests.fuzz.strategies import (
    DATA_DIR,
    FIXED_GAPS,
    STATS,
    Case,
    Checked,
    ContractError,
    any_case,
    check_output,
    expect_failure,
    invalid_case,
)

_example = itertools.count()


def portmap_available() -> bool:
    try:
        import cni_bridge.portmap.plugin  # noqa: F401
    except ImportError:
        return False
    return True


def run_real(box: Sandbox, case: Case, suite: str,
             data_dir: Path | None = None) -> tuple[Case, Outcome, Checked]:
    """`case` with a fresh data dir under the sandbox, through the dispatcher and real plugin."""
    data_dir = data_dir or box.data_root / f"ex{next(_example)}"
    case = case.with_data_dir(str(data_dir))
    outcome = dispatch(case.role, "0.0.0-fuzz", case.env,
                       lambda: case.stdin[: MAX_STDIN + 1], plugin_factory(case.role))  # type: ignore[arg-type]
    trips, box.trips[:] = list(box.trips), []
    if trips:
        STATS.violations["guard"] += 1
        raise ContractError(f"the system was reached: {trips}\n{case.describe()}")
    try:
        stdout = outcome.stdout.encode("utf-8")
    except UnicodeEncodeError as exc:
        STATS.violations["non_json"] += 1
        raise ContractError(f"stdout cannot be encoded: {exc}\n{case.describe()}") from None
    checked = check_output(case, outcome.exit_code, stdout, outcome.stderr)
    STATS.record(suite, checked)
    if outcome.error is not None and outcome.error.msg.startswith("internal error during"):
        STATS.violations["internal"] += 1
        raise ContractError(f"an exception escaped the plugin: {outcome.error}\n{case.describe()}")
    return case, outcome, checked


def run_invalid(box: Sandbox, case: Case, suite: str) -> Checked:
    stubs_before = box.stub_total()
    remapped_before = files_under(box.data_root / "remapped")
    data_dir = box.data_root / f"ex{next(_example)}"
    case, _, checked = run_real(box, case, suite, data_dir)
    expect_failure(case, checked)
    assert checked.doc["code"] != STUB_CODE and box.stub_total() == stubs_before, (
        f"an invalid call ({case.why}) got past validation to {dict(box.stubs)}\n"
        f"{case.describe()}")
    written = files_under(data_dir) | (files_under(box.data_root / "remapped") - remapped_before)
    if written:
        STATS.violations["outside_data_dir"] += 1
        raise ContractError(f"an invalid call ({case.why}) wrote {sorted(written)}\n"
                            f"{case.describe()}")
    return checked


# ------------------------------------------------------------------------------ bridge

@fuzz_settings(300)
@given(case=st.data())
def test_bridge_any_input(box: Sandbox, case: st.DataObject) -> None:
    run_real(box, case.draw(any_case("bridge")), "bridge")


@fuzz_settings(250)
@given(case=st.data())
def test_bridge_invalid_input_fails_before_the_network(box: Sandbox, case: st.DataObject) -> None:
    run_invalid(box, case.draw(invalid_case("bridge")), "bridge-invalid")


# ------------------------------------------------------------------------------ host-local

@fuzz_settings(300)
@given(case=st.data())
def test_host_local_any_input(box: Sandbox, case: st.DataObject) -> None:
    c, outcome, checked = run_real(box, case.draw(any_case("host-local")), "host-local")
    if checked.ok and c.command == "ADD":
        assert checked.doc["cniVersion"] == outcome.request.cni_version  # type: ignore[union-attr]
        assert checked.doc.get("ips") or checked.doc.get("ip4") or checked.doc.get("ip6")


@fuzz_settings(250)
@given(case=st.data())
def test_host_local_invalid_input_fails_before_the_store(box: Sandbox,
                                                         case: st.DataObject) -> None:
    run_invalid(box, case.draw(invalid_case("host-local")), "host-local-invalid")


# ------------------------------------------------------------------------------ portmap

needs_portmap = pytest.mark.skipif(not portmap_available(),
                                   reason="cni_bridge.portmap.plugin is not there yet")


@needs_portmap
@fuzz_settings(250)
@given(case=st.data())
def test_portmap_any_input(box: Sandbox, case: st.DataObject) -> None:
    c, outcome, checked = run_real(box, case.draw(any_case("portmap")), "portmap")
    if checked.ok and c.command == "ADD":  # prevResult passed through, in the request's version
        assert checked.doc["cniVersion"] == outcome.request.cni_version  # type: ignore[union-attr]


@needs_portmap
@fuzz_settings(200)
@given(case=st.data())
def test_portmap_invalid_input_fails_before_the_firewall(box: Sandbox,
                                                         case: st.DataObject) -> None:
    run_invalid(box, case.draw(invalid_case("portmap")), "portmap-invalid")


# ------------------------------------------------------------------------------ the guards

def test_guards_trip_on_netlink_and_processes(box: Sandbox) -> None:
    """The guards themselves: every way to the system raises, and is recorded."""
    import subprocess

    from cni_bridge.net.netlink import Netlink

    checks: list[tuple[str, Any]] = [
        ("Netlink", Netlink.for_current),
        ("subprocess", lambda: subprocess.run(["true"], check=False)),
        ("socket", lambda: __import__("socket").socket(16, 3, 0)),
        ("sysctl", lambda: open("/proc/sys/net/ipv4/ip_forward", "w")),  # noqa: SIM115
        ("os.open", lambda: os.open("/proc/sys/net/ipv4/ip_forward", os.O_WRONLY)),
        ("exec", lambda: os.execv("/bin/true", ["true"])),
    ]
    for name, call in checks:
        with pytest.raises(BaseException, match="in-process fuzzing reached"):
            call()
        assert box.trips, name
        box.trips.clear()
    STATS.record("guards")


def test_own_netns_is_refused_in_process(box: Sandbox) -> None:
    """CNI_NETNS naming the plugin's own namespace: code 8 before anything is opened."""
    conf = {"cniVersion": "1.1.0", "name": "n", "type": "bridge", "bridge": "br-fz"}
    for path in ("/proc/self/ns/net", "/proc/thread-self/ns/net"):
        env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": path,
               "CNI_IFNAME": "eth0", "CNI_PATH": "/x"}
        before = box.stub_total()
        _, outcome, checked = run_real(box, Case("bridge", env, json.dumps(conf).encode()),
                                       "bridge")
        assert not checked.ok and checked.doc["code"] == 8, outcome.stdout
        assert box.stub_total() == before


@pytest.mark.parametrize("variable", ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS", "CNI_ARGS",
                                      "CNI_PATH"])
@pytest.mark.parametrize("role", ["bridge", "host-local", "portmap"])
def test_nul_in_environment(box: Sandbox, role: str, variable: str) -> None:
    """A NUL cannot reach an executable through execve; in-process it must still be refused
    (or, for variables the verb ignores, harmless), never a crash."""
    from tests.fuzz.strategies import base_configs, base_env, dumps, for_verb

    for verb in ("ADD", "DEL", "CHECK"):
        env = base_env(verb)
        env[variable] = env[variable][:2] + "\x00" + env[variable][2:] if env[variable] \
            else "IP=10.0.0.1\x00"
        conf = for_verb(base_configs(role)[0], verb)
        if verb == "CHECK":
            conf.setdefault("prevResult", {"cniVersion": "1.1.0"})
        run_real(box, Case(role, env, dumps(conf), f"NUL in {variable}"), "nul-env")


@pytest.mark.parametrize("subnet", FIXED_GAPS)
def test_non_ascii_prefix_length_refused(box: Sandbox, subnet: str) -> None:
    conf = {"cniVersion": "1.1.0", "name": "gap", "type": "bridge",
            "ipam": {"type": "host-local", "dataDir": DATA_DIR, "subnet": subnet}}
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/x",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/x"}
    _, outcome, checked = run_real(
        box, Case("host-local", env, json.dumps(conf).encode(), f"subnet {subnet}"), "fixed-gaps")
    assert not checked.ok, f"subnet {subnet} accepted: {outcome.stdout}"
