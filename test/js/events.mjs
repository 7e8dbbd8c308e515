// Socket.IO clients of meshcast's real-time events, for test/e2e/ops/events_test.go.
// Prints one JSON object per line on stdout and exits 0 when its scenario
// completed, 1 when it timed out or failed.
//
//   node test/js/events.mjs viewers URL STREAM
//     connects, joins STREAM's room and prints hello and every viewers
//     event; done once a count of 1 or more was followed by a lower one.
//   node test/js/events.mjs chat URL_A URL_B STREAM
//     one client on each node joins STREAM's room; A sends a chat message
//     until B gets it, then a burst that exceeds the rate limit; prints
//     what each client received.
import { io } from "socket.io-client";

const [mode, ...args] = process.argv.slice(2);
const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function fail(why) {
  print({ event: "fail", why });
  process.exit(1);
}

// connect opens a client and resolves with it and its hello.
function connect(url) {
  return new Promise((resolve, reject) => {
    const socket = io(url, { reconnection: false, timeout: 10000 });
    socket.once("hello", (hello) => resolve({ socket, hello }));
    socket.once("connect_error", (err) => reject(new Error(`connect ${url}: ${err.message}`)));
  });
}

// join joins a room and resolves with the viewers event answering it.
function join(socket, stream) {
  return new Promise((resolve) => {
    socket.once("viewers", resolve);
    socket.emit("join", stream);
  });
}

// waitFor polls cond every 50 ms for up to ms.
async function waitFor(cond, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (cond()) return true;
    await sleep(50);
  }
  return cond();
}

async function viewers(url, stream) {
  const { socket, hello } = await connect(url);
  print({ event: "hello", data: hello, id: socket.id });
  socket.on("viewers", (v) => print({ event: "viewers", data: v }));
  const first = await join(socket, stream);
  print({ event: "viewers", data: first });
  print({ event: "joined" });
  let peak = first.total;
  let dropped = false;
  socket.on("viewers", (v) => {
    if (v.stream !== stream) return;
    if (peak >= 1 && v.total < peak) dropped = true;
    peak = Math.max(peak, v.total);
  });
  if (!(await waitFor(() => dropped, 60000))) fail("no viewers count of 1 or more followed by a lower one");
  print({ event: "done" });
  socket.close();
}

async function chat(urlA, urlB, stream) {
  const a = await connect(urlA);
  const b = await connect(urlB);
  const got = { a: [], b: [] };
  const errors = { a: [], b: [] };
  for (const [k, c] of [["a", a], ["b", b]]) {
    c.socket.on("chat", (m) => got[k].push(m));
    c.socket.on("error", (e) => errors[k].push(e));
  }
  await join(a.socket, stream);
  await join(b.socket, stream);
  const text = `hello from ${a.hello.node} ✓ <b>`;
  // The nodes' subscriptions may still be coming up: send until B has it.
  let sent = 0;
  for (; sent < 3; ) {
    a.socket.emit("chat", { stream, text: `  ${text}\u0007\n` });
    sent++;
    if (await waitFor(() => got.b.some((m) => m.text === text), 3000)) break;
  }
  // A burst past the limit: the excess is refused with rate_limited.
  for (let i = 0; i < 6; i++) a.socket.emit("chat", { stream, text: `burst ${i}` });
  await waitFor(() => errors.a.some((e) => e.code === "rate_limited"), 5000);
  // A socket outside the room cannot chat there.
  b.socket.emit("chat", { stream: "live/elsewhere", text: "x" });
  await waitFor(() => errors.b.length > 0, 5000);
  await sleep(500); // the last deliveries
  print({
    event: "chat", text, sent,
    a: { id: a.socket.id, hello: a.hello, got: got.a, errors: errors.a },
    b: { id: b.socket.id, hello: b.hello, got: got.b, errors: errors.b },
  });
  a.socket.close();
  b.socket.close();
}

const timer = setTimeout(() => fail("timed out"), 90000);
try {
  if (mode === "viewers") await viewers(args[0], args[1]);
  else if (mode === "chat") await chat(args[0], args[1], args[2]);
  else fail(`unknown mode ${mode}`);
} catch (err) {
  fail(String(err && err.message ? err.message : err));
}
clearTimeout(timer);
