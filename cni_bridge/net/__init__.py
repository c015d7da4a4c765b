"""rtnetlink operations: namespaces, links, bridges, veths, addresses, routes, neighbours,
sysctls, over the socket layer of ``cni_bridge.netlink``.

The only package that uses pyroute2, and only its message classes (as the codec), imported on
the first request. A thin executor with no CNI policy: the bridge plugin decides what to do,
these modules do it and report what they found. Import the module you need: a plugin that
needs one (loopback: netns, errors) does not load the others.

Usage::

    with open_netns(cni_netns) as cns, Netlink.for_current() as host, Netlink.for_netns(cns) as ct:
        br = ensure_bridge(host, BridgeSpec("cni0", mtu=1500))
        pair = create_veth_pair(host, ct, VethSpec("eth0", mtu=1500))
        set_master(host, pair.host, br)
        set_link_up(host, pair.host)

Errors are CniError subclasses (see ``errors``); nothing from pyroute2 escapes this package.
"""
