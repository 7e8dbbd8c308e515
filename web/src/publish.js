// The publish help panel: what to paste into OBS, and the ffmpeg command.
import { h, json, copyButton } from './util.js';

function port(addr, fallback) {
  const m = /:(\d+)$/.exec(addr || '');
  return m ? m[1] : fallback;
}

// rtmpPort is the node's RTMP port: from its registry record (the port it
// listens on), found by the HTTP port this page came from, else from its
// configuration.
async function rtmpPort() {
  const httpPort = location.port || (location.protocol === 'https:' ? '443' : '80');
  const nodes = (await json('/api/v1/nodes')) || {};
  const self = (nodes.nodes || []).find((n) => port(n.http_addr) === httpPort);
  if (self && port(self.rtmp_addr)) return port(self.rtmp_addr);
  const cfg = (await json('/api/v1/config')) || {};
  const p = port(cfg.rtmp_addr);
  return p && p !== '0' ? p : '1935';
}

export async function publishPanel(key = 'stream') {
  const host = location.hostname.includes(':') ? `[${location.hostname}]` : location.hostname;
  const rtmp = `rtmp://${host}:${await rtmpPort()}`;
  const server = `${rtmp}/live`;
  const keyInput = h('input', { id: 'publish-key', value: key, spellcheck: 'false', autocomplete: 'off', 'aria-describedby': 'publish-key-help' });
  const serverCode = h('code', { id: 'publish-server' }, server);
  const keyCode = h('code', { id: 'publish-key-code' }, key);
  const ffmpeg = h('code', { id: 'publish-ffmpeg' });
  const watch = h('a', {});
  const update = () => {
    const k = keyInput.value.trim() || 'stream';
    keyCode.textContent = k;
    ffmpeg.textContent = `ffmpeg -re -i input.mp4 -c:v libx264 -preset veryfast -b:v 2000k -g 60 -c:a aac -b:a 128k -f flv ${server}/${k}`;
    watch.href = `/watch/live/${encodeURIComponent(k)}`;
    watch.textContent = `${location.origin}/watch/live/${k}`;
  };
  keyInput.addEventListener('input', update);
  update();
  return h('section', { class: 'panel publish', 'aria-labelledby': 'publish-title' },
    h('h2', { id: 'publish-title' }, 'Publish a stream'),
    h('div', { class: 'field' },
      h('label', { for: 'publish-key' }, 'Stream key'), keyInput,
      h('p', { id: 'publish-key-help', class: 'muted' },
        'Any name of letters, digits, _ - and . — publishing from another machine needs a publish key: append ?key=KEY.')),
    h('h3', {}, 'OBS'),
    h('dl', { class: 'kv' },
      h('dt', {}, 'Server'), h('dd', {}, serverCode, copyButton(serverCode, 'server URL')),
      h('dt', {}, 'Stream key'), h('dd', {}, keyCode, copyButton(keyCode, 'stream key'))),
    h('h3', {}, 'ffmpeg'),
    h('pre', {}, ffmpeg), copyButton(ffmpeg, 'ffmpeg command'),
    h('p', {}, 'Then watch it at ', watch, '.'));
}
