"""PyInstaller entry point: the frozen executable's role comes from basename(argv[0])."""

from cni_bridge.cli import main

main()
