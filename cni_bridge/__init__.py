"""cni-bridge: the CNI bridge, host-local and portmap plugins in one executable."""

__version__ = "0.1.0"
# The most stdin a call reads: far above any real config; bounds memory on hostile input.
MAX_STDIN = 16 * 1024 * 1024
# The names the executable answers to as a CNI plugin (each one role).
PLUGIN_ROLES = ("bridge", "host-local", "portmap", "loopback")
