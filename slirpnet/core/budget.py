"""The buffer memory a VM's TCP flows share.

A TCP flow holds host data until the guest ACKs it (up to ``SEND_BUFFER``) and
guest data until the host socket takes it, plus the window it has offered (up to
``RECEIVE_BUFFER``).  The first ``SEND_RESERVE`` and ``RECEIVE_RESERVE`` bytes are
the flow's own, so that every flow can always move; what it holds beyond them comes
out of its VM's ``BufferBudget``.  A VM's TCP buffers thus never exceed
``limit + max_flows * (SEND_RESERVE + RECEIVE_RESERVE)``, however many flows want more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# Enough for a dozen flows at full speed; past it, flows of the VM share it.
VM_TCP_BUFFER: Final = 64 << 20


@dataclass
class BufferBudget:
    limit: int
    used: int = 0

    @property
    def free(self) -> int:
        return max(0, self.limit - self.used)
