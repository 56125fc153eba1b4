// Plain-JavaScript baseline of the visitor's share popup (web/pages/popup.py), for the bench.
// It does what the MicroPython popup does on the way to the first frame: read share id and
// token from the fragment, open /ws, handshake as "sharer", enable the button on "welcome";
// on click, getDisplayMedia with the same options, send share_media, and offer to every
// viewer the server pairs it with ("peer"), trickling ICE like coview.negotiation does
// (local candidates held until the offer is sent, remote ones until the answer is set).

const $ = (id) => document.getElementById(id);
const CAPTURE_OPTIONS = {
  video: { frameRate: { ideal: 15, max: 30 } },
  audio: false,
  selfBrowserSurface: "include",
  surfaceSwitching: "include",
};

const frag = new URLSearchParams(location.hash.slice(1));
const token = frag.get("t");
history.replaceState(null, "", location.pathname);

const state = { share: null, ice: [], stream: null, peers: new Map(), pending: [], ended: false };
const ws = new WebSocket((location.protocol === "https:" ? "wss:" : "ws:") + "//" + location.host + "/ws");
const send = (msg) => ws.send(JSON.stringify(msg));

ws.addEventListener("open", () => {
  send({ type: "handshake", versions: ["1"], role: "sharer", token });
});
ws.addEventListener("close", () => { if (!state.ended) end("The connection to support was lost."); });
ws.addEventListener("message", (event) => {
  const msg = JSON.parse(event.data);
  switch (msg.type) {
    case "welcome":
      state.share = msg.info.share;
      state.ice = msg.ice_servers;
      $("who").textContent = (msg.info.agent_name || "Support") + " from support asks to see your screen.";
      $("explain").hidden = false;
      $("status").textContent = "Ready when you are.";
      $("share").disabled = false;
      break;
    case "ping":
      send({ type: "pong", t: msg.t });
      break;
    case "peer":
      if (state.stream) startPeer(msg.pc); else state.pending.push(msg.pc);
      break;
    case "peer_gone": {
      const peer = state.peers.get(msg.pc);
      if (peer) { peer.pc.close(); state.peers.delete(msg.pc); }
      break;
    }
    case "answer": case "ice": {
      const peer = state.peers.get(msg.pc);
      if (peer) peer.remote(msg);
      break;
    }
    case "share_state":
      if (msg.state === "ended") end("The screen share ended.");
      break;
    case "error":
      $("problem").textContent = msg.text;
      $("problem").hidden = false;
      break;
  }
});

function end(text) {
  state.ended = true;
  for (const peer of state.peers.values()) peer.pc.close();
  state.peers.clear();
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  state.stream = null;
  $("share").disabled = true;
  $("status").textContent = text + " You can close this window.";
}

function startPeer(id) {
  const pc = new RTCPeerConnection({ iceServers: state.ice });
  let sent = false, remoteSet = false;
  const localPending = [], remotePending = [];
  const sendCandidate = (c) => send({ type: "ice", pc: id, candidate: c });
  pc.addEventListener("icecandidate", (e) => {
    if (!e.candidate || !e.candidate.candidate) return;
    const c = e.candidate.toJSON();
    if (sent) sendCandidate(c); else localPending.push(c);
  });
  for (const track of state.stream.getTracks()) pc.addTrack(track, state.stream);
  const peer = {
    pc,
    async remote(msg) {
      if (msg.type === "answer") {
        await pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
        remoteSet = true;
        for (const c of remotePending.splice(0)) if (c) await pc.addIceCandidate(c);
      } else if (msg.type === "ice") {
        if (!remoteSet) remotePending.push(msg.candidate);
        else if (msg.candidate) await pc.addIceCandidate(msg.candidate);
      }
    },
  };
  state.peers.set(id, peer);
  (async () => {
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    send({ type: "offer", pc: id, sdp: pc.localDescription.sdp });
    sent = true;
    for (const c of localPending.splice(0)) sendCandidate(c);
  })();
}

$("share").addEventListener("click", async () => {
  $("problem").hidden = true;
  $("share").disabled = true;
  let stream;
  try {
    stream = await navigator.mediaDevices.getDisplayMedia(CAPTURE_OPTIONS);
  } catch (err) {
    $("problem").textContent = "Your browser could not start sharing: " + err;
    $("problem").hidden = false;
    send({ type: "share_pick_failed", share: state.share, reason: "error" });
    $("share").disabled = state.ended;
    return;
  }
  const track = stream.getVideoTracks()[0];
  try { track.contentHint = "detail"; } catch (e) { /* optional */ }
  state.stream = stream;
  $("preview").srcObject = stream;
  $("preview-box").hidden = false;
  $("stop").hidden = false;
  $("status").textContent = "You are sharing your screen.";
  const surface = track.getSettings().displaySurface;
  send({ type: "share_media", share: state.share,
         surface: ["monitor", "window", "browser"].includes(surface) ? surface : "unknown" });
  for (const id of state.pending.splice(0)) startPeer(id);
});

$("stop").addEventListener("click", () => {
  if (state.share) send({ type: "share_stop", share: state.share });
});

if (!token) {
  $("problem").textContent = "This share link is not valid.";
  $("problem").hidden = false;
  state.ended = true;
} else {
  $("status").textContent = "Connecting to support…";
}
