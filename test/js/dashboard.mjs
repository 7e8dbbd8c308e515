// Drives meshcast's dashboard in headless Chromium for
// test/e2e/ops/dashboard_test.go (and hls.js's low-latency HLS for
// test/e2e/live/llhls_test.go). Prints one JSON object per line: "ready"
// when the page is up, then "result" (or "fail" with "why").
//
//   node test/js/dashboard.mjs streams BASE STREAM [pushing] the stream appears without a reload
//                                                         (and, with "pushing", its restream pushes)
//   node test/js/dashboard.mjs play BASE STREAM PROTO     the player plays (hls, flv, wsflv, webrtc: with Opus audio)
//   node test/js/dashboard.mjs chat BASE STREAM           two pages exchange a message
//   node test/js/dashboard.mjs cluster BASE STREAM A B    both nodes and the relay B <- A
//   node test/js/dashboard.mjs mobile BASE STREAM         pages fit 360 px
//   node test/js/dashboard.mjs latency BASE STREAM [SECS] hls.js's live-edge latency
//
// Screenshots go to $ARTIFACTS (default test/artifacts). Every request a
// page makes outside BASE is reported in "external".
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const [mode, base, stream, ...rest] = process.argv.slice(2);
const artifacts = process.env.ARTIFACTS || "test/artifacts";
mkdirSync(artifacts, { recursive: true });
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const origin = new URL(base).origin;
const external = [];
const errors = [];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--autoplay-policy=no-user-gesture-required"],
});

async function open(path, viewport = { width: 1280, height: 900 }) {
  const ctx = await browser.newContext({ viewport });
  const page = await ctx.newPage();
  page.on("request", (r) => {
    const u = r.url();
    if (!u.startsWith(origin) && !u.startsWith("data:") && !u.startsWith("blob:")) external.push(u);
  });
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(base + path, { timeout: 30000 });
  await page.waitForSelector("body[data-ready=true]", { timeout: 30000 });
  await page.evaluate(() => { window.__sameDocument = true; });
  return page;
}

const shot = (page, name) => page.screenshot({ path: join(artifacts, name), fullPage: true });

async function playing(page, proto) {
  await page.waitForFunction(() => {
    const v = document.querySelector("video");
    return v && v.currentTime > 2 && v.getVideoPlaybackQuality().totalVideoFrames > 30;
  }, null, { timeout: 60000 });
  return page.evaluate(() => {
    const v = document.querySelector("video");
    const q = v.getVideoPlaybackQuality();
    const stats = {};
    for (const dd of document.querySelectorAll("#player-stats dd")) stats[dd.dataset.stat] = dd.textContent;
    return { currentTime: v.currentTime, totalVideoFrames: q.totalVideoFrames, droppedVideoFrames: q.droppedVideoFrames, width: v.videoWidth, height: v.videoHeight, stats };
  });
}

let code = 0;
try {
  switch (mode) {
    case "streams": {
      const page = await open("/");
      out({ event: "ready" });
      const card = `[data-stream="${stream}"]`;
      await page.waitForFunction((sel) => {
        const c = document.querySelector(sel);
        return c && c.querySelector('[data-field="live"]').textContent === "LIVE" && c.querySelector('[data-field="codecs"]').textContent.includes("h264");
      }, card, { timeout: 40000 });
      await page.waitForTimeout(2500); // a "stats" update or two
      // The card's thumbnail: the stream's latest keyframe as a JPEG.
      await page.waitForFunction((sel) => {
        const img = document.querySelector(sel)?.querySelector('img[data-field="thumb"]');
        return img && img.complete && img.naturalWidth > 0;
      }, card, { timeout: 20000 });
      if (rest[0] === "pushing") {
        await page.waitForFunction((sel) =>
          document.querySelector(sel)?.querySelector('[data-field="pushes"]')?.textContent.includes("pushing"), card, { timeout: 20000 });
      }
      const thumbWidth = await page.$eval(card, (c) => c.querySelector('img[data-field="thumb"]').naturalWidth);
      const text = await page.$eval(card, (c) => Object.fromEntries([...c.querySelectorAll("[data-field]")].map((e) => [e.dataset.field, e.textContent])));
      const same = await page.evaluate(() => window.__sameDocument === true);
      await shot(page, "streams.png");
      out({ event: "result", fields: text, thumbWidth, sameDocument: same, external, errors });
      break;
    }
    case "play": {
      const proto = rest[0];
      const page = await open(`/watch/${stream}?proto=${proto}`);
      out({ event: "ready" });
      const r = await playing(page, proto);
      if (proto === "webrtc") {
        // The stream's AAC arrives as Opus: inbound audio RTP, decoded to
        // sound (energy above silence; Chromium measures it after the
        // volume, so the player is unmuted).
        await page.evaluate(() => { document.querySelector("video").muted = false; });
        const inboundAudio = () => page.evaluate(async () => {
          const stats = await window.meshcastPlayer.player.pc.getStats();
          for (const s of stats.values()) {
            if (s.type === "inbound-rtp" && s.kind === "audio") {
              const codec = stats.get(s.codecId);
              return { packetsReceived: s.packetsReceived, totalAudioEnergy: s.totalAudioEnergy, totalSamplesReceived: s.totalSamplesReceived, codec: codec && codec.mimeType };
            }
          }
          return null;
        });
        for (let i = 0; i < 80; i++) {
          r.audio = await inboundAudio();
          if (r.audio && r.audio.packetsReceived > 50 && r.audio.totalAudioEnergy > 0) break;
          await page.waitForTimeout(250);
        }
      }
      await shot(page, `watch-${proto}.png`);
      out({ event: "result", ...r, external, errors });
      break;
    }
    case "latency": {
      // hls.js's estimate of its distance from the live edge, sampled
      // every 500 ms for SECS seconds once playing.
      const secs = Number(rest[0] || 15);
      const page = await open(`/watch/${stream}?proto=hls`);
      out({ event: "ready" });
      await playing(page, "hls");
      const samples = [];
      for (let i = 0; i < secs * 2; i++) {
        await page.waitForTimeout(500);
        const l = await page.evaluate(() => window.meshcastPlayer.player && window.meshcastPlayer.player.latency());
        if (typeof l === "number" && Number.isFinite(l)) samples.push(l);
      }
      samples.sort((a, b) => a - b);
      const q = (f) => samples[Math.min(samples.length - 1, Math.floor(f * samples.length))];
      const r = await page.evaluate(() => ({ frames: document.querySelector("video").getVideoPlaybackQuality().totalVideoFrames, ll: !!(window.meshcastPlayer.player.hls.latestLevelDetails || {}).partList }));
      out({ event: "result", samples: samples.length, median: q(0.5), p90: q(0.9), max: samples[samples.length - 1], ...r, external, errors });
      break;
    }
    case "chat": {
      const a = await open(`/watch/${stream}?proto=flv`);
      const b = await open(`/watch/${stream}?proto=flv`);
      out({ event: "ready" });
      const joined = (p) => p.waitForFunction(() => document.querySelector('[data-stat="viewers"]').textContent !== "—", null, { timeout: 20000 });
      await joined(a);
      await joined(b);
      const text = `hello from page A ${Date.now()}`;
      await a.fill("#chat-input", text);
      await a.press("#chat-input", "Enter");
      await b.waitForFunction((t) => [...document.querySelectorAll("#chat-log li .text")].some((e) => e.textContent === t), text, { timeout: 15000 });
      const reply = `and back from page B ${Date.now()}`;
      await b.fill("#chat-input", reply);
      await b.click(".chat-form button");
      await a.waitForFunction((t) => [...document.querySelectorAll("#chat-log li .text")].some((e) => e.textContent === t), reply, { timeout: 15000 });
      await shot(b, "chat.png");
      out({ event: "result", sent: text, replied: reply, external, errors });
      break;
    }
    case "cluster": {
      const [nodeA, nodeB] = rest;
      const page = await open("/cluster");
      out({ event: "ready" });
      await page.waitForFunction(([s, a, b]) => {
        const tree = document.querySelector(`.tree[data-stream="${s}"]`);
        return document.querySelector(`[data-node="${a}"]`) && document.querySelector(`[data-node="${b}"]`) &&
          tree && tree.querySelector(`[data-owner="${a}"] [data-relay="${b}"][data-upstream="${a}"]`);
      }, [stream, nodeA, nodeB], { timeout: 30000 });
      const nodes = await page.$$eval("#nodes [data-node]", (els) => els.map((e) => ({ id: e.dataset.node, text: e.innerText })));
      const tree = await page.$eval(`.tree[data-stream="${stream}"]`, (e) => e.innerText);
      await shot(page, "cluster.png");
      out({ event: "result", nodes, tree, external, errors });
      break;
    }
    case "mobile": {
      out({ event: "ready" });
      const widths = {};
      for (const [name, path] of [["streams", "/"], ["watch", `/watch/${stream}?proto=flv`], ["cluster", "/cluster"], ["publish", "/publish"]]) {
        const page = await open(path, { width: 360, height: 740 });
        if (name === "streams") await page.waitForSelector(`[data-stream="${stream}"]`, { timeout: 30000 });
        if (name === "watch") await playing(page, "flv");
        widths[name] = await page.evaluate(() => document.documentElement.scrollWidth);
        await shot(page, `mobile-${name}.png`);
        await page.context().close();
      }
      out({ event: "result", widths, external, errors });
      break;
    }
    default:
      throw new Error(`unknown mode ${mode}`);
  }
} catch (err) {
  out({ event: "fail", why: String(err && err.message ? err.message : err), external, errors });
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
