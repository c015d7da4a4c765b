from cni_bridge.entry import main

main()
