// The Chorus demo page: live cursors (ticks), a shared title and colour (state),
// chat (commands, with the room's history), the member list with presence, and
// the connection's transport, clock and reconnecting state (a dropped
// connection is resumed by the SDK; the status line says so).
//
// Query parameters: ?room=NAME (default lobby) &name=NAME (default random)
// &transport=ws|wt|auto (default auto) &color=%23RRGGBB, and for servers with
// access control &key=API_KEY (the server's --api-key) &password=ROOM_PASSWORD
// &token=JOIN_TOKEN.
// Test hooks: window.chorusDemo (client, room, joined, selfTest, measureRtt), and
// ?selftest=basic|rtt&report=URL runs one of them and POSTs the result as JSON to URL
// (for browsers no test driver can control, such as stock Firefox).

import { connect, ChorusError } from '/chorus.js';

const params = new URLSearchParams(location.search);
const PALETTE = ['#e76f51', '#2a9d8f', '#e9c46a', '#8e7dbe', '#f4a261', '#4d908e', '#d62828', '#277da1'];
const pick = (list) => list[Math.floor(Math.random() * list.length)];
const roomId = params.get('room') || 'lobby';
const myName = params.get('name') || `${pick(['quick', 'calm', 'bright', 'brave', 'lucky', 'merry'])}-${pick(['otter', 'heron', 'lynx', 'finch', 'panda', 'koi'])}-${Math.floor(Math.random() * 100)}`;
const myColor = /^#[0-9a-f]{6}$/i.test(params.get('color') ?? '') ? params.get('color') : pick(PALETTE);
const transport = { ws: 'websocket', websocket: 'websocket', wt: 'webtransport', webtransport: 'webtransport' }[params.get('transport')] ?? 'auto';
const serverUrl = `https://${location.host}/chorus`;
const apiKey = params.get('key') || undefined;
const access = { password: params.get('password') || undefined, token: params.get('token') || undefined };
const TICK_INTERVAL_MS = 1000 / 60; // cursor ticks: at most 60 Hz
const STALE_MS = 3000;

const $ = (id) => document.getElementById(id);
const enc = new TextEncoder();
const dec = new TextDecoder();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let resolveJoined;
let rejectJoined;
const joined = new Promise((res, rej) => { resolveJoined = res; rejectJoined = rej; });
joined.catch(() => {}); // reported on the page; awaiters still see the rejection

const demo = {
  joined, client: null, room: null, name: myName, roomId, serverUrl, requestedTransport: transport,
  connect, ChorusError, cursorPayload, parseCursor, selfTest, measureRtt,
};
window.chorusDemo = demo;

// ------------------------------------------------------------------ helpers

function describe(err) {
  if (err instanceof ChorusError) return `${err.name} (${err.code}): ${err.message}`;
  return String(err?.message ?? err);
}

/** Two little-endian f32, x and y in 0..1 of the stage (as the chat_cursor example sends). */
function cursorPayload(x, y) {
  const bytes = new Uint8Array(8);
  const view = new DataView(bytes.buffer);
  view.setFloat32(0, x, true);
  view.setFloat32(4, y, true);
  return bytes;
}

function parseCursor(payload) {
  if (payload?.byteLength !== 8) return null;
  const view = new DataView(payload.buffer, payload.byteOffset, 8);
  const x = view.getFloat32(0, true);
  const y = view.getFloat32(4, true);
  return Number.isFinite(x) && Number.isFinite(y) ? { x, y } : null;
}

const memberId = (m) => (typeof m === 'object' && m !== null ? m.id : m);

function colorOf(member) {
  try {
    const c = JSON.parse(dec.decode(member.meta ?? new Uint8Array())).color;
    if (/^#[0-9a-f]{6}$/i.test(c)) return c;
  } catch { /* no or foreign meta */ }
  return PALETTE[Number(member.id ?? 0) % PALETTE.length];
}

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function banner(text) {
  $('banner').textContent = text;
  $('banner').classList.toggle('show', Boolean(text));
}

// ---------------------------------------------------------------- the page

const names = new Map(); // member id → { name, color }, kept after they leave (chat)
const cursors = new Map(); // member id → { node, x, y, seen }
let connection = ''; // 'reconnecting… (attempt n)' or 'resumed after …' while it matters

async function main() {
  $('room-name').textContent = roomId;
  let client;
  let joinFailed = false;
  try {
    client = await connect(serverUrl, { transport, clientName: 'chorus-demo/0.1', apiKey });
    demo.client = client;
    // After a refused join, the banner keeps saying why (not that this page then closed).
    client.on('close', (reason) => joinFailed || banner(`Disconnected: ${reason?.message || reason?.name || 'connection closed'}`));
    // A dropped connection: the SDK reconnects and resumes the session by itself.
    client.on('reconnecting', ({ attempt }) => {
      connection = `reconnecting… (attempt ${attempt})`;
      if (demo.room) renderStatus(client, demo.room);
    });
    client.on('resumed', ({ sessionResumed, downtimeMs, transport: via }) => {
      connection = sessionResumed ? `resumed after ${(downtimeMs / 1000).toFixed(1)} s` : 'reconnected, but the session was gone';
      if (demo.room) {
        renderStatus(client, demo.room);
        systemLine(`${connection} over ${via}`);
      }
      setTimeout(() => {
        if (client.state === 'connected') connection = '';
      }, 5000);
    });
    // The SDK closes the connection on pagehide itself (closeOnPageHide).
    client.on('error', (err) => systemLine(`server error: ${describe(err)}`));
    const room = await client.join(roomId, {
      name: myName, meta: enc.encode(JSON.stringify({ color: myColor })), createIfMissing: true, ...access,
    });
    demo.room = room;
    setUp(client, room);
    resolveJoined({ client, room });
  } catch (err) {
    joinFailed = true;
    banner(`Could not join ${roomId}: ${describe(err)}`);
    $('status').textContent = 'not connected';
    rejectJoined(err);
    client?.close().catch(() => {});
  }
}

function setUp(client, room) {
  for (const m of room.members) names.set(m.id, { name: m.name, color: colorOf(m) });
  renderMembers(room);
  renderState(room);
  renderStatus(client, room);
  setInterval(() => renderStatus(client, room), 1000);
  for (const entry of room.chat ?? []) chatLine(entry.author, entry.text); // the room's chat history
  systemLine(`joined ${room.id} as ${myName} (${room.role}) over ${client.transport}`);

  room.on('presenceChanged', ({ member, presence }) => {
    renderMembers(room);
    if (member.id !== room.me) systemLine(`${names.get(member.id)?.name ?? `member ${member.id}`} is ${presence}`);
  });
  room.on('snapshot', () => {
    renderMembers(room);
    renderState(room);
  });
  room.on('lost', ({ name }) => {
    banner(`Lost the room ${room.id} while reconnecting (${name}); reload to join again`);
    renderMembers(room);
    updateControls(room);
  });

  room.on('memberJoined', (m) => {
    names.set(m.id, { name: m.name, color: colorOf(m) });
    renderMembers(room);
    systemLine(`${m.name || `member ${m.id}`} joined`);
  });
  room.on('memberLeft', ({ member, reason }) => {
    const id = memberId(member);
    cursors.get(id)?.node.remove();
    cursors.delete(id);
    renderMembers(room);
    systemLine(`${names.get(id)?.name ?? `member ${id}`} left (${reason})`);
  });
  room.on('memberKicked', ({ member, by, reason }) => {
    const id = memberId(member);
    cursors.get(id)?.node.remove();
    cursors.delete(id);
    renderMembers(room);
    if (id !== room.me) systemLine(`${names.get(id)?.name ?? `member ${id}`} was removed by ${names.get(by)?.name ?? `member ${by}`}${reason ? ` (${reason})` : ''}`);
  });
  room.on('roleChanged', ({ member, role, by }) => {
    renderMembers(room);
    updateControls(room);
    renderStatus(client, room);
    const who = member.id === room.me ? 'you are' : `${names.get(member.id)?.name ?? `member ${member.id}`} is`;
    systemLine(`${who} now ${role} (by ${names.get(by)?.name ?? `member ${by}`})`);
  });
  room.on('kicked', ({ by, reason }) => {
    banner(`You were removed from ${room.id} by ${names.get(by)?.name ?? `member ${by}`}${reason ? `: ${reason}` : ''}`);
    updateControls(room);
  });
  room.on('closed', ({ by, reason }) => {
    banner(`The room ${room.id} was closed by ${names.get(by)?.name ?? `member ${by}`}${reason ? `: ${reason}` : ''}`);
    renderMembers(room);
    updateControls(room);
  });
  room.on('stateChanged', () => renderState(room));
  room.on('command', (cmd) => {
    if (cmd.kind === 'chat') chatLine(cmd.author, cmd.text);
  });
  room.on('tick', ({ sender, payload }) => {
    const pos = parseCursor(payload);
    if (pos) moveCursor(sender, pos);
  });
  requestAnimationFrame(drawCursors);

  // Local pointer → ticks, at most one per TICK_INTERVAL_MS, the latest position always sent.
  const stage = $('stage');
  let pending = null;
  let lastSent = -Infinity;
  let timer = 0;
  const flush = () => {
    timer = 0;
    if (!pending) return;
    try {
      room.sendTick(pending);
    } catch (err) {
      systemLine(`cursor not sent: ${describe(err)}`);
    }
    pending = null;
    lastSent = performance.now();
  };
  stage.addEventListener('pointermove', (e) => {
    const r = stage.getBoundingClientRect();
    pending = cursorPayload((e.clientX - r.left) / r.width, (e.clientY - r.top) / r.height);
    const wait = lastSent + TICK_INTERVAL_MS - performance.now();
    if (wait <= 0) flush();
    else if (!timer) timer = setTimeout(flush, wait);
  });

  updateControls(room);
  $('title-form').addEventListener('submit', (e) => {
    e.preventDefault();
    setKey(room, 'title', $('title-input').value.trim());
  });
  $('color-form').addEventListener('submit', (e) => {
    e.preventDefault();
    setKey(room, 'color', $('color-input').value);
  });
  $('chat-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = $('chat-input').value.trim();
    if (!text) return;
    $('chat-input').value = '';
    try {
      await room.sendCommand('chat', text, { idempotencyKey: crypto.randomUUID() });
    } catch (err) {
      systemLine(`message not sent: ${describe(err)}`);
    }
  });
}

/** Enables the state controls this client's role may use in this room (the room's policy, as the server applies it). */
function updateControls(room) {
  const may = { title: room.can('set_state', 'title'), color: room.can('set_state', 'color') };
  $('title-input').disabled = !may.title;
  $('color-input').disabled = !may.color;
  $('title-form').querySelector('button').disabled = !may.title;
  $('color-form').querySelector('button').disabled = !may.color;
  $('chat-input').disabled = !room.joined;
  $('chat-form').querySelector('button').disabled = !room.joined;
  let note = '';
  if (!room.joined) note = 'not in the room any more';
  else if (!may.title && !may.color) note = `${room.role}s cannot change the state`;
  $('state-note').textContent = note;
}

/** Writes one state key, on top of the version this page shows (optimistic concurrency). */
async function setKey(room, key, value) {
  $('state-note').textContent = '';
  try {
    await room.setState(key, value, { ifVersion: room.getState(key)?.version ?? 0 });
  } catch (err) {
    $('state-note').textContent = err?.name === 'conflict'
      ? `someone changed the ${key} first (now v${err.detail?.currentVersion}); try again`
      : `not saved: ${describe(err)}`;
  }
}

function renderState(room) {
  const title = room.getState('title');
  const color = room.getState('color');
  $('stage-title').textContent = title?.text ?? '';
  if (title && document.activeElement !== $('title-input')) $('title-input').value = title.text;
  if (color && /^#[0-9a-f]{6}$/i.test(color.text)) {
    document.documentElement.style.setProperty('--accent', color.text);
    $('color-input').value = color.text;
  }
  $('versions').textContent = `title v${title?.version ?? '–'}, colour v${color?.version ?? '–'} · room event #${room.lastSeq}`;
}

function renderMembers(room) {
  $('members').replaceChildren(...room.members.map((m) => {
    const away = m.presence && m.presence !== 'online' ? ` · ${m.presence}` : '';
    const li = el('li', {}, el('i'), `${m.name || `member ${m.id}`}${m.id === room.me ? ' (you)' : ''}`, el('em', { textContent: `${m.role}${away}` }));
    li.style.setProperty('--c', colorOf(m));
    if (away) li.style.opacity = '.5';
    return li;
  }));
}

function renderStatus(client, room) {
  const { offsetUs = 0, rttUs = 0, samples = 0 } = client.clock ?? {};
  const ms = (us) => (us / 1000).toFixed(2);
  $('status').replaceChildren(
    ...(connection ? [el('b', { textContent: connection, style: 'color: #b5651d' }), ' · '] : []),
    el('b', { textContent: client.transport }), ' · RTT ', el('b', { textContent: `${ms(rttUs)} ms` }),
    ' · clock offset ', el('b', { textContent: `${offsetUs >= 0 ? '+' : ''}${ms(offsetUs)} ms` }),
    ` (${samples} samples) · you: ${myName}, ${room.role}`,
  );
}

function moveCursor(id, { x, y }) {
  let c = cursors.get(id);
  if (!c) {
    const who = names.get(id) ?? { name: `member ${id}`, color: PALETTE[id % PALETTE.length] };
    const node = el('div', { className: 'cursor' }, el('i'), el('span', { textContent: who.name }));
    node.style.setProperty('--c', who.color);
    $('stage').append(node);
    c = { node };
    cursors.set(id, c);
  }
  Object.assign(c, { x, y, seen: performance.now(), dirty: true });
}

function drawCursors() {
  const { width, height } = $('stage').getBoundingClientRect();
  const now = performance.now();
  for (const c of cursors.values()) {
    if (c.dirty) {
      c.node.style.transform = `translate(${(c.x * width).toFixed(1)}px, ${(c.y * height).toFixed(1)}px)`;
      c.dirty = false;
    }
    c.node.classList.toggle('stale', now - c.seen > STALE_MS);
  }
  requestAnimationFrame(drawCursors);
}

function chatLine(author, text) {
  const who = names.get(author) ?? { name: `member ${author}`, color: '#666' };
  const li = el('li', {}, el('b', { textContent: who.name }), `: ${text}`);
  li.style.setProperty('--c', who.color);
  appendChat(li);
}

function systemLine(text) {
  appendChat(el('li', { className: 'system', textContent: text }));
}

function appendChat(li) {
  const list = $('chat');
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
  list.append(li);
  while (list.children.length > 200) list.firstElementChild.remove();
  if (atBottom) li.scrollIntoView({ block: 'end' });
}

// -------------------------------------------------------------- self-tests

/** The first `event` on `target` matching `pred`, within `ms`. */
function nextEvent(target, event, pred, ms, what) {
  return new Promise((resolve, reject) => {
    const handler = (e) => {
      if (!pred(e)) return;
      clearTimeout(timer);
      target.off(event, handler);
      resolve(e);
    };
    const timer = setTimeout(() => {
      target.off(event, handler);
      reject(new Error(`no ${what ?? event} within ${ms} ms`));
    }, ms);
    target.on(event, handler);
  });
}

const sameBytes = (a, b) => a?.byteLength === b.byteLength && a.every((v, i) => v === b[i]);

/** Sends `payload` every 50 ms from `from` until `to` receives it from `fromId`. */
async function tickReaches(from, to, fromId, payload = cursorPayload(Math.random(), Math.random()), ms = 5000) {
  const got = nextEvent(to, 'tick', (t) => t.sender === fromId && sameBytes(t.payload, payload), ms, 'tick');
  from.sendTick(payload);
  const timer = setInterval(() => from.sendTick(payload), 50);
  try {
    return await got;
  } finally {
    clearInterval(timer);
  }
}

/**
 * The page's own end-to-end check: a second client in this page joins the room
 * and the two exchange ticks, state and commands; then the typed errors. Resolves
 * with { ok, transport, checks: [{ name, ok, detail }], error }.
 */
async function selfTest() {
  const checks = [];
  const check = (name, ok, detail = null) => {
    checks.push({ name, ok: Boolean(ok), detail });
    if (!ok) throw new Error(`check failed: ${name} ${JSON.stringify(detail)}`);
  };
  let error = null;
  let other = null;
  let client;
  try {
    ({ client } = await joined);
    const { room } = demo;
    check('transport as requested', transport === 'auto' || client.transport === transport, { requested: transport, transport: client.transport });
    check('clock synced', client.clock?.samples > 0, client.clock);

    const otherName = `${myName}-2`;
    const sawJoin = nextEvent(room, 'memberJoined', (m) => m.name === otherName, 10000, 'memberJoined');
    other = await connect(serverUrl, { transport: client.transport, clientName: 'chorus-demo-selftest/0.1', apiKey });
    check('second client on the same transport', other.transport === client.transport, { transport: other.transport });
    const room2 = await other.join(room.id, { name: otherName, createIfMissing: false, ...access });
    const joinedEvent = await sawJoin;
    check('first sees second join', joinedEvent.id === room2.me, { event: joinedEvent.id, me: room2.me });
    check('second sees first in members', room2.members.some((m) => m.id === room.me && m.name === myName), room2.members.map((m) => m.name));

    const t1 = await tickReaches(room, room2, room.me);
    check('tick first → second', parseCursor(t1.payload) !== null, { seq: t1.seq });
    const t2 = await tickReaches(room2, room, room2.me);
    check('tick second → first', parseCursor(t2.payload) !== null, { seq: t2.seq });
    const largest = new Uint8Array(client.maxTickPayload).map((_, i) => i * 7);
    const t3 = await tickReaches(room, room2, room.me, largest);
    check('a tick of maxTickPayload bytes arrives', t3.payload.byteLength === largest.byteLength,
      { maxTickPayload: client.maxTickPayload, limit: client.limits?.maxTickPayloadBytes });

    const title = `self-test ${Math.random().toString(36).slice(2, 8)}`;
    const sawState = nextEvent(room, 'stateChanged', (s) => s.key === 'title' && s.text === title, 5000, 'stateChanged');
    const ack = await room2.setState('title', title);
    const change = await sawState;
    check('state set by second reaches first', change.version === ack.version && change.author === room2.me,
      { ack, version: change.version, author: change.author });
    check('state readable with its version', room.getState('title')?.text === title && room.getState('title')?.version === ack.version,
      { version: room.getState('title')?.version });
    const stale = await room2.setState('title', 'stale write', { ifVersion: ack.version - 1 }).then(() => null, (e) => e);
    check('stale ifVersion is a conflict', stale instanceof ChorusError && stale.name === 'conflict', { name: stale?.name, code: stale?.code, detail: stale?.detail });

    const text = `hello from ${myName}`;
    const sawChat = nextEvent(room2, 'command', (c) => c.kind === 'chat' && c.text === text, 5000, 'command');
    const key = crypto.randomUUID();
    const cmdAck = await room.sendCommand('chat', text, { idempotencyKey: key });
    const cmd = await sawChat;
    check('chat command reaches second', cmd.seq === cmdAck.seq && cmd.author === room.me, { ack: cmdAck, seq: cmd.seq });
    const again = await room.sendCommand('chat', text, { idempotencyKey: key });
    check('repeated idempotency key is a duplicate', again.duplicate === true && again.seq === cmdAck.seq, again);

    const max = client.maxTickPayload;
    let tooBig = null;
    try {
      room.sendTick(new Uint8Array(max + 1));
    } catch (e) {
      tooBig = e;
    }
    check('oversized tick throws limit_exceeded', tooBig instanceof ChorusError && tooBig.name === 'limit_exceeded' && tooBig.code === 105,
      { maxTickPayload: max, name: tooBig?.name, code: tooBig?.code, message: tooBig?.message });
    const missing = await client.join(`no-such-room-${crypto.randomUUID()}`, { name: myName, createIfMissing: false })
      .then(() => null, (e) => e);
    check('joining a missing room is room_not_found', missing instanceof ChorusError && missing.code === 200 && missing.name === 'room_not_found',
      { name: missing?.name, code: missing?.code, message: missing?.message });

    const sawLeave = nextEvent(room, 'memberLeft', (e) => memberId(e.member) === room2.me, 5000, 'memberLeft');
    await room2.leave();
    const left = await sawLeave;
    check('second leaves', left.reason === 'left', { reason: left.reason });
  } catch (e) {
    error = describe(e);
  } finally {
    await other?.close().catch(() => {});
  }
  return { ok: error === null && checks.every((c) => c.ok), transport: client?.transport ?? null, checks, error };
}

const RTT_MAGIC = 0x52545431; // "RTT1"

/**
 * Tick round trips through an echoing member (the native browser_peer): one tick
 * at a time, `count` measured after `warmup`. Times in ms from performance.now().
 */
async function measureRtt({ peerName = 'rtt-peer', count = 1000, warmup = 50, timeoutMs = 1000, payloadBytes = 64 } = {}) {
  const { client, room } = await joined;
  const deadline = performance.now() + 15000;
  let peer;
  while (!(peer = room.members.find((m) => m.name === peerName))) {
    if (performance.now() > deadline) throw new Error(`no member named ${peerName} in ${room.id}`);
    await sleep(50);
  }
  let waiting = null;
  const onTick = (t) => {
    if (t.sender !== peer.id || t.payload.byteLength !== payloadBytes) return;
    const view = new DataView(t.payload.buffer, t.payload.byteOffset, payloadBytes);
    if (view.getUint32(0) === RTT_MAGIC && waiting && view.getUint32(4) === waiting.seq) {
      waiting.resolve(t.receivedAt ?? performance.now());
    }
  };
  room.on('tick', onTick);
  const samples = [];
  let lost = 0;
  const started = performance.now();
  try {
    for (let i = 0; i < warmup + count; i++) {
      const payload = new Uint8Array(payloadBytes);
      const view = new DataView(payload.buffer);
      view.setUint32(0, RTT_MAGIC);
      view.setUint32(4, i);
      let timer;
      const back = new Promise((resolve) => {
        waiting = { seq: i, resolve };
        timer = setTimeout(() => resolve(null), timeoutMs);
      });
      const t0 = performance.now();
      room.sendTick(payload);
      const t1 = await back;
      clearTimeout(timer);
      if (i < warmup) continue;
      if (t1 === null) lost++;
      else samples.push(t1 - t0);
    }
  } finally {
    room.off('tick', onTick);
  }
  samples.sort((a, b) => a - b);
  const q = (p) => samples[Math.min(samples.length - 1, Math.floor(p * samples.length))];
  const r3 = (x) => (x === undefined ? null : Math.round(x * 1000) / 1000);
  return {
    ok: samples.length > 0,
    transport: client.transport,
    count: samples.length,
    lost,
    payloadBytes,
    p50: r3(q(0.5)), p90: r3(q(0.9)), p99: r3(q(0.99)), min: r3(samples[0]), max: r3(samples.at(-1)),
    mean: r3(samples.reduce((a, b) => a + b, 0) / (samples.length || 1)),
    seconds: r3((performance.now() - started) / 1000),
    clock: client.clock,
    crossOriginIsolated: globalThis.crossOriginIsolated,
  };
}

/** ?selftest=basic|rtt&report=URL: run it, POST the result (BigInts as strings). */
async function runSelfTestMode(mode) {
  const reportUrl = params.get('report');
  const post = (body) => (reportUrl
    ? fetch(reportUrl, { method: 'POST', mode: 'cors', body: JSON.stringify(body, (_, v) => (typeof v === 'bigint' ? String(v) : v)) })
      .catch(() => {})
    : Promise.resolve());
  addEventListener('unhandledrejection', (e) => post({ kind: 'log', text: `unhandled rejection: ${describe(e.reason)}` }));
  let result;
  try {
    result = mode === 'rtt'
      ? await measureRtt({ peerName: params.get('peer') ?? 'rtt-peer', count: Number(params.get('count')) || 1000 })
      : await selfTest();
  } catch (e) {
    result = { ok: false, error: describe(e) };
  }
  Object.assign(result, { mode, userAgent: navigator.userAgent, crossOriginIsolated: globalThis.crossOriginIsolated });
  demo.selfTestResult = result;
  document.title = `self-test ${result.ok ? 'passed' : 'failed'}`;
  await post({ kind: 'result', ...result });
}

main();
if (params.get('selftest')) runSelfTestMode(params.get('selftest'));
