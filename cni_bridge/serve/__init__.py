"""Resident mode: ``cni-bridge serve`` runs plugin calls handed over by the executables.

    wire      the protocol (frames, descriptors, the build digest); builtin modules only
    handoff   the client, run by a plugin at the very top of its start-up
    main      ``cni-bridge serve``: load everything, bind, run
    listener  the socket (0600, never stolen from a live server)
    preload   importing everything a call needs, once
    server    the event loop: accepts, forks a worker per call, reaps, keeps the view
    worker    one call in a forked child, inside the caller's namespaces
    peer      who may be served (credentials, namespaces, build)
    health    when to check the firewall (notifications, periodic), in the main process
    watch     nftables change notifications (the health watcher's trigger)
    heal      the health check and the restore, run in a forked child
    view      what the server keeps in memory for ``cni-bridge status``
    query     the operator side of ``status``: asking a running server
"""
