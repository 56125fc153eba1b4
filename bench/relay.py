#!/usr/bin/env python3
"""Coview media relay CPU bench: forwarding encoded frames against aiortc's re-encoding.

    .venv/bin/python bench/relay.py [--seconds 10] [--only 720p,1080p] [--viewers 1,2]

For each resolution (720p30, 1080p30), viewer count (1, 2) and mode (forwarding,
re-encoding), one publisher process sends a VP8 stream to the relay, which runs in this
process (``coview_server.relay.Relay``, with a stand-in hub routing messages by ``pc``),
and viewer processes decode what the relay sends them.  The relay's CPU is this
process's CPU time (``time.process_time``: every thread, decoders and encoders
included) over a ``--seconds`` window after warm-up; publisher and viewers run in
their own processes, so their encoding and decoding is not counted.  Prints a table
(relay CPU in % of one core, per viewer stream, frame rate decoded at the viewers) and
the forwarding/re-encoding ratio of the same run; writes bench/results/relay-<timestamp>.json.

Loopback only: every aiortc peer gathers host candidates on 127.0.0.1 and nothing else
(``aiortc_internals.set_default_host_addresses``) and has no STUN/TURN server; as root
the whole bench also runs in a throw-away network namespace that has only ``lo``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
BENCH = SCRIPT.parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT / "server"), str(ROOT / "web")]

import av  # noqa: E402
from aiortc import MediaStreamError, MediaStreamTrack  # noqa: E402
from aiortc.mediastreams import VIDEO_TIME_BASE  # noqa: E402

from coview import protocol as P  # noqa: E402
from coview_server import aiortc_internals as internals  # noqa: E402
from coview_server.relay import AiortcPeer, Relay  # noqa: E402

RESULTS = BENCH / "results"
LOOPBACK = ("127.0.0.1",)
FPS = 30
CLIP_FRAMES = 150  # 5 s: one keyframe per loop (and on request), like a browser's stream
#: name -> (width, height, VP8 bitrate of the publisher's stream, as a browser would send)
RESOLUTIONS = {"720p": (1280, 720, 1_500_000), "1080p": (1920, 1080, 2_500_000)}
BUDGET_PCT = 8.0  # % of one core per 1080p30 viewer stream, forwarding
WARMUP_FRAMES = 45  # every viewer has decoded this many frames before the window opens
SETUP_TIMEOUT_S = 30.0


# --- namespace (as bench/run.py) --------------------------------------------------------


def outside(argv: list[str]) -> int:
    """As root: run inside a fresh loopback-only network namespace, always deleted."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        print(
            "(not root or no `ip`: running without a network namespace; every peer still "
            "gathers on 127.0.0.1 only)",
            file=sys.stderr,
        )
        return inside(parse(argv))
    ns = f"cvrelay-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        cmd = ["ip", "netns", "exec", ns, sys.executable, str(SCRIPT)]
        return subprocess.call([*cmd, "--inside", *argv])
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


# --- the publisher's stream -----------------------------------------------------------------


def _encode(width: int, height: int, setting: int) -> list[bytes]:
    source = av.open(f"testsrc2=size={width}x{height}:rate={FPS}", format="lavfi")
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.bit_rate = setting
    codec.time_base = Fraction(1, FPS)
    codec.gop_size = 100_000  # keyframes only when asked (the loop restarts at one)
    codec.qmin, codec.qmax = 2, 63
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    codec.thread_count = 2
    packets: list[bytes] = []
    try:
        for n, frame in enumerate(source.decode(video=0)):
            if n == CLIP_FRAMES:
                break
            frame.pts = n
            packets += [bytes(p) for p in codec.encode(frame)]
        packets += [bytes(p) for p in codec.encode(None)]
    finally:
        source.close()
    return packets[:CLIP_FRAMES]


def encode_clip(width: int, height: int, bitrate: int, path: Path) -> float:
    """CLIP_FRAMES of ffmpeg's testsrc2 as VP8 near ``bitrate``; returns the bitrate reached.

    libvpx through PyAV misses its target on this content (about 2x over): start at half,
    then correct the setting from what a pass produced, up to three passes.
    """
    setting = bitrate // 2
    for _ in range(3):
        packets = _encode(width, height, setting)
        actual = sum(len(d) for d in packets) * 8 / (CLIP_FRAMES / FPS)
        if abs(actual - bitrate) <= 0.15 * bitrate:
            break
        setting = max(100_000, int(setting * bitrate / actual))
    with path.open("wb") as out:
        for data in packets:
            out.write(struct.pack("!I", len(data)) + data)
    return actual


def read_clip(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        (size,) = struct.unpack_from("!I", data, pos)
        out.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return out


class ClipTrack(MediaStreamTrack):
    """The pre-encoded clip in a loop at 30 fps; a keyframe request restarts it (frame 0)."""

    kind = "video"

    def __init__(self, frames: list[bytes]) -> None:
        super().__init__()
        self._frames = frames
        self._next = 0
        self._count = 0
        self._start: float | None = None

    def keyframe(self) -> None:
        self._next = 0

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            await asyncio.sleep(max(0.0, self._start + self._count / FPS - time.monotonic()))
        packet = av.Packet(self._frames[self._next])
        packet.pts = self._count * (90000 // FPS)
        packet.time_base = VIDEO_TIME_BASE
        self._next = (self._next + 1) % len(self._frames)
        self._count += 1
        return packet


# --- child processes: a publisher or a viewer ---------------------------------------------


async def child(args: argparse.Namespace) -> None:
    internals.set_default_host_addresses(LOOPBACK)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.lifetime  # stops by itself whatever the parent does

    def out(msg: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    frames = 0
    size = (0, 0)
    consumers: list[asyncio.Task[None]] = []
    if args.child == "publisher":
        peer = AiortcPeer(args.pc, "offerer", [], out, host_addresses=LOOPBACK)
        track = ClipTrack(read_clip(Path(args.clip)))
        sender = peer.pc.addTrack(track)
        internals.on_keyframe_request(sender, track.keyframe)
    else:
        peer = AiortcPeer(args.pc, "answerer", [], out, host_addresses=LOOPBACK)
        peer.pc.addTransceiver("video", direction="recvonly")

        async def consume(remote: MediaStreamTrack) -> None:
            nonlocal frames, size
            try:
                while True:
                    frame = await remote.recv()
                    frames += 1
                    size = (frame.width, frame.height)
            except MediaStreamError:
                pass

        peer.pc.on("track", lambda t: consumers.append(loop.create_task(consume(t))))

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while True:
            try:
                line = await asyncio.wait_for(reader.readline(), max(0.1, deadline - loop.time()))
            except TimeoutError:
                break
            if not line:
                break
            msg = json.loads(line)
            bench = msg.get("_bench")
            if bench == "start":
                peer.start()
            elif bench == "count":
                out({"_bench": "count", "frames": frames, "size": size, "cpu": time.process_time()})
            elif bench is None:
                peer.remote(msg)
    finally:
        for task in consumers:
            task.cancel()
        await peer.close()


# --- the relay side (this process) ------------------------------------------------------------


@dataclass
class Child:
    pc: str
    proc: asyncio.subprocess.Process
    counts: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    reader: asyncio.Task[None] | None = None

    def send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())

    async def count(self) -> dict[str, Any]:
        self.send({"_bench": "count"})
        return await asyncio.wait_for(self.counts.get(), 10)


async def run_case(
    res: str, viewers: int, forward: bool, clip: Path, seconds: float
) -> dict[str, Any]:
    children: dict[str, Child] = {}

    def emit(msg: dict[str, Any]) -> None:
        P.validate(msg, P.C2S)
        target = children.get(msg["pc"])
        if target is not None and msg["type"] != "peer_status":
            target.send(msg)

    relay = Relay(emit, forward=forward, host_addresses=LOOPBACK)

    async def spawn(role: str, pc: str) -> Child:
        cmd = [
            sys.executable,
            str(SCRIPT),
            "--child",
            role,
            "--pc",
            pc,
            "--clip",
            str(clip),
            "--lifetime",
            str(seconds + 90),
        ]
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        c = Child(pc, proc)

        async def read() -> None:
            assert proc.stdout is not None
            while line := await proc.stdout.readline():
                msg = json.loads(line)
                if msg.get("_bench") == "count":
                    c.counts.put_nowait(msg)
                else:
                    P.validate(msg, P.C2S)
                    relay.receive(msg)

        c.reader = asyncio.get_running_loop().create_task(read())
        children[pc] = c
        return c

    share = f"{res}-{viewers}-{forward}"
    try:
        publisher = await spawn("publisher", "pub")
        relay.receive(P.make("peer", share=share, pc="pub", role="answerer", ice_servers=[]))
        publisher.send({"_bench": "start"})
        views = []
        for i in range(viewers):
            views.append(await spawn("viewer", f"v{i}"))
            relay.receive(P.make("peer", share=share, pc=f"v{i}", role="offerer", ice_servers=[]))
        deadline = time.monotonic() + SETUP_TIMEOUT_S
        while True:
            counts = [await v.count() for v in views]
            if all(c["frames"] >= WARMUP_FRAMES for c in counts):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{share}: viewers did not start: {counts}")
            await asyncio.sleep(0.2)

        stats0 = relay.stats()
        first = [await v.count() for v in views]
        pub0 = await publisher.count()
        wall0, cpu0, use0 = time.monotonic(), time.process_time(), os.times()
        await asyncio.sleep(seconds)
        wall1, cpu1, use1 = time.monotonic(), time.process_time(), os.times()
        last = [await v.count() for v in views]
        pub1 = await publisher.count()
        stats1 = relay.stats()
        wall = wall1 - wall0
        cpu_pct = 100.0 * (cpu1 - cpu0) / wall
        fps = [(b["frames"] - a["frames"]) / wall for a, b in zip(first, last, strict=True)]
        return {
            "resolution": res,
            "viewers": viewers,
            "mode": "forwarding" if forward else "re-encoding",
            "seconds": wall,
            "relay_cpu_pct": cpu_pct,
            # Kernel time is mostly loopback: each sendto also runs the receiver's side.
            "relay_user_pct": 100.0 * (use1.user - use0.user) / wall,
            "relay_sys_pct": 100.0 * (use1.system - use0.system) / wall,
            "relay_cpu_pct_per_viewer": cpu_pct / viewers,
            "viewer_fps": fps,
            "viewer_size": [c["size"] for c in last],
            "relay_frames_in_fps": (stats1["frames_received"] - stats0["frames_received"]) / wall,
            "relay_frames_forwarded": stats1["frames_forwarded"] - stats0["frames_forwarded"],
            "publisher_cpu_pct": 100.0 * (pub1["cpu"] - pub0["cpu"]) / wall,
            "viewer_cpu_pct": [
                100.0 * (b["cpu"] - a["cpu"]) / wall for a, b in zip(first, last, strict=True)
            ],
        }
    finally:
        for pc in list(children):
            relay.receive(P.make("peer_gone", share=share, pc=pc))
        await relay.close()
        for c in children.values():
            assert c.proc.stdin is not None
            c.proc.stdin.close()
        for c in children.values():
            try:
                await asyncio.wait_for(c.proc.wait(), 15)
            except TimeoutError:
                c.proc.kill()
                await c.proc.wait()
            if c.reader is not None:
                c.reader.cancel()


# --- report ---------------------------------------------------------------------------------


def report(cases: list[dict[str, Any]]) -> tuple[str, list[str]]:
    head = (
        "stream",
        "viewers",
        "mode",
        "relay CPU",
        "user + sys",
        "per viewer",
        "viewer fps",
        "in fps",
    )
    rows = []
    for c in cases:
        rows.append(
            (
                f"{c['resolution']}30",
                str(c["viewers"]),
                c["mode"],
                f"{c['relay_cpu_pct']:.1f} %",
                f"{c['relay_user_pct']:.1f} + {c['relay_sys_pct']:.1f}",
                f"{c['relay_cpu_pct_per_viewer']:.1f} %",
                "/".join(f"{f:.1f}" for f in c["viewer_fps"]),
                f"{c['relay_frames_in_fps']:.1f}" if c["mode"] == "forwarding" else "-",
            )
        )
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = [
        "  ".join(col.ljust(w) for col, w in zip(row, widths, strict=True)).rstrip()
        for row in [head, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = []
    by_key = {(c["resolution"], c["viewers"], c["mode"]): c for c in cases}
    for res in RESOLUTIONS:
        for viewers in (1, 2):
            fwd = by_key.get((res, viewers, "forwarding"))
            rec = by_key.get((res, viewers, "re-encoding"))
            if fwd and rec and rec["relay_cpu_pct"] > 0:
                ratio = fwd["relay_cpu_pct"] / rec["relay_cpu_pct"]
                # Re-encoding may not keep up (fewer frames, less CPU): compare per frame too.
                per_frame = [
                    10.0 * c["relay_cpu_pct"] / max(sum(c["viewer_fps"]), 0.1) for c in (fwd, rec)
                ]
                notes.append(
                    f"{res}30, {viewers} viewer(s): forwarding/re-encoding = {ratio:.2f} "
                    f"(per frame delivered: {per_frame[0]:.2f} / {per_frame[1]:.2f} ms of CPU "
                    f"= {per_frame[0] / per_frame[1]:.2f})"
                )
    for c in cases:
        if c["resolution"] == "1080p" and c["mode"] == "forwarding":
            ok = c["relay_cpu_pct_per_viewer"] <= BUDGET_PCT
            notes.append(
                f"budget 1080p30 forwarding, {c['viewers']} viewer(s): "
                f"{c['relay_cpu_pct_per_viewer']:.1f} % per viewer stream ≤ {BUDGET_PCT:.0f} % "
                f"{'PASS' if ok else 'MISS'}"
            )
    return "\n".join(lines), notes


# --- main -------------------------------------------------------------------------------------


def inside(args: argparse.Namespace) -> int:
    internals.set_default_host_addresses(LOOPBACK)
    resolutions = [r for r in (args.only.split(",") if args.only else RESOLUTIONS)]
    viewer_counts = [int(v) for v in args.viewers.split(",")]
    started = time.strftime("%Y%m%d-%H%M%S")
    results: dict[str, Any] = {
        "started": started,
        "seconds": args.seconds,
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_before": os.getloadavg(),
            "python": platform.python_version(),
        },
        "clips": {},
        "cases": [],
    }
    with tempfile.TemporaryDirectory(prefix="coview-relay-bench-") as tmpname:
        clips = {}
        for res in resolutions:
            width, height, bitrate = RESOLUTIONS[res]
            clips[res] = Path(tmpname) / f"{res}.vp8"
            actual = encode_clip(width, height, bitrate, clips[res])
            results["clips"][res] = {"width": width, "height": height, "bps": actual}
            print(f"{res}: publisher clip VP8 {actual / 1e6:.2f} Mbit/s", flush=True)
        for res in resolutions:
            for viewers in viewer_counts:
                for forward in (True, False):  # interleaved: same conditions for both
                    case = asyncio.run(run_case(res, viewers, forward, clips[res], args.seconds))
                    results["cases"].append(case)
                    print(
                        f"  {res}30 {viewers} viewer(s) {case['mode']}: relay "
                        f"{case['relay_cpu_pct']:.1f} % of a core, viewers at "
                        + "/".join(f"{f:.1f}" for f in case["viewer_fps"])
                        + " fps",
                        flush=True,
                    )
    results["machine"]["loadavg_after"] = os.getloadavg()
    table, notes = report(results["cases"])
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"relay-{started}.json"
    path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print()
    print(
        f"relay CPU in % of one core over {args.seconds:.0f} s per case (publisher and "
        "viewers in their own processes, not counted)"
    )
    print(table)
    print()
    for line in notes:
        print(line)
    load = results["machine"]
    print(
        f"\nload average before/after: {load['loadavg_before'][0]:.2f} / "
        f"{load['loadavg_after'][0]:.2f} on {load['cpus']} CPUs; results: "
        f"{path.relative_to(ROOT)}"
    )
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="measured seconds per case (default 10)"
    )
    parser.add_argument("--only", default="", help="comma-separated subset: 720p,1080p")
    parser.add_argument("--viewers", default="1,2", help="viewer counts (default 1,2)")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=("publisher", "viewer"), help=argparse.SUPPRESS)
    parser.add_argument("--pc", help=argparse.SUPPRESS)
    parser.add_argument("--clip", help=argparse.SUPPRESS)
    parser.add_argument("--lifetime", type=float, default=120.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    for res in filter(None, args.only.split(",")):
        if res not in RESOLUTIONS:
            parser.error(f"--only: unknown resolution {res!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    if args.child:
        asyncio.run(child(args))
        return 0
    if not args.inside:
        return outside(argv)
    return inside(args)


if __name__ == "__main__":
    sys.exit(main())
