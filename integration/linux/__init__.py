"""The real Linux TCP stack as a guest of slirpnet (or libslirp), in a network namespace.

In a test: ``async with open_linux_guest(tmp_path, faults=Faults(loss=0.02)) as guest:``
(from ``harness`` and ``relay``), then ``stream = await guest.connect("10.0.2.2", port)``
reaches a loopback server through the backend.  ``traffic`` has the servers and the
hash-checked transfers; ``nshost`` makes namespace hosts for the guest to reach.
"""
