"""The core on MicroPython: the same frames get the same verdicts, the machines the same
histories, as on CPython.

Runs the MicroPython WebAssembly build the visitor pages use (``node_modules``) under
Node.  Skipped when Node or the package is missing.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from test_protocol import (
    CHOICES,
    LIMITED,
    NULLS,
    REQUIRED,
    TYPES,
    WRONG_TYPES,
    directions,
    example,
    fill,
    of_length,
    other,
    without,
)

from coview import protocol

ROOT = Path(__file__).resolve().parents[3]
MPJS = (
    ROOT / "node_modules" / "@micropython" / "micropython-webassembly-pyscript" / "micropython.mjs"
)
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NODE is None or not MPJS.exists(),
    reason="needs node and @micropython/micropython-webassembly-pyscript",
)

RUNNER = """
import { loadMicroPython } from %(mpjs)s;
import fs from "fs";
const out = [];
const mp = await loadMicroPython({
  heapsize: 64 * 1024 * 1024,
  stdout: (line) => out.push(line),
  stderr: (line) => out.push(line),
});
mp.FS.mkdir("/lib");
mp.FS.mkdir("/lib/coview");
for (const name of fs.readdirSync(%(core)s)) {
  if (!name.endsWith(".py")) continue;
  mp.FS.writeFile("/lib/coview/" + name, fs.readFileSync(%(core)s + "/" + name));
}
mp.FS.writeFile("/input.json", fs.readFileSync(%(input)s));
try {
  mp.runPython(fs.readFileSync(%(script)s, "utf8"));
} catch (e) {
  out.push("PYTHON ERROR " + e.message);
}
process.stdout.write(out.join("\\n"));
"""

# Runs on both interpreters; prints one RESULT line of JSON.
SCRIPT = """
import sys
sys.path.append("/lib")
import json
from coview import protocol as P, share as S, negotiation as N, liveness as L, quality as Q
from coview import useragent as U
from coview import reconnect as R

data = json.loads(open(INPUT).read())
result = {}

verdicts = []
for frame, direction in data["frames"]:
    try:
        P.decode(frame, direction)
        verdicts.append("ok")
    except P.ProtocolError as err:
        verdicts.append(err.code)
    except Exception as err:
        verdicts.append("CRASH " + type(err).__name__)
result["verdicts"] = verdicts
result["made"] = [P.make("ice", pc="p", candidate=None), P.error("used", "x", "handshake", True)]

def share_run(events):
    s = S.ShareSession(0.7, request_timeout=0.1)
    out = []
    for name, now in events:
        try:
            if name == "tick":
                s.tick(s.deadline() if now is None else now)
            elif name == "stop":
                s.stop(True, now)
            elif name == "media_started":
                s.media_started("window", now)
            else:
                getattr(s, name)(now)
        except S.ShareError as err:
            out.append(["error", err.code])
        out.extend([list(a) for a in s.actions()])
    return [s.history, out, s.reason]

result["share"] = [
    share_run([["accept", 1.0], ["sharer_joined", 2.0], ["media_started", 3.0],
               ["media_started", 4.0], ["media_stopped", 5.0], ["accept", 6.0],
               ["stop", 7.0], ["stop", 8.0]]),
    share_run([["tick", None]]),
]

def neg_run():
    o = N.Negotiation("pc", N.OFFERER)
    a = N.Negotiation("pc", N.ANSWERER)
    log = []
    o.start()
    o.local_candidate({"candidate": "c1"})
    o.local_description("offer", "o1")
    for act in o.actions():
        log.append(["o", list(act)])
        if act[0] == "send":
            a.remote_message(act[1])
    a.remote_description_set()
    a.local_description("answer", "a1")
    for act in a.actions():
        log.append(["a", list(act)])
        if act[0] == "send":
            o.remote_message(act[1])
    o.remote_description_set()
    for n in (o, a):
        n.connection_state("connected", 1.0)
    a.connection_state("failed", 2.0)
    o.connection_state("failed", 2.0)
    for act in a.actions():
        if act[0] == "send":
            o.remote_message(act[1])
    log.append(["o", [list(x) for x in o.actions()]])
    try:
        o.remote_message({"type": "offer", "pc": "pc", "sdp": "x"})
    except N.NegotiationError as err:
        log.append(["error", err.code])
    o.connection_state("disconnected", 3.0)
    o.close()
    o.tick(100.0)
    log.append(["o", [list(x) for x in o.actions()]])
    return [o.history, a.history, log]

result["negotiation"] = neg_run()

live = L.Liveness(0.0)
result["liveness"] = [live.tick(t) for t in (19.0, 20.0, 21.0, 45.0)]

back = R.Backoff(lambda: 0.5)
delays = [back.closed(float(t)) for t in range(3000)]  # past the cap: no overflow
back.opened(3000.0)
delays.append(back.closed(3020.0, 1006))
back.refused()
delays.append(back.closed(3021.0))
result["reconnect"] = [delays[:8], delays[-3:], [list(h) for h in back.history[-3:]]]

stats = [
    {"id": "T", "type": "transport", "selectedCandidatePairId": "CP"},
    {"id": "CP", "type": "candidate-pair", "state": "succeeded", "localCandidateId": "L",
     "remoteCandidateId": "R", "currentRoundTripTime": 0.05},
    {"id": "L", "type": "local-candidate", "candidateType": "relay"},
    {"id": "R", "type": "remote-candidate", "candidateType": "host"},
    {"id": "V", "type": "inbound-rtp", "kind": "video", "bytesReceived": 5000.0,
     "timestamp": 2000.0, "framesDecoded": 60.0, "frameWidth": 1280.0, "frameHeight": 720.0},
]
prev = [{"id": "V", "type": "inbound-rtp", "kind": "video", "bytesReceived": 0.0,
         "timestamp": 1000.0, "framesDecoded": 30.0}]
summary = Q.summarize(prev, stats)
result["quality"] = [[k, summary[k]] for k in sorted(summary)]
result["useragent"] = [
    U.parse(ua)["browser"] + "|" + U.parse(ua)["os"] + "|" + str(U.share_verdict(ua, True)[0])
    for ua in data["agents"]
]
print("RESULT " + json.dumps(result))
"""

AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
]


def frames():
    out = []
    for mtype in TYPES:
        for d in directions(mtype):
            out.append([protocol.encode(example(mtype)), d])
            out.append([protocol.encode(example(mtype)), other(d)])
    for mtype, field in REQUIRED:
        out.append([protocol.encode(without(mtype, field)), directions(mtype)[0]])
    for mtype, field, value in WRONG_TYPES:
        out.append([protocol.encode(example(mtype, **{field: value})), directions(mtype)[0]])
    for mtype, field, kind, max_len in LIMITED:
        for n in (max_len, max_len + 1):
            msg = example(mtype, **{field: of_length(kind, n)})
            out.append([protocol.encode(msg), directions(mtype)[0]])
    for mtype, field, _req, _null in NULLS:
        out.append([protocol.encode(example(mtype, **{field: None})), directions(mtype)[0]])
    for mtype, field, _choices in CHOICES:
        out.append([protocol.encode(example(mtype, **{field: "nope"})), directions(mtype)[0]])
    for raw in ("[]", "1", '"x"', "null", "", "{", '{"type": 1}', '{"type": "zz"}', "[" * 30000):
        out.append([raw, "c2s"])
    out.append([fill(protocol.MAX_MESSAGE_BYTES, "\u00e9"), "c2s"])
    out.append([fill(protocol.MAX_MESSAGE_BYTES + 1, "\u00e9"), "c2s"])
    out.append([fill(protocol.MAX_MESSAGE_BYTES + 1, "\U0001f600"), "s2c"])
    return out


def run_cpython(input_path):
    namespace = {"INPUT": str(input_path), "__name__": "cpython_run"}
    printed = []
    namespace["print"] = printed.append
    exec(compile(SCRIPT, "script", "exec"), namespace)
    return json.loads(printed[-1][len("RESULT ") :])


def run_micropython(tmp_path, input_path):
    script = tmp_path / "script.py"
    script.write_text('INPUT = "/input.json"\n' + SCRIPT, encoding="utf-8")
    runner = tmp_path / "runner.mjs"
    runner.write_text(
        RUNNER
        % {
            "mpjs": json.dumps(MPJS.as_uri()),
            "core": json.dumps(str(ROOT / "web" / "coview")),
            "input": json.dumps(str(input_path)),
            "script": json.dumps(str(script)),
        },
        encoding="utf-8",
    )
    done = subprocess.run(
        [NODE, str(runner)], capture_output=True, text=True, timeout=120, check=False
    )
    lines = done.stdout.splitlines()
    results = [line for line in lines if line.startswith("RESULT ")]
    assert results, "MicroPython run failed:\n" + done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(results[-1][len("RESULT ") :])


def test_micropython_agrees_with_cpython(tmp_path):
    input_path = tmp_path / "input.json"
    input_path.write_text(json.dumps({"frames": frames(), "agents": AGENTS}), encoding="utf-8")
    expected = run_cpython(input_path)
    got = run_micropython(tmp_path, input_path)
    assert not [v for v in got["verdicts"] if v.startswith("CRASH")]
    assert len(got["verdicts"]) == len(expected["verdicts"]) > 900
    mismatches = [
        (i, expected["verdicts"][i], got["verdicts"][i])
        for i in range(len(expected["verdicts"]))
        if expected["verdicts"][i] != got["verdicts"][i]
    ]
    assert mismatches == []
    for key in ("made", "share", "negotiation", "liveness", "reconnect", "quality", "useragent"):
        assert _normal(got[key]) == _normal(expected[key]), key


def test_the_script_itself_sees_what_the_unit_tests_see(tmp_path):
    input_path = tmp_path / "input.json"
    input_path.write_text(json.dumps({"frames": frames(), "agents": AGENTS}), encoding="utf-8")
    result = run_cpython(input_path)
    assert result["share"][1][0] == ["requested", "ended"]  # tick at deadline() fires
    assert result["share"][0][0] == ["requested", "accepted", "waiting", "live", "waiting", "ended"]
    assert ["error", "out_of_order"] in result["share"][0][1]
    assert ["error", "ended"] in result["share"][0][1]
    assert result["liveness"] == ["ok", "ping", "ok", "dead"]
    assert result["reconnect"][0][:3] == [0.375, 0.75, 1.5]
    assert result["reconnect"][1] == [11.25, 0.375, None]
    assert result["made"][0] == {"type": "ice", "pc": "p", "candidate": None}


def _normal(value):
    """Dicts compare regardless of key order; tuples became lists in JSON already."""
    return json.loads(json.dumps(value, sort_keys=True))
