// meshcast's dashboard: one small script per page, over the node's REST
// API and its Socket.IO events. Nothing is loaded from anywhere else.
import './style.css';
import { io } from 'socket.io-client';
import { h } from './util.js';

const main = document.getElementById('main');
const conn = document.getElementById('conn');
const socket = io({ transports: ['websocket', 'polling'] });
socket.on('connect', () => { conn.textContent = 'live'; conn.className = 'conn ok'; });
socket.on('disconnect', () => { conn.textContent = 'reconnecting…'; conn.className = 'conn bad'; });
socket.on('hello', (m) => { document.body.dataset.node = m.node; conn.title = `node ${m.node}, ${m.version}`; });

const path = location.pathname.replace(/\/+$/, '') || '/';
const watch = /^\/watch\/([^/]+)\/([^/]+)$/.exec(path);
let page = 'streams';
if (watch) page = 'watch';
else if (path === '/cluster') page = 'cluster';
else if (path === '/publish') page = 'publish';
document.body.dataset.page = page;
for (const a of document.querySelectorAll('[data-nav]')) {
  if (a.dataset.nav === page) a.setAttribute('aria-current', 'page');
}

async function show() {
  switch (page) {
    case 'watch': {
      const { watchPage } = await import('./watch.js');
      return watchPage(main, socket, decodeURIComponent(watch[1]), decodeURIComponent(watch[2]));
    }
    case 'cluster': {
      const { clusterPage } = await import('./cluster.js');
      return clusterPage(main, socket);
    }
    case 'publish': {
      const { publishPanel } = await import('./publish.js');
      return main.replaceChildren(h('h1', {}, 'Publish'), await publishPanel());
    }
    default: {
      const { streamsPage } = await import('./streams.js');
      return streamsPage(main, socket);
    }
  }
}

show().then(() => { document.body.dataset.ready = 'true'; }).catch((err) => {
  main.replaceChildren(h('p', { class: 'error', role: 'alert' }, `The page failed: ${err.message}`));
});
