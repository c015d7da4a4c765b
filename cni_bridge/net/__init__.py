"""rtnetlink operations (namespaces, links, bridges, veths, addresses, routes, neighbours,
sysctls) over the socket layer of ``cni_bridge.netlink``.

The only package that uses pyroute2, and only its message classes (as the codec), imported on
the first request. A thin executor with no CNI policy. Import the module you need: a plugin
that needs one (loopback: netns, errors) does not load the others. Errors are CniError
subclasses (see ``errors``); nothing from pyroute2 escapes this package.
"""
