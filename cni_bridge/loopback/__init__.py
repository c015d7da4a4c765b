"""The loopback plugin: sets ``lo`` up in the container's network namespace."""
