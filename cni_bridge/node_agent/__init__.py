"""``cni-bridge node-agent``: the node's network from the Kubernetes API.

``admin.agent_cmd`` (options) -> `agent` (the loop: one reconcile of conflist and routes per
batch of news).
The API side: `kubeconfig` (+ `miniyaml`), `api` (HTTP), `watchstream` (events), `watcher`
(list/watch/retry on a thread), `backoff`. The node side: `nodes` (Node objects, overlaps),
`conflist` (through the `install --subnet` planner), `route_plan` (pure), `route_exec` (net
layer), `route_events` (rtnetlink notifications). Imported only by that command: nothing here
is loaded by a plugin call.
"""
