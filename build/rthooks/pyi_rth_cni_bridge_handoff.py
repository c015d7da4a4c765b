"""PyInstaller run-time hook: give this plugin call to a running ``cni-bridge serve``.

Runs right after ``pyi_rth_cni_bridge_env`` (so the environment handed over is the one the
runtime gave us) and before the start-up cache hook, whose work a handed-over call never needs.
When the bootloader's own hand-off (build/bootloader/cni_handoff.c) has decided, it returns at
once. Otherwise it imports only builtin modules (``_socket``, ``os``, ``sys``) and
our small ``cni_bridge.serve.client.handoff`` and ``serve.wire``, which say when a call is handed
over and what happens if the server goes away. It returns when the call is to run here, as
without a server;
otherwise the process exits with the server's status.
"""


def _hand_off() -> None:
    import os

    # The bootloader's native hand-off decided already (cni_handoff.c): nothing to import. Popped,
    # so the plugin's own child processes never see it. (Same name as wire.RUN_HERE_ENV.)
    if os.environ.pop("CNI_BRIDGE_RUN_HERE", None) is not None:
        return
    from cni_bridge.serve.client.handoff import main

    main()


_hand_off()
del _hand_off
