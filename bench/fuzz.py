#!/usr/bin/env python3
"""Long fuzz runs: the unit suite's fuzzers with many more examples.

    .venv/bin/python bench/fuzz.py                     # 5 000 examples per property
    .venv/bin/python bench/fuzz.py --examples 50000 --only protocol

The default test suite runs the same properties with a few dozen examples each
(``tests/unit/core/test_protocol_fuzz.py``: the decoder; ``tests/unit/server/test_fuzz.py``:
the ``/ws`` endpoint and hub, floods, a bystander session).  This runs them with
``COVIEW_FUZZ_EXAMPLES`` set, inside a throw-away loopback-only network namespace
(``ip netns add cvfuzz-<pid>``, as bench/run.py; needs root), and passes pytest's exit
status on.  A failure prints the smallest failing example Hypothesis found.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parent.parent
FILES = {
    "protocol": "tests/unit/core/test_protocol_fuzz.py",
    "server": "tests/unit/server/test_fuzz.py",
    "http": "tests/unit/server/test_http_hostile.py",
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=5000, help="examples per property")
    parser.add_argument(
        "--only", default=",".join(FILES), help="comma-separated: " + ", ".join(FILES)
    )
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("pytest_args", nargs="*", help="passed on to pytest (after --)")
    args = parser.parse_args(argv)
    if not args.inside:
        if os.geteuid() != 0 or shutil.which("ip") is None:
            print(
                "bench/fuzz.py must run as root with `ip` (iproute2): it runs the fuzzers in a "
                "loopback-only network namespace.",
                file=sys.stderr,
            )
            return 2
        ns = f"cvfuzz-{os.getpid()}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
            cmd = ["ip", "netns", "exec", ns, sys.executable, str(SCRIPT), "--inside"]
            return subprocess.call([*cmd, *argv])
        finally:
            subprocess.run(["ip", "netns", "del", ns], check=False)
    if sorted(os.listdir("/sys/class/net")) != ["lo"]:
        raise SystemExit("refusing to run: this namespace has more than lo")
    files = [FILES[name.strip()] for name in args.only.split(",") if name.strip()]
    env = dict(os.environ, COVIEW_FUZZ_EXAMPLES=str(args.examples))
    cmd = [sys.executable, "-m", "pytest", *files, "-q", "-p", "no:cacheprovider"]
    cmd += ["--hypothesis-show-statistics", *args.pytest_args]
    print(f"$ COVIEW_FUZZ_EXAMPLES={args.examples} {' '.join(cmd[2:])}", flush=True)
    return subprocess.call(cmd, env=env, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
