"""Every use of aiortc / aioice private API by the media relay, in one place.

aiortc always decodes what it receives and re-encodes for every sender.  The relay
forwards the publisher's encoded frames instead, which needs three things aiortc has no
public API for:

* a receiver whose frames bypass the decoder (:func:`install_passthrough`);
* sending a keyframe request (RTCP PLI) to a publisher (:func:`send_keyframe_request`),
  and hearing a subscriber's PLI/FIR at a sender (:func:`on_keyframe_request`);
* gathering host candidates only on chosen addresses (:func:`host_addresses`,
  :func:`set_default_host_addresses`): aioice enumerates every interface and skips
  127.0.0.1.

Each access names the aiortc 1.16.0 / aioice 0.13.0 internal it relies on.  Those
versions are pinned exactly in ``pyproject.toml``; ``tests/unit/server/
test_aiortc_internals.py`` fails loudly, naming the internal, when one of them changes,
and :func:`problems` lets the relay fall back to aiortc's public decode/re-encode path
instead of breaking at run time.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import ipaddress
import logging
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any

import aioice
import aioice.ice
import aiortc
from aiortc import rtcrtpreceiver
from aiortc.codecs import h264 as _h264, vpx as _vpx
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender

log = logging.getLogger("coview.relay")

AIORTC_VERSION = "1.16.0"
AIOICE_VERSION = "0.13.0"

#: What a pass-through receiver hands on: the RTP codec and the reassembled frame
#: (``JitterFrame.data`` is the depayloaded bitstream, ``JitterFrame.timestamp`` the RTP
#: timestamp mapped to start at 0, in 1/90000 s).
FrameSink = Callable[[RTCRtpCodecParameters, JitterFrame], None]

# aiortc 1.16.0 RTCRtpReceiver: ``self.__decoder_queue`` (a queue.Queue, name-mangled)
# receives ``(codec, encoded_frame)`` from ``_handle_rtp_packet`` on the event loop and
# ``None`` from ``__stop_decoder``; ``receive()`` starts ``self.__decoder_thread`` running
# ``decoder_worker(loop, input_q=self.__decoder_queue, ...)`` which blocks on
# ``input_q.get()`` and exits on ``None``.
_RECEIVER_QUEUE = "_RTCRtpReceiver__decoder_queue"
_RECEIVER_THREAD = "_RTCRtpReceiver__decoder_thread"


# --- the checks the guard test and the relay share ---------------------------------------


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def _params(func: Any) -> list[str]:
    try:
        return list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return []


def problems() -> list[str]:
    """What no longer matches the aiortc/aioice internals this module relies on.

    Empty when everything is as in aiortc 1.16.0 / aioice 0.13.0.  Each entry names the
    internal, so a failing guard test says exactly what moved.
    """
    out: list[str] = []
    if aiortc.__version__ != AIORTC_VERSION:
        out.append(f"aiortc version is {aiortc.__version__}, this module is for {AIORTC_VERSION}")
    if aioice.__version__ != AIOICE_VERSION:
        out.append(f"aioice version is {aioice.__version__}, this module is for {AIOICE_VERSION}")

    init = _source(RTCRtpReceiver.__init__)
    for needle in ("self.__decoder_queue", "self.__decoder_thread"):
        if needle not in init:
            out.append(f"RTCRtpReceiver.__init__ no longer sets {needle} (pass-through receiver)")
    handle = _source(RTCRtpReceiver._handle_rtp_packet)
    if "self.__decoder_queue.put((codec, encoded_frame))" not in handle:
        out.append(
            "RTCRtpReceiver._handle_rtp_packet no longer calls "
            "self.__decoder_queue.put((codec, encoded_frame)) (pass-through receiver)"
        )
    receive = _source(RTCRtpReceiver.receive)
    if "self.__decoder_queue" not in receive or "decoder_worker" not in receive:
        out.append(
            "RTCRtpReceiver.receive no longer starts decoder_worker on self.__decoder_queue "
            "(pass-through receiver)"
        )
    stop = _source(getattr(RTCRtpReceiver, "_RTCRtpReceiver__stop_decoder", None))
    if "self.__decoder_queue.put(None)" not in stop:
        out.append("RTCRtpReceiver.__stop_decoder no longer puts None on the decoder queue")
    worker = _source(rtcrtpreceiver.decoder_worker)
    if "input_q.get()" not in worker or "if task is None" not in worker:
        out.append("aiortc.rtcrtpreceiver.decoder_worker no longer reads input_q.get() until None")
    if set(vars(JitterFrame(b"", 0))) != {"data", "timestamp"}:
        out.append("aiortc.jitterbuffer.JitterFrame no longer has exactly .data and .timestamp")

    if _params(getattr(RTCRtpReceiver, "_send_rtcp_pli", None)) != ["self", "media_ssrc"]:
        out.append("RTCRtpReceiver._send_rtcp_pli(self, media_ssrc) changed or is gone")
    if _params(getattr(RTCRtpSender, "_send_keyframe", None)) != ["self"]:
        out.append("RTCRtpSender._send_keyframe(self) changed or is gone")
    if "self._send_keyframe()" not in _source(RTCRtpSender._handle_rtcp_packet):
        out.append(
            "RTCRtpSender._handle_rtcp_packet no longer calls self._send_keyframe() on PLI/FIR"
        )
    next_frame = _source(RTCRtpSender._next_encoded_frame)
    if "self.__encoder.pack(data)" not in next_frame:
        out.append("RTCRtpSender._next_encoded_frame no longer packs non-Frame data (pre-encoded)")
    for cls in (_vpx.Vp8Encoder, _h264.H264Encoder):
        if _params(getattr(cls, "pack", None)) != ["self", "packet"]:
            out.append(f"aiortc {cls.__name__}.pack(self, packet) changed or is gone")

    if _params(getattr(aioice.ice, "get_host_addresses", None))[:2] != ["use_ipv4", "use_ipv6"]:
        out.append("aioice.ice.get_host_addresses(use_ipv4, use_ipv6) changed or is gone")
    if "get_host_addresses(" not in _source(aioice.ice.Connection.gather_candidates):
        out.append("aioice.ice.Connection.gather_candidates no longer calls get_host_addresses")
    return out


_PROBLEMS: list[str] | None = None


def forwarding_available() -> bool:
    """True when the pass-through and keyframe internals are as expected (checked once)."""
    global _PROBLEMS
    if _PROBLEMS is None:
        _PROBLEMS = problems()
        for problem in _PROBLEMS:
            log.warning("relay: aiortc internals changed, forwarding disabled: %s", problem)
    return not _PROBLEMS


# --- forwarding encoded frames -----------------------------------------------------------


class _PassThroughQueue:
    """Stands in for the receiver's decoder queue: frames go to ``sink``, not a decoder.

    ``put`` is called on the event loop by ``RTCRtpReceiver._handle_rtp_packet``; ``get``
    by aiortc's decoder thread, which here only waits for the stop signal (``None``), so
    no decoder is ever created and the thread stays idle until the receiver stops.
    """

    def __init__(self, sink: FrameSink) -> None:
        self._sink: FrameSink | None = sink
        self._stopped = threading.Event()

    def put(self, item: tuple[RTCRtpCodecParameters, JitterFrame] | None) -> None:
        if item is None:
            self._sink = None
            self._stopped.set()
            return
        sink = self._sink
        if sink is None:
            return
        try:
            sink(item[0], item[1])
        except Exception:  # a forwarding bug must not kill aiortc's RTP handling
            log.exception("relay: forwarding a frame failed")

    def get(self) -> None:
        self._stopped.wait()
        return None


def install_passthrough(receiver: RTCRtpReceiver, sink: FrameSink) -> bool:
    """Make ``receiver`` hand its reassembled encoded frames to ``sink`` instead of decoding.

    Must run before ``receiver.receive()`` starts its decoder thread (i.e. from the
    peer connection's ``track`` event, during ``setRemoteDescription``).  Returns False,
    leaving the receiver unchanged, when that is too late or the internals moved.
    """
    if not forwarding_available():
        return False
    # aiortc 1.16.0: RTCRtpReceiver.__decoder_thread is None until receive() runs.
    if getattr(receiver, _RECEIVER_THREAD, False) is not None:
        return False
    # aiortc 1.16.0: RTCRtpReceiver.__decoder_queue, passed to decoder_worker by receive().
    setattr(receiver, _RECEIVER_QUEUE, _PassThroughQueue(sink))
    return True


def send_keyframe_request(receiver: RTCRtpReceiver, media_ssrc: int) -> Coroutine[Any, Any, None]:
    """RTCP PLI from ``receiver`` to the remote sender of ``media_ssrc``."""
    # aiortc 1.16.0: RTCRtpReceiver._send_rtcp_pli(media_ssrc) builds and sends the PLI
    # (a no-op until the receiver knows its RTCP SSRC, set at transceiver creation).
    coro: Coroutine[Any, Any, None] = receiver._send_rtcp_pli(media_ssrc)
    return coro


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call ``callback`` instead of forcing an encoder keyframe when a PLI/FIR arrives."""
    # aiortc 1.16.0: RTCRtpSender._handle_rtcp_packet calls self._send_keyframe() for
    # RTCP PSFB PLI and FIR; an instance attribute shadows the method for this sender only.
    sender._send_keyframe = callback  # type: ignore[method-assign]


# --- host candidates on chosen addresses only --------------------------------------------

_HOST_ADDRESSES: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "coview_relay_host_addresses", default=()
)
_DEFAULT_HOST_ADDRESSES: tuple[str, ...] = ()
# aioice 0.13.0: Connection.gather_candidates() calls the module-level function
# aioice.ice.get_host_addresses(use_ipv4=..., use_ipv6=...) to list host addresses.
_original_get_host_addresses: Callable[..., list[str]] = aioice.ice.get_host_addresses


def check_addresses(addresses: Sequence[str]) -> tuple[str, ...]:
    """The addresses as a tuple; ValueError for anything but IP address literals."""
    out = []
    for address in addresses:
        ipaddress.ip_address(address)  # ValueError for anything but an IP literal
        out.append(address)
    return tuple(out)


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    chosen = _HOST_ADDRESSES.get() or _DEFAULT_HOST_ADDRESSES
    if not chosen:
        return _original_get_host_addresses(use_ipv4, use_ipv6)
    out = []
    for address in chosen:
        version = ipaddress.ip_address(address).version
        if (version == 4 and use_ipv4) or (version == 6 and use_ipv6):
            out.append(address)
    return out


def _install_host_addresses_hook() -> None:
    # aioice 0.13.0: replace aioice.ice.get_host_addresses (looked up as a module global
    # at every gather_candidates call); the replacement keeps aioice's own behaviour
    # unless addresses were chosen.
    if aioice.ice.get_host_addresses is not _get_host_addresses:
        aioice.ice.get_host_addresses = _get_host_addresses


@contextlib.contextmanager
def host_addresses(addresses: Sequence[str]) -> Iterator[None]:
    """Within this block (this task and the tasks it starts), gather only on ``addresses``.

    Wrap ``setLocalDescription`` in it: that is where aiortc gathers.  Empty: no change.
    """
    chosen = check_addresses(addresses)
    if not chosen:
        yield
        return
    _install_host_addresses_hook()
    token = _HOST_ADDRESSES.set(chosen)
    try:
        yield
    finally:
        _HOST_ADDRESSES.reset(token)


def set_default_host_addresses(addresses: Sequence[str]) -> None:
    """Process-wide: every aiortc peer gathers only on ``addresses`` (empty: undo).

    Tests and benchmarks set ``("127.0.0.1",)`` so no peer can reach another interface.
    """
    global _DEFAULT_HOST_ADDRESSES
    _DEFAULT_HOST_ADDRESSES = check_addresses(addresses)
    _install_host_addresses_hook()
