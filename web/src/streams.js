// The streams page: every stream of the cluster, whichever node serves the
// page, updated live through Socket.IO ("cluster:streams" every 2 s, and
// the stream list as it changes).
import { h, bitrate, bytes, duration, codecs, resolution, json } from './util.js';
import { publishPanel } from './publish.js';

export async function streamsPage(main, socket) {
  const list = h('div', { id: 'streams', class: 'cards', role: 'list', 'aria-live': 'polite', 'aria-busy': 'true' });
  const empty = h('p', { id: 'no-streams', class: 'muted', hidden: true }, 'No live streams in the cluster yet.');
  const count = h('span', { id: 'stream-count', class: 'badge' }, '0');
  main.replaceChildren(
    h('h1', {}, 'Live streams ', count),
    empty, list,
    h('details', { class: 'publish-help', open: true }, h('summary', {}, 'How to publish'), await publishPanel()));

  let streams = [];
  let at = performance.now();
  const render = () => {
    const el = (performance.now() - at) / 1000;
    count.textContent = String(streams.length);
    empty.hidden = streams.length > 0;
    list.setAttribute('aria-busy', 'false');
    const seen = new Set();
    for (const s of streams) {
      seen.add(s.name);
      let card = list.querySelector(`[data-stream="${CSS.escape(s.name)}"]`);
      if (!card) {
        card = streamCard(s);
        list.append(card);
      }
      fill(card, s, el);
    }
    for (const card of [...list.children]) if (!seen.has(card.dataset.stream)) card.remove();
  };
  const take = (list) => {
    streams = (list || []).slice().sort((a, b) => a.name.localeCompare(b.name));
    at = performance.now();
    render();
  };
  const refresh = async () => {
    const r = await json('/api/v1/streams?scope=cluster');
    if (r) take(r.streams);
  };
  socket.on('cluster:streams', (msg) => take(msg.streams));
  socket.on('streams', refresh);
  socket.on('stream:start', refresh);
  socket.on('stream:end', refresh);
  socket.on('push', refresh); // a restream changed state
  socket.on('connect', () => socket.emit('stats:subscribe'));
  if (socket.connected) socket.emit('stats:subscribe');
  await refresh();
  setInterval(render, 1000); // uptime ticks between updates
}

function streamCard(s) {
  const field = (name, label) => [h('dt', {}, label), h('dd', { 'data-field': name })];
  return h('article', { class: 'card stream', role: 'listitem', dataset: { stream: s.name } },
    h('header', {},
      h('a', { class: 'title', href: `/watch/${s.name}` }, s.name),
      h('span', { class: 'live', 'data-field': 'live' })),
    h('a', { href: `/watch/${s.name}`, tabindex: '-1' },
      h('img', { class: 'thumb', 'data-field': 'thumb', alt: `Latest picture of ${s.name}`, width: 320, height: 180, loading: 'lazy' })),
    h('dl', { class: 'kv' },
      field('viewers', 'Viewers'), field('bitrate', 'Bitrate'), field('codecs', 'Codecs'),
      field('resolution', 'Resolution'), field('uptime', 'Uptime'), field('owner', 'Owner'),
      field('pushes', 'Restreams')));
}

function fill(card, s, elapsed) {
  const set = (name, text) => {
    const el = card.querySelector(`[data-field="${name}"]`);
    if (el.textContent !== text) el.textContent = text;
  };
  const v = s.viewers || {};
  const detail = Object.entries(v).filter(([, n]) => n > 0).map(([p, n]) => `${p} ${n}`).join(', ');
  set('live', s.live ? 'LIVE' : 'waiting');
  card.classList.toggle('idle', !s.live);
  set('viewers', `${s.viewers_total || 0}${detail ? ` (${detail})` : ''}`);
  set('bitrate', bitrate(s.bitrate_bps));
  set('codecs', codecs(s));
  set('resolution', resolution(s));
  set('uptime', s.live ? duration((s.uptime_seconds || 0) + elapsed) : '—');
  set('owner', s.owner ? s.owner.node : 'this node');
  // Restreams run on the stream's owner; their targets come redacted.
  set('pushes', (s.pushes || []).map((p) =>
    `${p.target} ${p.state}${p.bytes_sent ? ` (${bytes(p.bytes_sent)})` : ''}${p.reconnects ? `, ${p.reconnects} reconnects` : ''}`).join('; ') || '—');
  // The latest keyframe, from any node (meshcast asks the stream's own),
  // every few seconds while the stream is live.
  const img = card.querySelector('[data-field="thumb"]');
  const now = Date.now();
  if (s.live && s.video && (!img.dataset.at || now - Number(img.dataset.at) > 5000)) {
    img.dataset.at = String(now);
    img.src = `/${s.name}/snapshot.jpg?width=320&t=${now}`;
  }
  img.hidden = !(s.live && s.video);
}
