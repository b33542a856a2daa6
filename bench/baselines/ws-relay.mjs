// A room relay on the `ws` package, written the way the Node.js relays Chorus
// replaces usually are: one JSON message per WebSocket text frame, rooms kept
// in a Map of Sets, and every tick re-serialised once and sent to each other
// member of the sender's room. It is a benchmark baseline: keep it idiomatic,
// not tuned (no binary frames, no batching, no native add-ons).
//
// Wire shapes (README.md has the full table):
//   client -> relay  {"t":"join","room":"bench-0"}
//   relay -> client  {"t":"joined","room":"bench-0","id":7,"members":3}
//   client -> relay  {"t":"tick","d":"<base64 payload>"}
//   relay -> others  {"t":"tick","from":7,"d":"<base64 payload>"}
//   relay -> client  {"t":"error","error":"<why>"}   (a message it refused)
//
// Usage: node ws-relay.mjs [--port N] [--host H] [--exit-with-stdin]
//   port: --port, else the first bare argument, else $PORT, else 0 (any free port)
//   host: --host, else $HOST, else 127.0.0.1
//   --exit-with-stdin: also shut down when standard input ends, so that a
//   launcher that dies cannot leave the relay running.
// Prints one JSON line on stdout once it listens:
//   {"event":"ready","relay":"ws","url":"ws://127.0.0.1:PORT/","host":"127.0.0.1","port":PORT,"pid":PID}
// Exits 0 on SIGTERM or SIGINT after closing every connection.

import { WebSocketServer, WebSocket } from 'ws';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({
  options: {
    port: { type: 'string' },
    host: { type: 'string' },
    'exit-with-stdin': { type: 'boolean', default: false },
  },
  allowPositionals: true,
});
const port = Number(values.port ?? positionals[0] ?? process.env.PORT ?? 0);
const host = values.host ?? process.env.HOST ?? '127.0.0.1';
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`ws-relay: bad port ${values.port ?? positionals[0] ?? process.env.PORT}`);
  process.exit(2);
}

const MAX_ROOM_NAME = 128;

/** room name -> Set of the sockets in it */
const rooms = new Map();
let nextId = 1;

const wss = new WebSocketServer({ host, port });

wss.on('connection', (ws) => {
  const id = nextId++;
  let room = null;

  const leave = () => {
    if (room === null) return;
    const members = rooms.get(room);
    if (members) {
      members.delete(ws);
      if (members.size === 0) rooms.delete(room);
    }
    room = null;
  };

  const refuse = (error) => ws.send(JSON.stringify({ t: 'error', error }));

  ws.on('message', (data, isBinary) => {
    if (isBinary) return refuse('binary frames are not accepted');
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return refuse('not JSON');
    }
    if (msg === null || typeof msg !== 'object') return refuse('not an object');

    if (msg.t === 'tick') {
      if (room === null) return refuse('tick before join');
      if (typeof msg.d !== 'string') return refuse('tick without a string d');
      // Serialised once per tick, sent to every other member.
      const out = JSON.stringify({ t: 'tick', from: id, d: msg.d });
      for (const peer of rooms.get(room) ?? []) {
        if (peer !== ws && peer.readyState === WebSocket.OPEN) peer.send(out);
      }
    } else if (msg.t === 'join') {
      if (typeof msg.room !== 'string' || msg.room.length === 0 || msg.room.length > MAX_ROOM_NAME) {
        return refuse(`room must be a string of 1 to ${MAX_ROOM_NAME} characters`);
      }
      leave();
      room = msg.room;
      let members = rooms.get(room);
      if (!members) rooms.set(room, (members = new Set()));
      members.add(ws);
      ws.send(JSON.stringify({ t: 'joined', room, id, members: members.size }));
    } else {
      refuse(`unknown message type ${JSON.stringify(msg.t)}`);
    }
  });

  ws.on('close', leave);
  // A reset connection must not take the process down.
  ws.on('error', leave);
});

wss.on('listening', () => {
  const address = wss.address();
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  console.log(
    JSON.stringify({
      event: 'ready',
      relay: 'ws',
      url: `ws://${shownHost}:${address.port}/`,
      host: address.address,
      port: address.port,
      pid: process.pid,
    }),
  );
});

wss.on('error', (err) => {
  console.error(`ws-relay: ${err.message}`);
  process.exit(1);
});

let stopping = false;
function shutdown() {
  if (stopping) return;
  stopping = true;
  for (const client of wss.clients) client.close(1001, 'relay shutting down');
  // Clients that do not answer the close handshake are cut after a second.
  const force = setTimeout(() => {
    for (const client of wss.clients) client.terminate();
  }, 1000);
  force.unref();
  wss.close(() => process.exit(0));
}

process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
if (values['exit-with-stdin']) {
  process.stdin.on('end', shutdown);
  process.stdin.on('error', shutdown);
  process.stdin.resume();
}
