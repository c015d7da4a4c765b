"""host-local IPAM, swappable with the reference plugin on a live node."""
