"""``cni-bridge node-agent``: the node's network from the Kubernetes API. Imported only by that
command: nothing here is loaded by a plugin call."""
