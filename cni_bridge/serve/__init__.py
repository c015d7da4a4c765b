"""Resident mode: ``cni-bridge serve`` runs plugin calls handed over by the executables.

    wire     the protocol (frames, descriptors, the build digest); builtin modules only
    client/  handoff (a plugin's first step: hand the call over), query (ask for status)
    server/  main (load, bind, run), loop (accept, fork a worker per call, reap), listener
             (the socket), preload, peer (who may be served), worker (one call in the
             caller's namespaces), spare (workers forked in advance), view (what status
             reads), health + backoff (when to check the firewall), watch (nftables
             notifications), heal + restore (the check and the restore, in a child)
"""
