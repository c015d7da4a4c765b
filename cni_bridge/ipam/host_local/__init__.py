"""host-local IPAM, swappable with the reference plugin on a live node.

    config      the network config -> HostLocalConfig (frozen, ipaddress types)
    allocator   pure round-robin planning
    store       on-disk layout constants, Owner, the Store interface
    file_store  FileStore: byte-compatible files, atomic creates, flock with a bounded wait
    service     ADD/DEL/CHECK/GC/STATUS semantics over any Store
    plugin      HostLocalPlugin: Request -> config + FileStore -> service
"""
