"""cni-bridge: the CNI bridge, host-local and portmap plugins in one executable."""

__version__ = "0.1.0"
# The names the executable answers to as a CNI plugin (each one role).
PLUGIN_ROLES = ("bridge", "host-local", "portmap", "loopback")
