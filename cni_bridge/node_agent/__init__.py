"""``cni-bridge node-agent``: the node's network from the Kubernetes API.

Lists and watches the Node objects; writes this node's conflist from its pod CIDRs
(`conflist`); programs a route to every other node's pod CIDR via its InternalIP where on-link
(`route_plan`, `route_exec`); keeps both current (`agent`). Imported only by that command:
nothing here is loaded by a plugin call.
"""
