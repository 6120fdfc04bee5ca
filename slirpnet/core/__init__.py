"""The network of one namespace, with no I/O: fed frames and the time, it returns frames
and actions."""
