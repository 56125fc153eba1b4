"""Quality from getStats() snapshots shaped like Chrome's and Firefox's reports."""

import pytest

from coview.quality import path_of, selected_pair, summarize

CAND_TYPES = ("host", "srflx", "prflx", "relay")


def chrome_stats(
    ts=1716800000000.0,
    received=1_000_000.0,
    decoded=300.0,
    local="host",
    remote="host",
    rtt=0.042,
    fps=30.0,
    width=1920,
    height=1080,
):
    """A flattened Chrome RTCStatsReport for a viewer receiving one video (and audio)."""
    video = {
        "id": "IT01V2983746",
        "type": "inbound-rtp",
        "timestamp": ts,
        "kind": "video",
        "mediaType": "video",
        "ssrc": 2983746.0,
        "transportId": "T01",
        "codecId": "CIT01_96",
        "bytesReceived": received,
        "packetsReceived": 1200.0,
        "packetsLost": 0.0,
        "framesReceived": decoded + 2,
        "framesDecoded": decoded,
        "framesDropped": 0.0,
        "frameWidth": float(width),
        "frameHeight": float(height),
        "jitter": 0.004,
    }
    if fps is not None:
        video["framesPerSecond"] = fps
    return [
        {"id": "CIT01_96", "type": "codec", "timestamp": ts, "mimeType": "video/VP8"},
        {
            "id": "IT01A1111",
            "type": "inbound-rtp",
            "timestamp": ts,
            "kind": "audio",
            "bytesReceived": 99.0,
            "framesPerSecond": 50.0,
        },
        video,
        {
            "id": "CPold_dead",
            "type": "candidate-pair",
            "timestamp": ts,
            "transportId": "T01",
            "localCandidateId": "Iold",
            "remoteCandidateId": "Iold2",
            "state": "failed",
            "nominated": False,
        },
        {
            "id": "CPa1b2c3_d4e5f6",
            "type": "candidate-pair",
            "timestamp": ts,
            "transportId": "T01",
            "localCandidateId": "Ia1b2c3",
            "remoteCandidateId": "Id4e5f6",
            "state": "succeeded",
            "nominated": True,
            "writable": True,
            "bytesReceived": received + 5000,
            "currentRoundTripTime": rtt,
            "availableOutgoingBitrate": 2500000.0,
        },
        {
            "id": "Ia1b2c3",
            "type": "local-candidate",
            "timestamp": ts,
            "transportId": "T01",
            "address": "192.168.1.20",
            "port": 54400.0,
            "protocol": "udp",
            "candidateType": local,
        },
        {
            "id": "Id4e5f6",
            "type": "remote-candidate",
            "timestamp": ts,
            "transportId": "T01",
            "address": "203.0.113.7",
            "port": 3478.0,
            "protocol": "udp",
            "candidateType": remote,
        },
        {
            "id": "T01",
            "type": "transport",
            "timestamp": ts,
            "dtlsState": "connected",
            "iceState": "connected",
            "selectedCandidatePairId": "CPa1b2c3_d4e5f6",
            "bytesReceived": received + 5000,
        },
    ]


def firefox_stats(ts=1716800000000.0, received=500_000.0, decoded=100.0, local="host", rtt=0.02):
    """Firefox: no transport entry, no framesPerSecond; the pair says ``selected``."""
    return [
        {
            "id": "{5f2b7c11-0e29-4ab1-b1b1-0c5a5e0f3a11}",
            "type": "inbound-rtp",
            "timestamp": ts,
            "kind": "video",
            "mediaType": "video",
            "bytesReceived": received,
            "framesDecoded": decoded,
            "frameWidth": 1280.0,
            "frameHeight": 720.0,
        },
        {
            "id": "pairA",
            "type": "candidate-pair",
            "timestamp": ts,
            "localCandidateId": "lc1",
            "remoteCandidateId": "rc1",
            "state": "succeeded",
            "nominated": False,
            "selected": False,
            "currentRoundTripTime": 0.5,
        },
        {
            "id": "pairB",
            "type": "candidate-pair",
            "timestamp": ts,
            "localCandidateId": "lc2",
            "remoteCandidateId": "rc2",
            "state": "succeeded",
            "nominated": True,
            "selected": True,
            "currentRoundTripTime": rtt,
        },
        {"id": "lc1", "type": "local-candidate", "candidateType": "relay", "timestamp": ts},
        {"id": "rc1", "type": "remote-candidate", "candidateType": "host", "timestamp": ts},
        {"id": "lc2", "type": "local-candidate", "candidateType": local, "timestamp": ts},
        {"id": "rc2", "type": "remote-candidate", "candidateType": "srflx", "timestamp": ts},
    ]


def test_summary_from_two_chrome_snapshots():
    prev = chrome_stats(ts=1000.0, received=1_000_000.0, decoded=300.0)
    cur = chrome_stats(ts=2000.0, received=1_250_000.0, decoded=330.0, fps=29.7)
    assert summarize(prev, cur) == {
        "width": 1920,
        "height": 1080,
        "fps": 29.7,
        "bitrate_kbps": 2000.0,  # 250 000 bytes in 1 s = 2 Mbit/s
        "rtt_ms": 42.0,
        "path": "direct",
        "frames_decoded": 330.0,
    }


def test_bitrate_uses_the_elapsed_milliseconds():
    prev = chrome_stats(ts=10_000.0, received=0.0)
    cur = chrome_stats(ts=10_500.0, received=62_500.0)  # 62.5 kB in half a second
    assert summarize(prev, cur)["bitrate_kbps"] == 1000.0


def test_first_snapshot_has_no_bitrate():
    out = summarize(None, chrome_stats())
    assert out["bitrate_kbps"] is None
    assert out["fps"] == 30.0
    assert out["width"] == 1920 and out["height"] == 1080
    assert summarize([], chrome_stats())["bitrate_kbps"] is None


def test_no_bitrate_when_time_did_not_move():
    snap = chrome_stats(ts=5000.0)
    assert summarize(snap, snap)["bitrate_kbps"] is None
    later = chrome_stats(ts=4000.0, received=2e6)
    assert summarize(snap, later)["bitrate_kbps"] is None


def test_fps_from_decoded_frames_when_the_browser_gives_no_rate():
    prev = firefox_stats(ts=1000.0, received=500_000.0, decoded=100.0)
    cur = firefox_stats(ts=3000.0, received=750_000.0, decoded=160.0)
    out = summarize(prev, cur)
    assert out["fps"] == 30.0  # 60 frames in 2 s
    assert out["bitrate_kbps"] == 1000.0
    assert (out["width"], out["height"]) == (1280, 720)
    assert out["frames_decoded"] == 160.0


def test_the_browsers_frame_rate_wins_over_the_computed_one():
    prev = chrome_stats(ts=1000.0, decoded=0.0)
    cur = chrome_stats(ts=2000.0, decoded=10.0, fps=24.0)
    assert summarize(prev, cur)["fps"] == 24.0


def test_audio_is_not_mistaken_for_video():
    audio_only = [e for e in chrome_stats() if e.get("kind") != "video"]
    out = summarize(audio_only, audio_only)
    assert out["width"] is None and out["height"] is None
    assert out["fps"] is None and out["bitrate_kbps"] is None
    assert out["frames_decoded"] is None
    assert out["rtt_ms"] == 42.0  # the transport is still there


def test_empty_report():
    assert summarize(None, []) == {
        "width": None,
        "height": None,
        "fps": None,
        "bitrate_kbps": None,
        "rtt_ms": None,
        "path": "unknown",
        "frames_decoded": None,
    }


def test_counters_arriving_as_ints_or_bad_values():
    prev = chrome_stats(ts=1000.0)
    cur = chrome_stats(ts=2000.0)
    for e in prev + cur:
        if e.get("kind") == "video":
            e["bytesReceived"] = int(e["bytesReceived"])
    assert summarize(prev, cur)["bitrate_kbps"] == 0.0
    for e in cur:
        if e.get("kind") == "video":
            e["bytesReceived"] = True  # never a number
            e["frameWidth"] = "1920"
    out = summarize(prev, cur)
    assert out["bitrate_kbps"] is None
    assert out["width"] is None


def test_rtt_missing_is_none():
    cur = chrome_stats()
    for e in cur:
        e.pop("currentRoundTripTime", None)
    assert summarize(None, cur)["rtt_ms"] is None


# -- the selected pair and the path -----------------------------------------------------------


def test_selected_pair_comes_from_the_transport():
    pair = selected_pair(chrome_stats())
    assert pair is not None and pair["id"] == "CPa1b2c3_d4e5f6"


def test_selected_pair_falls_back_to_the_nominated_succeeded_pair():
    assert selected_pair(firefox_stats())["id"] == "pairB"
    stats = chrome_stats()
    for e in stats:
        if e["type"] == "transport":
            e["selectedCandidatePairId"] = "CPgone"  # pair not in this report
    assert selected_pair(stats)["id"] == "CPa1b2c3_d4e5f6"


def test_a_lone_succeeded_pair_is_selected_even_if_not_nominated():
    stats = [e for e in firefox_stats() if e["id"] != "pairB"]
    assert selected_pair(stats)["id"] == "pairA"
    assert path_of(stats) == "turn"  # pairA uses a relay candidate


def test_no_pair_before_ice_succeeds():
    stats = [
        {"id": "T01", "type": "transport", "dtlsState": "new"},
        {"id": "CP1", "type": "candidate-pair", "state": "in-progress", "nominated": False},
        {"id": "CP2", "type": "candidate-pair", "state": "waiting"},
    ]
    assert selected_pair(stats) is None
    assert path_of(stats) == "unknown"
    assert summarize(None, stats)["path"] == "unknown"


@pytest.mark.parametrize(
    ("local", "remote", "path"),
    [
        ("host", "host", "direct"),
        ("host", "srflx", "direct"),
        ("srflx", "srflx", "direct"),
        ("prflx", "host", "direct"),
        ("srflx", "prflx", "direct"),
        ("relay", "host", "turn"),
        ("host", "relay", "turn"),
        ("srflx", "relay", "turn"),
        ("relay", "relay", "turn"),
    ],
)
def test_path_by_candidate_types(local, remote, path):
    stats = chrome_stats(local=local, remote=remote)
    assert path_of(stats) == path
    assert summarize(None, stats)["path"] == path
    assert path_of(stats, via_relay=True) == "relay"
    assert summarize(None, stats, via_relay=True)["path"] == "relay"


def test_firefox_paths():
    assert path_of(firefox_stats(local="host")) == "direct"
    assert path_of(firefox_stats(local="relay")) == "turn"


def test_our_media_relay_wins_even_with_no_stats():
    assert path_of([], via_relay=True) == "relay"
    assert summarize(None, [], via_relay=True)["path"] == "relay"


def test_entries_without_ids_are_tolerated():
    stats = chrome_stats()
    stats.append({"type": "media-source", "kind": "video"})
    stats.append({"id": 5, "type": "peer-connection"})
    assert summarize(stats, stats)["path"] == "direct"
