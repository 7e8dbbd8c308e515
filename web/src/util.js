// Small DOM and formatting helpers shared by the pages.

// h builds an element: h('a', {href: '/', class: 'x'}, 'text', child).
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function bitrate(bps) {
  if (!bps) return '—';
  if (bps >= 1e6) return (bps / 1e6).toFixed(2) + ' Mb/s';
  return Math.round(bps / 1e3) + ' kb/s';
}

export function bytes(n) {
  if (n >= 1e9) return (n / 1e9).toFixed(2) + ' GB';
  if (n >= 1e6) return (n / 1e6).toFixed(1) + ' MB';
  return Math.round(n / 1e3) + ' kB';
}

export function duration(secs) {
  secs = Math.max(0, Math.floor(secs));
  const h = Math.floor(secs / 3600), m = Math.floor((secs % 3600) / 60), s = secs % 60;
  const two = (n) => String(n).padStart(2, '0');
  return h ? `${h}:${two(m)}:${two(s)}` : `${m}:${two(s)}`;
}

export function codecs(s) {
  const parts = [];
  if (s.video) parts.push(`${s.video.codec}${s.video.profile ? ' ' + s.video.profile : ''}`);
  if (s.audio) parts.push(`${s.audio.codec}${s.audio.sample_rate ? ' ' + s.audio.sample_rate / 1000 + ' kHz' : ''}`);
  return parts.join(' · ') || '—';
}

export function resolution(s) {
  if (!s.video || !s.video.width) return '—';
  const fps = s.video.fps ? ` @ ${Math.round(s.video.fps)}` : '';
  return `${s.video.width}×${s.video.height}${fps}`;
}

// json fetches a JSON document, or null on any failure.
export async function json(url) {
  try {
    const r = await fetch(url, { headers: { Accept: 'application/json' } });
    if (!r.ok) return null;
    return await r.json();
  } catch {
    return null;
  }
}

// copyButton copies the text of a code element.
export function copyButton(code, label) {
  const b = h('button', { type: 'button', class: 'copy', 'aria-label': `Copy ${label}` }, 'Copy');
  b.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(code.textContent);
      b.textContent = 'Copied';
    } catch {
      const r = document.createRange();
      r.selectNodeContents(code);
      getSelection().removeAllRanges();
      getSelection().addRange(r);
      b.textContent = 'Selected';
    }
    setTimeout(() => { b.textContent = 'Copy'; }, 1500);
  });
  return b;
}
