"""A real Debian bookworm guest (systemd, systemd-networkd, systemd-resolved, sshd) under QEMU.

Where the busybox guest (integration/guest) checks what slirpnet does, this one checks that a
distribution's own network stack gets on with it unchanged: networkd's DHCP client with its
defaults (the guest keeps MTU 1500), resolved's feature probing, sshd behind a forward.

To add checks, write shell lines for the guest and assert on their results, in one boot if
you can (a boot is about 30 s of TCG on two busy cores).  A test takes the session fixture
``debian_image`` (integration/conftest.py: builds or finds the image, skips without QEMU,
debootstrap or root), runs slirpnet with ``integration.server.serving`` and calls
``run = await boot_async(debian_image, server.netdev(), script, timeout=300)``.  The script
runs as root under dash once network-online.target is reached, after SCRIPT_FUNCTIONS:
``check NAME COMMAND...`` reports ``RESULT NAME ok|fail DETAIL`` with the command's last line
of output as DETAIL, ``result NAME ok|fail DETAIL`` reports directly.  On the host,
``run.results[NAME].ok`` and ``.detail`` hold them; assert on the detail's exact value (an
address, a hash) so a check cannot pass by accident, and put ``run.report()`` (the script's
output and the serial console) in the assertion's message.  ``files=`` puts more files beside
the script; ``extra_qemu_args`` adds QEMU arguments.  For steps the host takes while the guest
runs, integration/debian/services.py's HTTP server has marks the guest waits on
(``wait_host NAME SECONDS``), as test_debian_guest.py's ssh check does; its DNS upstream
answers EDNS as real resolvers do.  Changing the image (packages in build.py, files under
tree/) rebuilds it on the next run, in about one to three minutes; ``python3 -m
integration.debian build`` does it by hand.
"""

from integration.debian.build import DebianImage, build_image, default_debian_cache_dir
from integration.debian.qemu import (
    DEFAULT_MAC,
    SCRIPT_FUNCTIONS,
    DebianRun,
    Result,
    boot,
    boot_async,
    qemu_command,
)

__all__ = [
    "DEFAULT_MAC",
    "SCRIPT_FUNCTIONS",
    "DebianImage",
    "DebianRun",
    "Result",
    "boot",
    "boot_async",
    "build_image",
    "default_debian_cache_dir",
    "qemu_command",
]
