"""slirpnet: a user-mode network backend for virtual machines, on trio.

Embedding: ``async with open_namespace(NetworkSettings()) as namespace`` runs a
namespace in your trio program; ``async with namespace.attach("vm") as port``
plugs in a VM, whose Ethernet frames you hand to ``port.feed`` and whose
replies ``await port.receive()`` returns.  See README.md.
"""

__version__ = "0.1.0"

from slirpnet import pure

pure.install()  # before anything imports a module that may be compiled

# ruff: noqa: E402
from slirpnet.core.settings import NetworkSettings, StaticLease, Upstream
from slirpnet.core.stats import Stats
from slirpnet.shell.port import Port
from slirpnet.shell.resolvconf import system_upstreams
from slirpnet.shell.runtime import NamespaceRuntime, open_namespace

__all__ = [
    "NamespaceRuntime",
    "NetworkSettings",
    "Port",
    "StaticLease",
    "Stats",
    "Upstream",
    "__version__",
    "open_namespace",
    "system_upstreams",
]
