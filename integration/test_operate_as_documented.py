"""Operating a running guest as the README says: its capture read by tcpdump while it runs,
``slirpnet ctl`` with no socket named, the log's VM numbers, a reader that stops early."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import trio

from integration.guest import GuestImage, boot_async
from integration.server import SLIRPNET, pacing, serving
from integration.services import tftp_server


def tcpdump() -> str:
    path = shutil.which("tcpdump")
    if path is None:
        pytest.skip("tcpdump is not installed (integration/install-deps.sh installs it)")
    return path


async def test_a_running_vm_is_captured_listed_and_logged_as_documented(
    guest_image: GuestImage, tmp_path: Path
) -> None:
    reader = tcpdump()
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    captures = tmp_path / "not" / "there" / "yet"
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}  # where serve and ctl meet
    args = ["--pcap", str(captures), "--dns-upstream", "127.0.0.1:9"]

    async def ctl(*argv: str) -> subprocess.CompletedProcess[bytes]:
        return await trio.run_process(
            [*SLIRPNET, "ctl", *argv], env=env, capture_stdout=True, capture_stderr=True
        )

    async with (
        tftp_server({}) as tftp,
        serving(args, tmp_path / "slirpnet.log", env=env, cwd=tmp_path) as server,
    ):
        script = pacing(tftp.port) + "ping -c 3 10.0.2.2\nmark pinged\nwait_for done\n"
        async with trio.open_nursery() as nursery:
            runs = []

            async def guest() -> None:
                runs.append(await boot_async(guest_image, server.netdev(), script, 180))

            nursery.start_soon(guest)
            with trio.fail_after(150):
                while "pinged" not in tftp.marks:
                    await trio.sleep(0.2)

            # The VM runs on: its capture holds the pings already.
            assert (captures.stat().st_mode & 0o777) == 0o700
            capture = captures / "default-vm1.pcap"
            read = await trio.run_process(
                [reader, "-n", "-r", str(capture)], capture_stdout=True, capture_stderr=True
            )
            text = read.stdout.decode()
            assert "10.0.2.15 > 10.0.2.2: ICMP echo request" in text, text
            assert "10.0.2.2 > 10.0.2.15: ICMP echo reply" in text, text

            # ctl finds the server and its one namespace unasked; options go anywhere.
            table = (await ctl("vms")).stdout.decode()
            header, row = table.splitlines()
            assert max(len(header), len(row)) <= 100
            assert row.split()[0] == "1"
            assert (await ctl("vms", "--json")).stdout.startswith(b"[")

            # A reader that has gone: no traceback, no error.
            read_end, write_end = os.pipe()
            os.close(read_end)
            try:
                closed = await trio.run_process(
                    [*SLIRPNET, "ctl", "vms"],
                    env=env,
                    stdout=write_end,
                    capture_stderr=True,
                    check=False,
                )
            finally:
                os.close(write_end)
            assert (closed.returncode, closed.stderr) == (0, b"")

            tftp.marks.append("done")
        (run,) = runs
        assert run.rc == 0, run.output
    log = server.stderr()
    # The VM is number 1 in the log as in ctl, on every line about it.
    connected = [line for line in log.splitlines() if "VM connected on unix:" in line]
    assert len(connected) == 1 and " vm=1 " in connected[0], log
    assert "#" not in log, log
