"""node-agent's API side without a server: the watch stream decoder, HTTP status translation,
kubeconfig and in-cluster config, backoff, and the watcher's reaction to each failure (a fake
client)."""

from __future__ import annotations

import base64
import json
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cni_bridge.node_agent import miniyaml
from cni_bridge.node_agent.api import (
    ApiDenied,
    ApiError,
    ApiUnavailable,
    EventDecoder,
    NodeList,
    WatchEvent,
    WatchExpired,
    WatchFormatError,
    raise_for_status,
)
from cni_bridge.node_agent.kubeconfig import (
    ConfigError,
    in_cluster,
    load_kubeconfig,
    resolve_access,
)
from cni_bridge.node_agent.watcher import Backoff, Changed, Fatal, Message, Synced, Watcher

# --- watch stream ------------------------------------------------------------------------------

EVENTS = [{"type": "ADDED", "object": {"metadata": {"name": "n1", "resourceVersion": "5"}}},
          {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "6"}}},
          {"type": "DELETED", "object": {"metadata": {"name": "nø", "resourceVersion": "7"}}}]
STREAM = b"".join(json.dumps(e, ensure_ascii=False).encode() + b"\n" for e in EVENTS)


@pytest.mark.parametrize("size", [1, 2, 7, 64, len(STREAM)])
def test_decoder_yields_each_event_whatever_the_chunking(size: int) -> None:
    decoder = EventDecoder()
    got: list[WatchEvent] = []
    for start in range(0, len(STREAM), size):
        got += decoder.feed(STREAM[start:start + size])
    assert [(e.type, e.object) for e in got] == [(e["type"], e["object"]) for e in EVENTS]


def test_decoder_holds_back_a_cut_off_event() -> None:
    assert len(EventDecoder().feed(STREAM[:-10])) == len(EVENTS) - 1


def test_error_event_carries_the_status_code() -> None:
    line = json.dumps({"type": "ERROR", "object": {"kind": "Status", "code": 410,
                                                   "reason": "Expired", "message": "too old"}})
    (event,) = EventDecoder().feed(line.encode() + b"\n")
    assert event.status_code == 410 and event.object["message"] == "too old"


@pytest.mark.parametrize("line", [b"not json", b'{"type": "SOMETHING", "object": {}}',
                                  b'{"type": "ADDED"}', b"\xff\xfe"])
def test_decoder_refuses_what_is_not_an_event(line: bytes) -> None:
    with pytest.raises(WatchFormatError):
        EventDecoder().feed(line + b"\n")


# --- HTTP statuses -----------------------------------------------------------------------------

FORBIDDEN = json.dumps({"kind": "Status", "code": 403, "reason": "Forbidden", "message":
                        'nodes is forbidden: User "x" cannot list resource "nodes"'}).encode()


def test_forbidden_names_verb_and_resource() -> None:
    with pytest.raises(ApiDenied, match=r"^cannot list nodes: forbidden: nodes is forbidden"):
        raise_for_status("list", 403, "Forbidden", FORBIDDEN)


@pytest.mark.parametrize("status, error", [(401, ApiDenied), (410, WatchExpired),
                                           (500, ApiUnavailable), (503, ApiUnavailable),
                                           (429, ApiUnavailable), (404, ApiError)])
def test_statuses_map_to_what_the_agent_does(status: int, error: type[Exception]) -> None:
    with pytest.raises(error, match="cannot watch nodes"):
        raise_for_status("watch", status, "Reason", b"{}")
    raise_for_status("watch", 200, "OK", b"")


# --- kubeconfig --------------------------------------------------------------------------------

KUBEADM_STYLE = """\
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: {ca}
    server: https://192.0.2.1:6443   # the control plane
  name: kubernetes
- cluster:
    server: "http://198.51.100.1:8080"
    insecure-skip-tls-verify: true
  name: other
contexts:
- context:
    cluster: kubernetes
    user: kubernetes-admin
  name: kubernetes-admin@kubernetes
current-context: kubernetes-admin@kubernetes
kind: Config
preferences: {{}}
users:
- name: kubernetes-admin
  user:
    client-certificate: certs/client.crt
    client-key-data: {key}
- name: 'tokenuser'
  user:
    token: abc.def
"""


def kubeconfig(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    return path


def test_kubeadm_style_kubeconfig(tmp_path: Path) -> None:
    ca, key = base64.b64encode(b"CA PEM").decode(), base64.b64encode(b"KEY PEM").decode()
    access = load_kubeconfig(kubeconfig(tmp_path, KUBEADM_STYLE.format(ca=ca, key=key)))
    assert access.server == "https://192.0.2.1:6443"
    assert access.ca_data == b"CA PEM" and access.key_data == b"KEY PEM"
    assert access.cert_file == tmp_path / "certs/client.crt"  # relative to the kubeconfig
    assert access.token is None and not access.insecure


def test_flow_mappings_other_than_empty_are_refused_naming_the_line(tmp_path: Path) -> None:
    text = "contexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n"
    with pytest.raises(ConfigError, match="line 3: this YAML form is not supported"):
        load_kubeconfig(kubeconfig(tmp_path, text))


def test_json_kubeconfig_with_token_and_insecure(tmp_path: Path) -> None:
    doc = {"clusters": [{"name": "c", "cluster": {"server": "https://h:6443/",
                                                  "insecure-skip-tls-verify": True}}],
           "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
           "users": [{"name": "u", "user": {"token": "t0k"}}], "current-context": "x"}
    access = load_kubeconfig(kubeconfig(tmp_path, json.dumps(doc)))
    assert (access.server, access.token, access.insecure) == ("https://h:6443", "t0k", True)


@pytest.mark.parametrize("user, message", [
    ({"exec": {"command": "aws"}}, "'exec', which the node agent does not support"),
    ({"client-key-data": "!!"}, "client-key-data is not base64"),
])
def test_kubeconfig_refusals_name_the_field(tmp_path: Path, user: dict[str, Any],
                                            message: str) -> None:
    doc = {"clusters": [{"name": "c", "cluster": {"server": "https://h"}}],
           "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
           "users": [{"name": "u", "user": user}], "current-context": "x"}
    with pytest.raises(ConfigError, match=message):
        load_kubeconfig(kubeconfig(tmp_path, json.dumps(doc)))


def test_kubeconfig_missing_context_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no context named 'nope'"):
        load_kubeconfig(kubeconfig(tmp_path, "contexts: []\ncurrent-context: nope\n"))


def test_in_cluster_reads_the_service_account(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("tok\n")
    (tmp_path / "ca.crt").write_text("pem")
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    access = in_cluster(env, tmp_path)
    assert access.server == "https://[fd00::1]:443"
    assert access.bearer() == "tok" and access.ca_file == tmp_path / "ca.crt"
    (tmp_path / "token").write_text("rotated")
    assert access.bearer() == "rotated"  # read again for each connection


def test_no_config_anywhere_says_what_to_pass() -> None:
    with pytest.raises(ConfigError, match="--kubeconfig or KUBECONFIG"):
        resolve_access(None, {})


def test_kubeconfig_env_takes_its_first_existing_file(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, json.dumps({
        "clusters": [{"name": "c", "cluster": {"server": "http://h:8080"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c"}}], "current-context": "x"}))
    access = resolve_access(None, {"KUBECONFIG": f"{tmp_path}/missing:{path}"})
    assert access.server == "http://h:8080" and access.bearer() is None


def test_miniyaml_scalars_and_nesting() -> None:
    doc = miniyaml.load("a: 'it''s'\nb: \"x\\ty\"\nc:\n  - 1\n  -\n    d: ~\ne: true # c\n")
    assert doc == {"a": "it's", "b": "x\ty", "c": ["1", {"d": None}], "e": True}


# --- backoff -----------------------------------------------------------------------------------


def test_backoff_doubles_to_the_cap_and_resets() -> None:
    b = Backoff(first=0.5, cap=4.0, jitter=0.0)
    assert [b.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next() == 0.5


def test_backoff_jitter_only_shortens() -> None:
    assert Backoff(first=1.0, jitter=0.5, rng=lambda: 1.0).next() == 0.5
    assert Backoff(first=1.0, jitter=0.5, rng=lambda: 0.0).next() == 1.0


# --- the watcher against a fake client -------------------------------------------------------


class FakeClient:
    """Scripted answers: each list/watch call takes the next item (an exception is raised)."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.calls: list[tuple[str, str]] = []

    def _next(self) -> Any:
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def list_nodes(self) -> NodeList:
        self.calls.append(("list", ""))
        return self._next()  # type: ignore[no-any-return]

    def watch_nodes(self, version: str, timeout: int) -> Iterator[WatchEvent]:
        self.calls.append(("watch", version))
        return iter(self._next())


def ev(kind: str, rv: str) -> WatchEvent:
    return WatchEvent(kind, {"metadata": {"name": "n", "resourceVersion": rv}})


def run_watcher(script: list[Any]) -> tuple[FakeClient, list[Message], list[str]]:
    client = FakeClient(script + [ApiDenied("cannot watch nodes: forbidden: end of script")])
    out: queue.Queue[Message] = queue.Queue()
    logs: list[str] = []
    watcher = Watcher(client, out, lambda level, text: logs.append(f"{level} {text}"),
                      Backoff(first=0.0, jitter=0.0))
    watcher.run()  # in this thread: it returns on the final ApiDenied
    messages = []
    while not out.empty():
        messages.append(out.get())
    return client, messages, logs


def test_watcher_resumes_from_the_last_version_after_a_break() -> None:
    client, messages, logs = run_watcher([
        NodeList([], "10"), [ev("ADDED", "11"), ev("BOOKMARK", "12")],  # stream ends
        ApiUnavailable("watch of nodes broken"),  # connection dropped at open
        [ev("MODIFIED", "13")]])
    assert client.calls == [("list", ""), ("watch", "10"), ("watch", "12"), ("watch", "12"),
                            ("watch", "13")]
    kinds = [type(m).__name__ for m in messages]
    assert kinds == ["Synced", "Changed", "Changed", "Fatal"]  # no bookmark handed on
    assert sum("keeping the conflist and routes" in line for line in logs) == 1
    assert any("reachable again" in line for line in logs)


def test_watcher_lists_again_on_410() -> None:
    client, messages, logs = run_watcher([
        NodeList([], "10"), WatchExpired("cannot watch nodes: too old resource version"),
        NodeList([], "20"), []])
    assert client.calls == [("list", ""), ("watch", "10"), ("list", ""), ("watch", "20"),
                            ("watch", "20")]
    assert [type(m) for m in messages] == [Synced, Synced, Fatal]
    assert any("listing the nodes again" in line for line in logs)


def test_watcher_unreachable_api_says_so_once_and_retries() -> None:
    down = [ApiUnavailable("cannot list nodes: API server unreachable") for _ in range(4)]
    client, messages, logs = run_watcher([*down, NodeList([], "3"), []])
    assert [c for c, _ in client.calls].count("list") == 5
    assert sum("unreachable" in line for line in logs) == 1
    assert isinstance(messages[0], Synced) and isinstance(messages[-1], Fatal)


def test_watcher_hands_a_denial_to_the_agent() -> None:
    _, messages, _ = run_watcher([])
    assert len(messages) == 1 and isinstance(messages[0], Fatal)
    assert "forbidden" in str(messages[0].error)


def test_changed_events_carry_the_object() -> None:
    _, messages, _ = run_watcher([NodeList([], "1"), [ev("DELETED", "2")]])
    changed = [m for m in messages if isinstance(m, Changed)]
    assert changed[0].event.type == "DELETED"


def test_watcher_ends_the_agent_on_an_unexpected_error() -> None:
    _, messages, _ = run_watcher([KeyError("metadata")])
    assert len(messages) == 1 and isinstance(messages[0], Fatal)
    assert "watching the nodes failed: KeyError('metadata')" in str(messages[0].error)


def test_kubeconfig_without_current_context_says_how_to_set_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no current-context: set one"):
        load_kubeconfig(kubeconfig(tmp_path, "apiVersion: v1\nkind: Config\n"))
