"""slirpnet: a user-mode network backend for virtual machines, on trio."""

__version__ = "0.1.0"
