"""A virtual X screen (Xvfb) for headed browsers: Firefox captures it as "the screen".

Xvfb picks a free display number itself (``-displayfd``) and listens only on the abstract
X11 socket, which belongs to the network namespace it was started in: a browser started
in the same namespace reaches it, nothing else does, and no file lands in /tmp/.X11-unix.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from pathlib import Path

XVFB = shutil.which("Xvfb") or "/usr/bin/Xvfb"
#: The screen every test sees: what a Firefox visitor shares is this screen.
SCREEN = (1280, 720)


class Xvfb:
    def __init__(self, tmp: Path, size: tuple[int, int] = SCREEN) -> None:
        self.tmp = tmp
        self.size = size
        self.display = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20) -> str:
        """Start the server; returns its ``DISPLAY`` (e.g. ``:1``)."""
        if not os.path.exists(XVFB):
            raise RuntimeError("Xvfb is missing: scripts/bootstrap --test installs xvfb")
        read, write = os.pipe()
        width, height = self.size
        with open(self.tmp / "xvfb.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    XVFB,
                    "-displayfd",
                    str(write),
                    "-screen",
                    "0",
                    f"{width}x{height}x24",
                    "-nolisten",
                    "tcp",
                    "-nolisten",
                    "unix",
                    "-noreset",
                ],
                pass_fds=(write,),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        os.close(write)
        try:
            deadline = time.monotonic() + timeout
            data = b""
            while not data.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([read], [], [], left)[0]:
                    raise RuntimeError("Xvfb did not start:\n" + self.log())
                chunk = os.read(read, 64)
                if not chunk:
                    raise RuntimeError("Xvfb exited:\n" + self.log())
                data += chunk
        finally:
            os.close(read)
        self.display = ":" + data.decode().strip()
        return self.display

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def log(self) -> str:
        try:
            return (self.tmp / "xvfb.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""
