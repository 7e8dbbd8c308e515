// The cluster page: the live nodes with their load, and each stream as a
// tree from its owner through the nodes relaying it.
import { h, json } from './util.js';

export async function clusterPage(main, socket) {
  const nodes = h('div', { id: 'nodes', class: 'cards', role: 'list', 'aria-live': 'polite' });
  const trees = h('div', { id: 'trees', 'aria-live': 'polite' });
  const note = h('p', { id: 'cluster-note', class: 'muted', role: 'status' });
  main.replaceChildren(
    h('h1', {}, 'Cluster'), note,
    h('section', { 'aria-labelledby': 'nodes-title' }, h('h2', { id: 'nodes-title' }, 'Nodes'), nodes),
    h('section', { 'aria-labelledby': 'trees-title' }, h('h2', { id: 'trees-title' }, 'Streams: owner and relays'), trees));
  const refresh = async () => {
    const c = await json('/api/v1/cluster');
    if (!c) {
      note.textContent = 'The cluster registry cannot be reached.';
      return;
    }
    note.textContent = `${c.nodes.length} node${c.nodes.length === 1 ? '' : 's'}, ${c.streams.length} stream${c.streams.length === 1 ? '' : 's'}.`;
    renderNodes(nodes, c);
    renderTrees(trees, c);
  };
  socket.on('stream:start', refresh);
  socket.on('stream:end', refresh);
  await refresh();
  setInterval(refresh, 2000);
}

function bar(label, value, max, text) {
  const pct = max > 0 ? Math.min(100, (100 * value) / max) : 0;
  return h('div', { class: 'load' },
    h('span', { class: 'load-label' }, label),
    h('meter', { min: 0, max: 100, low: 60, high: 85, optimum: 0, value: pct.toFixed(0), 'aria-label': `${label}: ${text}` }),
    h('span', { class: 'load-value' }, text));
}

function renderNodes(el, c) {
  const owns = {}, relays = {};
  for (const s of c.streams) {
    (owns[s.owner] ||= []).push(s.name);
    for (const r of s.relays) (relays[r.node] ||= []).push(s.name);
  }
  el.replaceChildren(...c.nodes.map((n) => {
    const load = n.load || {};
    return h('article', { class: `card node ${n.state}`, role: 'listitem', dataset: { node: n.id } },
      h('header', {}, h('span', { class: 'title' }, n.id), h('span', { class: `state ${n.state}` }, n.state)),
      h('p', { class: 'muted' }, [n.region && `region ${n.region}`, n.http_addr].filter(Boolean).join(' · ')),
      bar('Viewers', load.viewers || 0, n.capacity || 0, `${load.viewers || 0} of ${n.capacity || '∞'}`),
      bar('CPU', (load.cpu || 0) * 100, 100, `${Math.round((load.cpu || 0) * 100)} %`),
      h('dl', { class: 'kv' },
        h('dt', {}, 'Owns'), h('dd', { 'data-field': 'owns' }, (owns[n.id] || []).join(', ') || '—'),
        h('dt', {}, 'Relays'), h('dd', { 'data-field': 'relays' }, (relays[n.id] || []).join(', ') || '—')));
  }));
}

// renderTrees draws each stream from its owner down the relays, each
// under the node it pulls from.
function renderTrees(el, c) {
  if (c.streams.length === 0) {
    el.replaceChildren(h('p', { class: 'muted' }, 'No streams in the cluster.'));
    return;
  }
  el.replaceChildren(...c.streams.map((s) => {
    const children = {};
    for (const r of s.relays) (children[r.upstream] ||= []).push(r.node);
    const seen = new Set();
    const branch = (node, upstream) => {
      seen.add(node);
      const kids = (children[node] || []).filter((k) => !seen.has(k));
      return h('li', { class: upstream ? 'relay' : 'owner', dataset: upstream ? { relay: node, upstream } : { owner: node } },
        h('span', { class: 'node-name' }, node),
        h('span', { class: 'muted' }, upstream ? ` pulls from ${upstream}` : ' owner'),
        kids.length ? h('ul', {}, kids.map((k) => branch(k, node))) : null);
    };
    return h('figure', { class: 'tree', dataset: { stream: s.name } },
      h('figcaption', {}, h('a', { href: `/watch/${s.name}` }, s.name)),
      h('ul', {}, branch(s.owner, null)));
  }));
}
