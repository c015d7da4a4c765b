"""cni-bridge: the CNI bridge, host-local and portmap plugins in one executable."""

__version__ = "0.1.0"
