"""The operator's ``cni-bridge`` commands: ``main`` (dispatch) over ``parser``, the ``*_cmd``
modules, ``examine`` and ``report`` (status, gc, reconcile), ``runtime`` (a conflist run as
libcni does) and the demo (``demo``, ``demo_world``, ``demo_echo``)."""
