// A scripted Chorus server behind fake WebSocket and WebTransport classes, for
// testing the client without a network. It speaks the real wire format (the
// SDK's own codec and framing), answers Hello and Ping by itself, and lets a
// test answer or inject everything else. Imported by the tests; running it
// alone does nothing.

import {
  DEFAULT_LIMITS,
  DEFAULT_RATE_LIMITS,
  FrameDecoder,
  WsReassembler,
  decodeClientMessage,
  encodeFrame,
  encodePackHeader,
  encodeServerMessage,
  localNowUs,
  splitPackMessage,
  wsControlMessages,
  wsTickMessage,
} from '../../chorus.js';

const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

/** Waits until `predicate()` is truthy (polling), or fails after `ms`. */
export async function until(predicate, ms = 2000, what = 'condition') {
  const end = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

export class FakeServer {
  constructor(options = {}) {
    /** Server clock minus client clock, in µs. */
    this.offsetUs = options.offsetUs ?? 0;
    this.limits = { ...DEFAULT_LIMITS, ...(options.limits ?? {}) };
    this.rateLimits = { ...DEFAULT_RATE_LIMITS, ...(options.rateLimits ?? {}) };
    this.maxDatagramSize = options.maxDatagramSize ?? 0;
    /** Every client message received, decoded, in order. */
    this.received = [];
    /** Every tick datagram received (bytes). */
    this.datagrams = [];
    /** Raw WebSocket messages received (bytes, lane byte included). */
    this.wsMessages = [];
    /** Pack content received: `{ header, content }` per WebSocket pack message or WebTransport stream. */
    this.packs = [];
    /** tag -> (message body, server) => void; overrides the default answers. */
    this.handlers = {};
    this.conn = null;
    this.connections = [];
    const server = this;
    this.WebSocket = class extends FakeWebSocket {
      constructor(url, protocols) {
        super(server, url, protocols);
      }
    };
    this.WebTransport = class extends FakeWebTransport {
      constructor(url, init) {
        super(server, url, init);
      }
    };
  }

  now() {
    return localNowUs() + this.offsetUs;
  }

  hello(overrides = {}) {
    return {
      version: { major: 2, minor: 0 },
      server_name: 'fake/0',
      session_id: 81985529216486895n,
      server_time: BigInt(this.now()),
      max_datagram_size: this.maxDatagramSize,
      limits: this.limits,
      rate_limits: this.rateLimits,
      resume_token: this.resumeToken ?? '',
      resume_window_ms: BigInt(this.resumeWindowMs ?? 0),
      extensions: [],
      ...overrides,
    };
  }

  /** Called by a connection for each client control message body. */
  receive(body) {
    const message = decodeClientMessage(body);
    this.received.push(message);
    const tag = Object.keys(message)[0];
    const m = message[tag];
    if (this.handlers[tag]) {
      this.handlers[tag](m, this);
      return;
    }
    if (tag === 'Hello') this.send({ Hello: this.hello() });
    else if (tag === 'Ping') {
      const t = BigInt(this.now());
      this.send({ Pong: { client_time: m.client_time, server_receive_time: t, server_send_time: t } });
    }
  }

  /** A pack message (WebSocket) or a finished pack stream (WebTransport) from the client. */
  receivePack(header, content) {
    this.packs.push({ header, content });
    this.handlers.Pack?.(header, content, this);
  }

  /**
   * Sends pack content to the client (a Download): on WebSocket as pack
   * messages of `chunk` bytes (at least one), on WebTransport as one stream
   * (`cutAfter`: end the stream early, after that many content bytes; `hold`:
   * leave it open, as a stream cut off by a dropped connection).
   */
  sendDownload({ request_id, hash, offset = 0, size, content, chunk = 16 * 1024, cutAfter, hold = false }) {
    this.conn.sendDownload({ request_id, hash, offset, size: size ?? offset + content.length, content, chunk, cutAfter, hold });
  }

  /** The connection drops without a close code (WebSocket 1006, WebTransport failing). */
  drop() {
    this.conn.drop();
  }

  /** Messages of one tag received so far. */
  got(tag) {
    return this.received.filter((m) => m[tag]).map((m) => m[tag]);
  }

  send(message) {
    this.conn.sendControl(encodeServerMessage(withPresence(message)));
  }

  sendRaw(body) {
    this.conn.sendControl(body);
  }

  sendDatagram(bytes) {
    this.conn.sendDatagram(bytes);
  }

  close(code, reason = '') {
    this.conn.serverClose(code, reason);
  }

  /** A snapshot for a `Joined` reply. */
  static snapshot(overrides = {}) {
    return {
      room_id: 'lobby',
      room: 1,
      you: 2,
      role: 'Editor',
      members: [
        { id: 1, role: 'Host', display: { name: 'ada', meta: new Uint8Array() }, presence: 'Online' },
        { id: 2, role: 'Editor', display: { name: 'bob', meta: new Uint8Array() }, presence: 'Online' },
      ],
      state: [],
      state_version: 0n,
      last_seq: 2n,
      policy: { rules: [] },
      kind: 'Normal',
      failover: 'NextMember',
      timelines: [],
      packs: [],
      chat: [],
      ...overrides,
    };
  }
}

/** Members written without a presence (older fixtures) are online. */
function onlineMember(member) {
  return member && member.presence === undefined ? { ...member, presence: 'Online' } : member;
}

function withPresenceSnapshot(snapshot) {
  return snapshot ? { ...snapshot, members: snapshot.members.map(onlineMember) } : snapshot;
}

function withPresence(message) {
  if (message.MemberJoined) return { MemberJoined: { ...message.MemberJoined, member: onlineMember(message.MemberJoined.member) } };
  for (const tag of ['Joined', 'Snapshot', 'Resumed']) {
    if (message[tag]?.snapshot) return { [tag]: { ...message[tag], snapshot: withPresenceSnapshot(message[tag].snapshot) } };
  }
  return message;
}

/** The browser WebSocket API, as much as the SDK uses. */
class FakeWebSocket extends EventTarget {
  constructor(server, url, protocols) {
    super();
    this.server = server;
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.bufferedAmount = 0;
    this.binaryType = 'blob';
    this.closeCalls = [];
    this.reassembler = new WsReassembler(server.limits.max_frame_bytes);
    server.conn = this;
    server.connections.push(this);
    setTimeout(() => {
      if (server.refuseWebSocket) {
        this.readyState = 3;
        this.dispatchEvent(Object.assign(new Event('close'), { code: 1006, reason: '' }));
        return;
      }
      this.readyState = 1;
      this.dispatchEvent(new Event('open'));
    }, 0);
  }

  send(data) {
    if (this.readyState !== 1) throw new Error('not open');
    const bytes = new Uint8Array(data);
    this.server.wsMessages.push(bytes);
    const inbound = this.reassembler.push(bytes);
    if (!inbound) return;
    if (inbound.lane === 'tick') this.server.datagrams.push(inbound.body);
    else if (inbound.lane === 'pack') {
      const { header, content } = splitPackMessage(inbound.body);
      this.server.receivePack(header, content.slice());
    } else this.server.receive(inbound.body);
  }

  close(code = 1000, reason = '') {
    this.closeCalls.push({ code, reason });
    if (this.readyState >= 2) return;
    this.readyState = 2;
    setTimeout(() => this.finishClose(code, reason), 0);
  }

  finishClose(code, reason) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.dispatchEvent(Object.assign(new Event('close'), { code, reason }));
  }

  // ---- server side ----

  deliver(bytes) {
    setTimeout(() => {
      if (this.readyState !== 1) return;
      this.dispatchEvent(Object.assign(new Event('message'), { data: bytes.slice().buffer }));
    }, 0);
  }

  sendControl(body) {
    for (const m of wsControlMessages(body)) this.deliver(m);
  }

  sendDatagram(bytes) {
    this.deliver(wsTickMessage(bytes));
  }

  sendDownload({ request_id, hash, offset, size, content, chunk }) {
    let pos = 0;
    do {
      const piece = content.subarray(pos, Math.min(pos + chunk, content.length));
      const head = encodePackHeader({ Download: { request_id, hash, offset: offset + pos, size } });
      this.deliver(Uint8Array.of(0x03, ...head, ...piece));
      pos += piece.length;
    } while (pos < content.length);
  }

  serverClose(code, reason) {
    setTimeout(() => this.finishClose(code, reason), 0);
  }

  drop() {
    setTimeout(() => this.finishClose(1006, ''), 0);
  }
}

/** The browser WebTransport API, as much as the SDK uses. */
class FakeWebTransport {
  constructor(server, url, init) {
    this.server = server;
    this.url = url;
    this.init = init;
    this.closeCalls = [];
    this.decoder = new FrameDecoder(server.limits.max_frame_bytes);
    server.conn = this;
    server.connections.push(this);
    let resolveClosed;
    let rejectClosed;
    this.closed = new Promise((resolve, reject) => {
      resolveClosed = resolve;
      rejectClosed = reject;
    });
    this.resolveClosed = resolveClosed;
    this.rejectClosed = rejectClosed;
    this.closed.catch(() => {});
    const self0 = this;
    this.incomingUnidirectionalStreams = new ReadableStream({
      start(controller) {
        self0.incomingController = controller;
      },
    });
    this.ready = server.webTransportNeverReady ? new Promise(() => {}) : tick();
    this.datagramsOut = [];
    const self = this;
    this.datagrams = {
      maxDatagramSize: server.browserMaxDatagramSize ?? 1211,
      readable: new ReadableStream({
        start(controller) {
          self.datagramController = controller;
        },
      }),
      createWritable() {
        return new WritableStream({
          write(chunk) {
            self.server.datagrams.push(new Uint8Array(chunk));
          },
        });
      },
    };
  }

  async createBidirectionalStream() {
    const self = this;
    const readable = new ReadableStream({
      start(controller) {
        self.controlController = controller;
      },
    });
    const writable = new WritableStream({
      write(chunk) {
        self.decoder.push(chunk);
        let body;
        while ((body = self.decoder.next()) !== null) self.server.receive(body);
      },
    });
    return { readable, writable };
  }

  /** A client-opened unidirectional stream: its bytes reach the server as one pack transfer when it finishes. */
  async createUnidirectionalStream() {
    const server = this.server;
    const parts = [];
    this.server.packStreamsOpened = (this.server.packStreamsOpened ?? 0) + 1;
    return new WritableStream({
      write(chunk) {
        parts.push(new Uint8Array(chunk));
      },
      close() {
        const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
        let pos = 0;
        for (const p of parts) {
          all.set(p, pos);
          pos += p.length;
        }
        const { header, content } = splitPackMessage(all);
        server.receivePack(header, content.slice());
      },
    });
  }

  close(info = {}) {
    this.closeCalls.push(info);
    this.resolveClosed({ closeCode: info.closeCode ?? 0, reason: info.reason ?? '' });
  }

  // ---- server side ----

  sendControl(body) {
    const frame = encodeFrame(body);
    // Split every frame in two reads to exercise reassembly.
    const cut = Math.max(1, frame.length >> 1);
    this.controlController.enqueue(frame.slice(0, cut));
    if (cut < frame.length) this.controlController.enqueue(frame.slice(cut));
  }

  sendDatagram(bytes) {
    this.datagramController.enqueue(new Uint8Array(bytes));
  }

  /** A server-opened unidirectional stream: the framed Download header, the content (in 3 reads), FIN. */
  sendDownload({ request_id, hash, offset, size, content, cutAfter, hold }) {
    const head = encodePackHeader({ Download: { request_id, hash, offset, size } });
    const body = cutAfter === undefined ? content : content.subarray(0, cutAfter);
    const bytes = Uint8Array.of(...head, ...body);
    const cuts = [Math.min(2, bytes.length), Math.min(bytes.length, head.length + (body.length >> 1))];
    this.incomingController.enqueue(
      new ReadableStream({
        start(controller) {
          let pos = 0;
          for (const cut of [...cuts, bytes.length]) {
            if (cut > pos) controller.enqueue(bytes.slice(pos, cut));
            pos = Math.max(pos, cut);
          }
          if (!hold) controller.close();
        },
      }),
    );
  }

  serverClose(code, reason) {
    setTimeout(() => this.resolveClosed({ closeCode: code, reason }), 0);
  }

  drop() {
    setTimeout(() => this.rejectClosed(new Error('the connection was lost')), 0);
  }
}
