"""IPAM: ``facade.ipam_for`` for the bridge, and the host-local plugin.
Nothing is imported here, so the ``host-local`` role loads only what it uses.
"""
