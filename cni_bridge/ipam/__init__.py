"""IPAM: the facade the bridge calls (``facade.ipam_for``) and the host-local plugin.

Public surface:
    cni_bridge.ipam.facade      ipam_for(req, extra_arg_keys) -> Ipam; DelegatedIpam (CNI_PATH)
    cni_bridge.ipam.host_local  HostLocalPlugin: add/delete/check/gc/status/addresses_held
Nothing is imported here, so starting the ``host-local`` role loads only what it uses.
"""
