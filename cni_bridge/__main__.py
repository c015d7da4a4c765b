from cni_bridge.cli import main

main()
