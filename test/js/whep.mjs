// Plays a stream over WebRTC, signalled by WHEP, in headless Chromium, and
// prints, as JSON, what the browser's getStats() says of the video it
// received, for test/e2e/webrtc/browser_test.go.
//
//   node test/js/whep.mjs BASE STREAM SECONDS
//
// BASE is the node's HTTP URL; the page is one of the node's own, so the
// WHEP request is same-origin. It plays STREAM for SECONDS once connected,
// then prints {"event":"result", ...} with the inbound-rtp video figures
// (framesDecoded, frameWidth, frameHeight, packetsReceived, packetsLost,
// nackCount, pliCount, jitter) and the answer's X-Meshcast-Audio, ends the
// session with DELETE and exits 0; on failure it prints
// {"event":"fail","why":...} and exits 1.
import { chromium } from "playwright-core";

const [base, name, secs] = process.argv.slice(2);
const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--autoplay-policy=no-user-gesture-required"],
});
let code = 0;
try {
  const page = await browser.newPage();
  const logs = [];
  page.on("console", (msg) => logs.push(msg.text()));
  await page.goto(base + "/api/v1/webrtc/sessions", { timeout: 30000 });
  const res = await page.evaluate(
    async ({ name, secs }) => {
      const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
      const video = document.createElement("video");
      video.muted = true;
      video.autoplay = true;
      video.playsInline = true;
      document.body.appendChild(video);
      const pc = new RTCPeerConnection();
      pc.addTransceiver("video", { direction: "recvonly" });
      pc.addTransceiver("audio", { direction: "recvonly" });
      pc.ontrack = (e) => {
        if (e.track.kind === "video") video.srcObject = e.streams[0] || new MediaStream([e.track]);
      };
      await pc.setLocalDescription(await pc.createOffer());
      await new Promise((resolve) => {
        if (pc.iceGatheringState === "complete") return resolve();
        pc.addEventListener("icegatheringstatechange", () => {
          if (pc.iceGatheringState === "complete") resolve();
        });
        setTimeout(resolve, 3000);
      });
      const r = await fetch(`/${name}/whep`, { method: "POST", headers: { "Content-Type": "application/sdp" }, body: pc.localDescription.sdp });
      const answer = await r.text();
      if (r.status !== 201) return { error: `WHEP ${r.status}: ${answer.trim()}` };
      const location = r.headers.get("Location");
      const audio = r.headers.get("X-Meshcast-Audio");
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
      for (let i = 0; i < 150 && pc.connectionState !== "connected"; i++) await sleep(100);
      if (pc.connectionState !== "connected") return { error: `connection ${pc.connectionState} after 15 s` };
      const connected = performance.now();
      const inbound = async () => {
        const stats = await pc.getStats();
        for (const s of stats.values()) {
          if (s.type === "inbound-rtp" && s.kind === "video") return s;
        }
        return {};
      };
      let firstFrame = null;
      while (performance.now() - connected < secs * 1000) {
        const s = await inbound();
        if (firstFrame === null && s.framesDecoded > 0) firstFrame = performance.now() - connected;
        await sleep(100);
      }
      const s = await inbound();
      await fetch(location, { method: "DELETE" });
      pc.close();
      return {
        audio,
        firstFrameMs: firstFrame === null ? null : Math.round(firstFrame),
        framesDecoded: s.framesDecoded ?? 0,
        keyFramesDecoded: s.keyFramesDecoded ?? 0,
        frameWidth: s.frameWidth ?? 0,
        frameHeight: s.frameHeight ?? 0,
        packetsReceived: s.packetsReceived ?? 0,
        packetsLost: s.packetsLost ?? 0,
        nackCount: s.nackCount ?? 0,
        pliCount: s.pliCount ?? 0,
        jitter: s.jitter ?? 0,
        videoWidth: video.videoWidth,
      };
    },
    { name, secs: Number(secs) },
  );
  if (res.error) {
    print({ event: "fail", why: res.error, logs });
    code = 1;
  } else {
    print({ event: "result", ...res, logs });
  }
} catch (err) {
  print({ event: "fail", why: String(err && err.message ? err.message : err) });
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
