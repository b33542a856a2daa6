// A room relay on Socket.IO 4, written the way the Node.js relays Chorus
// replaces usually are: `socket.join(room)` and `socket.to(room).emit(...)`,
// JSON event arguments, the server's default settings. It is a benchmark
// baseline: keep it idiomatic, not tuned (no binary attachments, no custom
// parser, no native add-ons).
//
// Events (Socket.IO v5 protocol over Engine.IO v4; README.md shows the frames):
//   client -> relay  emit('join', 'bench-0', ack)   ack({ room, id, members })
//   client -> relay  emit('tick', '<base64 payload>')
//   relay -> others  emit('tick', { from: '<socket id>', d: '<base64 payload>' })
// A join with a bad room name is acknowledged with { error: '<why>' }; a tick
// before a join or without a string payload is ignored.
//
// Both transports stay enabled (the default): the bench clients open the
// WebSocket transport directly (/socket.io/?EIO=4&transport=websocket).
//
// Usage: node socketio-relay.mjs [--port N] [--host H] [--exit-with-stdin]
//   port: --port, else the first bare argument, else $PORT, else 0 (any free port)
//   host: --host, else $HOST, else 127.0.0.1
//   --exit-with-stdin: also shut down when standard input ends, so that a
//   launcher that dies cannot leave the relay running.
// Prints one JSON line on stdout once it listens:
//   {"event":"ready","relay":"socketio","url":"ws://127.0.0.1:PORT/socket.io/","host":"127.0.0.1","port":PORT,"pid":PID}
// Exits 0 on SIGTERM or SIGINT after closing every connection.

import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { Server } from 'socket.io';

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
  console.error(`socketio-relay: bad port ${values.port ?? positionals[0] ?? process.env.PORT}`);
  process.exit(2);
}

const MAX_ROOM_NAME = 128;

const httpServer = createServer();
const io = new Server(httpServer, { serveClient: false });

io.on('connection', (socket) => {
  let room = null;

  socket.on('join', (name, ack) => {
    const reply = typeof ack === 'function' ? ack : () => {};
    if (typeof name !== 'string' || name.length === 0 || name.length > MAX_ROOM_NAME) {
      return reply({ error: `room must be a string of 1 to ${MAX_ROOM_NAME} characters` });
    }
    if (room !== null) socket.leave(room);
    room = name;
    socket.join(room);
    reply({ room, id: socket.id, members: io.sockets.adapter.rooms.get(room)?.size ?? 0 });
  });

  socket.on('tick', (d) => {
    if (room === null || typeof d !== 'string') return;
    socket.to(room).emit('tick', { from: socket.id, d });
  });
});

httpServer.on('error', (err) => {
  console.error(`socketio-relay: ${err.message}`);
  process.exit(1);
});

httpServer.listen(port, host, () => {
  const address = httpServer.address();
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  console.log(
    JSON.stringify({
      event: 'ready',
      relay: 'socketio',
      url: `ws://${shownHost}:${address.port}/socket.io/`,
      host: address.address,
      port: address.port,
      pid: process.pid,
    }),
  );
});

let stopping = false;
function shutdown() {
  if (stopping) return;
  stopping = true;
  // Disconnects every socket, then closes the HTTP server.
  io.close(() => process.exit(0));
  // Connections the HTTP server still holds are cut after a second.
  const force = setTimeout(() => {
    httpServer.closeAllConnections();
    process.exit(0);
  }, 1000);
  force.unref();
}

process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
if (values['exit-with-stdin']) {
  process.stdin.on('end', shutdown);
  process.stdin.on('error', shutdown);
  process.stdin.resume();
}
