// Bench probe, installed with Playwright's add_init_script: it runs in every page before the
// page's own scripts (and is not subject to the page's CSP). It only observes:
//   __bench.interactive  promise of performance.now() when #share becomes enabled (popups)
//   __bench.ready        promise of performance.now() when body[data-ready='1'] and the
//                        #conn-status text says "Connected" (agent console)
//   __bench.clickAt      epoch ms (timeOrigin + now) of the last click on #share (capture phase,
//                        before the page's own handler)
//   __bench.armFrame()   returns a promise of the epoch ms of the next decoded frame on
//                        <video id="remote">: the earliest of requestVideoFrameCallback and the
//                        first "resize"/"loadedmetadata" with videoWidth > 0
//   __bench.sent / .received   epoch ms of the first WebSocket message of each type since the
//                        last click on #share / armFrame() (diagnostics)
(() => {
  if (window.__bench) return;
  const epoch = () => performance.timeOrigin + performance.now();
  const deferred = () => { let resolve; const p = new Promise((r) => { resolve = r; }); p.resolve = resolve; return p; };
  const B = (window.__bench = { marks: {}, interactive: deferred(), ready: deferred(), clickAt: null });

  const check = () => {
    if (!B.marks.interactive) {
      const share = document.getElementById("share");
      if (share && !share.disabled) {
        B.marks.interactive = performance.now();
        B.interactive.resolve(B.marks.interactive);
      }
    }
    if (!B.marks.ready) {
      const body = document.body;
      const st = document.getElementById("conn-status");
      if (body && body.dataset.ready === "1" && st && st.textContent.includes("Connected")) {
        B.marks.ready = performance.now();
        B.ready.resolve(B.marks.ready);
      }
    }
    if (B.marks.interactive && B.marks.ready) observer.disconnect();
  };
  const observer = new MutationObserver(check);
  observer.observe(document, {
    subtree: true, childList: true, characterData: true,
    attributes: true, attributeFilter: ["disabled", "data-ready"],
  });

  document.addEventListener("click", (e) => {
    const t = e.target;
    if (t && t.closest && t.closest("#share")) {
      B.clickAt = epoch();
      B.sent = {};
      B.received = {};
    }
  }, true);

  // Diagnostics only (milestones in the results' waterfalls, not figures of the table).
  const mark = (name) => { if (!(name in B.marks)) B.marks[name] = performance.now(); };
  for (const type of ["mpy", "py"]) {
    customElements.whenDefined(type + "-script").then(() => mark(type + ":defined"));
    for (const what of ["ready", "done"]) {
      document.addEventListener(type + ":" + what, () => mark(type + ":" + what), true);
    }
  }
  // Signaling milestones: epoch ms of the first message of each type sent and received since
  // the last reset (a click on #share, or armFrame()), to split click-to-first-frame.
  B.sent = {};
  B.received = {};
  const typeOf = (data) => {
    try { return typeof data === "string" ? JSON.parse(data).type : null; } catch (e) { return null; }
  };
  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      mark("ws:new");
      this.addEventListener("open", () => mark("ws:open"));
      this.addEventListener("message", (e) => {
        mark("ws:first-message");
        const type = typeOf(e.data);
        if (type && !(type in B.received)) B.received[type] = epoch();
      });
    }
    send(data) {
      const type = typeOf(data);
      if (type && !(type in B.sent)) B.sent[type] = epoch();
      return super.send(data);
    }
  };

  B.armFrame = () => {
    B.sent = {};
    B.received = {};
    const video = document.getElementById("remote");
    const p = deferred();
    let done = false;
    const hit = (how) => {
      if (done) return;
      done = true;
      B.marks.frameHow = how;
      p.resolve(epoch());
    };
    if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(() => hit("rvfc"));
    const onSize = () => { if (video.videoWidth > 0) hit("videoWidth"); };
    video.addEventListener("resize", onSize);
    video.addEventListener("loadedmetadata", onSize);
    return p;
  };
})();
