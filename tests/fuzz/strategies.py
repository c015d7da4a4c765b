"""Generators of CNI calls for the fuzz and hostile-input suites, and the contract they check.

A *case* is one plugin call: a role (`bridge`, `host-local`, `portmap`), the CNI_* environment and
the stdin bytes. Two families of generators:

- ``any_case(role)``: anything at all -- valid example configs from ``conf/*.conflist`` mutated
  (wrong types, missing keys, huge numbers, bad CIDRs and IPs, deep nesting, unicode, NUL bytes),
  raw stdin bytes, hostile environment values. Only the output contract must hold.
- ``invalid_case(role)``: calls that are invalid for a reason the plugin must detect *before it
  touches anything*; each carries ``why``. The call must fail (exit 1, an error object).

``check_output`` is the contract both suites assert (one JSON document on stdout, error objects
shaped ``{code:int, msg:str, details?:str}``, no traceback); ``CaseStats`` counts what was run.
"""

from __future__ import annotations

import functools
import json
import os
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = REPO_ROOT / "conf"
ROLES = ("bridge", "host-local", "portmap")
VERBS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")
VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
MIN_VERSION = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}
# Placeholder for the data dir in generated configs; callers substitute a temp dir.
DATA_DIR = "@DATA_DIR@"
NONEXISTENT_NETNS = "/run/netns/cnit-fuzz-does-not-exist"
NONEXISTENT_PATH = "/nonexistent/cni/bin"
FUZZ_ENV = "CNI_BRIDGE_FUZZ"


def long_profile() -> bool:
    return os.environ.get(FUZZ_ENV, "").lower() == "long"


def examples(normal: int, long_factor: int = 20) -> int:
    """`normal` examples in the default (CI) profile; `long_factor` times more under =long."""
    return normal * long_factor if long_profile() else normal


def version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


# ------------------------------------------------------------------------------ cases

@dataclass(frozen=True)
class Case:
    role: str
    env: dict[str, str]  # CNI_* variables only; a missing variable is absent
    stdin: bytes
    why: str = ""  # for invalid cases: what makes the call invalid

    @property
    def command(self) -> str:
        return self.env.get("CNI_COMMAND", "")

    def with_data_dir(self, data_dir: str) -> Case:
        stdin = self.stdin.replace(DATA_DIR.encode(), json.dumps(data_dir)[1:-1].encode())
        return Case(self.role, self.env, stdin, self.why)

    def describe(self) -> str:
        shown = self.stdin[:600] + (b"..." if len(self.stdin) > 600 else b"")
        env = {k: (v if len(v) < 200 else v[:200] + "...") for k, v in self.env.items()}
        return f"role={self.role} env={env!r} why={self.why!r}\nstdin={shown!r}"


# ------------------------------------------------------------------------------ base configs

@functools.lru_cache(maxsize=1)
def _conflist_texts() -> tuple[str, ...]:
    texts = tuple(path.read_text() for path in sorted(CONF_DIR.glob("*.conflist")))
    assert texts, f"no example conflists in {CONF_DIR}"
    return texts


def _load_conflists() -> list[dict[str, Any]]:
    return [json.loads(text) for text in _conflist_texts()]


def _plugin_confs(plugin_type: str) -> list[dict[str, Any]]:
    """Each plugin of `plugin_type` as libcni sends it: name and cniVersion injected."""
    out = []
    for conflist in _load_conflists():
        for plugin in conflist["plugins"]:
            if plugin.get("type") == plugin_type:
                conf = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **plugin}
                ipam = conf.get("ipam")
                if isinstance(ipam, dict) and ipam.get("type") == "host-local":
                    conf["ipam"] = {**ipam, "dataDir": DATA_DIR}
                out.append(conf)
    return out


PREV_RESULT = {
    "cniVersion": "1.1.0",
    "interfaces": [
        {"name": "br0", "mac": "aa:bb:cc:dd:ee:01"},
        {"name": "veth1234", "mac": "aa:bb:cc:dd:ee:02"},
        {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": NONEXISTENT_NETNS},
    ],
    "ips": [{"address": "172.18.0.2/16", "gateway": "172.18.0.1", "interface": 2}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "172.18.0.1"}],
}
PORT_MAPPINGS = [
    {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
    {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
]


def base_configs(role: str) -> list[dict[str, Any]]:
    """Valid configs for `role`, built from the example conflists (fresh copies each call)."""
    return [_copy(c) for c in _base_configs(role)]


@functools.cache
def _base_configs(role: str) -> tuple[dict[str, Any], ...]:
    return tuple(_build_base_configs(role))


def _build_base_configs(role: str) -> list[dict[str, Any]]:
    bridges = _plugin_confs("bridge")
    if role == "bridge":
        return bridges
    if role == "host-local":
        return [c for c in bridges if isinstance(c.get("ipam"), dict)]
    portmaps = _plugin_confs("portmap")
    assert portmaps, "no portmap plugin in the example conflists"
    return [
        {**c, "runtimeConfig": {"portMappings": PORT_MAPPINGS}, "prevResult": PREV_RESULT}
        for c in portmaps
    ]


def for_verb(conf: dict[str, Any], verb: str) -> dict[str, Any]:
    """A valid base adjusted so the verb's version gate passes (GC also needs its list)."""
    out = dict(conf)
    if verb in MIN_VERSION and version_tuple(out.get("cniVersion", "0.1.0")) < version_tuple(
        MIN_VERSION[verb]
    ):
        out["cniVersion"] = "1.1.0"
    if verb == "GC":
        out["cni.dev/valid-attachments"] = [{"containerID": "keep", "ifname": "eth0"}]
    return out


# ------------------------------------------------------------------------------ hostile values

NASTY_STRINGS = (
    "", " ", "..", ".", "/", "../..", "../../etc/passwd", "a/b", "\x00", "a\x00b", "\n", "\t",
    "\r\n", "%s%n", "${HOME}", "$(id)", "`id`", ";", "=", "a=b;c", "\\", "\"", "'",
    "\u202e", "\ufeff", "\u2028", "ß", "é", "💥", "日本語", "\udcff",  # lone surrogate
    "true", "false", "null", "0", "-1", "NaN", "Infinity", "1e999",
    "x" * 255, "y" * 256, "z" * 4096,
)
BAD_CIDRS = (
    "10.0.0.0/33", "10.0.0.1/24", "10.0.0.0/-1", "10.0.0.0/", "/24", "10.0.0/24", "1.2.3.4.5/8",
    "300.0.0.0/8", "10.0.0.0/24/24", "::/129", "fd00::1/64", "fd00::/", "10.0.0.0/31",
    "10.0.0.0/32", "fd00::/127", "fd00::/128", "10.0.0.0 /24", " 10.0.0.0/24",
    "10.0.0.0/+24", "10.0.0.0/2\x004", "0x0a.0.0.0/8", "010.000.000.000/8", "::ffff:10.0.0.0/104",
    "fe80::/64%eth0", "10.0.0.0/٢٤", "0.0.0.0/0", "::/0", "224.0.0.0/4", "127.0.0.0/8",
)
BAD_IPS = (
    "10.0.0", "10.0.0.256", "1.2.3.4.5", "::g", "fe80::1%eth0", "10.0.0.1/33", "-1", "0", "",
    "10.0.0.1 ", "01.02.03.04", "::ffff:10.0.0.1", "255.255.255.255", "0.0.0.0", "::",
    "fd00::1/64", "1.2.3.4/8", "1.2.3.4\x00",
)
HUGE_NUMBERS = (
    -1, -(2**31), 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1,
    10**100, 65536, 4095, 4096, 0, 1.5, -0.0, 1e308, 1e-308,
)
BOOLISH = ("true", "false", "True", "1", "0", "yes", 1, 0, 1.0)


def nested(depth: int, leaf: Any = 1) -> Any:
    """A list nested `depth` levels deep (built without recursion)."""
    value: Any = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"a": value}
    return value


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=12), children, max_size=4),
    ),
    max_leaves=12,
)

hostile_values: st.SearchStrategy[Any] = st.one_of(
    json_values,
    st.sampled_from(NASTY_STRINGS),
    st.sampled_from(BAD_CIDRS),
    st.sampled_from(BAD_IPS),
    st.sampled_from(HUGE_NUMBERS),
    st.sampled_from(BOOLISH),
    st.text(st.characters(codec="utf-8"), max_size=30),  # any unicode, NUL included
    st.integers(min_value=1, max_value=400).map(nested),
    st.just({}), st.just([]), st.just([[]]), st.just([{}]),
)

# Keys the plugins read: a mutation that adds one of these reaches real validation paths.
KNOWN_KEYS = (
    "cniVersion", "name", "type", "bridge", "isGateway", "isDefaultGateway", "forceAddress",
    "ipMasq", "ipMasqBackend", "mtu", "hairpinMode", "promiscMode", "vlan", "vlanTrunk",
    "preserveDefaultVlan", "macspoofchk", "enabledad", "disableContainerInterface",
    "portIsolation", "ipam", "dns", "args", "runtimeConfig", "prevResult", "capabilities",
    "subnet", "rangeStart", "rangeEnd", "gateway", "ranges", "routes", "resolvConf", "dataDir",
    "ips", "mac", "cni", "portMappings", "hostPort", "containerPort", "protocol", "hostIP",
    "snat", "backend", "masqAll", "markMasqBit", "externalSetMarkChain", "conditionsV4",
    "conditionsV6", "cni.dev/valid-attachments", "cni.dev/attachments", "containerID",
    "ifname", "interfaces", "ip4", "ip6", "nameservers", "search", "options", "domain", "dst",
    "gw", "id", "minID", "maxID", "interface", "address", "version", "sandbox",
    "nonMasqueradeCIDRs", "HostPort", "ContainerPort", "Protocol", "HostIP",
)
# Never generated: a key that makes the *executable* write a file wherever it names.
FORBIDDEN_KEYS = ("logFile",)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys and indexes) into a JSON tree, the root included; iterative."""
    out = []
    stack = [(prefix, value)]
    while stack:
        path, node = stack.pop()
        out.append(path)
        if len(out) > 400:
            break
        if isinstance(node, dict):
            stack.extend((path + (k,), v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((path + (i,), v) for i, v in enumerate(node))
    return sorted(out, key=repr)


def _get(tree: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        tree = tree[p]
    return tree


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value))


@st.composite
def mutated(draw: st.DrawFn, base: Any, max_mutations: int = 4) -> Any:
    """`base` with 1..`max_mutations` random edits at random places in its tree."""
    tree = _copy(base)
    for _ in range(draw(st.integers(1, max_mutations))):
        paths = _paths(tree)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(("replace", "replace", "delete", "add_key", "wrap", "string")))
        target = _get(tree, path)
        if op == "delete" and path:
            parent = _get(tree, path[:-1])
            del parent[path[-1]]
        elif op == "add_key" and isinstance(target, dict):
            key = draw(st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=10)))
            target[key] = _copy(draw(hostile_values))
        elif op == "wrap":
            wrapped = draw(st.sampled_from(("list", "dict")))
            new = [target] if wrapped == "list" else {"x": target}
            tree = _set(tree, path, new)
        elif op == "string" and isinstance(target, str):
            extra = draw(st.sampled_from(NASTY_STRINGS))
            tree = _set(tree, path, draw(st.sampled_from((target + extra, extra + target))))
        else:
            tree = _set(tree, path, _copy(draw(hostile_values)))
    if isinstance(tree, dict):
        for key in FORBIDDEN_KEYS:
            tree.pop(key, None)
    return tree


def _set(tree: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    _get(tree, path[:-1])[path[-1]] = value
    return tree


def dumps(value: Any) -> bytes:
    """JSON bytes; lone surrogates (undecodable env-style text) are written as escapes."""
    return json.dumps(value, ensure_ascii=True, allow_nan=False).encode()


# ------------------------------------------------------------------------------ raw stdin

def deep_json(depth: int, kind: str = "list") -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


RAW_STDIN = (
    b"", b" ", b"\n", b"null", b"true", b"0", b"[]", b'""', b"{", b"}", b"{}", b"{} {}",
    b'{"name":"n"} x', b"\xef\xbb\xbf{}", b"\xff\xfe{}", b'{"name":"\xff"}', b"\x00",
    b'{"name":"n","cniVersion":"1.1.0"}\x00', b'{"cniVersion":NaN,"name":"n"}',
    b'{"cniVersion":"1.1.0","name":"n","mtu":Infinity}', b'{"name":"n","mtu":1e999}',
    b'{"name":"n","name":"m"}', b'{"name":"n",}', b"// comment\n{}", b"{'name':'n'}",
    b'{"name":"\\ud800"}', b'{"name":"n","cniVersion":"1.1.0","vlan":' + b"9" * 5000 + b"}",
)


@st.composite
def raw_stdin(draw: st.DrawFn, base: bytes) -> bytes:
    kind = draw(st.sampled_from(("fixed", "truncate", "insert", "flip", "deep", "garbage")))
    if kind == "fixed":
        return draw(st.sampled_from(RAW_STDIN))
    if kind == "truncate" and base:
        return base[: draw(st.integers(0, len(base) - 1))]
    if kind == "insert" and base:
        at = draw(st.integers(0, len(base)))
        return base[:at] + draw(st.binary(min_size=1, max_size=8)) + base[at:]
    if kind == "flip" and base:
        at = draw(st.integers(0, len(base) - 1))
        return base[:at] + bytes([draw(st.integers(0, 255))]) + base[at + 1:]
    if kind == "deep":
        depth = draw(st.sampled_from((500, 1000, 5000, 100_000)))
        return deep_json(depth, draw(st.sampled_from(("list", "object"))))
    return draw(st.binary(max_size=64))


# ------------------------------------------------------------------------------ environment

ID_CHARS = string.ascii_letters + string.digits + "_.-"
valid_ids = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(string.ascii_letters + string.digits),
    st.text(ID_CHARS, max_size=20),
)
valid_ifnames = st.text(
    st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="/:"),
    min_size=1, max_size=15,
).filter(lambda s: s not in (".", ".."))

env_values = st.one_of(
    st.sampled_from(NASTY_STRINGS).filter(lambda s: "\x00" not in s),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40),
    valid_ids,
)

ARG_KEYS = ("IP", "MAC", "IgnoreUnknown", "K8S_POD_NAME", "K8S_POD_NAMESPACE", "ip", "", "X")
cni_args_values = st.one_of(
    st.just(""),
    st.lists(
        st.tuples(
            st.sampled_from(ARG_KEYS),
            st.one_of(st.sampled_from(("1", "true", "0", "false", "", "10.0.0.5",
                                       "aa:bb:cc:dd:ee:ff", "172.18.0.9", "fd00::5"))
                      , env_values),
        ).map(lambda kv: f"{kv[0]}={kv[1]}"),
        min_size=1, max_size=4,
    ).map(";".join),
    env_values,
)


def base_env(verb: str) -> dict[str, str]:
    return {
        "CNI_COMMAND": verb,
        "CNI_CONTAINERID": "ctr1",
        "CNI_NETNS": NONEXISTENT_NETNS,
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "",
        "CNI_PATH": NONEXISTENT_PATH,
    }


@st.composite
def mutated_env(draw: st.DrawFn, verb: str) -> dict[str, str]:
    env = base_env(verb)
    env["CNI_ARGS"] = draw(cni_args_values)
    for name in list(env):
        change = draw(st.sampled_from(("keep", "keep", "keep", "keep", "drop", "empty", "hostile")))
        if change == "drop":
            del env[name]
        elif change == "empty":
            env[name] = ""
        elif change == "hostile":
            env[name] = draw(env_values)
    return env


# ------------------------------------------------------------------------------ any case

verbs_any = st.one_of(st.sampled_from(VERBS), st.sampled_from(("add", "", "DELETE", "ADD ")),
                      env_values)


@st.composite
def any_case(draw: st.DrawFn, role: str) -> Case:
    verb = draw(st.one_of(st.sampled_from(VERBS[:-1]), verbs_any))
    base = for_verb(draw(st.sampled_from(base_configs(role))), verb)
    base["cniVersion"] = draw(st.one_of(st.just(base["cniVersion"]), st.sampled_from(VERSIONS)))
    kind = draw(st.sampled_from(("config", "config", "config", "raw", "valid")))
    if kind == "valid":
        stdin = dumps(base)
    elif kind == "config":
        stdin = dumps(draw(mutated(base)))
    else:
        stdin = draw(raw_stdin(dumps(base)))
    env = draw(st.one_of(st.just(base_env(verb)), mutated_env(verb)))
    return Case(role, env, stdin, "")


# ------------------------------------------------------------------------------ invalid cases

def _bad_ids() -> st.SearchStrategy[str]:
    """Non-empty container IDs / network names that break ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$."""
    return st.one_of(
        st.sampled_from(("..", ".", "../x", "a/b", "/", "-a", "_a", ".a", "a b", "a\nb", "a:b",
                         "a;b", "a=b", "é", "a\u200b", "a\\b", "a\x00b", "../../../../tmp/x")),
        st.builds(lambda a, b, c: a + b + c, st.text(ID_CHARS, max_size=5),
                  st.characters(exclude_characters=ID_CHARS), st.text(ID_CHARS, max_size=5)),
    ).filter(lambda s: bool(s))


def _bad_ifnames() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from((".", "..", "a/b", "eth:0", "eth 0", "eth\t0", "/", "a" * 16,
                         "é" * 8, "x" * 4096, "eth0\n")),
        st.text(min_size=16, max_size=40).filter(
            lambda s: "\x00" not in s and len(s.encode("utf-8", "surrogatepass")) > 15),
    ).filter(lambda s: "\x00" not in s)


@st.composite
def invalid_env_case(draw: st.DrawFn, role: str) -> Case:
    """The environment alone makes the call invalid (code 4, or 3 for no container ID)."""
    verb = draw(st.sampled_from(("ADD", "DEL", "CHECK", "GC", "STATUS")))
    base = for_verb(draw(st.sampled_from(base_configs(role))), verb)
    env = base_env(verb)
    needs = {"ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
             "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
             "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
             "GC": ("CNI_PATH",), "STATUS": ("CNI_PATH",)}[verb]
    options = ["missing", "command", "nul"]
    if verb in ("ADD", "DEL", "CHECK"):
        options += ["container_id", "ifname"]
    what = draw(st.sampled_from(options))
    if what == "missing":
        name = draw(st.sampled_from(needs))
        if draw(st.booleans()):
            del env[name]
        else:
            env[name] = ""
        why = f"{name} missing for {verb}"
    elif what == "command":
        env["CNI_COMMAND"] = draw(st.one_of(
            st.sampled_from(("add", "Add", "DELETE", "ADD ", " ADD", "VERSION2", "GET", "x")),
            env_values.filter(lambda s: s not in VERBS and s != ""),
        ))
        why = f"unknown CNI_COMMAND {env['CNI_COMMAND']!r}"
    elif what == "nul":  # in-process only: execve cannot pass a NUL (see has_nul_in_env)
        name = draw(st.sampled_from(sorted(env)))
        env[name] = env[name][:1] + "\x00" + env[name][1:]
        why = f"NUL in {name}"
    elif what == "container_id":
        env["CNI_CONTAINERID"] = draw(_bad_ids().filter(lambda s: "\x00" not in s))
        why = "invalid container ID"
    else:
        env["CNI_IFNAME"] = draw(_bad_ifnames())
        why = "invalid ifname"
    return Case(role, env, dumps(base), why)


@st.composite
def invalid_stdin_case(draw: st.DrawFn, role: str) -> Case:
    """Valid environment, but stdin cannot be a valid request for any plugin."""
    verb = draw(st.sampled_from(("ADD", "DEL", "CHECK", "GC", "STATUS")))
    base = for_verb(draw(st.sampled_from(base_configs(role))), verb)
    what = draw(st.sampled_from(("not_json", "not_object", "name", "version", "version_type",
                                 "verb_gate", "gc_list", "prev_result", "deep")))
    conf = dict(base)
    if what == "not_json":
        stdin = draw(st.one_of(
            st.sampled_from((b"", b" ", b"{", b"{} {}", b"\xff", b"\xef\xbb\xbf{}", b"{'a':1}",
                             b'{"name":"n",}', b'{"cniVersion":NaN,"name":"n"}',
                             b'{"name":"n","mtu":Infinity}', b"\x00")),
            st.builds(lambda b, n: b[:n], st.just(dumps(base)),
                      st.integers(1, len(dumps(base)) - 1)),
        ))
        return Case(role, base_env(verb), stdin, "stdin is not JSON")
    if what == "not_object":
        value = draw(st.one_of(st.lists(json_values, max_size=3), st.integers(), st.text(),
                               st.booleans()))
        return Case(role, base_env(verb), dumps(value), "stdin is not a JSON object")
    if what == "deep":
        depth = draw(st.sampled_from((1000, 10_000, 100_000)))
        return Case(role, base_env(verb), deep_json(depth, draw(st.sampled_from(("list", "x")))),
                    f"JSON nested {depth} levels")
    if what == "name":
        choice = draw(st.one_of(st.just(None), _bad_ids(), st.just(""),
                                json_values.filter(lambda v: not isinstance(v, str))))
        if choice is None:
            conf.pop("name")
        else:
            conf["name"] = choice
        why = f"network name {choice!r}"
    elif what == "version":
        conf["cniVersion"] = draw(st.one_of(
            st.sampled_from(("1.2.0", "2.0.0", "0.5.0", "1.1", "1.1.0.0", "v1.1.0", "1.1.0 ",
                             "1.1.0\n", "01.1.0", "0.3", "1.1.x", "+1.1.0", "１.1.0")),
            st.text(max_size=12).filter(lambda s: s not in VERSIONS and s != ""),
        ))
        why = f"unsupported cniVersion {conf['cniVersion']!r}"
    elif what == "version_type":
        conf["cniVersion"] = draw(json_values.filter(lambda v: not isinstance(v, str)
                                                     and v is not None))
        why = "cniVersion is not a string"
    elif what == "verb_gate":
        verb = draw(st.sampled_from(("CHECK", "GC", "STATUS")))
        conf = for_verb(dict(base), verb)
        older = [v for v in VERSIONS if version_tuple(v) < version_tuple(MIN_VERSION[verb])]
        conf["cniVersion"] = draw(st.sampled_from(older))
        why = f"{verb} not allowed in {conf['cniVersion']}"
    elif what == "gc_list":
        verb = "GC"
        conf = for_verb(dict(base), verb)
        conf.pop("cni.dev/valid-attachments")
        if draw(st.booleans()):
            conf["cni.dev/valid-attachments"] = draw(json_values.filter(
                lambda v: not isinstance(v, list) and v is not None))
        why = "GC without a list of valid attachments"
    else:
        conf["prevResult"] = draw(st.one_of(
            st.sampled_from((
                {"cniVersion": "9.9.9"}, {"ips": "x"}, {"ips": [{"address": "10.0.0.1"}]},
                {"ips": [{"address": "300.0.0.1/24"}]}, {"interfaces": [1]},
                {"routes": [{"dst": "x"}]}, {"dns": []},
                {"cniVersion": "0.2.0", "ip4": {"ip": "1.2.3.4"}},
                {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.2/24", "gateway": "x"}]},
                {"routes": [{"dst": "0.0.0.0/0", "mtu": "1500"}]}, {"dns": {"nameservers": [1]}},
            )),
            json_values.filter(lambda v: not isinstance(v, dict) and v is not None),
        ))
        why = "malformed prevResult"
    return Case(role, base_env(verb), dumps(conf), why)


# Bridge fields and values that parse_bridge_config must refuse (REFERENCE.md §2.1).
BAD_BRIDGE_FIELDS: dict[str, tuple[Any, ...]] = {
    "bridge": ("a" * 16, "a/b", "a:b", "a b", ".", "..", 5, [], {}, True, "a\x00b", "br0\n",
               "é" * 8, "\ud800", "br\u2028"),
    "ipMasqBackend": ("nft", "IPTABLES", "none", " iptables", 1, True, [], {}),
    "mtu": (-1, 65536, 2**63, "1500", 1500.5, True, [], {}),
    "vlan": (-1, 4095, 2**32, "100", 1.0, True, [], {}),
    "vlanTrunk": ("x", 1, {}, [1], [{}], [{"id": 0}], [{"id": 4095}], [{"minID": 1}],
                  [{"maxID": 5}], [{"minID": 5, "maxID": 1}], [{"id": "5"}], [[]]),
    "isGateway": BOOLISH, "isDefaultGateway": BOOLISH, "forceAddress": BOOLISH,
    "ipMasq": BOOLISH, "hairpinMode": BOOLISH, "promiscMode": BOOLISH,
    "preserveDefaultVlan": BOOLISH, "macspoofchk": BOOLISH, "enabledad": BOOLISH,
    "disableContainerInterface": BOOLISH, "portIsolation": BOOLISH,
    "ipam": ("host-local", 1, [], True, {"type": 5}, {"type": []}),
    "dns": ("x", 1, [], {"nameservers": "8.8.8.8"}, {"nameservers": [1]}, {"domain": 5},
            {"search": [None]}),
    "args": ("x", 1, [], {"cni": 5}, {"cni": {"mac": 5}}, {"cni": {"mac": "zz:zz"}},
             {"cni": {"mac": "aa:bb:cc:dd:ee"}}),
    "runtimeConfig": ({"mac": "not-a-mac"}, {"mac": 5}, {"mac": "aa:bb:cc:dd:ee:ff:00"}),
    "nonMasqueradeCIDRs": ("10.244.0.0/16", 16, {}, True, [16], [None], ["x"], [""],
                           ["10.244.1.5/16"], ["10.244.0.0/33"], ["fd00::/129"], [[]]),
}
BAD_BRIDGE_COMBOS: tuple[dict[str, Any], ...] = (
    {"hairpinMode": True, "promiscMode": True},
    {"disableContainerInterface": True},  # with the base's host-local IPAM
)


@st.composite
def invalid_config_case(draw: st.DrawFn, role: str) -> Case:
    """A config field this role must refuse, on a verb that reads it (before any side effect)."""
    if role == "bridge":
        verb = draw(st.sampled_from(("ADD", "DEL", "CHECK", "GC", "STATUS")))
        bases = [c for c in base_configs(role) if isinstance(c.get("ipam"), dict)]
        conf = for_verb(draw(st.sampled_from(bases)), verb)
        if verb == "CHECK":
            conf["prevResult"] = PREV_RESULT
        if draw(st.integers(0, 9)) == 0:
            combo = draw(st.sampled_from(BAD_BRIDGE_COMBOS))
            conf.update(combo)
            why = f"bridge combination {combo}"
        else:
            key = draw(st.sampled_from(sorted(BAD_BRIDGE_FIELDS)))
            conf[key] = draw(st.sampled_from(BAD_BRIDGE_FIELDS[key]))
            why = f"bridge {key}={conf[key]!r}"
        env = base_env(verb)
        if draw(st.integers(0, 5)) == 0:
            env["CNI_ARGS"] = draw(st.sampled_from(("MAC=zz", "MAC=aa:bb:cc:dd:ee", "MAC",
                                                    "MAC=aa:bb:cc:dd:ee:ff=1", ";",
                                                    "IgnoreUnknown=maybe;MAC=aa:bb:cc:dd:ee:ff",
                                                    "K8S_POD_NAME=x;MAC=aa:bb:cc:dd:ee:ff")))
            conf.pop("args", None)
            conf.pop("runtimeConfig", None)
            why = f"CNI_ARGS {env['CNI_ARGS']!r}"
        return Case(role, env, dumps(conf), why)
    if role == "host-local":
        return draw(_invalid_host_local(role))
    return draw(_invalid_portmap(role))


# Once accepted by mistake, now pinned by a regression test in test_fuzz_plugins.py.
FIXED_GAPS = ("10.0.0.0/٢٤",)  # non-ASCII digits in a prefix length: Go refuses, so do we
BAD_RANGE_ITEMS: tuple[Any, ...] = (
    *({"subnet": c} for c in BAD_CIDRS if c not in ("0.0.0.0/0", "::/0", "224.0.0.0/4",
                                                     "127.0.0.0/8", "::ffff:10.0.0.0/104")),
    {"subnet": "10.1.0.0/24", "rangeStart": "10.2.0.1"},
    {"subnet": "10.1.0.0/24", "rangeEnd": "10.1.1.1"},
    {"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.9", "rangeEnd": "10.1.0.3"},
    {"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.0"},
    {"subnet": "10.1.0.0/24", "rangeEnd": "10.1.0.255"},
    {"subnet": "10.1.0.0/24", "gateway": "fd00::1"},
    {"subnet": "10.1.0.0/24", "gateway": "x"},
    {"subnet": "10.1.0.0/24", "rangeStart": "not-an-ip"},
    {"subnet": "10.1.0.0/24", "rangeStart": 5},
    {"subnet": 5}, {"subnet": None}, {}, "10.1.0.0/24", 5, None, [],
)


@st.composite
def _invalid_host_local(draw: st.DrawFn, role: str) -> Case:
    base = draw(st.sampled_from(base_configs(role)))
    ipam = dict(base["ipam"])
    what = draw(st.sampled_from(("ranges", "ranges", "legacy", "no_ranges", "overlap", "routes",
                                 "args_ip", "args_unknown", "ips", "location", "no_ipam",
                                 "resolv_type", "families")))
    verb = draw(st.sampled_from(("ADD", "CHECK", "STATUS")))
    env = base_env(verb)
    conf = dict(base)
    if what == "ranges":
        ipam["ranges"] = draw(st.one_of(
            st.sampled_from(BAD_RANGE_ITEMS).map(lambda r: [[r]]),
            st.sampled_from(("x", 5, {}, [[]], [5], [{}], ["10.0.0.0/24"])),
            st.sampled_from(BAD_RANGE_ITEMS).map(lambda r: [[{"subnet": "10.9.0.0/24"}, r]]),
        ))
        why = f"bad ipam.ranges {ipam['ranges']!r}"
    elif what == "legacy":
        ipam.pop("ranges", None)
        item = draw(st.sampled_from([r for r in BAD_RANGE_ITEMS
                                     if isinstance(r, dict) and r.get("subnet") is not None]))
        ipam.update(item)
        why = f"bad legacy range {item!r}"
    elif what == "no_ranges":
        ipam.pop("ranges", None)
        if draw(st.booleans()):
            ipam["ranges"] = []
        why = "no ranges"
    elif what == "overlap":
        ipam["ranges"] = [[{"subnet": "10.5.0.0/16"}], [{"subnet": "10.5.3.0/24"}]]
        why = "overlapping range sets"
    elif what == "families":
        conf["cniVersion"] = draw(st.sampled_from(("0.1.0", "0.2.0")))
        verb = "ADD"
        env = base_env(verb)
        ipam["ranges"] = [[{"subnet": "10.5.0.0/24"}], [{"subnet": "10.6.0.0/24"}]]
        why = "two IPv4 range sets below 0.3.0"
    elif what == "routes":
        ipam["routes"] = draw(st.sampled_from(("x", 5, [5], [{"dst": "x"}], [{}],
                                               [{"dst": "0.0.0.0/0", "gw": "x"}],
                                               [{"dst": "10.0.0.0/33"}])))
        why = f"bad ipam.routes {ipam['routes']!r}"
    elif what == "args_ip":
        # ("IP=" is valid: Go's net.IP reads empty text as no address.)
        env["CNI_ARGS"] = draw(st.sampled_from(("IP=x", "IP=300.0.0.1", "IP=10.0.0.1/99",
                                                "IP=1.2.3.4;IP", "IP", "IP= 10.0.0.1")))
        why = f"CNI_ARGS {env['CNI_ARGS']!r}"
    elif what == "args_unknown":
        env["CNI_ARGS"] = draw(st.sampled_from(("FOO=bar", "K8S_POD_NAME=x", "ip=10.0.0.1",
                                                "IgnoreUnknown=0;X=1", "IgnoreUnknown=no;X=1",
                                                "a=b=c", ";;")))
        why = f"CNI_ARGS {env['CNI_ARGS']!r}"
    elif what == "ips":
        conf[draw(st.sampled_from(("args", "runtimeConfig")))] = draw(st.sampled_from((
            {"ips": "10.0.0.1"}, {"cni": {"ips": ["x"]}}, {"cni": {"ips": [5]}},
            {"ips": ["300.1.1.1"]}, {"cni": {"ips": "10.0.0.1"}},
        )))
        if "args" in conf and "cni" not in conf["args"]:
            conf["args"] = {"cni": conf["args"]}
        if "runtimeConfig" in conf and "cni" in conf["runtimeConfig"]:
            conf["runtimeConfig"] = conf["runtimeConfig"]["cni"]
        why = f"bad requested IPs {conf.get('args') or conf.get('runtimeConfig')!r}"
    elif what == "location":
        verb = draw(st.sampled_from(("ADD", "DEL", "CHECK", "GC", "STATUS")))
        env = base_env(verb)
        conf = for_verb(conf, verb)
        ipam["dataDir"] = draw(st.sampled_from((5, [], {}, True, DATA_DIR + "\x00x")))
        why = f"bad ipam.dataDir {ipam['dataDir']!r}"
    elif what == "resolv_type":
        ipam["resolvConf"] = draw(st.sampled_from((5, [], {}, True)))
        why = f"bad ipam.resolvConf {ipam['resolvConf']!r}"
    else:
        verb = draw(st.sampled_from(("ADD", "DEL", "CHECK", "GC", "STATUS")))
        env = base_env(verb)
        conf = for_verb(conf, verb)
        conf.pop("ipam")
        if draw(st.booleans()):
            conf["ipam"] = draw(st.sampled_from(("host-local", 5, [], True)))
        why = f"ipam {conf.get('ipam')!r}"
        return Case(role, env, dumps(for_verb(conf, verb)), why)
    conf["ipam"] = ipam
    conf = for_verb(conf, verb)
    if verb == "CHECK":
        conf["prevResult"] = PREV_RESULT
    return Case(role, env, dumps(conf), why)


BAD_PORT_MAPPINGS: tuple[Any, ...] = (
    "x", 5, {}, [5], ["x"], [{}],
    [{"hostPort": 0, "containerPort": 80, "protocol": "tcp"}],
    [{"hostPort": 65536, "containerPort": 80, "protocol": "tcp"}],
    [{"hostPort": -1, "containerPort": 80, "protocol": "tcp"}],
    [{"hostPort": 8080, "containerPort": 0, "protocol": "tcp"}],
    [{"hostPort": 8080, "containerPort": 70000, "protocol": "tcp"}],
    [{"hostPort": "8080", "containerPort": 80, "protocol": "tcp"}],
    [{"hostPort": 8080.5, "containerPort": 80, "protocol": "tcp"}],
    [{"hostPort": 8080, "containerPort": 80, "protocol": "icmp"}],
    [{"hostPort": 8080, "containerPort": 80, "protocol": 6}],
    [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "x"}],
    [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "300.1.1.1"}],
    [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": 5}],
    [{"hostPort": 2**63, "containerPort": 80, "protocol": "tcp"}],
)


@st.composite
def _invalid_portmap(draw: st.DrawFn, role: str) -> Case:
    base = draw(st.sampled_from(base_configs(role)))
    conf = dict(base)
    what = draw(st.sampled_from(("mappings", "mappings", "runtime", "backend", "bools")))
    if what == "mappings":
        conf["runtimeConfig"] = {"portMappings": draw(st.sampled_from(BAD_PORT_MAPPINGS))}
        why = f"bad portMappings {conf['runtimeConfig']['portMappings']!r}"
    elif what == "runtime":
        conf["runtimeConfig"] = draw(st.sampled_from(("x", 5, [], True)))
        why = f"runtimeConfig {conf['runtimeConfig']!r}"
    elif what == "backend":
        conf["backend"] = draw(st.sampled_from(("nft", "IPTABLES", "firewalld", 5, [], True)))
        why = f"portmap backend {conf['backend']!r}"
    else:
        key = draw(st.sampled_from(("snat", "masqAll")))
        conf[key] = draw(st.sampled_from(BOOLISH))
        why = f"portmap {key}={conf[key]!r}"
    return Case(role, base_env("ADD"), dumps(conf), why)


def has_nul_in_env(case: Case) -> bool:
    return any("\x00" in k or "\x00" in v for k, v in case.env.items())


def invalid_case(role: str, config: bool = True) -> st.SearchStrategy[Case]:
    """Every kind of invalid call for `role`; `config=False` leaves out role-specific configs
    (for a plugin whose validation is unknown, e.g. a fake)."""
    parts = [invalid_env_case(role), invalid_stdin_case(role)]
    if config:
        parts.append(invalid_config_case(role))
    return st.one_of(*parts)


# ------------------------------------------------------------------------------ the contract

class ContractError(AssertionError):
    pass


def _no_constants(name: str) -> Any:
    raise ValueError(f"non-JSON constant {name}")


@dataclass
class Checked:
    ok: bool
    doc: Any


def check_output(case: Case, rc: int, stdout: bytes, stderr: str = "") -> Checked:
    """The output contract for one call; raises ContractError (and counts it) when broken."""

    def fail(kind: str, why: str) -> ContractError:
        STATS.violations[kind] += 1
        return ContractError(
            f"{why} (rc={rc})\n{case.describe()}\n--- stdout ---\n{stdout[:2000]!r}\n"
            f"--- stderr ---\n{stderr[-2000:]}"
        )

    if b"Traceback (most recent call last)" in stdout:
        raise fail("traceback", "a Python traceback on stdout")
    if rc not in (0, 1):
        raise fail("exit", f"exit status {rc} (expected 0 or 1)")
    if case.command == "":
        if stdout:
            raise fail("non_json", "output on stdout without CNI_COMMAND")
        return Checked(rc == 0, None)
    if rc == 0 and stdout == b"":
        if case.command == "ADD":
            raise fail("non_json", "ADD succeeded without a result")
        return Checked(True, None)
    try:
        text = stdout.decode("utf-8")
        doc = json.loads(text, parse_constant=_no_constants)
    except ValueError as exc:
        raise fail("non_json", f"stdout is not exactly one JSON document: {exc}") from None
    if rc == 0:
        if case.command == "VERSION":
            if not text.endswith("}\n") or "\n" in text[:-1]:
                raise fail("non_json", "VERSION output is not one line")
        elif case.command != "ADD":
            raise fail("non_json", f"{case.command} succeeded with output")
        if not isinstance(doc, dict) or not isinstance(doc.get("cniVersion"), str):
            raise fail("non_json", "success output has no cniVersion")
        return Checked(True, doc)
    if not isinstance(doc, dict):
        raise fail("error_shape", "error output is not a JSON object")
    code = doc.get("code")
    if not isinstance(code, int) or isinstance(code, bool) or not 0 <= code < 2**32:
        # libcni decodes the code into a Go uint: anything else loses the whole error.
        raise fail("error_shape", "error object has no unsigned integer code")
    if not isinstance(doc.get("msg"), str) or not doc["msg"]:
        raise fail("error_shape", "error object has no message")
    if "details" in doc and not isinstance(doc["details"], str):
        raise fail("error_shape", "error details is not a string")
    if set(doc) - {"code", "msg", "details", "cniVersion"}:
        raise fail("error_shape", f"unexpected keys in the error object: {sorted(doc)}")
    if "Traceback" in doc["msg"] or "Traceback" in doc.get("details", ""):
        raise fail("traceback", "a traceback inside the error object")
    return Checked(False, doc)


def expect_failure(case: Case, checked: Checked) -> None:
    if checked.ok:
        STATS.violations["success_on_invalid"] += 1
        raise ContractError(f"success on invalid input ({case.why})\n{case.describe()}")


# ------------------------------------------------------------------------------ counting

@dataclass
class CaseStats:
    cases: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    violations: Counter[str] = field(default_factory=Counter)

    def record(self, suite: str, checked: Checked | None = None) -> None:
        self.cases[suite] += 1
        if checked is not None:
            key = "ok" if checked.ok else f"code {checked.doc.get('code')}"
            self.outcomes[key] += 1

    def summary(self) -> str:
        total = sum(self.cases.values())
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.cases.items()))
        kinds = ("traceback", "internal", "non_json", "error_shape", "exit",
                 "success_on_invalid", "outside_data_dir", "guard")
        bad = ", ".join(f"{k} {self.violations[k]}" for k in kinds)
        top = ", ".join(f"{k}: {v}" for k, v in self.outcomes.most_common(8))
        profile = "long" if long_profile() else "normal"
        return (f"fuzz ({profile} profile): {total} cases run ({parts}); violations: {bad}; "
                f"outcomes: {top}")


STATS = CaseStats()
_REPORTERS: set[int] = set()


class _Reporter:
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if sum(STATS.cases.values()):
            terminalreporter.write_line(STATS.summary())
            path = os.environ.get("CNI_BRIDGE_FUZZ_REPORT")
            if path:
                Path(path).write_text(json.dumps({
                    "profile": "long" if long_profile() else "normal",
                    "cases": dict(STATS.cases), "violations": dict(STATS.violations),
                    "outcomes": dict(STATS.outcomes)}, indent=2) + "\n")


def register_reporter(config: Any) -> None:
    """Print the case counts at the end of the session (once, whichever suite asks first)."""
    if id(config) not in _REPORTERS:
        _REPORTERS.add(id(config))
        config.pluginmanager.register(_Reporter(), "cni-bridge-fuzz-stats")


__all__ = [
    "Case", "Checked", "ContractError", "STATS", "any_case", "base_configs", "check_output",
    "examples", "expect_failure", "invalid_case", "register_reporter",
]
