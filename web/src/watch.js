// The player page: HLS through hls.js, HTTP-FLV through mpegts.js, live
// playback stats, and the stream's chat beside it.
import { h } from './util.js';

const protocols = {
  hls: { label: 'HLS', start: startHLS },
  flv: { label: 'HTTP-FLV', start: (v, app, name, state) => startFLV(v, `${location.origin}/${app}/${name}.flv`, state) },
  webrtc: { label: 'WebRTC', start: startWHEP },
  wsflv: { label: 'WebSocket-FLV', start: (v, app, name, state) => startFLV(v, `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/${app}/${name}.flv`, state) },
};

export async function watchPage(main, socket, app, name) {
  const full = `${app}/${name}`;
  const params = new URLSearchParams(location.search);
  const proto = protocols[params.get('proto')] ? params.get('proto') : 'hls';
  const video = h('video', { id: 'video', controls: true, muted: true, autoplay: true, playsinline: true, 'aria-label': `Live video of ${full}` });
  video.muted = true;
  const stats = h('dl', { id: 'player-stats', class: 'kv stats', 'aria-label': 'Playback statistics' });
  const stat = (key, label) => {
    const dd = h('dd', { 'data-stat': key }, '—');
    stats.append(h('dt', {}, label), dd);
    return dd;
  };
  const s = {
    proto: stat('protocol', 'Protocol'), state: stat('state', 'State'), time: stat('time', 'Played'),
    buffer: stat('buffer', 'Buffer'), latency: stat('latency', 'Latency (est.)'),
    frames: stat('frames', 'Frames decoded'), dropped: stat('dropped', 'Dropped frames'),
    size: stat('resolution', 'Resolution'), viewers: stat('viewers', 'Viewers here'),
  };
  const tabs = h('div', { class: 'tabs', role: 'group', 'aria-label': 'Protocol' },
    Object.entries(protocols).map(([key, p]) => h('a', {
      href: `?proto=${key}`, class: key === proto ? 'tab active' : 'tab', 'aria-current': key === proto ? 'true' : null, dataset: { proto: key },
    }, p.label)));
  const chat = chatPanel(socket, full);
  main.replaceChildren(
    h('h1', {}, full),
    h('div', { class: 'watch' },
      h('section', { class: 'player', 'aria-label': 'Player' }, video, tabs, stats),
      chat));
  document.title = `${full} · meshcast`;

  s.proto.textContent = protocols[proto].label;
  const player = await protocols[proto].start(video, app, name, (msg) => { s.state.textContent = msg; });
  window.meshcastPlayer = { proto, player };
  video.play().catch(() => {});
  setInterval(() => {
    const q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
    const end = video.buffered.length ? video.buffered.end(video.buffered.length - 1) : 0;
    s.time.textContent = `${video.currentTime.toFixed(1)} s`;
    s.buffer.textContent = `${Math.max(0, end - video.currentTime).toFixed(2)} s`;
    const lat = player && typeof player.latency === 'function' ? player.latency() : end - video.currentTime;
    s.latency.textContent = Number.isFinite(lat) ? `${Math.max(0, lat).toFixed(2)} s` : '—';
    if (q) {
      s.frames.textContent = String(q.totalVideoFrames);
      s.dropped.textContent = String(q.droppedVideoFrames);
    }
    s.size.textContent = video.videoWidth ? `${video.videoWidth}×${video.videoHeight}` : '—';
    if (!video.paused && video.readyState >= 3) s.state.textContent = 'playing';
  }, 500);
  socket.on('viewers', (msg) => {
    if (msg.stream === full) s.viewers.textContent = String(msg.total);
  });
}

// startHLS plays the stream's HLS playlist with hls.js (natively where
// the browser can and hls.js cannot).
async function startHLS(video, app, name, state) {
  const url = `/${app}/${name}/index.m3u8`;
  const { default: Hls } = await import('hls.js');
  if (!Hls.isSupported()) {
    video.src = url;
    state('native HLS');
    return null;
  }
  const hls = new Hls({ backBufferLength: 30 }); // LL-HLS playlists set their own hold-back
  hls.on(Hls.Events.ERROR, (_, data) => {
    if (data.fatal) {
      state(`error: ${data.details}, retrying`);
      setTimeout(() => hls.loadSource(url), 2000);
    }
  });
  hls.on(Hls.Events.MANIFEST_PARSED, () => state('loading'));
  hls.loadSource(url);
  hls.attachMedia(video);
  return { latency: () => hls.latency, hls };
}

// startWHEP plays the stream over WebRTC, signalled by WHEP: an offer
// POSTed to /APP/STREAM/whep, the answer back.
async function startWHEP(video, app, name, state) {
  const pc = new RTCPeerConnection();
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  pc.ontrack = (e) => {
    if (e.track.kind === 'video') video.srcObject = e.streams[0] || new MediaStream([e.track]);
  };
  pc.onconnectionstatechange = () => state(`WebRTC ${pc.connectionState}`);
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    pc.addEventListener('icegatheringstatechange', () => { if (pc.iceGatheringState === 'complete') resolve(); });
    setTimeout(resolve, 2000);
  });
  const r = await fetch(`/${app}/${name}/whep`, { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp });
  if (r.status !== 201) {
    state(`WHEP refused: ${r.status} ${(await r.text()).trim()}`);
    return null;
  }
  const audio = r.headers.get('X-Meshcast-Audio');
  await pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
  state(audio ? `connecting (audio ${audio})` : 'connecting');
  const resource = r.headers.get('Location');
  addEventListener('pagehide', () => { if (resource) fetch(resource, { method: 'DELETE', keepalive: true }); });
  return { latency: null, pc };
}

// startFLV plays a live FLV URL, over HTTP or a WebSocket, with mpegts.js.
async function startFLV(video, url, state) {
  const { default: mpegts } = await import('mpegts.js');
  if (!mpegts.getFeatureList().mseLivePlayback) {
    state('this browser cannot play HTTP-FLV (no MSE)');
    return null;
  }
  let player;
  const start = () => {
    player = mpegts.createPlayer({ type: 'flv', isLive: true, url }, {
      enableStashBuffer: false, liveBufferLatencyChasing: true, liveBufferLatencyMaxLatency: 3, liveBufferLatencyMinRemain: 0.5,
    });
    player.on(mpegts.Events.ERROR, (type, detail) => {
      state(`error: ${detail || type}, retrying`);
      player.destroy();
      setTimeout(start, 2000);
    });
    player.attachMediaElement(video);
    player.load();
    const p = player.play();
    if (p && p.catch) p.catch(() => {});
    state('loading');
  };
  start();
  return { latency: null, get player() { return player; } };
}

// chatPanel is the stream's chat: its room's messages, and a form.
function chatPanel(socket, full) {
  const log = h('ol', { id: 'chat-log', class: 'chat-log', 'aria-live': 'polite', 'aria-label': 'Chat messages' });
  const input = h('input', { id: 'chat-input', maxlength: 500, autocomplete: 'off', placeholder: 'Say something', 'aria-label': 'Chat message' });
  const status = h('p', { id: 'chat-status', class: 'muted', role: 'status' });
  const form = h('form', { class: 'chat-form' }, input, h('button', { type: 'submit' }, 'Send'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    socket.emit('chat', { stream: full, text });
    input.value = '';
  });
  const join = () => socket.emit('join', full);
  socket.on('connect', join);
  if (socket.connected) join();
  socket.on('chat', (m) => {
    if (m.stream !== full) return;
    const mine = m.from === socket.id;
    const time = new Date(m.time || Date.now()).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    log.append(h('li', { class: mine ? 'mine' : '' },
      h('span', { class: 'who' }, mine ? 'you' : `viewer ${String(m.from).slice(0, 4)}`),
      h('time', {}, time), h('span', { class: 'text' }, m.text)));
    while (log.children.length > 200) log.firstChild.remove();
    log.scrollTop = log.scrollHeight;
  });
  socket.on('error', (e) => {
    if (e && e.code) status.textContent = { rate_limited: 'Slow down: 5 messages per 10 seconds.', too_long: 'At most 500 characters.', not_member: 'Not in this chat yet: reconnecting.' }[e.code] || `Not sent (${e.code}).`;
  });
  return h('aside', { class: 'chat panel', 'aria-labelledby': 'chat-title' },
    h('h2', { id: 'chat-title' }, 'Chat'), log, form, status);
}

