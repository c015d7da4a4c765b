"""PyInstaller entry point: the frozen executable's role comes from basename(argv[0])."""

from cni_bridge.entry import main

main()
