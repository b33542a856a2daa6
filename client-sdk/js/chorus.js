// Chorus browser SDK: one self-contained ES module, no dependencies.
//
// The server serves this file at /chorus.js; bundlers can import it as
// `@chorus/client`. Types are in chorus.d.ts, usage in README.md, the API
// contract in API.md and the wire format in PROTOCOL.md (repository root).
//
// Sections:
//   1. Errors          ErrorCode, ChorusError, CodecError
//   2. Codec           postcard encoders/decoders for every message (PROTOCOL.md §2, §5)
//   3. Framing         control-stream frames (§3) and WebSocket lanes and chunks (§1.3)
//   4. Clock           NTP-style samples and the min-RTT estimator (§9)
//   5. Utilities       event emitter, bounded async queue, byte helpers
//   6. Room replica    members and state of one room, updated by events (§6)
//   7. Transports      WebTransport and WebSocket behind one small link interface
//   8. Client          connect, handshake, requests, events, ticks, clock sync
//
// Conventions. In the codec layer messages have the shape serde's JSON gives
// them (externally tagged enums, unit variants as strings, snake_case fields),
// u64 values are bigints and byte fields are Uint8Arrays. The public client API
// (sections 6 and 8) uses camelCase, numbers for seqs, versions and times (exact
// below 2^53) and a bigint only for the session id.

// ===========================================================================
// 1. Errors
// ===========================================================================

/** The protocol version this SDK speaks. */
export const PROTOCOL_VERSION = Object.freeze({ major: 2, minor: 0 });

/** The SDK's version (the default client name is `chorus-js/0.1`). */
export const SDK_VERSION = '0.1.0';

/** Wire error codes (PROTOCOL.md §8.1). A code's number never changes meaning. */
export const ErrorCode = Object.freeze({
  Malformed: 100,
  UnknownMessage: 101,
  FrameTooLarge: 102,
  VersionMismatch: 103,
  ProtocolViolation: 104,
  LimitExceeded: 105,
  HandshakeTimeout: 106,
  RoomNotFound: 200,
  RoomFull: 201,
  TooManyRooms: 202,
  TooManyJoined: 203,
  AlreadyJoined: 204,
  NotJoined: 205,
  InvalidSender: 206,
  InvalidRoomId: 207,
  Banned: 208,
  ResumeFailed: 209,
  PackNotFound: 210,
  Forbidden: 300,
  Conflict: 301,
  StateFull: 302,
  Unauthorized: 303,
  InvalidToken: 304,
  TokenExpired: 305,
  WrongPassword: 306,
  PasswordRequired: 307,
  HashMismatch: 308,
  MediaTypeRefused: 309,
  NotStored: 310,
  SlowConsumer: 400,
  RateLimited: 401,
  Blocked: 402,
  TooManyConnections: 403,
  Internal: 500,
  ShuttingDown: 501,
});

/** code -> snake_case name, e.g. 200 -> 'room_not_found'. */
const ERROR_NAMES = new Map(
  Object.entries(ErrorCode).map(([key, code]) => [
    code,
    key.replace(/[A-Z]/g, (c, i) => (i ? '_' : '') + c.toLowerCase()),
  ]),
);

/**
 * The stable name of a wire error code, e.g. `errorName(200) === 'room_not_found'`;
 * `'unknown'` for a code this SDK does not know (newer servers may add codes).
 * @param {number} code
 * @returns {string}
 */
export function errorName(code) {
  return ERROR_NAMES.get(code) ?? 'unknown';
}

/**
 * Every error this SDK rejects a promise with or throws.
 *
 * - `code`: the numeric wire code (e.g. 200), or `null` for local conditions;
 * - `name`: the code's name (`'room_not_found'`), or for local conditions
 *   `'closed'` (the connection is closed or could not be opened), `'timeout'`
 *   (no reply in time) or `'invalid_argument'` (a value that cannot be sent);
 * - `requestId`: the request the server's error answers, or `null`;
 * - `detail`: `{ currentVersion }` (conflict), `{ server, client }` (version
 *   mismatch), `{ limit, actual }` (limits, room full, ...), `{ retryAfterMs }`
 *   (rate_limited, blocked, banned, too_many_connections), `{ currentSeq }`
 *   (a timeline conflict), or `null`;
 * - `retryAfterMs`: how long to wait before trying again, when the detail says
 *   so (`detail.retryAfterMs`), else `null`;
 * - `currentSeq`: on a timeline conflict, the seq of the timeline's last change
 *   (`detail.currentSeq`), else `null`;
 * - `reason`: for `'closed'` errors, the connection's close reason when known.
 */
export class ChorusError extends Error {
  /**
   * @param {number|null} code
   * @param {string} name
   * @param {string} message
   * @param {{ requestId?: number|null, detail?: object|null, reason?: object, cause?: unknown }} [extra]
   */
  constructor(code, name, message, extra = {}) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.name = name;
    this.code = code;
    this.requestId = extra.requestId ?? null;
    this.detail = extra.detail ?? null;
    /** Milliseconds to wait before retrying (a RetryAfter detail), or null. */
    this.retryAfterMs = typeof this.detail?.retryAfterMs === 'number' ? this.detail.retryAfterMs : null;
    /** The seq of a timeline's last change (a Sequence detail, on a timeline conflict), or null. */
    this.currentSeq = typeof this.detail?.currentSeq === 'number' ? this.detail.currentSeq : null;
    if (extra.reason !== undefined) this.reason = extra.reason;
  }

  /**
   * The error a server `Error` frame (codec shape) stands for.
   * @param {{ request_id: number|null, code: number, message: string, detail: unknown }} frame
   */
  static fromFrame(frame) {
    return new ChorusError(frame.code, errorName(frame.code), frame.message, {
      requestId: frame.request_id,
      detail: errorDetail(frame.detail),
    });
  }
}

/** The API form of a codec `ErrorDetail`. */
function errorDetail(detail) {
  if (detail === 'None' || detail == null) return null;
  if (detail.Conflict) return { currentVersion: toNumber(detail.Conflict.current_version) };
  if (detail.Version) {
    const { server, client } = detail.Version;
    return { server: { ...server }, client: { ...client } };
  }
  if (detail.Limit) return { limit: toNumber(detail.Limit.limit), actual: toNumber(detail.Limit.actual) };
  if (detail.RetryAfter) return { retryAfterMs: toNumber(detail.RetryAfter.retry_after_ms) };
  if (detail.Sequence) return { currentSeq: toNumber(detail.Sequence.current_seq) };
  return null;
}

const CODEC_ERROR_CODES = {
  empty: ErrorCode.Malformed,
  malformed: ErrorCode.Malformed,
  trailing: ErrorCode.Malformed,
  unknown_tag: ErrorCode.UnknownMessage,
  frame_too_large: ErrorCode.FrameTooLarge,
  limit_exceeded: ErrorCode.LimitExceeded,
  invalid: null,
};

/**
 * A codec failure: bytes that do not decode (`kind` 'empty', 'malformed',
 * 'trailing', 'unknown_tag', 'frame_too_large', 'limit_exceeded'; `code` the
 * wire code the server would answer with), or a value that cannot be encoded
 * (`kind` 'invalid', `code` null, `name` 'invalid_argument'). `path` names the
 * field, e.g. `'Join.display.name'`.
 */
export class CodecError extends ChorusError {
  /**
   * @param {'empty'|'malformed'|'trailing'|'unknown_tag'|'frame_too_large'|'limit_exceeded'|'invalid'} kind
   * @param {string} reason
   * @param {{ tag?: number, detail?: object, path?: string }} [extra]
   */
  constructor(kind, reason, extra = {}) {
    const code = kind in CODEC_ERROR_CODES ? CODEC_ERROR_CODES[kind] : ErrorCode.Malformed;
    super(code, code === null ? 'invalid_argument' : errorName(code), reason, { detail: extra.detail });
    this.kind = kind;
    this.problem = reason;
    this.path = extra.path ?? '';
    if (extra.tag !== undefined) this.tag = extra.tag;
    if (this.path) this.message = `${this.path}: ${reason}`;
  }

  /** Prepends a path segment (a field or variant name). */
  withPath(segment) {
    this.path = this.path ? `${segment}.${this.path}` : segment;
    this.message = `${this.path}: ${this.problem}`;
    return this;
  }
}

const malformed = (reason) => new CodecError('malformed', reason);
const invalid = (reason) => new CodecError('invalid', reason);

/** Local errors of the client layer. */
function closedError(message, reason, requestId = null) {
  return new ChorusError(null, 'closed', message, { reason, requestId });
}
function timeoutError(message, requestId = null) {
  return new ChorusError(null, 'timeout', message, { requestId });
}
function invalidArgument(message) {
  return new ChorusError(null, 'invalid_argument', message);
}
function limitError(field, limit, actual) {
  return new ChorusError(
    ErrorCode.LimitExceeded,
    errorName(ErrorCode.LimitExceeded),
    `${field} is ${actual} bytes or items, over the limit of ${limit}`,
    { detail: { limit, actual } },
  );
}

// ===========================================================================
// 2. Codec (PROTOCOL.md §2 and §5)
// ===========================================================================
//
// Each wire type is an object { enc(writer, value), dec(reader) }. Message
// schemas are built from them once, so every encoder has its decoder next to
// it and both follow the same field order (the order in PROTOCOL.md §5).

const MAX_SAFE = Number.MAX_SAFE_INTEGER;
const MAX_SAFE_BIG = BigInt(MAX_SAFE);
const U64_MAX = (1n << 64n) - 1n;

const textEncoder = new TextEncoder();
// ignoreBOM: a leading U+FEFF is content, not a marker to strip.
const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const lenientUtf8 = new TextDecoder('utf-8', { ignoreBOM: true });

/** bigint or number -> number (exact below 2^53). */
function toNumber(v) {
  return typeof v === 'bigint' ? Number(v) : v;
}

/** Bytes to decode: a Uint8Array, an ArrayBuffer or any ArrayBufferView. */
function inputBytes(input) {
  if (input instanceof Uint8Array) return input;
  if (input instanceof ArrayBuffer) return new Uint8Array(input);
  if (ArrayBuffer.isView(input)) return new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
  throw invalid('expected a Uint8Array, ArrayBuffer or ArrayBufferView');
}

/** Reads postcard values from a byte array, failing on anything out of place. */
class Reader {
  constructor(bytes) {
    this.bytes = bytes;
    this.pos = 0;
  }

  get remaining() {
    return this.bytes.length - this.pos;
  }

  byte() {
    if (this.pos >= this.bytes.length) throw malformed('unexpected end of input');
    return this.bytes[this.pos++];
  }

  /**
   * An unsigned LEB128 varint of at most `maxBytes` bytes whose last byte, at
   * that length, is at most `lastMax` (postcard's rule, §2.1). Padded forms
   * within the length are accepted. Exact below 2^53; longer values (lengths
   * only) are approximate, which only matters for rejecting them.
   */
  varint(maxBytes, lastMax) {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < maxBytes; i++) {
      const byte = this.byte();
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) {
        if (i === maxBytes - 1 && byte > lastMax) throw malformed('varint out of range for its type');
        return value;
      }
      scale *= 128;
    }
    throw malformed('varint too long for its type');
  }

  u16() {
    return this.varint(3, 0x03);
  }

  u32() {
    return this.varint(5, 0x0f);
  }

  /** A u64 varint (10 bytes at most, last byte <= 0x01) as a bigint. */
  u64() {
    let low = 0; // the first 7 groups (49 bits) as an exact number
    let big = null;
    for (let i = 0; i < 10; i++) {
      const byte = this.byte();
      if (i < 7) low += (byte & 0x7f) * 2 ** (7 * i);
      else big = (big ?? BigInt(low)) | (BigInt(byte & 0x7f) << BigInt(7 * i));
      if (byte < 0x80) {
        if (i === 9 && byte > 0x01) throw malformed('varint out of range for u64');
        return big ?? BigInt(low);
      }
    }
    throw malformed('varint too long for u64');
  }

  /** A declared length or count, checked against the bytes left before anything is allocated. */
  length() {
    const n = this.varint(10, 0x01);
    if (n > this.remaining) {
      throw malformed(`declared length ${n} exceeds the ${this.remaining} bytes left`);
    }
    return n;
  }

  /** A copy of the next `n` bytes. */
  take(n) {
    const out = this.bytes.slice(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  string() {
    const n = this.length();
    const view = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    try {
      return strictUtf8.decode(view);
    } catch {
      throw malformed('invalid UTF-8');
    }
  }
}

/** Appends postcard values to a growing buffer. */
class Writer {
  constructor(capacity = 64) {
    this.buf = new Uint8Array(capacity);
    this.len = 0;
  }

  reserve(n) {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const grown = new Uint8Array(cap);
    grown.set(this.buf.subarray(0, this.len));
    this.buf = grown;
  }

  byte(b) {
    this.reserve(1);
    this.buf[this.len++] = b;
  }

  /** A varint of a non-negative integer number (exact up to 2^53). */
  varint(n) {
    this.reserve(10);
    while (n >= 0x80) {
      this.buf[this.len++] = (n % 0x80) | 0x80;
      n = Math.floor(n / 0x80);
    }
    this.buf[this.len++] = n;
  }

  /** A varint of a non-negative bigint (up to 2^64 - 1). */
  varintBig(n) {
    this.reserve(10);
    while (n >= 0x80n) {
      this.buf[this.len++] = Number(n & 0x7fn) | 0x80;
      n >>= 7n;
    }
    this.buf[this.len++] = Number(n);
  }

  raw(bytes) {
    this.reserve(bytes.length);
    this.buf.set(bytes, this.len);
    this.len += bytes.length;
  }

  finish() {
    return this.buf.slice(0, this.len);
  }
}

// ---- primitive wire types --------------------------------------------------

/** Checks an unsigned integer for a u16/u32 (or a u64 given as a number). */
function checkUint(v, max, type) {
  if (typeof v === 'bigint' && v >= 0n && v <= BigInt(max)) return Number(v);
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) {
    throw invalid(`expected an integer ${type} (0 to ${max}), got ${describe(v)}`);
  }
  return v;
}

function describe(v) {
  if (typeof v === 'string') return JSON.stringify(v.length > 20 ? `${v.slice(0, 20)}…` : v);
  if (typeof v === 'bigint') return `${v}n`;
  if (v === null || typeof v !== 'object') return String(v);
  return Array.isArray(v) ? 'an array' : `an object (${v.constructor?.name ?? 'Object'})`;
}

/** Bytes to encode: Uint8Array, ArrayBuffer, ArrayBufferView or an array of 0-255 integers. */
function bytesValue(v) {
  if (v instanceof Uint8Array) return v;
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  if (Array.isArray(v)) {
    for (const b of v) {
      if (!Number.isInteger(b) || b < 0 || b > 255) throw invalid('byte arrays hold integers 0 to 255');
    }
    return Uint8Array.from(v);
  }
  throw invalid(`expected bytes (Uint8Array), got ${describe(v)}`);
}

function stringBytes(v) {
  if (typeof v !== 'string') throw invalid(`expected a string, got ${describe(v)}`);
  if (typeof v.isWellFormed === 'function' && !v.isWellFormed()) {
    throw invalid('string holds a lone surrogate and is not valid Unicode');
  }
  return textEncoder.encode(v);
}

const U16 = {
  enc: (w, v) => w.varint(checkUint(v, 0xffff, 'u16')),
  dec: (r) => r.u16(),
};

const U32 = {
  enc: (w, v) => w.varint(checkUint(v, 0xffffffff, 'u32')),
  dec: (r) => r.u32(),
};

/** u64: decodes to a bigint; encodes a bigint or a safe-integer number. */
const U64 = {
  enc(w, v) {
    if (typeof v === 'bigint') {
      if (v < 0n || v > U64_MAX) throw invalid(`expected a u64, got ${v}n`);
      if (v <= MAX_SAFE_BIG) w.varint(Number(v));
      else w.varintBig(v);
    } else {
      w.varint(checkUint(v, MAX_SAFE, 'u64'));
    }
  },
  dec: (r) => r.u64(),
};

const BOOL = {
  enc(w, v) {
    if (typeof v !== 'boolean') throw invalid(`expected a boolean, got ${describe(v)}`);
    w.byte(v ? 1 : 0);
  },
  dec(r) {
    const b = r.byte();
    if (b > 1) throw malformed(`bad bool byte ${b}`);
    return b === 1;
  },
};

const STRING = {
  enc(w, v) {
    const bytes = stringBytes(v);
    w.varint(bytes.length);
    w.raw(bytes);
  },
  dec: (r) => r.string(),
};

const BYTES = {
  enc(w, v) {
    const bytes = bytesValue(v);
    w.varint(bytes.length);
    w.raw(bytes);
  },
  dec: (r) => r.take(r.length()),
};

// ---- composite wire types --------------------------------------------------

/** Option<T>: `null` (or `undefined`) is None. */
function Option(type) {
  return {
    enc(w, v) {
      if (v === null || v === undefined) {
        w.byte(0);
      } else {
        w.byte(1);
        type.enc(w, v);
      }
    },
    dec(r) {
      const b = r.byte();
      if (b === 0) return null;
      if (b === 1) return type.dec(r);
      throw malformed(`bad option byte ${b}`);
    },
  };
}

/** Vec<T>: a count, then the elements. Every element takes at least one byte. */
function Vec(type) {
  return {
    enc(w, v) {
      if (!Array.isArray(v)) throw invalid(`expected an array, got ${describe(v)}`);
      w.varint(v.length);
      v.forEach((item, i) => {
        try {
          type.enc(w, item);
        } catch (e) {
          throw e instanceof CodecError ? e.withPath(`[${i}]`) : e;
        }
      });
    },
    dec(r) {
      const n = r.length();
      const out = [];
      for (let i = 0; i < n; i++) {
        try {
          out.push(type.dec(r));
        } catch (e) {
          throw e instanceof CodecError ? e.withPath(`[${i}]`) : e;
        }
      }
      return out;
    },
  };
}

/** A struct: its fields in order, nothing between them. */
function Struct(fields) {
  return {
    enc(w, v) {
      if (v === null || typeof v !== 'object') throw invalid(`expected an object, got ${describe(v)}`);
      for (const [name, type] of fields) {
        try {
          type.enc(w, v[name]);
        } catch (e) {
          throw e instanceof CodecError ? e.withPath(name) : e;
        }
      }
    },
    dec(r) {
      const out = {};
      for (const [name, type] of fields) {
        try {
          out[name] = type.dec(r);
        } catch (e) {
          throw e instanceof CodecError ? e.withPath(name) : e;
        }
      }
      return out;
    },
  };
}

/**
 * An externally tagged enum. `variants` is a list of `[name]` (unit variant,
 * a string in the JS form) or `[name, type]` (newtype or struct variant,
 * `{ [name]: value }`). On the wire: the variant index as a u32 varint, then
 * the content.
 */
function Enum(enumName, variants) {
  const index = new Map(variants.map(([name], i) => [name, i]));
  return {
    enumName,
    variants,
    enc(w, v) {
      let name;
      let content;
      if (typeof v === 'string') {
        name = v;
      } else if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
        const keys = Object.keys(v);
        if (keys.length !== 1) throw invalid(`expected a ${enumName} with exactly one variant key`);
        name = keys[0];
        content = v[name];
      } else {
        throw invalid(`expected a ${enumName}, got ${describe(v)}`);
      }
      const i = index.get(name);
      if (i === undefined) throw invalid(`unknown ${enumName} variant ${JSON.stringify(name)}`);
      const type = variants[i][1];
      if (type && typeof v === 'string') throw invalid(`${enumName}::${name} needs a value: { ${name}: ... }`);
      if (!type && typeof v !== 'string') throw invalid(`${enumName}::${name} is a unit variant: write it as the string "${name}"`);
      w.varint(i);
      if (type) {
        try {
          type.enc(w, content);
        } catch (e) {
          throw e instanceof CodecError ? e.withPath(name) : e;
        }
      }
    },
    dec(r) {
      const i = r.u32();
      if (i >= variants.length) throw malformed(`unknown ${enumName} variant index ${i}`);
      const [name, type] = variants[i];
      if (!type) return name;
      try {
        return { [name]: type.dec(r) };
      } catch (e) {
        throw e instanceof CodecError ? e.withPath(name) : e;
      }
    },
  };
}

// ---- the protocol's types (PROTOCOL.md §2.3, §2.4, §4, §5) ------------------

/** The 28 fields of `Limits`, in wire order (§4.3). */
const LIMIT_FIELDS = [
  'max_frame_bytes',
  'max_tick_payload_bytes',
  'max_rooms_per_session',
  'max_members_per_room',
  'max_room_id_len',
  'max_name_len',
  'max_display_meta_bytes',
  'max_state_key_len',
  'max_state_value_bytes',
  'max_state_total_bytes',
  'max_state_keys',
  'max_command_kind_len',
  'max_command_payload_bytes',
  'max_idempotency_key_len',
  'max_join_options',
  'max_password_len',
  'max_reason_len',
  'max_token_len',
  'max_api_key_len',
  'max_policy_rules',
  'max_timeline_name_len',
  'max_timelines_per_room',
  'max_schedule_ahead_ms',
  'max_direct_payload_bytes',
  'max_pack_bytes',
  'max_packs_per_room',
  'max_pack_bytes_per_room',
  'max_pack_name_len',
];

/** The server's default limits (§4.3), in codec (snake_case) form. */
export const DEFAULT_LIMITS = Object.freeze({
  max_frame_bytes: 4 * 1024 * 1024,
  max_tick_payload_bytes: 1000,
  max_rooms_per_session: 16,
  max_members_per_room: 32,
  max_room_id_len: 128,
  max_name_len: 64,
  max_display_meta_bytes: 1024,
  max_state_key_len: 128,
  max_state_value_bytes: 900000,
  max_state_total_bytes: 900000,
  max_state_keys: 1024,
  max_command_kind_len: 64,
  max_command_payload_bytes: 64 * 1024,
  max_idempotency_key_len: 64,
  max_join_options: 16,
  max_password_len: 128,
  max_reason_len: 96,
  max_token_len: 4096,
  max_api_key_len: 256,
  max_policy_rules: 64,
  max_timeline_name_len: 64,
  max_timelines_per_room: 16,
  max_schedule_ahead_ms: 10000,
  max_direct_payload_bytes: 64 * 1024,
  max_pack_bytes: 2 * 1024 * 1024,
  max_packs_per_room: 300,
  max_pack_bytes_per_room: 256 * 1024 * 1024,
  max_pack_name_len: 128,
});

/** The server's default per-session rate budgets (`RateLimits::default()`), in codec form. */
export const DEFAULT_RATE_LIMITS = Object.freeze({
  messages: Object.freeze({ per_second: 45, burst: 90 }),
  state_updates: Object.freeze({ per_second: 20, burst: 40 }),
  commands: Object.freeze({ per_second: 30, burst: 60 }),
  ticks: Object.freeze({ per_second: 120, burst: 240 }),
  joins: Object.freeze({ per_second: 5, burst: 10 }),
  direct: Object.freeze({ per_second: 30, burst: 60 }),
});

/** The six budgets of `RateLimits`, in wire order. */
const RATE_LIMIT_FIELDS = ['messages', 'state_updates', 'commands', 'ticks', 'joins', 'direct'];

/**
 * The actions a permission policy governs, in wire order (the variants of
 * `Action`): `[wire name, API name]`. Append only.
 */
const ACTION_NAMES = [
  ['SetState', 'set_state'],
  ['SendCommands', 'send_commands'],
  ['SendTicks', 'send_ticks'],
  ['ControlTimeline', 'control_timeline'],
  ['UploadPacks', 'upload_packs'],
  ['DirectMessages', 'direct_messages'],
  ['Kick', 'kick'],
  ['GrantRoles', 'grant_roles'],
  ['CloseRoom', 'close_room'],
  ['SetPassword', 'set_password'],
];

/** Every action's API name, in wire order: 'set_state', 'send_commands', ... */
export const ACTIONS = Object.freeze(ACTION_NAMES.map(([, name]) => name));

/** Bytes of a tick datagram besides its payload, at most: tag 1 + room 5 + sender 5 + seq 5 + length 3. */
export const TICK_MAX_OVERHEAD = 19;

const ProtocolVersionT = Struct([['major', U16], ['minor', U16]]);
const RoleT = Enum('Role', [['Host'], ['Editor'], ['Viewer']]);
const PresenceT = Enum('Presence', [['Online'], ['Reconnecting'], ['Away']]);
const RoomKindT = Enum('RoomKind', [['Normal'], ['Relay']]);
const FailoverModeT = Enum('FailoverMode', [['NextMember'], ['PauseTimeline'], ['Nothing']]);
const LeaveReasonT = Enum('LeaveReason', [['Left'], ['Disconnected'], ['TooSlow'], ['TimedOut']]);
const ActionT = Enum('Action', ACTION_NAMES.map(([wire]) => [wire]));
const PermissionRuleT = Struct([['action', ActionT], ['scope', STRING], ['roles', Vec(RoleT)]]);
const PermissionPolicyT = Struct([['rules', Vec(PermissionRuleT)]]);
const RateT = Struct([['per_second', U32], ['burst', U32]]);
const RateLimitsT = Struct(RATE_LIMIT_FIELDS.map((name) => [name, RateT]));
const JoinOptionT = Enum('JoinOption', [
  ['CreateIfMissing'],
  ['MaxMembers', U32],
  ['Password', STRING],
  ['Token', STRING],
  ['Policy', PermissionPolicyT],
  ['Template', STRING],
  ['Kind', RoomKindT],
  ['Failover', FailoverModeT],
]);
const ResumeRoomT = Struct([['room', U32], ['last_seq', U64]]);
const HelloOptionT = Enum('HelloOption', [
  ['ApiKey', STRING],
  ['Resume', Struct([['token', STRING], ['rooms', Vec(ResumeRoomT)]])],
]);
const TimelineOpT = Enum('TimelineOp', [
  ['Play'],
  ['Pause'],
  ['Seek', Struct([['position_us', U64]])],
  ['SetRate', Struct([['rate_ppm', U32]])],
  ['SetTempo', Struct([['tempo_mbpm', Option(U32)]])],
]);
const AudienceT = Enum('Audience', [['Everyone'], ['Others'], ['Role', RoleT]]);
const HelloExtensionT = Struct([['kind', U16], ['data', BYTES]]);
const DisplayInfoT = Struct([['name', STRING], ['meta', BYTES]]);
const MemberInfoT = Struct([['id', U32], ['role', RoleT], ['display', DisplayInfoT], ['presence', PresenceT]]);
const StateEntryT = Struct([['key', STRING], ['value', BYTES], ['version', U64], ['author', U32]]);
const TimelineStateT = Struct([
  ['name', STRING],
  ['playing', BOOL],
  ['rate_ppm', U32],
  ['anchor_time', U64],
  ['anchor_position_us', U64],
  ['tempo_mbpm', Option(U32)],
  ['seq', U64],
]);
const PackInfoT = Struct([['hash', BYTES], ['name', STRING], ['media_type', STRING], ['size', U64], ['uploader', U32]]);
const ChatEntryT = Struct([['seq', U64], ['author', U32], ['time', U64], ['payload', BYTES]]);
const IceServerT = Struct([['urls', Vec(STRING)], ['username', Option(STRING)], ['credential', Option(STRING)]]);
const RoomSnapshotT = Struct([
  ['room_id', STRING],
  ['room', U32],
  ['you', U32],
  ['role', RoleT],
  ['members', Vec(MemberInfoT)],
  ['state', Vec(StateEntryT)],
  ['state_version', U64],
  ['last_seq', U64],
  ['policy', PermissionPolicyT],
  ['kind', RoomKindT],
  ['failover', FailoverModeT],
  ['timelines', Vec(TimelineStateT)],
  ['packs', Vec(PackInfoT)],
  ['chat', Vec(ChatEntryT)],
]);
const LimitsT = Struct(LIMIT_FIELDS.map((name) => [name, U32]));
const ClientHelloT = Struct([
  ['version', ProtocolVersionT],
  ['client_name', STRING],
  ['capabilities', U64],
  ['options', Vec(HelloOptionT)],
]);
const ServerHelloT = Struct([
  ['version', ProtocolVersionT],
  ['server_name', STRING],
  ['session_id', U64],
  ['server_time', U64],
  ['max_datagram_size', U32],
  ['limits', LimitsT],
  ['rate_limits', RateLimitsT],
  ['resume_token', STRING],
  ['resume_window_ms', U64],
  ['extensions', Vec(HelloExtensionT)],
]);
const ErrorDetailT = Enum('ErrorDetail', [
  ['None'],
  ['Conflict', Struct([['current_version', U64]])],
  ['Version', Struct([['server', ProtocolVersionT], ['client', ProtocolVersionT]])],
  ['Limit', Struct([['limit', U64], ['actual', U64]])],
  ['RetryAfter', Struct([['retry_after_ms', U64]])],
  ['Sequence', Struct([['current_seq', U64]])],
]);
const ErrorFrameT = Struct([
  ['request_id', Option(U32)],
  ['code', U16],
  ['message', STRING],
  ['detail', ErrorDetailT],
]);

/** Client -> server, control stream (§5.1). Tag = index. */
const ClientMessageT = Enum('ClientMessage', [
  ['Hello', ClientHelloT],
  [
    'Join',
    Struct([
      ['request_id', U32],
      ['room_id', STRING],
      ['display', DisplayInfoT],
      ['options', Vec(JoinOptionT)],
    ]),
  ],
  ['Leave', Struct([['request_id', U32], ['room', U32]])],
  [
    'SetState',
    Struct([
      ['request_id', U32],
      ['room', U32],
      ['key', STRING],
      ['value', BYTES],
      ['if_version', Option(U64)],
    ]),
  ],
  [
    'DeleteState',
    Struct([['request_id', U32], ['room', U32], ['key', STRING], ['if_version', Option(U64)]]),
  ],
  [
    'Command',
    Struct([
      ['request_id', U32],
      ['room', U32],
      ['kind', STRING],
      ['payload', BYTES],
      ['idempotency_key', Option(STRING)],
    ]),
  ],
  ['Ping', Struct([['client_time', U64]])],
  ['Kick', Struct([['request_id', U32], ['room', U32], ['member', U32], ['reason', STRING]])],
  ['SetRole', Struct([['request_id', U32], ['room', U32], ['member', U32], ['role', RoleT]])],
  ['SetPassword', Struct([['request_id', U32], ['room', U32], ['password', Option(STRING)]])],
  ['CloseRoom', Struct([['request_id', U32], ['room', U32], ['reason', STRING]])],
  [
    'Timeline',
    Struct([
      ['request_id', U32],
      ['room', U32],
      ['name', STRING],
      ['op', TimelineOpT],
      ['at', Option(U64)],
      ['expected_seq', Option(U64)],
    ]),
  ],
  ['Direct', Struct([['request_id', U32], ['room', U32], ['to', U32], ['kind', STRING], ['payload', BYTES]])],
  ['Broadcast', Struct([['request_id', U32], ['room', U32], ['audience', AudienceT], ['kind', STRING], ['payload', BYTES]])],
  ['RequestSnapshot', Struct([['request_id', U32], ['room', U32]])],
  ['GetIceServers', Struct([['request_id', U32], ['room', U32]])],
  ['SetDelegate', Struct([['request_id', U32], ['room', U32], ['member', Option(U32)]])],
  [
    'PackUpload',
    Struct([
      ['request_id', U32],
      ['room', U32],
      ['hash', BYTES],
      ['name', STRING],
      ['media_type', STRING],
      ['size', U64],
    ]),
  ],
  ['PackFetch', Struct([['request_id', U32], ['room', U32], ['hash', BYTES], ['offset', U64]])],
]);

/** Server -> client, control stream (§5.2). */
const ServerMessageT = Enum('ServerMessage', [
  ['Hello', ServerHelloT],
  ['Joined', Struct([['request_id', U32], ['snapshot', RoomSnapshotT]])],
  ['Left', Struct([['request_id', U32], ['room', U32]])],
  ['MemberJoined', Struct([['room', U32], ['seq', U64], ['member', MemberInfoT]])],
  ['MemberLeft', Struct([['room', U32], ['seq', U64], ['member', U32], ['reason', LeaveReasonT]])],
  [
    'StateChanged',
    Struct([
      ['room', U32],
      ['seq', U64],
      ['key', STRING],
      ['value', Option(BYTES)],
      ['version', U64],
      ['author', U32],
    ]),
  ],
  ['StateAck', Struct([['request_id', U32], ['room', U32], ['version', U64], ['seq', U64]])],
  [
    'CommandEvent',
    Struct([
      ['room', U32],
      ['seq', U64],
      ['author', U32],
      ['kind', STRING],
      ['payload', BYTES],
      ['idempotency_key', Option(STRING)],
    ]),
  ],
  ['CommandAck', Struct([['request_id', U32], ['room', U32], ['seq', U64], ['duplicate', BOOL]])],
  [
    'Pong',
    Struct([['client_time', U64], ['server_receive_time', U64], ['server_send_time', U64]]),
  ],
  ['Error', ErrorFrameT],
  ['RoleChanged', Struct([['room', U32], ['seq', U64], ['member', U32], ['role', RoleT], ['by', U32]])],
  [
    'MemberKicked',
    Struct([
      ['room', U32],
      ['seq', U64],
      ['member', U32],
      ['by', U32],
      ['reason', STRING],
      ['ban_ms', U64],
    ]),
  ],
  ['RoomClosed', Struct([['room', U32], ['seq', U64], ['by', U32], ['reason', STRING]])],
  ['Ack', Struct([['request_id', U32], ['room', U32], ['seq', U64]])],
  ['PresenceChanged', Struct([['room', U32], ['seq', U64], ['member', U32], ['presence', PresenceT]])],
  ['TimelineChanged', Struct([['room', U32], ['seq', U64], ['timeline', TimelineStateT], ['by', U32]])],
  ['DirectMessage', Struct([['room', U32], ['from', U32], ['kind', STRING], ['payload', BYTES]])],
  ['BroadcastMessage', Struct([['room', U32], ['from', U32], ['kind', STRING], ['payload', BYTES]])],
  ['Snapshot', Struct([['request_id', U32], ['snapshot', RoomSnapshotT]])],
  ['IceServers', Struct([['request_id', U32], ['servers', Vec(IceServerT)], ['expires', U64]])],
  ['Resumed', Struct([['room', U32], ['member', U32], ['snapshot', Option(RoomSnapshotT)]])],
  ['ResumeLost', Struct([['room', U32], ['code', U16]])],
  ['PackAvailable', Struct([['room', U32], ['seq', U64], ['pack', PackInfoT]])],
  ['PackUploadReady', Struct([['request_id', U32], ['hash', BYTES], ['offset', U64]])],
]);

/**
 * The header of a pack transfer (§ packs): the first frame of a WebTransport
 * unidirectional stream, or the start of every WebSocket pack-lane message.
 */
const PackStreamHeaderT = Enum('PackStreamHeader', [
  ['Upload', Struct([['hash', BYTES], ['offset', U64]])],
  ['Download', Struct([['request_id', U32], ['hash', BYTES], ['offset', U64], ['size', U64]])],
]);

/** Both directions, one per datagram (§5.3). */
const DatagramT = Enum('Datagram', [
  ['Tick', Struct([['room', U32], ['sender', U32], ['seq', U32], ['payload', BYTES]])],
]);

/** Number of tags each message enum has in protocol 2.0. */
export const CLIENT_MESSAGE_TAGS = ClientMessageT.variants.length;
export const SERVER_MESSAGE_TAGS = ServerMessageT.variants.length;
export const DATAGRAM_TAGS = DatagramT.variants.length;

// ---- whole messages ----------------------------------------------------------

function encodeTop(type, message) {
  const w = new Writer();
  type.enc(w, message);
  return w.finish();
}

/**
 * Decodes exactly one message in the order of §2.5: empty input, then the tag
 * (an unknown tag is `unknown_tag`, before anything else is read), then the
 * content, then no bytes may be left.
 */
function decodeTop(type, input) {
  const bytes = inputBytes(input);
  if (bytes.length === 0) throw new CodecError('empty', `empty ${type.enumName}`);
  const r = new Reader(bytes);
  const tag = r.u32();
  if (tag >= type.variants.length) {
    throw new CodecError('unknown_tag', `unknown ${type.enumName} tag ${tag}`, { tag });
  }
  r.pos = 0;
  let value;
  try {
    value = type.dec(r);
  } catch (e) {
    throw e instanceof CodecError ? e.withPath(type.enumName) : e;
  }
  if (r.remaining > 0) {
    throw new CodecError('trailing', `${r.remaining} unexpected bytes after the ${type.enumName}`);
  }
  return value;
}

/**
 * Encodes a `ClientMessage` (no length prefix).
 * @param {object} message e.g. `{ Leave: { request_id: 2, room: 1 } }`
 * @returns {Uint8Array}
 */
export function encodeClientMessage(message) {
  return encodeTop(ClientMessageT, message);
}

/**
 * Decodes one `ClientMessage`; with `limits` (codec form), also checks every
 * length and count against them (§2.5 step 5) and fails with kind 'limit_exceeded'.
 * @param {Uint8Array|ArrayBuffer|ArrayBufferView} bytes
 * @param {object} [limits]
 */
export function decodeClientMessage(bytes, limits) {
  const message = decodeTop(ClientMessageT, bytes);
  if (limits) {
    const v = validateClientMessage(message, limits);
    if (v) {
      throw new CodecError('limit_exceeded', `${v.field} is ${v.actual} bytes or items, over the limit of ${v.limit}`, {
        detail: { limit: v.limit, actual: v.actual },
      });
    }
  }
  return message;
}

/** Encodes a `ServerMessage` (no length prefix). */
export function encodeServerMessage(message) {
  return encodeTop(ServerMessageT, message);
}

/**
 * Decodes one `ServerMessage`. A tag this SDK does not know fails with kind
 * 'unknown_tag' (code 101): clients skip such frames (§11).
 */
export function decodeServerMessage(bytes) {
  return decodeTop(ServerMessageT, bytes);
}

/** Encodes a `Datagram`, e.g. `{ Tick: { room, sender, seq, payload } }`. */
export function encodeDatagram(datagram) {
  return encodeTop(DatagramT, datagram);
}

/**
 * Decodes one `Datagram`; with `limits`, also checks the tick payload against
 * `max_tick_payload_bytes`.
 */
export function decodeDatagram(bytes, limits) {
  const datagram = decodeTop(DatagramT, bytes);
  if (limits) {
    const actual = datagram.Tick.payload.length;
    if (actual > limits.max_tick_payload_bytes) {
      throw new CodecError('limit_exceeded', `tick payload is ${actual} bytes, over the limit of ${limits.max_tick_payload_bytes}`, {
        detail: { limit: limits.max_tick_payload_bytes, actual },
      });
    }
  }
  return datagram;
}

/** Largest pack stream header body, in bytes (`MAX_PACK_HEADER_BYTES`). */
export const MAX_PACK_HEADER_BYTES = 256;
/** Bytes of a pack hash (SHA-256). */
export const PACK_HASH_BYTES = 32;

/**
 * Encodes a pack stream header as a frame (varint length, then the postcard
 * body): the start of a pack stream, or of a WebSocket pack-lane message.
 * @param {object} header `{ Upload: { hash, offset } }` or `{ Download: { request_id, hash, offset, size } }`
 * @returns {Uint8Array}
 */
export function encodePackHeader(header) {
  const body = encodeTop(PackStreamHeaderT, header);
  const hash = (header.Upload ?? header.Download)?.hash;
  if (bytesValue(hash).length !== PACK_HASH_BYTES) throw invalid(`a pack hash is ${PACK_HASH_BYTES} bytes`);
  return encodeFrame(body);
}

/**
 * Splits a pack-lane message (or the start of a pack stream) into its header
 * and the content bytes after it (`split_pack_message`). The header must be a
 * complete frame of at most MAX_PACK_HEADER_BYTES holding exactly one header
 * with a 32-byte hash.
 * @returns {{ header: object, content: Uint8Array }} `content` is a view into `bytes`
 * @throws {CodecError} 'empty', 'malformed', 'frame_too_large', 'unknown_tag' or 'limit_exceeded'
 */
export function splitPackMessage(input) {
  const bytes = inputBytes(input);
  if (bytes.length === 0) throw new CodecError('empty', 'empty pack message');
  const prefix = readFrameLength(bytes);
  if (prefix === null) throw malformed('truncated pack header length');
  if (prefix.value > MAX_PACK_HEADER_BYTES) {
    throw new CodecError('frame_too_large', `pack header of ${prefix.value} bytes exceeds the maximum of ${MAX_PACK_HEADER_BYTES}`, {
      detail: { limit: MAX_PACK_HEADER_BYTES, actual: prefix.value },
    });
  }
  const end = prefix.used + prefix.value;
  if (end > bytes.length) throw malformed(`declared pack header length ${prefix.value} exceeds the ${bytes.length - prefix.used} bytes left`);
  const header = decodeTop(PackStreamHeaderT, bytes.subarray(prefix.used, end));
  const hash = (header.Upload ?? header.Download).hash;
  if (hash.length !== PACK_HASH_BYTES) {
    throw new CodecError('limit_exceeded', `pack hash is ${hash.length} bytes, not ${PACK_HASH_BYTES}`, {
      detail: { limit: PACK_HASH_BYTES, actual: hash.length },
    });
  }
  return { header, content: bytes.subarray(end) };
}

/**
 * Whether `bytes` starts with a whole pack header frame (so `splitPackMessage`
 * can read it), for stream readers that get the header in pieces. Throws like
 * `splitPackMessage` for a header that can never become valid.
 */
function packHeaderComplete(bytes) {
  const prefix = readFrameLength(bytes);
  if (prefix === null) return false;
  if (prefix.value > MAX_PACK_HEADER_BYTES) splitPackMessage(bytes); // throws frame_too_large
  return bytes.length >= prefix.used + prefix.value;
}

/** UTF-8 length of a string without encoding it. */
export function utf8Length(s) {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

function byteLength(v) {
  if (v == null) return 0;
  return typeof v === 'string' ? utf8Length(v) : (v.byteLength ?? v.length ?? 0);
}

/**
 * Checks every length and count of a client message (codec form) against
 * `limits` (codec form). Limits are inclusive.
 * @returns {{ field: string, limit: number, actual: number } | null} the first violation
 */
export function validateClientMessage(message, limits) {
  const tag = Object.keys(message)[0];
  const m = message[tag];
  const checks = [];
  switch (tag) {
    case 'Hello':
      checks.push(
        ['client_name', byteLength(m.client_name), limits.max_name_len],
        ['hello options', m.options?.length ?? 0, limits.max_join_options],
      );
      for (const option of m.options ?? []) {
        if (option?.ApiKey !== undefined) checks.push(['api key', byteLength(option.ApiKey), limits.max_api_key_len]);
        if (option?.Resume !== undefined) {
          checks.push(
            ['resume token', byteLength(option.Resume.token), limits.max_token_len],
            ['resume rooms', option.Resume.rooms?.length ?? 0, limits.max_rooms_per_session],
          );
        }
      }
      break;
    case 'Join':
      checks.push(
        ['room_id', byteLength(m.room_id), limits.max_room_id_len],
        ['display name', byteLength(m.display?.name), limits.max_name_len],
        ['display meta', byteLength(m.display?.meta), limits.max_display_meta_bytes],
        ['join options', m.options?.length ?? 0, limits.max_join_options],
      );
      for (const option of m.options ?? []) {
        if (option === null || typeof option !== 'object') continue; // CreateIfMissing
        if (option.Password !== undefined) checks.push(['password', byteLength(option.Password), limits.max_password_len]);
        else if (option.Token !== undefined) checks.push(['token', byteLength(option.Token), limits.max_token_len]);
        else if (option.Template !== undefined) checks.push(['template', byteLength(option.Template), limits.max_room_id_len]);
        else if (option.Policy !== undefined) {
          const rules = option.Policy?.rules ?? [];
          checks.push(['policy rules', rules.length, limits.max_policy_rules]);
          for (const rule of rules) checks.push(['policy scope', byteLength(rule?.scope), limits.max_state_key_len]);
        }
      }
      break;
    case 'Kick':
    case 'CloseRoom':
      checks.push(['reason', byteLength(m.reason), limits.max_reason_len]);
      break;
    case 'SetPassword':
      checks.push(['password', byteLength(m.password), limits.max_password_len]);
      break;
    case 'SetState':
      checks.push(
        ['state key', byteLength(m.key), limits.max_state_key_len],
        ['state value', byteLength(m.value), limits.max_state_value_bytes],
      );
      break;
    case 'DeleteState':
      checks.push(['state key', byteLength(m.key), limits.max_state_key_len]);
      break;
    case 'Timeline':
      checks.push(['timeline name', byteLength(m.name), limits.max_timeline_name_len]);
      break;
    case 'Direct':
    case 'Broadcast':
      checks.push(
        ['message kind', byteLength(m.kind), limits.max_command_kind_len],
        ['message payload', byteLength(m.payload), limits.max_direct_payload_bytes],
      );
      break;
    case 'PackUpload':
      checks.push(
        ['pack hash', byteLength(m.hash), PACK_HASH_BYTES],
        ['pack name', byteLength(m.name), limits.max_pack_name_len],
        ['media type', byteLength(m.media_type), limits.max_pack_name_len],
      );
      break;
    case 'PackFetch':
      checks.push(['pack hash', byteLength(m.hash), PACK_HASH_BYTES]);
      break;
    case 'Command':
      checks.push(
        ['command kind', byteLength(m.kind), limits.max_command_kind_len],
        ['command payload', byteLength(m.payload), limits.max_command_payload_bytes],
        ['idempotency key', byteLength(m.idempotency_key), limits.max_idempotency_key_len],
      );
      break;
    default:
      break;
  }
  for (const [field, actual, limit] of checks) {
    if (actual > limit) return { field, limit, actual };
  }
  return null;
}

/** Converts codec-form rate limits to the API's form: `{ messages: { perSecond, burst }, stateUpdates, ... }`. */
export function rateLimitsToCamel(rateLimits) {
  const out = {};
  for (const name of RATE_LIMIT_FIELDS) {
    const rate = rateLimits[name];
    out[name.replace(/_([a-z])/g, (_, c) => c.toUpperCase())] = Object.freeze({ perSecond: rate.per_second, burst: rate.burst });
  }
  return Object.freeze(out);
}

/** Converts codec-form limits (snake_case) to the API's camelCase form. */
export function limitsToCamel(limits) {
  const out = {};
  for (const name of LIMIT_FIELDS) {
    out[name.replace(/_([a-z])/g, (_, c) => c.toUpperCase())] = limits[name];
  }
  return Object.freeze(out);
}

// ===========================================================================
// 3. Framing: control-stream frames (§3) and WebSocket lanes (§1.3)
// ===========================================================================

/** Longest frame length prefix (a u32 varint). */
export const MAX_FRAME_PREFIX = 5;

/**
 * Reads a frame length prefix (u32 varint, at most 5 bytes) at `start`.
 * @returns {{ value: number, used: number } | null} null when more bytes are needed
 * @throws {CodecError} 'malformed' for a prefix that runs 5 bytes or overflows u32
 */
export function readFrameLength(bytes, start = 0, end = bytes.length) {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < MAX_FRAME_PREFIX; i++) {
    if (start + i >= end) return null;
    const byte = bytes[start + i];
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) {
      if (value > 0xffffffff) throw malformed('frame length prefix overflows u32');
      return { value, used: i + 1 };
    }
    scale *= 128;
  }
  throw malformed('frame length prefix is not a varint of at most 5 bytes');
}

/**
 * One control-stream frame: varint body length, then the body.
 * @param {Uint8Array} body
 */
export function encodeFrame(body) {
  const b = inputBytes(body);
  const w = new Writer(b.length + MAX_FRAME_PREFIX);
  w.varint(checkUint(b.length, 0xffffffff, 'frame length'));
  w.raw(b);
  return w.finish();
}

/**
 * Splits a byte stream into frame bodies (§3). Feed it with `push`, take
 * bodies with `next` until it returns null. A declared length over
 * `maxFrameBytes` fails as soon as the prefix is read, before any of the body
 * is buffered; the buffer only grows with bytes that actually arrived.
 */
export class FrameDecoder {
  constructor(maxFrameBytes = DEFAULT_LIMITS.max_frame_bytes) {
    this.maxFrameBytes = maxFrameBytes;
    this.buf = new Uint8Array(0);
    this.start = 0;
    this.end = 0;
    this.pendingLength = -1;
  }

  /** Changes the largest body accepted from now on. */
  setMaxFrameBytes(max) {
    this.maxFrameBytes = max;
  }

  /** Bytes received but not yet returned. */
  get buffered() {
    return this.end - this.start;
  }

  push(chunk) {
    const bytes = inputBytes(chunk);
    if (bytes.length === 0) return;
    if (this.start === this.end) {
      this.start = 0;
      this.end = 0;
    }
    if (this.end + bytes.length > this.buf.length) {
      const live = this.end - this.start;
      if (live + bytes.length <= this.buf.length) {
        this.buf.copyWithin(0, this.start, this.end);
      } else {
        const grown = new Uint8Array(Math.max(live + bytes.length, this.buf.length * 2, 256));
        grown.set(this.buf.subarray(this.start, this.end));
        this.buf = grown;
      }
      this.start = 0;
      this.end = live;
    }
    this.buf.set(bytes, this.end);
    this.end += bytes.length;
  }

  /**
   * The next complete body (a copy), or null if more bytes are needed.
   * @throws {CodecError} 'malformed' (bad prefix) or 'frame_too_large'; the stream is then unusable
   */
  next() {
    if (this.pendingLength < 0) {
      const prefix = readFrameLength(this.buf, this.start, this.end);
      if (prefix === null) return null;
      if (prefix.value > this.maxFrameBytes) {
        throw new CodecError('frame_too_large', `frame of ${prefix.value} bytes exceeds the maximum of ${this.maxFrameBytes}`, {
          detail: { limit: this.maxFrameBytes, actual: prefix.value },
        });
      }
      this.start += prefix.used;
      this.pendingLength = prefix.value;
    }
    if (this.end - this.start < this.pendingLength) return null;
    const body = this.buf.slice(this.start, this.start + this.pendingLength);
    this.start += this.pendingLength;
    this.pendingLength = -1;
    return body;
  }
}

/** WebSocket lane bytes (§1.3). */
export const WS_LANE_CONTROL = 0x00;
export const WS_LANE_TICK = 0x01;
export const WS_LANE_CHUNK = 0x02;
/** A pack message: a framed PackStreamHeader, then one chunk of content. */
export const WS_LANE_PACK = 0x03;
/** Pack content goes out in pieces of at most this many bytes (the server's PACK_CHUNK_BYTES). */
export const WS_PACK_CHUNK_BYTES = 16 * 1024;
/** Control messages with a larger body are sent in pieces of this size. */
export const WS_CHUNK_BYTES = 16 * 1024;
/** The WebSocket subprotocol offered. */
export const WS_SUBPROTOCOL = 'chorus.v1';

/**
 * The WebSocket messages that carry one control message body: one `0x00`
 * message, or `0x02` pieces of `chunkBytes` and a last `0x00` piece.
 * @returns {Uint8Array[]}
 */
export function wsControlMessages(body, chunkBytes = WS_CHUNK_BYTES) {
  const b = inputBytes(body);
  if (!(chunkBytes >= 1)) throw invalid('chunkBytes must be at least 1');
  const out = [];
  let pos = 0;
  do {
    const end = Math.min(pos + chunkBytes, b.length);
    const piece = new Uint8Array(1 + end - pos);
    piece[0] = end === b.length ? WS_LANE_CONTROL : WS_LANE_CHUNK;
    piece.set(b.subarray(pos, end), 1);
    out.push(piece);
    pos = end;
  } while (pos < b.length);
  return out;
}

/**
 * The WebSocket pack-lane message carrying one chunk of an upload: lane byte
 * 0x03, the framed `Upload { hash, offset }` header (`offset`: this chunk's
 * offset in the pack), then the chunk.
 */
export function wsPackMessage(header, chunk) {
  const head = encodePackHeader(header);
  const c = inputBytes(chunk);
  const out = new Uint8Array(1 + head.length + c.length);
  out[0] = WS_LANE_PACK;
  out.set(head, 1);
  out.set(c, 1 + head.length);
  return out;
}

/** The WebSocket message carrying one tick datagram. */
export function wsTickMessage(datagram) {
  const d = inputBytes(datagram);
  const out = new Uint8Array(1 + d.length);
  out[0] = WS_LANE_TICK;
  out.set(d, 1);
  return out;
}

/**
 * Joins the WebSocket control lane's chunks into whole control messages; ticks
 * and pack messages may come between the chunks. Empty messages and unknown lane bytes are
 * skipped. A reassembled message over `maxFrameBytes` is fatal.
 */
export class WsReassembler {
  constructor(maxFrameBytes = DEFAULT_LIMITS.max_frame_bytes) {
    this.maxFrameBytes = maxFrameBytes;
    this.parts = [];
    this.size = 0;
    this.chunking = false;
  }

  setMaxFrameBytes(max) {
    this.maxFrameBytes = max;
  }

  /**
   * Takes one binary WebSocket message.
   * @returns {{ lane: 'control'|'tick'|'pack', body: Uint8Array } | null} null for a chunk or a skipped message
   * @throws {CodecError} 'frame_too_large'
   */
  push(message) {
    const m = inputBytes(message);
    if (m.length === 0) return null;
    const body = m.subarray(1);
    switch (m[0]) {
      case WS_LANE_TICK:
        return { lane: 'tick', body };
      case WS_LANE_PACK:
        // Self-contained: it may come between the pieces of a control message.
        return { lane: 'pack', body };
      case WS_LANE_CONTROL: {
        if (!this.chunking) {
          this.check(body.length);
          return { lane: 'control', body };
        }
        this.check(this.size + body.length);
        const whole = new Uint8Array(this.size + body.length);
        let pos = 0;
        for (const part of this.parts) {
          whole.set(part, pos);
          pos += part.length;
        }
        whole.set(body, pos);
        this.parts = [];
        this.size = 0;
        this.chunking = false;
        return { lane: 'control', body: whole };
      }
      case WS_LANE_CHUNK:
        this.check(this.size + body.length);
        this.parts.push(body.slice());
        this.size += body.length;
        this.chunking = true;
        return null;
      default:
        return null;
    }
  }

  check(size) {
    if (size > this.maxFrameBytes) {
      throw new CodecError('frame_too_large', `control message of ${size} bytes exceeds the maximum of ${this.maxFrameBytes}`, {
        detail: { limit: this.maxFrameBytes, actual: size },
      });
    }
  }
}

// ===========================================================================
// 4. Clock (§9)
// ===========================================================================

/** Exchanges longer than this (client side) are discarded as stale. */
export const MAX_SAMPLE_ROUND_TRIP_US = 60_000_000;

/**
 * One ping/pong exchange, all in microseconds since the Unix epoch (`t0`, `t3`
 * on the client's clock, `t1`, `t2` on the server's). Returns the sample with
 * its `offsetUs` (server minus client) and `rttUs` (without server processing,
 * at least 0), or null when the timestamps are impossible (reply before ping,
 * server sent before it received, or a round trip over 60 s).
 */
export function clockSample(t0, t1, t2, t3) {
  [t0, t1, t2, t3] = [t0, t1, t2, t3].map(toNumber);
  if (t3 < t0 || t2 < t1 || t3 - t0 > MAX_SAMPLE_ROUND_TRIP_US) return null;
  return {
    t0,
    t1,
    t2,
    t3,
    offsetUs: Math.trunc((t1 - t0 + (t2 - t3)) / 2) || 0, // toward zero like integer division; never -0
    rttUs: Math.max(0, t3 - t0 - (t2 - t1)),
  };
}

/** The sample with the smallest RTT; among equal RTTs, the latest. */
export function bestSample(samples) {
  let best = null;
  for (const s of samples) {
    if (best === null || s.rttUs <= best.rttUs) best = s;
  }
  return best;
}

/** Keeps the latest `capacity` samples and estimates the offset from the min-RTT one. */
export class ClockEstimator {
  constructor(capacity = 32) {
    this.capacity = Math.max(1, capacity);
    this.samples = [];
  }

  add(sample) {
    if (this.samples.length === this.capacity) this.samples.shift();
    this.samples.push(sample);
  }

  get size() {
    return this.samples.length;
  }

  /** `{ offsetUs, rttUs, samples }`; all 0 before the first sample. */
  estimate() {
    const best = bestSample(this.samples);
    if (!best) return { offsetUs: 0, rttUs: 0, samples: 0 };
    return { offsetUs: best.offsetUs, rttUs: best.rttUs, samples: this.samples.length };
  }
}

/** This page's monotonic clock, anchored to the Unix epoch, in whole microseconds. */
export function localNowUs() {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

// ===========================================================================
// 5. Utilities
// ===========================================================================

function reportListenerError(error) {
  if (typeof globalThis.reportError === 'function') globalThis.reportError(error);
  else console.error('chorus: an event listener threw', error);
}

/** A minimal event emitter with a fixed set of event names. */
class Emitter {
  constructor(names) {
    this.handlers = new Map(names.map((n) => [n, new Set()]));
  }

  on(name, fn) {
    const set = this.handlers.get(name);
    if (!set) throw invalidArgument(`unknown event ${JSON.stringify(name)}; expected one of ${[...this.handlers.keys()].join(', ')}`);
    if (typeof fn !== 'function') throw invalidArgument('an event listener must be a function');
    set.add(fn);
    return () => set.delete(fn);
  }

  off(name, fn) {
    this.handlers.get(name)?.delete(fn);
  }

  emit(name, value) {
    const set = this.handlers.get(name);
    if (!set || set.size === 0) return;
    for (const fn of [...set]) {
      try {
        fn(value);
      } catch (e) {
        reportListenerError(e);
      }
    }
  }
}

/**
 * A bounded async iterator: holds at most `capacity` items and drops the
 * oldest when the consumer is slow (`dropped` counts them). Ends (after the
 * buffered items) when its source ends; `return()` (a `break` out of
 * `for await`) unsubscribes it.
 */
export class EventQueue {
  constructor(capacity = 256, onEnd = null) {
    this.capacity = Math.max(1, capacity);
    this.items = [];
    this.waiters = [];
    this.ended = false;
    this.dropped = 0;
    this.onEnd = onEnd;
  }

  push(item) {
    if (this.ended) return;
    const waiter = this.waiters.shift();
    if (waiter) {
      waiter({ value: item, done: false });
      return;
    }
    if (this.items.length >= this.capacity) {
      this.items.shift();
      this.dropped++;
    }
    this.items.push(item);
  }

  end() {
    if (this.ended) return;
    this.ended = true;
    for (const w of this.waiters) w({ value: undefined, done: true });
    this.waiters = [];
    const onEnd = this.onEnd;
    this.onEnd = null;
    onEnd?.(this);
  }

  next() {
    if (this.items.length > 0) return Promise.resolve({ value: this.items.shift(), done: false });
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  return() {
    this.items = [];
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator]() {
    return this;
  }
}

/** Application bytes: Uint8Array/ArrayBuffer/view as is, a string as UTF-8. */
function appBytes(v, what) {
  if (typeof v === 'string') return stringBytes(v);
  if (v instanceof Uint8Array) return v;
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  throw invalidArgument(`${what} must be a Uint8Array or a string, got ${describe(v)}`);
}

const EMPTY_BYTES = new Uint8Array(0);

/** Parses a SHA-256 hash in hex (colons allowed), or null. */
export function parseCertHash(hex) {
  if (typeof hex !== 'string') return null;
  const digits = hex.trim().replace(/:/g, '');
  if (!/^[0-9a-fA-F]{64}$/.test(digits)) return null;
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) out[i] = parseInt(digits.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function delay(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Settles like `promise`, or rejects with `makeError()` after `ms`. The timer never outlives it. */
function withTimeout(promise, ms, makeError) {
  let timer;
  promise = Promise.resolve(promise);
  promise.catch(() => {}); // a rejection after the timeout is not unhandled
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(makeError()), Math.max(0, ms));
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Waits for `promise` to settle or `ms` to pass, whichever comes first; never rejects. */
function settleWithin(promise, ms) {
  let timer;
  return Promise.race([
    Promise.resolve(promise).then(
      () => {},
      () => {},
    ),
    new Promise((resolve) => {
      timer = setTimeout(resolve, ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// ===========================================================================
// 6. Room replica (§6)
// ===========================================================================

const ROLE_NAMES = { Host: 'host', Editor: 'editor', Viewer: 'viewer' };
const LEAVE_REASONS = { Left: 'left', Disconnected: 'disconnected', TooSlow: 'too_slow', TimedOut: 'timed_out' };

/**
 * Role names -> wire roles: the API names, the wire names, and the aliases
 * `Role::from_name` knows (leader and owner are hosts, participant an editor,
 * follower a viewer).
 */
const WIRE_ROLES = new Map([
  ['host', 'Host'],
  ['leader', 'Host'],
  ['owner', 'Host'],
  ['editor', 'Editor'],
  ['participant', 'Editor'],
  ['viewer', 'Viewer'],
  ['follower', 'Viewer'],
  ['Host', 'Host'],
  ['Editor', 'Editor'],
  ['Viewer', 'Viewer'],
]);

/** Action names (API 'set_state' or wire 'SetState') -> wire names. */
const WIRE_ACTIONS = new Map(ACTION_NAMES.flatMap(([wire, api]) => [[api, wire], [wire, wire]]));
const API_ACTIONS = new Map(ACTION_NAMES);

/** The wire form of a role name; throws invalid_argument for anything else. */
function wireRole(role) {
  const wire = typeof role === 'string' ? WIRE_ROLES.get(role) : undefined;
  if (!wire) throw invalidArgument(`unknown role ${describe(role)}; expected 'host', 'editor' or 'viewer'`);
  return wire;
}

/** The wire form of an action name; throws invalid_argument for anything else. */
function wireAction(action) {
  const wire = typeof action === 'string' ? WIRE_ACTIONS.get(action) : undefined;
  if (!wire) throw invalidArgument(`unknown action ${describe(action)}; expected one of ${ACTIONS.join(', ')}`);
  return wire;
}

/** Actions whose rules may have a scope (a state key or command kind prefix). */
const SCOPED_ACTIONS = new Set(['SetState', 'SendCommands']);

/**
 * A permission policy (API or codec form, or a bare list of rules) in codec
 * form. With `strict` (a policy to send), also checks that only set_state and
 * send_commands rules have a scope, as the server does (`PermissionPolicy::validate`).
 */
function wirePolicy(policy, strict = true) {
  const rules = Array.isArray(policy) ? policy : policy?.rules;
  if (!Array.isArray(rules)) throw invalidArgument(`a policy is { rules: [{ action, scope, roles }] }, got ${describe(policy)}`);
  return {
    rules: rules.map((rule) => {
      if (rule === null || typeof rule !== 'object') throw invalidArgument(`a policy rule is { action, scope, roles }, got ${describe(rule)}`);
      const action = wireAction(rule.action);
      const scope = rule.scope ?? '';
      if (typeof scope !== 'string') throw invalidArgument(`a rule's scope must be a string, got ${describe(scope)}`);
      if (strict && scope !== '' && !SCOPED_ACTIONS.has(action)) {
        throw invalidArgument(`action ${API_ACTIONS.get(action)} takes no scope (got ${JSON.stringify(scope)})`);
      }
      if (!Array.isArray(rule.roles)) throw invalidArgument(`a rule's roles must be an array, got ${describe(rule.roles)}`);
      return { action, scope, roles: rule.roles.map(wireRole) };
    }),
  };
}

/** A codec-form policy in API form: `{ rules: [{ action: 'set_state', scope, roles: ['host', ...] }] }`, frozen. */
function publicPolicy(policy) {
  return Object.freeze({
    rules: Object.freeze(
      (policy?.rules ?? []).map((rule) =>
        Object.freeze({
          action: API_ACTIONS.get(rule.action) ?? String(rule.action),
          scope: rule.scope,
          roles: Object.freeze(rule.roles.map((r) => ROLE_NAMES[r] ?? String(r))),
        }),
      ),
    ),
  });
}

/**
 * The defaults every room starts from (`PermissionPolicy::default_rules()`),
 * in API form: hosts and editors write state, send commands, control the
 * timeline and upload packs; everyone sends ticks and direct messages; only
 * hosts kick, grant roles, close the room and set its password.
 */
export const DEFAULT_PERMISSION_RULES = publicPolicy({
  rules: [
    ['SetState', ['Host', 'Editor']],
    ['SendCommands', ['Host', 'Editor']],
    ['SendTicks', ['Host', 'Editor', 'Viewer']],
    ['ControlTimeline', ['Host', 'Editor']],
    ['UploadPacks', ['Host', 'Editor']],
    ['DirectMessages', ['Host', 'Editor', 'Viewer']],
    ['Kick', ['Host']],
    ['GrantRoles', ['Host']],
    ['CloseRoom', ['Host']],
    ['SetPassword', ['Host']],
  ].map(([action, roles]) => ({ action, scope: '', roles })),
}).rules;

const DEFAULT_WIRE_RULES = wirePolicy(DEFAULT_PERMISSION_RULES).rules;

/**
 * Whether `role` may do `action` on `target` (a state key or command kind;
 * '' for other actions) under `policy`, exactly as the server decides
 * (`PermissionPolicy::allows`): of the rules for that action whose scope is a
 * prefix of `target`, the one with the longest scope decides; the room's own
 * rules come before the defaults, so a room rule with a default's scope
 * replaces it. `policy` and names in API or codec form; a null role is
 * allowed nothing.
 * @param {{ rules: Array<{ action: string, scope?: string, roles: string[] }> } | null} policy
 * @param {string | null} role
 * @param {string} action e.g. 'set_state'
 * @param {string} [target]
 * @returns {boolean}
 */
export function policyAllows(policy, role, action, target = '') {
  const wanted = wireAction(action);
  if (typeof target !== 'string') throw invalidArgument(`target must be a string, got ${describe(target)}`);
  const rules = policy ? wirePolicy(policy, false).rules : [];
  let best = null;
  for (const rule of [...rules, ...DEFAULT_WIRE_RULES]) {
    if (rule.action !== wanted || !target.startsWith(rule.scope)) continue;
    // Strictly longer wins, so an earlier (room) rule beats a default with the same scope.
    if (best === null || rule.scope.length > best.scope.length) best = rule;
  }
  if (best === null || role === null || role === undefined) return false;
  const wire = WIRE_ROLES.get(role);
  return wire !== undefined && best.roles.includes(wire);
}

/** The server messages that are events of one room (they carry `room` and `seq`). */
const ROOM_EVENTS = new Set([
  'MemberJoined',
  'MemberLeft',
  'StateChanged',
  'CommandEvent',
  'RoleChanged',
  'MemberKicked',
  'RoomClosed',
  'PresenceChanged',
  'TimelineChanged',
  'PackAvailable',
]);

const PRESENCE_NAMES = { Online: 'online', Reconnecting: 'reconnecting', Away: 'away' };
const ROOM_KIND_NAMES = { Normal: 'normal', Relay: 'relay' };
const FAILOVER_NAMES = { NextMember: 'next_member', PauseTimeline: 'pause_timeline', Nothing: 'nothing' };
const WIRE_ROOM_KINDS = new Map([
  ['normal', 'Normal'],
  ['relay', 'Relay'],
  ['Normal', 'Normal'],
  ['Relay', 'Relay'],
]);
const WIRE_FAILOVER_MODES = new Map([
  ['next_member', 'NextMember'],
  ['pause_timeline', 'PauseTimeline'],
  ['nothing', 'Nothing'],
  ['NextMember', 'NextMember'],
  ['PauseTimeline', 'PauseTimeline'],
  ['Nothing', 'Nothing'],
]);

/** Commands of this kind are the room's chat (PROTOCOL.md §20). */
export const CHAT_KIND = 'chat';
/** Chat entries a replica keeps at least (the server's default history). */
const CHAT_HISTORY = 50;

/** A member in API form from a codec `MemberInfo`. */
function publicMember(info) {
  return Object.freeze({
    id: info.id,
    role: ROLE_NAMES[info.role] ?? null,
    name: info.display.name,
    meta: info.display.meta,
    presence: PRESENCE_NAMES[info.presence] ?? 'online',
  });
}

function stateValue(value, version, author) {
  return Object.freeze({ value, text: lenientUtf8.decode(value), version, author });
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** Bytes as lowercase hex. */
export function bytesToHex(bytes) {
  let out = '';
  for (const b of bytes) out += HEX[b];
  return out;
}

/** A pack in API form from a codec `PackInfo`: `{ hash (hex), name, mediaType, size, uploader }`. */
function publicPack(info) {
  return Object.freeze({
    hash: bytesToHex(info.hash),
    name: info.name,
    mediaType: info.media_type,
    size: toNumber(info.size),
    uploader: info.uploader,
  });
}

function chatEntry(seq, author, time, payload) {
  return Object.freeze({ seq, author, time, payload, text: lenientUtf8.decode(payload) });
}

// ---- timelines (PROTOCOL.md §16) ----------------------------------------------

/** Normal speed, in parts per million. */
export const NORMAL_RATE_PPM = 1_000_000;

/**
 * A timeline state in API form from a codec `TimelineState`: `{ name,
 * playing, ratePpm, rate, anchorTime, anchorPositionUs, tempoMbpm, bpm, seq }`
 * (times in µs; `rate` is `ratePpm / 1e6`, `bpm` is `tempoMbpm / 1000` or null).
 */
export function publicTimeline(state) {
  const tempo = state.tempo_mbpm ?? null;
  return Object.freeze({
    name: state.name,
    playing: state.playing,
    ratePpm: state.rate_ppm,
    rate: state.rate_ppm / NORMAL_RATE_PPM,
    anchorTime: toNumber(state.anchor_time),
    anchorPositionUs: toNumber(state.anchor_position_us),
    tempoMbpm: tempo,
    bpm: tempo === null ? null : tempo / 1000,
    seq: toNumber(state.seq),
  });
}

/** A timeline never changed (§16.1): paused at 0, normal speed, no tempo, seq 0. */
function initialTimeline(name) {
  return publicTimeline({ name, playing: false, rate_ppm: NORMAL_RATE_PPM, anchor_time: 0, anchor_position_us: 0, tempo_mbpm: null, seq: 0 });
}

/**
 * The position of a timeline in state `state` (API form) at server time `at`
 * (µs), in µs, exactly as the server computes it (§16.2): `anchorPositionUs +
 * (at - anchorTime) * ratePpm / 1e6` (integer, rounded down) while playing
 * and after the anchor, else `anchorPositionUs`.
 */
export function timelinePosition(state, at) {
  const t = Math.floor(toNumber(at));
  if (!state.playing || t <= state.anchorTime) return state.anchorPositionUs;
  const advanced = (BigInt(t) - BigInt(state.anchorTime)) * BigInt(state.ratePpm) / BigInt(NORMAL_RATE_PPM);
  return state.anchorPositionUs + Number(advanced);
}

/**
 * One timeline as this client follows it (§16.4): the state in force and, while
 * a change scheduled ahead waits for its `anchorTime`, that change. A newer
 * change replaces a pending one, as on the server, so every member switches
 * alike. Pure: times are given.
 */
export class TimelineSchedule {
  /** @param {object} state the state in force (API form) */
  constructor(state) {
    this.current = state;
    this.pending = null;
  }

  /** A schedule for a timeline never changed (§16.1). */
  static initial(name) {
    return new TimelineSchedule(initialTimeline(name));
  }

  /** Takes a newer state that arrived at server time `now`: ahead of `now` it waits as the pending change, else it is in force at once. */
  push(state, now) {
    this.settle(now);
    if (state.anchorTime > now) this.pending = state;
    else {
      this.current = state;
      this.pending = null;
    }
  }

  /** A pending change whose anchor time has come (by `now`) becomes current. */
  settle(now) {
    if (this.pending && this.pending.anchorTime <= now) {
      this.current = this.pending;
      this.pending = null;
    }
  }

  /** The state in force at server time `t`. */
  at(t) {
    return this.pending && t >= this.pending.anchorTime ? this.pending : this.current;
  }

  /** The position at server time `t`, µs. */
  positionAt(t) {
    return timelinePosition(this.at(t), t);
  }

  /** The newest state, in force or not: its `seq` is what `expectedSeq` compares with. */
  get latest() {
    return this.pending ?? this.current;
  }
}

/**
 * Members, state, timelines, packs and chat of one room as of `lastSeq`. A
 * pure state machine: it starts from a snapshot and applies the room's events
 * (codec form `ServerMessage`s) in sequence order, returning the event to
 * publish. No I/O; the server time (for scheduled timeline changes and the
 * time of new chat entries) comes from `options.serverTime`.
 */
export class RoomReplica {
  /**
   * @param {object} snapshot a codec-form `RoomSnapshot`
   * @param {{ serverTime?: () => number }} [options]
   */
  constructor(snapshot, options = {}) {
    this.serverTime = options.serverTime ?? localNowUs;
    this.roomId = snapshot.room_id;
    this.slot = snapshot.room;
    this.me = snapshot.you;
    this.snapshotRole = ROLE_NAMES[snapshot.role] ?? null;
    /** @type {Map<number, object>} in join order */
    this.members = new Map(snapshot.members.map((m) => [m.id, publicMember(m)]));
    /** @type {Map<string, object>} */
    this.state = new Map(
      snapshot.state.map((e) => [e.key, stateValue(e.value, toNumber(e.version), e.author)]),
    );
    this.stateVersion = toNumber(snapshot.state_version);
    this.lastSeq = toNumber(snapshot.last_seq);
    /** The room's own permission rules, API form (the defaults apply where none matches). */
    this.policy = publicPolicy(snapshot.policy);
    /** 'normal' or 'relay' (a relay room stores nothing). */
    this.kind = ROOM_KIND_NAMES[snapshot.kind] ?? 'normal';
    /** 'next_member', 'pause_timeline' or 'nothing'. */
    this.failover = FAILOVER_NAMES[snapshot.failover] ?? 'next_member';
    /** @type {Map<string, TimelineSchedule>} */
    this.timelines = new Map((snapshot.timelines ?? []).map((t) => [t.name, new TimelineSchedule(publicTimeline(t))]));
    /** @type {Map<string, object>} hex hash -> pack, oldest first */
    this.packs = new Map((snapshot.packs ?? []).map((p) => {
      const pack = publicPack(p);
      return [pack.hash, pack];
    }));
    /** The last chat messages, oldest first. */
    this.chat = (snapshot.chat ?? []).map((c) => chatEntry(toNumber(c.seq), c.author, toNumber(c.time), c.payload));
    this.chatCapacity = Math.max(CHAT_HISTORY, this.chat.length);
    /** Events whose seq skipped past lastSeq + 1 (applied anyway, counted). */
    this.gaps = 0;
  }

  /** Whether this client's current role may do `action` on `target` under the room's policy. */
  can(action, target = '') {
    return policyAllows(this.policy, this.role, action, target);
  }

  /** This client's role: from the member list when present, else from the snapshot. */
  get role() {
    return this.members.get(this.me)?.role ?? this.snapshotRole;
  }

  member(id) {
    return this.members.get(id);
  }

  hasMember(id) {
    return this.members.has(id);
  }

  /** The state of timeline `name` in force at server time `at` (default now), or undefined. */
  timelineAt(name, at = this.serverTime()) {
    return this.timelines.get(name)?.at(at);
  }

  /** The room slot a room event is about, or null for other messages. */
  static eventRoom(message) {
    const tag = Object.keys(message)[0];
    return ROOM_EVENTS.has(tag) ? message[tag].room : null;
  }

  /** Replaces a member (same key: keeps the join order). */
  updateMember(id, changes) {
    const known = this.members.get(id);
    const member = Object.freeze({ ...(known ?? { id, role: null, name: '', meta: EMPTY_BYTES, presence: 'online' }), ...changes });
    if (known) this.members.set(id, member);
    return { known, member };
  }

  /**
   * Applies one server message if it is an event of this room.
   * @returns {null | { stale: true, seq: number, last: number } | { name: string, event: object, removed: boolean }}
   *   null when it is not an event of this room; `stale` when its seq is not after
   *   lastSeq (ignored); otherwise the event to publish under `name` ('memberJoined',
   *   'memberLeft', 'stateChanged', 'command', 'roleChanged', 'memberKicked',
   *   'closed', 'presenceChanged', 'timelineChanged', 'packAvailable'), with
   *   `removed` when this client is no longer in the room (it left or was
   *   kicked, or the room closed).
   */
  apply(message) {
    const tag = Object.keys(message)[0];
    const m = message[tag];
    if (!ROOM_EVENTS.has(tag) || !m || m.room !== this.slot) return null;
    const seq = toNumber(m.seq);
    if (seq <= this.lastSeq) return { stale: true, seq, last: this.lastSeq };
    if (seq !== this.lastSeq + 1) this.gaps++;
    this.lastSeq = seq;
    switch (tag) {
      case 'MemberJoined': {
        const member = publicMember(m.member);
        this.members.set(member.id, member);
        return { name: 'memberJoined', event: member, removed: false };
      }
      case 'MemberLeft': {
        const known = this.members.get(m.member);
        this.members.delete(m.member);
        const member = known ?? Object.freeze({ id: m.member, role: null, name: '', meta: EMPTY_BYTES, presence: 'online' });
        const event = { member, reason: LEAVE_REASONS[m.reason] ?? String(m.reason), seq };
        return { name: 'memberLeft', event, removed: m.member === this.me };
      }
      case 'StateChanged': {
        const version = toNumber(m.version);
        let entry = null;
        if (m.value === null) this.state.delete(m.key);
        else {
          entry = stateValue(m.value, version, m.author);
          this.state.set(m.key, entry);
        }
        this.stateVersion = Math.max(this.stateVersion, version);
        const event = {
          key: m.key,
          value: entry ? entry.value : null,
          text: entry ? entry.text : null,
          version,
          author: m.author,
          seq,
        };
        return { name: 'stateChanged', event, removed: false };
      }
      case 'RoleChanged': {
        const role = ROLE_NAMES[m.role] ?? null;
        const { known, member } = this.updateMember(m.member, { role });
        if (m.member === this.me) this.snapshotRole = role;
        return { name: 'roleChanged', event: { member, role, previousRole: known?.role ?? null, by: m.by, seq }, removed: false };
      }
      case 'MemberKicked': {
        const known = this.members.get(m.member);
        this.members.delete(m.member);
        const member = known ?? Object.freeze({ id: m.member, role: null, name: '', meta: EMPTY_BYTES, presence: 'online' });
        const event = { member, by: m.by, reason: m.reason, banMs: toNumber(m.ban_ms), seq };
        return { name: 'memberKicked', event, removed: m.member === this.me };
      }
      case 'RoomClosed':
        this.members.clear(); // nobody is a member any more; the state stays readable
        return { name: 'closed', event: { by: m.by, reason: m.reason, seq }, removed: true };
      case 'PresenceChanged': {
        const presence = PRESENCE_NAMES[m.presence] ?? 'online';
        const { known, member } = this.updateMember(m.member, { presence });
        const event = { member, presence, previousPresence: known?.presence ?? null, seq };
        return { name: 'presenceChanged', event, removed: false };
      }
      case 'TimelineChanged': {
        const timeline = publicTimeline(m.timeline);
        const now = this.serverTime();
        let schedule = this.timelines.get(timeline.name);
        if (!schedule) {
          schedule = TimelineSchedule.initial(timeline.name);
          this.timelines.set(timeline.name, schedule);
        }
        schedule.push(timeline, now);
        const event = { name: timeline.name, timeline, by: m.by, seq, scheduled: timeline.anchorTime > now };
        return { name: 'timelineChanged', event, removed: false };
      }
      case 'PackAvailable': {
        const pack = publicPack(m.pack);
        this.packs.set(pack.hash, pack);
        return { name: 'packAvailable', event: { pack, seq }, removed: false };
      }
      default: {
        const event = {
          seq,
          author: m.author,
          kind: m.kind,
          payload: m.payload,
          text: lenientUtf8.decode(m.payload),
          idempotencyKey: m.idempotency_key,
        };
        if (m.kind === CHAT_KIND) {
          this.chat.push(chatEntry(seq, m.author, this.serverTime(), m.payload));
          if (this.chat.length > this.chatCapacity) this.chat.splice(0, this.chat.length - this.chatCapacity);
        }
        return { name: 'command', event, removed: false };
      }
    }
  }
}

// ===========================================================================
// 7. Transports
// ===========================================================================
//
// Both transports are a "link" with the same small surface, so the client is
// written once: sendControl(body), sendTick(room, datagram), sendPack(hash,
// offset, content, live), maxDatagramSize(), setMaxFrameBytes(n),
// close(chorusCode, text), and setHandlers({ control, datagram, pack, closed }).
// Until handlers are set (or while they are null) inbound messages wait in a
// backlog, so nothing is lost between the handshake and the client taking
// over. `pack(download)` receives pack content the server sends (§22.4) as
// `{ requestId, hash, offset, size, content, end }` pieces: `end` is true when
// a WebTransport pack stream finished (WebSocket pieces never end a stream).
// `closed(info)` is called once, with `info.kind`:
//   'normal'   the server closed normally (WebTransport code 0, WebSocket 1000/1001)
//   'error'    the server closed with Chorus error `info.code` (WebTransport close
//              code, WebSocket close code 4000 + code), `info.reason` its text
//   'lost'     the connection failed without a Chorus code (`info.reason` says how)
//   'protocol' the server's bytes broke the framing (`info.error`, a CodecError)
//   'local'    this client closed it

/** How long a close may take to reach the network before we stop waiting. */
const CLOSE_GRACE_MS = 1000;
/** WebSocket: above this many buffered bytes, control pieces wait (ticks pass first). */
const WS_HIGH_WATER_BYTES = 64 * 1024;
/** WebTransport: datagram writes not yet taken by the browser; beyond it ticks are dropped. */
const MAX_DATAGRAMS_IN_FLIGHT = 64;
/** WebTransport: pack content is written to its stream in pieces of this size. */
const WT_PACK_WRITE_BYTES = 64 * 1024;

/** A download piece for the link's `pack` handler, from a split server pack message; null for anything else. */
function downloadPiece(header, content, end = false) {
  const d = header.Download;
  if (!d) return null; // a server sends only Download headers
  return { requestId: d.request_id, hash: d.hash, offset: toNumber(d.offset), size: toNumber(d.size), content, end };
}

function errorText(e) {
  return e?.message ?? String(e);
}

class Link {
  constructor(kind) {
    this.kind = kind;
    this.handlers = null;
    this.backlog = [];
    this.closedInfo = null;
    /** Ticks that never reached the network (replaced by a newer one, or the send queue was full). */
    this.ticksDropped = 0;
  }

  setHandlers(handlers) {
    this.handlers = handlers;
    this.drain();
  }

  deliver(type, value) {
    if (this.handlers && this.backlog.length === 0) this.handlers[type](value);
    else {
      this.backlog.push([type, value]);
      this.drain();
    }
  }

  drain() {
    while (this.handlers && this.backlog.length > 0) {
      const [type, value] = this.backlog.shift();
      this.handlers[type](value);
    }
  }

  /** Records how the connection ended (once) and tells the handlers. */
  finish(info) {
    if (this.closedInfo) return;
    this.closedInfo = info;
    this.onFinish();
    this.deliver('closed', info);
  }

  onFinish() {}
}

/** WebSocket close code -> link close info (§1.3 "Closing"). */
export function wsCloseInfo(code, reason = '') {
  if (code === 1000 || code === 1001) return { kind: 'normal', reason };
  if (code >= 4000 && code <= 4999) return { kind: 'error', code: code - 4000, reason };
  return { kind: 'lost', reason: `WebSocket closed with code ${code}${reason ? `: ${reason}` : ''}` };
}

/**
 * WebSocket (§1.3): every message binary, a lane byte then the body. Control
 * messages over 16 KiB go out in chunks; they wait while the socket has more
 * than WS_HIGH_WATER_BYTES buffered, and ticks are written before each control
 * piece, newest-wins per room, so a big state value never holds ticks back by
 * more than one chunk.
 */
class WebSocketLink extends Link {
  constructor(ws, maxFrameBytes) {
    super('websocket');
    this.ws = ws;
    this.reassembler = new WsReassembler(maxFrameBytes);
    this.queue = [];
    this.tickSlots = new Map();
    this.packQueue = []; // { message, done } pack-lane messages, sent after ticks and control messages
    this.flushTimer = null;
    this.socketClosed = new Promise((resolve) => {
      this.resolveSocketClosed = resolve;
    });
    ws.binaryType = 'arraybuffer';
    ws.addEventListener('message', (event) => this.onMessage(event.data));
    ws.addEventListener('close', (event) => {
      this.resolveSocketClosed();
      this.finish(wsCloseInfo(event.code, event.reason));
    });
  }

  /** Opens a WebSocket offering the `chorus.v1` subprotocol; resolves once it is open. */
  static open(url, WebSocketImpl, timeoutMs, maxFrameBytes) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocketImpl(url, [WS_SUBPROTOCOL]);
      } catch (e) {
        reject(closedError(`could not open a WebSocket to ${url}: ${errorText(e)}`));
        return;
      }
      const link = new WebSocketLink(ws, maxFrameBytes);
      const cleanup = () => {
        clearTimeout(timer);
        ws.removeEventListener('open', onOpen);
        ws.removeEventListener('close', onClose);
      };
      const onOpen = () => {
        cleanup();
        resolve(link);
      };
      const onClose = (event) => {
        cleanup();
        const code = event?.code ? ` (close code ${event.code})` : '';
        reject(closedError(`the WebSocket connection to ${url} failed${code}`));
      };
      const timer = setTimeout(() => {
        cleanup();
        try {
          ws.close();
        } catch {
          // already closing
        }
        reject(timeoutError(`the WebSocket to ${url} did not open within ${timeoutMs} ms`));
      }, timeoutMs);
      ws.addEventListener('open', onOpen);
      ws.addEventListener('close', onClose);
    });
  }

  onMessage(data) {
    if (this.closedInfo || typeof data === 'string') return; // text messages are not Chorus messages
    let bytes;
    if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
    else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    else return;
    let inbound;
    try {
      inbound = this.reassembler.push(bytes);
    } catch (e) {
      this.fail(e);
      return;
    }
    if (!inbound) return;
    if (inbound.lane === 'pack') {
      let piece = null;
      try {
        const { header, content } = splitPackMessage(inbound.body);
        piece = downloadPiece(header, content);
      } catch {
        // a pack message this SDK cannot read: skipped (the fetch times out or resumes)
      }
      if (piece) this.deliver('pack', piece);
      return;
    }
    this.deliver(inbound.lane === 'control' ? 'control' : 'datagram', inbound.body);
  }

  fail(error) {
    if (this.closedInfo) return;
    this.finish({ kind: 'protocol', error });
    try {
      this.ws.close(4000 + (error.code ?? ErrorCode.Malformed), 'protocol error');
    } catch {
      // already closing
    }
  }

  onFinish() {
    clearTimeout(this.flushTimer);
    this.flushTimer = null;
    this.queue = [];
    this.tickSlots.clear();
    for (const { done } of this.packQueue.splice(0)) done(false);
  }

  /**
   * Sends pack content from `offset` as 0x03 pack messages of at most 16 KiB,
   * one at a time behind ticks and control messages. Resolves true once every
   * piece went to the socket, false when the link closed or `live()` turned
   * false first.
   */
  async sendPack(hash, offset, content, live = () => true, onSent = () => {}) {
    let pos = offset;
    do {
      if (this.closedInfo || !live()) return false;
      const end = Math.min(pos + WS_PACK_CHUNK_BYTES, content.length);
      const message = wsPackMessage({ Upload: { hash, offset: pos } }, content.subarray(pos, end));
      const sent = await new Promise((done) => {
        this.packQueue.push({ message, done });
        this.flush();
      });
      if (!sent) return false;
      pos = end;
      onSent(pos);
    } while (pos < content.length);
    return true;
  }

  sendControl(body) {
    if (this.closedInfo) return;
    for (const message of wsControlMessages(body)) this.queue.push(message);
    this.flush();
  }

  sendTick(room, datagram) {
    if (this.closedInfo) return false;
    if (this.tickSlots.has(room)) this.ticksDropped++;
    this.tickSlots.set(room, wsTickMessage(datagram));
    this.flush();
    return true;
  }

  flush() {
    const ws = this.ws;
    if (this.flushTimer !== null || this.closedInfo || ws.readyState !== 1) return;
    for (;;) {
      if (ws.bufferedAmount > WS_HIGH_WATER_BYTES) {
        this.flushTimer = setTimeout(() => {
          this.flushTimer = null;
          this.flush();
        }, 4);
        return;
      }
      if (this.tickSlots.size > 0) {
        for (const message of this.tickSlots.values()) ws.send(message);
        this.tickSlots.clear();
        continue;
      }
      const next = this.queue.shift();
      if (next !== undefined) {
        ws.send(next);
        continue;
      }
      const pack = this.packQueue.shift();
      if (pack === undefined) return;
      ws.send(pack.message);
      pack.done(true);
    }
  }

  maxDatagramSize() {
    return null; // ticks travel in-band
  }

  setMaxFrameBytes(max) {
    this.reassembler.setMaxFrameBytes(max);
  }

  /** Closes with 1000, or 4000 + a Chorus code; resolves once closed (at most ~1 s). */
  close(code = 0, text = 'closed') {
    this.finish({ kind: 'local' });
    try {
      this.ws.close(code ? 4000 + code : 1000, text);
    } catch {
      // already closing
    }
    return settleWithin(this.socketClosed, CLOSE_GRACE_MS);
  }
}

/** WebTransport `closed` value -> link close info. */
export function wtCloseInfo(info) {
  const code = Number(info?.closeCode ?? 0);
  const reason = info?.reason ?? '';
  return code === 0 ? { kind: 'normal', reason } : { kind: 'error', code, reason };
}

/**
 * WebTransport (§1.1): one bidirectional control stream of varint-prefixed
 * frames, ticks as datagrams.
 */
class WebTransportLink extends Link {
  constructor(wt, stream, maxFrameBytes) {
    super('webtransport');
    this.wt = wt;
    this.decoder = new FrameDecoder(maxFrameBytes);
    this.writer = stream.writable.getWriter();
    this.datagramWriter = null;
    this.inFlight = 0;
    wt.closed.then(
      (info) => this.finish(wtCloseInfo(info)),
      (error) => this.finish({ kind: 'lost', reason: `the WebTransport session failed: ${errorText(error)}` }),
    );
    this.readControl(stream.readable.getReader());
    this.readDatagrams();
    this.readPackStreams();
  }

  /** Server-opened unidirectional streams: each a pack download (§22.4), a framed Download header then content to FIN. */
  async readPackStreams() {
    const incoming = this.wt.incomingUnidirectionalStreams;
    if (!incoming || typeof incoming.getReader !== 'function') return;
    try {
      const reader = incoming.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.closedInfo) return;
        this.readPackStream(value);
      }
    } catch {
      // the session ended; `closed` reports it
    }
  }

  async readPackStream(stream) {
    const reader = stream.getReader();
    let head = new Uint8Array(0);
    let piece = null; // the header's piece, its offset moved on as content arrives
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (this.closedInfo) return;
        if (done) {
          if (piece) this.deliver('pack', { ...piece, content: EMPTY_BYTES, end: true });
          return;
        }
        let bytes = inputBytes(value);
        if (!piece) {
          const joined = new Uint8Array(head.length + bytes.length);
          joined.set(head);
          joined.set(bytes, head.length);
          head = joined;
          if (!packHeaderComplete(head)) {
            if (head.length > MAX_PACK_HEADER_BYTES + MAX_FRAME_PREFIX) throw malformed('pack stream header too long');
            continue;
          }
          const { header, content } = splitPackMessage(head);
          piece = downloadPiece(header, EMPTY_BYTES);
          if (!piece) throw malformed('a server pack stream must start with a Download header');
          bytes = content;
        }
        if (bytes.length > 0) {
          this.deliver('pack', { ...piece, content: bytes.slice(), end: false });
          piece = { ...piece, offset: piece.offset + bytes.length };
        }
      }
    } catch {
      // A stream reset, or a header this SDK cannot read: stop reading it; a
      // fetch that got part of it asks for the rest.
      try {
        reader.cancel().catch(() => {});
      } catch {
        // already closed
      }
      if (piece && !this.closedInfo) this.deliver('pack', { ...piece, content: EMPTY_BYTES, end: true });
    }
  }

  /**
   * Sends pack content from `offset` on a unidirectional stream of its own:
   * the framed Upload header, then the content, then FIN. Resolves true once
   * the stream is finished, false when the link closed, `live()` turned
   * false or the stream failed (the server stops a stream after an error).
   */
  async sendPack(hash, offset, content, live = () => true, onSent = () => {}) {
    if (this.closedInfo || !live()) return false;
    let writer;
    try {
      const stream = await this.wt.createUnidirectionalStream();
      writer = stream.getWriter();
      await writer.write(encodePackHeader({ Upload: { hash, offset } }));
      for (let pos = offset; pos < content.length; ) {
        if (this.closedInfo || !live()) {
          writer.abort().catch(() => {});
          return false;
        }
        const end = Math.min(pos + WT_PACK_WRITE_BYTES, content.length);
        await writer.write(content.slice(pos, end));
        pos = end;
        onSent(pos);
      }
      await writer.close();
      return true;
    } catch {
      try {
        writer?.abort().catch(() => {});
      } catch {
        // already failed
      }
      return false;
    }
  }

  async readControl(reader) {
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.closedInfo) break;
        this.decoder.push(value);
        let body;
        while (!this.closedInfo && (body = this.decoder.next()) !== null) this.deliver('control', body);
      }
    } catch (e) {
      if (e instanceof CodecError) {
        this.fail(e);
        return;
      }
      // A stream error: the session is ending; `closed` says how.
    }
    if (this.closedInfo) return;
    // The control stream ended, so the session is over: give `closed` a moment to say how.
    await settleWithin(this.wt.closed, CLOSE_GRACE_MS);
    if (this.closedInfo) return;
    this.finish({ kind: 'lost', reason: 'the server ended the control stream' });
    try {
      this.wt.close();
    } catch {
      // already closed
    }
  }

  async readDatagrams() {
    try {
      const reader = this.wt.datagrams.readable.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.closedInfo) return;
        this.deliver('datagram', value);
      }
    } catch {
      // the session ended; `closed` reports it
    }
  }

  fail(error) {
    if (this.closedInfo) return;
    this.finish({ kind: 'protocol', error });
    try {
      this.wt.close({ closeCode: error.code ?? ErrorCode.Malformed, reason: 'protocol error' });
    } catch {
      // already closed
    }
  }

  /** Writes one frame; the promise settles when the stream took it (used to let Leave messages out before a close). */
  sendControl(body) {
    if (this.closedInfo) return Promise.resolve();
    const written = this.writer.write(encodeFrame(body));
    written.catch(() => {}); // a failed write ends the session; `closed` reports it
    return written.then(
      () => {},
      () => {},
    );
  }

  sendTick(room, datagram) {
    if (this.closedInfo) return false;
    if (this.inFlight >= MAX_DATAGRAMS_IN_FLIGHT) {
      this.ticksDropped++; // better dropped than queued (§10)
      return false;
    }
    if (!this.datagramWriter) {
      const d = this.wt.datagrams;
      let writable;
      try {
        writable = typeof d.createWritable === 'function' ? d.createWritable() : d.writable;
      } catch {
        writable = d.writable;
      }
      this.datagramWriter = writable.getWriter();
    }
    this.inFlight++;
    const settle = () => {
      this.inFlight--;
    };
    this.datagramWriter.write(datagram).then(settle, settle);
    return true;
  }

  maxDatagramSize() {
    const n = this.wt.datagrams?.maxDatagramSize;
    return Number.isFinite(n) && n > 0 ? n : null;
  }

  setMaxFrameBytes(max) {
    this.decoder.setMaxFrameBytes(max);
  }

  /** Closes the session with `closeCode` (0 normal, or a Chorus code); resolves once closed (at most ~1 s). */
  close(code = 0, text = 'closed') {
    this.finish({ kind: 'local' });
    try {
      this.wt.close({ closeCode: code, reason: text });
    } catch {
      // already closed
    }
    return settleWithin(this.wt.closed, CLOSE_GRACE_MS);
  }
}

function isLoopbackHost(hostname) {
  return hostname === 'localhost' || hostname === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(hostname);
}

/**
 * Where the server publishes its certificate hash: `/cert-hash` on its TCP port
 * (the WebTransport port), over http: from an http: page, else https:. Outside
 * a page: http: for loopback hosts, else https:.
 */
export function certHashUrl(serverUrl) {
  const u = new URL(serverUrl);
  const pageProtocol = globalThis.location?.protocol;
  let scheme;
  if (pageProtocol === 'http:' || pageProtocol === 'https:') scheme = pageProtocol;
  else scheme = isLoopbackHost(u.hostname) ? 'http:' : 'https:';
  return `${scheme}//${u.host}/cert-hash`;
}

/** The server's certificate hashes from /cert-hash; [] when unavailable (then the browser's own trust applies). */
async function fetchCertHashes(serverUrl, opts, timeoutMs) {
  const fetchImpl = opts.fetch ?? globalThis.fetch;
  if (typeof fetchImpl !== 'function') return [];
  const controller = typeof AbortController === 'function' ? new AbortController() : null;
  const timer = setTimeout(() => controller?.abort(), Math.max(0, timeoutMs));
  try {
    const response = await fetchImpl.call(globalThis, certHashUrl(serverUrl), controller ? { signal: controller.signal } : undefined);
    if (!response.ok) return [];
    const body = await response.json();
    if (body?.algorithm !== 'sha-256' || !Array.isArray(body.hashes)) return [];
    return body.hashes.map(parseCertHash).filter(Boolean);
  } catch {
    return [];
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Opens a WebTransport session and its control stream within `waitMs`
 * (including fetching the certificate hash when none was given). A session
 * not ready in time is closed, never left half-open.
 */
async function openWebTransport(url, WebTransportImpl, opts, waitMs) {
  const deadline = performance.now() + waitMs;
  const remaining = () => deadline - performance.now();
  const hashes = opts.certHashes ?? (await fetchCertHashes(url, opts, remaining()));
  const init = hashes.length > 0 ? { serverCertificateHashes: hashes.map((value) => ({ algorithm: 'sha-256', value })) } : {};
  let wt;
  try {
    wt = new WebTransportImpl(url, init);
  } catch (e) {
    throw closedError(`WebTransport to ${url} failed: ${errorText(e)}`);
  }
  wt.ready.catch(() => {});
  wt.closed.catch(() => {});
  const late = () => timeoutError(`the WebTransport session to ${url} was not ready within ${waitMs} ms`);
  try {
    await withTimeout(wt.ready, remaining(), late);
    const stream = await withTimeout(wt.createBidirectionalStream(), remaining(), late);
    return new WebTransportLink(wt, stream, DEFAULT_LIMITS.max_frame_bytes);
  } catch (e) {
    try {
      wt.close();
    } catch {
      // not open
    }
    throw e instanceof ChorusError ? e : closedError(`WebTransport to ${url} failed: ${errorText(e)}`);
  }
}

// ===========================================================================
// 8. Client
// ===========================================================================

const PRIVATE = Symbol('chorus.private');

const DEFAULT_CLOCK_SYNC = Object.freeze({
  pings: 8, // pings at connect; connect resolves after them
  intervalMs: 60000, // background re-sync bursts on top of the keepalive pings (0: none)
  refreshPings: 3, // pings per background re-sync
  spacingMs: 10, // pause between the pings of one sync
  window: 32, // samples kept; the min-RTT one gives the offset
});

const DEFAULT_RECONNECT = Object.freeze({
  enabled: true,
  initialDelayMs: 250, // the delay bound of the first attempt
  maxDelayMs: 10000, // the largest delay bound
});

const DEFAULT_OPTIONS = Object.freeze({
  transport: 'auto',
  fallbackAfterMs: 3000,
  certHashes: undefined,
  websocketUrl: undefined,
  clientName: 'chorus-js/0.1',
  requestTimeoutMs: 10000,
  handshakeTimeoutMs: 10000,
  idleTimeoutMs: 30000,
  keepaliveMs: 5000,
  closeOnPageHide: true,
  apiKey: undefined,
});

/** A server error frame seen this recently explains a connection that is lost without a code. */
const RECENT_ERROR_MS = 3000;
/** close(): how long the Leave messages may take to reach the network before the connection closes. */
const LEAVE_GRACE_MS = 500;

const LOCAL_CLOSE = Object.freeze({ code: null, name: 'closed', message: 'closed by this client', detail: null });

/**
 * The bound of reconnect attempt `attempt`'s delay (attempts count from 1):
 * `initialDelayMs × 2^(attempt−1)`, at most `maxDelayMs`.
 */
export function reconnectCeiling(attempt, options = DEFAULT_RECONNECT) {
  const { initialDelayMs, maxDelayMs } = { ...DEFAULT_RECONNECT, ...options };
  const doublings = Math.min(Math.max(0, attempt - 1), 60);
  return Math.min(maxDelayMs, initialDelayMs * 2 ** doublings);
}

/**
 * The delay before reconnect attempt `attempt` with full jitter: `random`
 * (in [0, 1)) times its ceiling, at least `atLeastMs` (a wait the server asked
 * for), and cut to what is left of the resume window (`windowMs`, counted
 * from the drop, `elapsedMs` ago). null when the window has passed: give up.
 * Pure, so the schedule is tested without waiting.
 */
export function nextReconnectDelay({ attempt, elapsedMs = 0, windowMs = Infinity, atLeastMs = 0, random = Math.random() }, options = DEFAULT_RECONNECT) {
  const left = windowMs - elapsedMs;
  if (!(left > 0)) return null;
  const jittered = Math.floor(random * (reconnectCeiling(attempt, options) + 1));
  return Math.min(left, Math.max(atLeastMs, jittered));
}

function normalizeOptions(options) {
  if (options === null || typeof options !== 'object') throw invalidArgument('options must be an object');
  const o = { ...DEFAULT_OPTIONS, ...options };
  if (!['auto', 'webtransport', 'websocket'].includes(o.transport)) {
    throw invalidArgument(`transport must be 'auto', 'webtransport' or 'websocket', got ${describe(o.transport)}`);
  }
  for (const key of ['fallbackAfterMs', 'requestTimeoutMs', 'handshakeTimeoutMs', 'idleTimeoutMs', 'keepaliveMs']) {
    if (typeof o[key] !== 'number' || !(o[key] >= 0)) throw invalidArgument(`${key} must be a non-negative number`);
  }
  if (typeof o.clientName !== 'string') throw invalidArgument('clientName must be a string');
  if (typeof o.closeOnPageHide !== 'boolean') throw invalidArgument('closeOnPageHide must be a boolean');
  if (o.apiKey === null) o.apiKey = undefined;
  if (o.apiKey !== undefined && typeof o.apiKey !== 'string') throw invalidArgument('apiKey must be a string');
  o.clockSync =
    options.clockSync === false
      ? { ...DEFAULT_CLOCK_SYNC, pings: 0, intervalMs: 0 }
      : { ...DEFAULT_CLOCK_SYNC, ...(options.clockSync ?? {}) };
  const reconnect = options.reconnect;
  if (reconnect !== undefined && reconnect !== null && typeof reconnect !== 'boolean' && typeof reconnect !== 'object') {
    throw invalidArgument('reconnect must be a boolean or { enabled, initialDelayMs, maxDelayMs, random, setTimeout, clearTimeout }');
  }
  o.reconnect = {
    ...DEFAULT_RECONNECT,
    random: Math.random,
    setTimeout: (fn, ms) => setTimeout(fn, ms),
    clearTimeout: (timer) => clearTimeout(timer),
    ...(typeof reconnect === 'object' && reconnect !== null ? reconnect : {}),
    ...(typeof reconnect === 'boolean' ? { enabled: reconnect } : {}),
  };
  for (const key of ['initialDelayMs', 'maxDelayMs']) {
    if (typeof o.reconnect[key] !== 'number' || !(o.reconnect[key] >= 0)) throw invalidArgument(`reconnect.${key} must be a non-negative number`);
  }
  for (const key of ['random', 'setTimeout', 'clearTimeout']) {
    if (typeof o.reconnect[key] !== 'function') throw invalidArgument(`reconnect.${key} must be a function`);
  }
  if (o.certHashes !== undefined && o.certHashes !== null) {
    const list = Array.isArray(o.certHashes) ? o.certHashes : [o.certHashes];
    o.certHashes = list.map((h) => {
      const bytes = typeof h === 'string' ? parseCertHash(h) : h instanceof Uint8Array || h instanceof ArrayBuffer ? new Uint8Array(h) : null;
      if (!bytes || bytes.length !== 32) throw invalidArgument(`certHashes must hold SHA-256 hashes (64 hex digits), got ${describe(h)}`);
      return bytes;
    });
  } else {
    o.certHashes = undefined;
  }
  return o;
}

/** The server URL: as given (https:, wss:, ws:), or https://<page host>/chorus. */
function resolveServerUrl(url) {
  if (url === undefined || url === null || url === '') {
    const loc = globalThis.location;
    if (!loc?.host) throw invalidArgument('connect() needs a server URL outside a web page');
    // Chromium resolves `localhost` to ::1 for QUIC only; the numeric address works everywhere.
    const host = loc.hostname === 'localhost' ? `127.0.0.1${loc.port ? `:${loc.port}` : ''}` : loc.host;
    return new URL(`https://${host}/chorus`);
  }
  let parsed;
  try {
    parsed = new URL(String(url), globalThis.location?.href);
  } catch {
    throw invalidArgument(`invalid server URL ${describe(url)}`);
  }
  if (!['https:', 'wss:', 'ws:'].includes(parsed.protocol)) {
    throw invalidArgument(`the server URL must be https://, wss:// or ws://, got ${parsed.protocol}//`);
  }
  return parsed;
}

/** The WebSocket URL for an https: server URL: `websocketUrl`, or the same host, port and path with ws: on an http: page, else wss:. */
function websocketUrlFor(target, opts) {
  if (opts.websocketUrl) {
    const u = resolveServerUrl(opts.websocketUrl);
    if (u.protocol === 'https:') throw invalidArgument('websocketUrl must be a ws:// or wss:// URL');
    return u.href;
  }
  const scheme = globalThis.location?.protocol === 'http:' ? 'ws:' : 'wss:';
  return `${scheme}//${target.host}${target.pathname}${target.search}`;
}

function frameReason(frame) {
  return { code: frame.code, name: errorName(frame.code), message: frame.message, detail: errorDetail(frame.detail) };
}

/**
 * Why a connection ended, from the link's close info and the last server
 * error frame without a request id (`{ frame, at }`), which carries the details
 * of a close just after it.
 */
function closeReasonFor(info, last) {
  switch (info.kind) {
    case 'local':
      return LOCAL_CLOSE;
    case 'normal':
      return { code: null, name: 'closed', message: info.reason ? `closed by the server: ${info.reason}` : 'closed by the server', detail: null };
    case 'error':
      if (last && last.frame.code === info.code) return frameReason(last.frame);
      return {
        code: info.code,
        name: errorName(info.code),
        message: info.reason || `closed by the server with error ${info.code}`,
        detail: null,
      };
    case 'protocol': {
      const code = info.error?.code ?? ErrorCode.Malformed;
      return {
        code,
        name: errorName(code),
        message: `the server's data broke the protocol: ${info.error?.message ?? 'unknown error'}`,
        detail: info.error?.detail ?? null,
      };
    }
    default:
      if (last && performance.now() - last.at < RECENT_ERROR_MS) return frameReason(last.frame);
      return { code: null, name: 'connection_lost', message: info.reason || 'the connection was lost', detail: null };
  }
}

/** The ChorusError a request fails with when the connection has ended for `reason`. */
function errorForClose(reason, requestId = null) {
  return closedError(`the connection is closed: ${reason.message}`, reason, requestId);
}

function notJoinedError(message = 'not joined to this room any more', requestId = null) {
  return new ChorusError(ErrorCode.NotJoined, errorName(ErrorCode.NotJoined), message, { requestId });
}

/** A request that was in flight when the connection dropped: it may or may not have been carried out (PROTOCOL.md §14.4). */
function connectionLostError(tag, requestId) {
  return new ChorusError(
    null,
    'connection_lost',
    `the connection dropped before the server answered ${tag} request ${requestId}; it may or may not have been carried out`,
    { requestId },
  );
}

/** The client hello for these options: the API key, when given, and a resume, as hello options. */
function clientHello(opts, resume = null) {
  const options = [];
  if (opts.apiKey !== undefined && opts.apiKey !== null) options.push({ ApiKey: opts.apiKey });
  if (resume) options.push({ Resume: resume });
  return { version: PROTOCOL_VERSION, client_name: opts.clientName, capabilities: 0n, options };
}

/** Sends the hello and waits for the server's (§4). Later messages wait in the link's backlog. */
function handshake(link, opts, timeoutMs, resume = null) {
  return new Promise((resolve, reject) => {
    let settled = false;
    let lastError = null;
    const finish = (error, hello) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      link.setHandlers(null);
      if (error) reject(error);
      else resolve(hello);
    };
    const timer = setTimeout(
      () => finish(timeoutError(`no hello from the server within ${Math.round(timeoutMs)} ms`)),
      Math.max(0, timeoutMs),
    );
    link.setHandlers({
      control(body) {
        let message;
        try {
          message = decodeServerMessage(body);
        } catch (e) {
          if (e.kind === 'unknown_tag') return;
          finish(new ChorusError(e.code, e.name, `undecodable message from the server: ${e.message}`));
          return;
        }
        if (message.Hello && message.Hello.version.major !== PROTOCOL_VERSION.major) {
          const server = { ...message.Hello.version };
          const client = { ...PROTOCOL_VERSION };
          finish(
            new ChorusError(
              ErrorCode.VersionMismatch,
              errorName(ErrorCode.VersionMismatch),
              `the server speaks protocol ${server.major}.${server.minor}, this client ${client.major}.${client.minor}`,
              { detail: { server, client } },
            ),
          );
        } else if (message.Hello) finish(null, message.Hello);
        else if (message.Error) {
          lastError = { frame: message.Error, at: performance.now() };
          finish(ChorusError.fromFrame(message.Error));
        } else {
          const tag = Object.keys(message)[0];
          finish(new ChorusError(ErrorCode.ProtocolViolation, errorName(ErrorCode.ProtocolViolation), `expected the server's hello, got ${tag}`));
        }
      },
      datagram() {},
      pack() {},
      closed(info) {
        const reason = closeReasonFor(info, lastError);
        const message = `the connection closed during the handshake: ${reason.message}`;
        finish(
          reason.code === null
            ? closedError(message, reason)
            : new ChorusError(reason.code, reason.name, message, { detail: reason.detail, reason }),
        );
      },
    });
    try {
      link.sendControl(encodeClientMessage({ Hello: clientHello(opts, resume) }));
    } catch (e) {
      finish(e);
    }
  });
}

/** SHA-256 of `bytes` by the Web Crypto API (secure contexts only). */
async function sha256(bytes) {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle || typeof subtle.digest !== 'function') {
    throw new ChorusError(null, 'unsupported', 'crypto.subtle is not available here (it needs a secure context: https:, or http://localhost)');
  }
  return new Uint8Array(await subtle.digest('SHA-256', bytes));
}

/** A pack hash from a hex string, 32 bytes, or a pack (`{ hash }`). */
function packHashArg(hash) {
  if (hash !== null && typeof hash === 'object' && !ArrayBuffer.isView(hash) && !(hash instanceof ArrayBuffer) && 'hash' in hash) hash = hash.hash;
  if (typeof hash === 'string') {
    if (/^[0-9a-fA-F]{64}$/.test(hash)) return parseCertHash(hash);
  } else if (hash instanceof Uint8Array || hash instanceof ArrayBuffer || ArrayBuffer.isView(hash)) {
    const bytes = appBytes(hash, 'a pack hash');
    if (bytes.length === PACK_HASH_BYTES) return bytes.slice();
  }
  throw invalidArgument(`a pack hash is a SHA-256 (64 hex digits or 32 bytes), got ${describe(hash)}`);
}

function sameBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * The connection's state and logic, shared by the Client and Room handles:
 * pending requests, joined rooms, clock, keepalive, reconnecting and resuming,
 * pack transfers, close. Mirrors the Rust SDK's driver.
 */
class Driver {
  constructor(link, hello, opts, target) {
    this.link = link;
    this.opts = opts;
    this.target = target;
    this.adoptHello(hello);
    this.pending = new Map(); // request id -> { expect, tag, room, resolve, reject, timer, body, idempotent, sent }
    this.rooms = new Map(); // room slot -> RoomCore
    this.transfers = new Map(); // request id -> Upload | Fetch (their PackUpload / PackFetch)
    this.nextRequestId = 1;
    this.closeReason = null;
    this.linkClosing = null;
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
    this.events = new Emitter(['error', 'close', 'reconnecting', 'resumed', 'lost']);
    this.estimator = new ClockEstimator(opts.clockSync.window);
    this.clockReset = false; // a new connection: the next sample starts a new window
    this.pings = new Map(); // client_time -> resolve(gotSample)
    this.clockTimer = null;
    this.keepaliveTimer = null;
    this.awaitingSince = null; // performance.now() of the first ping sent after the last message heard
    this.lastError = null; // { frame, at } of the last error frame without a request id
    this.lastInboundAt = performance.now();
    this.probe = null; // { sentAt } of the watchdog's unanswered ping
    this.watchdog = null;
    this.reconnect = null; // while the connection is down or resuming: { since, attempt, reason, timer, atLeastMs, resuming }
    this.ticksDroppedBefore = 0; // ticks dropped by earlier links and while reconnecting
    this.client = new Client(PRIVATE, this);
    this.attach(link);
  }

  /** Takes the server's hello (the first, or a resumed connection's). */
  adoptHello(hello) {
    this.hello = hello;
    this.limits = hello.limits;
    this.limitsCamel = limitsToCamel(hello.limits);
    this.rateLimitsCamel = rateLimitsToCamel(hello.rate_limits);
    this.helloOffsetUs = toNumber(hello.server_time) - localNowUs();
    this.resumeToken = hello.resume_token ?? '';
    this.resumeWindowMs = toNumber(hello.resume_window_ms ?? 0);
  }

  /** Routes a link's inbound messages here; a link that is no longer the current one is ignored. */
  attach(link) {
    link.setMaxFrameBytes(this.limits.max_frame_bytes);
    link.setHandlers({
      control: (body) => link === this.link && this.onControl(body),
      datagram: (bytes) => link === this.link && this.onDatagram(bytes),
      pack: (piece) => link === this.link && this.onPackPiece(piece),
      closed: (info) => link === this.link && this.onLinkClosed(info),
    });
  }

  /** 'connected', 'reconnecting' (down, or resuming on a new connection) or 'closed'. */
  get state() {
    if (this.closeReason) return 'closed';
    return this.reconnect ? 'reconnecting' : 'connected';
  }

  /** Requests go out now (not while reconnecting or resuming). */
  get live() {
    return !this.closeReason && !this.reconnect;
  }

  // ---- closing ---------------------------------------------------------------

  closedError(requestId = null) {
    return errorForClose(this.closeReason ?? LOCAL_CLOSE, requestId);
  }

  stopTimers() {
    clearTimeout(this.clockTimer);
    this.clockTimer = null;
    clearInterval(this.keepaliveTimer);
    this.keepaliveTimer = null;
    clearInterval(this.watchdog);
    this.watchdog = null;
    this.probe = null;
    this.awaitingSince = null;
    for (const resolve of this.pings.values()) resolve(false);
    this.pings.clear();
  }

  /**
   * Ends the connection once: records the reason, fails pending requests and
   * transfers, ends every room, closes the link (when `linkClose` is given)
   * and emits 'lost' (unless this client closed it) and 'close'.
   */
  shutdown(reason, linkClose) {
    if (this.closeReason) return this.linkClosing ?? Promise.resolve();
    this.closeReason = Object.freeze({
      code: reason.code ?? null,
      name: reason.name,
      message: reason.message,
      detail: reason.detail ?? null,
    });
    this.stopTimers();
    if (this.reconnect) {
      this.opts.reconnect.clearTimeout(this.reconnect.timer);
      clearTimeout(this.reconnect.resuming?.timer);
      this.reconnect = null;
    }
    const pending = [...this.pending];
    this.pending.clear();
    for (const [id, p] of pending) {
      clearTimeout(p.timer);
      p.reject(this.closedError(id));
    }
    for (const t of new Set(this.transfers.values())) t.fail(this.closedError(t.requestId));
    this.transfers.clear();
    const rooms = [...this.rooms.values()];
    this.rooms.clear();
    for (const core of rooms) core.detach();
    this.linkClosing = linkClose ? this.link.close(linkClose.code, linkClose.text) : Promise.resolve();
    this.resolveClosed(this.closeReason);
    if (reason !== LOCAL_CLOSE) this.events.emit('lost', { reason: this.closeReason, rooms: rooms.map((c) => c.room), sessionLost: true });
    this.events.emit('close', this.closeReason);
    return this.linkClosing;
  }

  /**
   * Closes on purpose: a Leave for each joined room first (so the others see
   * this client leave, not reconnect for the resume window, §14.5), then the
   * connection.
   */
  async closeGracefully() {
    if (this.closeReason) return this.linkClosing ?? Promise.resolve();
    if (this.live) {
      const sent = [];
      for (const core of this.rooms.values()) {
        if (!core.joined) continue;
        try {
          sent.push(this.link.sendControl(this.encodeChecked({ Leave: { request_id: this.allocRequestId(), room: core.slot } })));
        } catch {
          // best effort
        }
      }
      if (sent.length > 0) await settleWithin(Promise.all(sent), LEAVE_GRACE_MS);
    }
    return this.shutdown(LOCAL_CLOSE, { code: 0, text: 'closed' });
  }

  onLinkClosed(info) {
    const reason = closeReasonFor(info, this.lastError);
    // A server going away says when to come back: reconnect then, as after a drop.
    const goingAway = reason.code === ErrorCode.ShuttingDown && typeof reason.detail?.retryAfterMs === 'number';
    if (reason.name === 'connection_lost' || goingAway) this.dropped(reason);
    else this.shutdown(reason, null);
  }

  /**
   * The connection dropped (no error from the server): reconnect and resume
   * when the server offered a resume token and reconnecting is on, else end.
   * With `linkClose`, this client closes the link first (it found it silent).
   */
  dropped(reason, linkClose = null) {
    if (this.closeReason) return;
    if (linkClose) {
      const old = this.link;
      this.link = null; // its close is ours: not reported again
      old.close(linkClose.code, linkClose.text);
      this.link = old;
    }
    const resumable = this.opts.reconnect.enabled && this.resumeToken !== '' && this.resumeWindowMs > 0;
    if (!resumable) {
      this.shutdown(reason, null);
      return;
    }
    this.startReconnect(reason);
  }

  /** The server sent something this client cannot read: close with that error's code. */
  protocolFailure(error, message) {
    const code = error.code ?? ErrorCode.Malformed;
    this.shutdown({ code, name: errorName(code), message, detail: error.detail ?? null }, { code, text: 'protocol error' });
  }

  // ---- reconnecting and resuming (PROTOCOL.md §14) -----------------------------

  startReconnect(reason) {
    this.stopTimers();
    if (this.reconnect) {
      // Dropped again while resuming: the new session (its token) is resumable from now.
      clearTimeout(this.reconnect.resuming?.timer);
      this.reconnect.resuming = null;
      this.reconnect.since = performance.now();
    } else {
      const atLeastMs = typeof reason.detail?.retryAfterMs === 'number' ? reason.detail.retryAfterMs : 0;
      this.reconnect = { since: performance.now(), attempt: 0, reason, timer: null, atLeastMs, resuming: null };
    }
    // Requests in flight may or may not have been carried out: commands with an
    // idempotency key go again after the resume (exactly once), the others fail.
    for (const [id, p] of [...this.pending]) {
      if (!p.sent) continue;
      if (p.idempotent) {
        p.sent = false;
        continue;
      }
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.reject(connectionLostError(p.tag, id));
    }
    for (const t of new Set(this.transfers.values())) t.interrupted();
    this.scheduleAttempt();
  }

  scheduleAttempt() {
    const r = this.reconnect;
    if (!r || this.closeReason) return;
    r.attempt++;
    const delayMs = nextReconnectDelay(
      {
        attempt: r.attempt,
        elapsedMs: performance.now() - r.since,
        windowMs: this.resumeWindowMs,
        atLeastMs: r.atLeastMs,
        random: this.opts.reconnect.random(),
      },
      this.opts.reconnect,
    );
    if (delayMs === null) {
      const seconds = Math.round(this.resumeWindowMs / 100) / 10;
      this.shutdown({ ...r.reason, message: `${r.reason.message}; not resumed within the server's resume window (${seconds} s)` }, null);
      return;
    }
    r.atLeastMs = 0;
    this.events.emit('reconnecting', { attempt: r.attempt, delayMs, reason: r.reason });
    r.timer = this.opts.reconnect.setTimeout(() => {
      r.timer = null;
      this.attemptReconnect(r);
    }, delayMs);
  }

  async attemptReconnect(r) {
    if (this.reconnect !== r || this.closeReason) return;
    const rooms = [...this.rooms.values()].filter((c) => c.joined);
    const resume = { token: this.resumeToken, rooms: rooms.map((c) => ({ room: c.slot, last_seq: c.replica.lastSeq })) };
    let link;
    let hello;
    try {
      ({ link } = await openLink(this.target, this.opts));
      if (this.reconnect !== r || this.closeReason) {
        link.close(0, 'closed');
        return;
      }
      hello = await handshake(link, this.opts, this.opts.handshakeTimeoutMs, resume);
    } catch (e) {
      link?.close(0, 'reconnect failed');
      if (this.reconnect !== r || this.closeReason) return;
      if (e.code === ErrorCode.VersionMismatch || e.code === ErrorCode.Unauthorized) {
        // The server will not take this client back whatever we try.
        this.shutdown({ code: e.code, name: e.name, message: `reconnecting failed: ${e.message}`, detail: e.detail }, null);
        return;
      }
      r.atLeastMs = e.retryAfterMs ?? 0;
      this.scheduleAttempt();
      return;
    }
    if (this.reconnect !== r || this.closeReason) {
      link.close(0, 'closed');
      return;
    }
    this.resumeOn(link, hello, rooms);
  }

  /**
   * A new connection's hello came: the server now answers each room
   * (Resumed or ResumeLost, with the missed events) before it reads anything
   * else, so the Pong to a Ping sent now marks the end of the resume.
   */
  resumeOn(link, hello, rooms) {
    const r = this.reconnect;
    this.ticksDroppedBefore += this.link.ticksDropped;
    this.link = link;
    this.adoptHello(hello);
    this.clockReset = true;
    this.lastInboundAt = performance.now();
    this.lastError = null;
    const outcomes = new Map(rooms.map((core) => [core.slot, { core, outcome: null, code: null }]));
    for (const core of rooms) core.replayed = 0;
    let t0 = localNowUs();
    while (this.pings.has(t0)) t0++;
    r.resuming = { outcomes, failed: null, marker: t0, transport: link.kind, timer: null };
    this.attach(link);
    link.sendControl(encodeClientMessage({ Ping: { client_time: t0 } }));
    r.resuming.timer = setTimeout(() => {
      if (this.reconnect !== r || !r.resuming) return;
      this.dropped({ code: null, name: 'connection_lost', message: 'no answer to the resume in time', detail: null }, { code: 0, text: 'resume timeout' });
    }, this.opts.handshakeTimeoutMs);
  }

  onResumed(m) {
    const res = this.reconnect?.resuming;
    const core = this.rooms.get(m.room);
    const entry = res?.outcomes.get(m.room);
    if (!core || !core.joined || (res && !entry)) {
      // A room this client does not keep (a join whose answer was lost): leave it again.
      this.sendNoWait({ Leave: { request_id: this.allocRequestId(), room: m.room } });
      return;
    }
    core.me = m.member;
    core.replica.me = m.member;
    if (m.snapshot) core.replaceSnapshot(m.snapshot, 'resumed');
    if (entry && entry.outcome === null) entry.outcome = m.snapshot ? 'snapshot' : 'replayed';
  }

  onResumeLost(m) {
    const res = this.reconnect?.resuming;
    const entry = res?.outcomes.get(m.room);
    if (entry) {
      if (entry.outcome === 'lost') return; // a second ResumeLost for the room
      entry.outcome = 'lost';
      entry.code = m.code;
    }
    const core = this.rooms.get(m.room);
    if (core?.joined) this.loseRoom(core, m.code, `the room could not be resumed (${errorName(m.code)})`);
  }

  /** The room is gone after a drop: not joined, its waiting requests fail, 'lost' on the room. */
  loseRoom(core, code, message) {
    this.detachRoom(core, message);
    for (const t of new Set(this.transfers.values())) if (t.core === core) t.fail(notJoinedError(message, t.requestId));
    core.events.emit('lost', { code, name: code === null ? 'unanswered' : errorName(code), message });
  }

  finishResume(r) {
    if (this.reconnect !== r || !r.resuming) return;
    const res = r.resuming;
    clearTimeout(res.timer);
    this.reconnect = null;
    const summary = [];
    const lost = [];
    for (const { core, outcome, code } of res.outcomes.values()) {
      let result = outcome;
      let resultCode = code;
      if (res.failed) {
        result = 'lost';
        resultCode = ErrorCode.ResumeFailed;
        if (core.joined) this.loseRoom(core, resultCode, 'the session could not be resumed (resume_failed): join again');
      } else if (outcome === null && core.joined) {
        // The server said nothing of it: leave it rather than keep a stale replica.
        result = 'unanswered';
        this.sendNoWait({ Leave: { request_id: this.allocRequestId(), room: core.slot } });
        this.loseRoom(core, null, 'the server did not answer for the room when resuming');
      }
      if (result === 'lost' || result === 'unanswered') lost.push(core.room);
      summary.push({
        room: core.room,
        roomId: core.id,
        slot: core.slot,
        outcome: result ?? 'lost',
        replayed: result === 'replayed' ? core.replayed : 0,
        code: resultCode,
      });
      if (core.joined && (result === 'replayed' || result === 'snapshot')) {
        core.events.emit('resumed', { replayed: result === 'replayed' ? core.replayed : 0, snapshot: result === 'snapshot' });
      }
      core.replayed = null;
    }
    // Requests waiting for the connection go now: queued ones, and commands
    // with an idempotency key that were in flight (the server answers a
    // repeat with duplicate: true).
    for (const p of this.pending.values()) {
      if (p.sent) continue;
      if (p.room !== null && !this.rooms.get(p.room)?.joined) continue; // failed by loseRoom already
      p.sent = true;
      this.link.sendControl(p.body);
    }
    for (const t of new Set(this.transfers.values())) t.restart();
    this.startTimers();
    if (this.opts.clockSync.pings > 0) this.syncClock(Math.min(3, this.opts.clockSync.pings), this.opts.requestTimeoutMs);
    if (lost.length > 0) {
      const reason = res.failed
        ? { code: ErrorCode.ResumeFailed, name: errorName(ErrorCode.ResumeFailed), message: res.failed.message, detail: null }
        : { code: null, name: 'resume_lost', message: 'rooms could not be resumed', detail: null };
      this.events.emit('lost', { reason, rooms: lost, sessionLost: Boolean(res.failed) });
    }
    this.events.emit('resumed', {
      transport: res.transport,
      sessionResumed: !res.failed,
      attempts: r.attempt,
      downtimeMs: Math.round(performance.now() - r.since),
      rooms: summary,
    });
  }

  // ---- inbound ---------------------------------------------------------------

  onControl(body) {
    this.heard();
    let message;
    try {
      message = decodeServerMessage(body);
    } catch (e) {
      if (e instanceof CodecError && e.kind === 'unknown_tag') return; // a newer server's message (§11)
      this.protocolFailure(e, `undecodable message from the server: ${e.message}`);
      return;
    }
    try {
      this.dispatch(message);
    } catch (e) {
      reportListenerError(e);
    }
  }

  dispatch(message) {
    const tag = Object.keys(message)[0];
    const m = message[tag];
    switch (tag) {
      case 'Hello':
        return; // a second hello: ignored
      case 'Joined':
        return this.onJoined(m.request_id, m.snapshot);
      case 'Left': {
        const core = this.rooms.get(m.room);
        if (core) this.detachRoom(core);
        this.reply(m.request_id, 'Left', undefined);
        return;
      }
      case 'StateAck':
        this.reply(m.request_id, 'StateAck', { version: toNumber(m.version), seq: toNumber(m.seq) });
        return;
      case 'CommandAck':
        this.reply(m.request_id, 'CommandAck', { seq: toNumber(m.seq), duplicate: m.duplicate });
        return;
      case 'Ack': {
        const transfer = this.transfers.get(m.request_id);
        if (transfer) transfer.acked(toNumber(m.seq));
        else this.reply(m.request_id, 'Ack', toNumber(m.seq));
        return;
      }
      case 'Pong':
        return this.onPong(m);
      case 'Error':
        return this.onError(m);
      case 'DirectMessage':
      case 'BroadcastMessage': {
        const core = this.rooms.get(m.room);
        if (core?.joined) core.message(tag === 'DirectMessage' ? 'direct' : 'broadcast', m);
        return;
      }
      case 'Snapshot': {
        const p = this.pending.get(m.request_id);
        const core = this.rooms.get(m.snapshot.room);
        if (core?.joined && p?.expect === 'Snapshot') core.replaceSnapshot(m.snapshot, 'requested');
        this.reply(m.request_id, 'Snapshot', core?.room);
        return;
      }
      case 'IceServers': {
        const iceServers = m.servers.map((s) => {
          const server = { urls: [...s.urls] };
          if (s.username !== null) server.username = s.username;
          if (s.credential !== null) server.credential = s.credential;
          return Object.freeze(server);
        });
        this.reply(m.request_id, 'IceServers', Object.freeze({ iceServers: Object.freeze(iceServers), expiresAt: toNumber(m.expires) }));
        return;
      }
      case 'Resumed':
        return this.onResumed(m);
      case 'ResumeLost':
        return this.onResumeLost(m);
      case 'PackUploadReady': {
        const transfer = this.transfers.get(m.request_id);
        if (transfer?.ready) transfer.ready(toNumber(m.offset));
        return;
      }
      default: {
        // MemberJoined, MemberLeft, StateChanged, CommandEvent, RoleChanged, MemberKicked,
        // RoomClosed, PresenceChanged, TimelineChanged, PackAvailable
        const core = this.rooms.get(RoomReplica.eventRoom(message));
        if (core) core.apply(message);
      }
    }
  }

  onJoined(requestId, snapshot) {
    const p = this.pending.get(requestId);
    if (!p || p.expect !== 'Joined') {
      // Nobody waits for this room (the join timed out): leave it again so no membership lingers.
      this.sendNoWait({ Leave: { request_id: this.allocRequestId(), room: snapshot.room } });
      if (p) this.reply(requestId, 'Joined', undefined);
      return;
    }
    const core = new RoomCore(this, snapshot);
    this.rooms.get(core.slot)?.detach();
    this.rooms.set(core.slot, core);
    this.reply(requestId, 'Joined', core.room);
  }

  /** Completes a pending request. Returns false when nobody waits for `id`. */
  reply(id, kind, value) {
    const p = this.pending.get(id);
    if (!p) return false;
    this.pending.delete(id);
    clearTimeout(p.timer);
    if (kind === 'Error') p.reject(value);
    else if (kind !== p.expect) {
      p.reject(
        new ChorusError(ErrorCode.ProtocolViolation, errorName(ErrorCode.ProtocolViolation), `the server answered request ${id} with ${kind}, expected ${p.expect}`, {
          requestId: id,
        }),
      );
    } else p.resolve(value);
    return true;
  }

  onError(frame) {
    const error = ChorusError.fromFrame(frame);
    if (frame.request_id !== null) {
      const transfer = this.transfers.get(frame.request_id);
      if (transfer) {
        transfer.error(error);
        return;
      }
      if (this.reply(frame.request_id, 'Error', error)) return;
    }
    const resuming = this.reconnect?.resuming;
    if (frame.request_id === null && frame.code === ErrorCode.ResumeFailed && resuming) {
      resuming.failed = error; // reported by 'resumed' (sessionResumed: false) and 'lost'
      return;
    }
    if (frame.request_id === null) this.lastError = { frame, at: performance.now() };
    this.events.emit('error', error);
  }

  onPong(m) {
    const t3 = localNowUs();
    const t0 = toNumber(m.client_time);
    const r = this.reconnect;
    const marker = r?.resuming?.marker === t0; // the end of a resume
    const resolve = this.pings.get(t0);
    if (!resolve && !marker) return; // not a ping of ours, or one we gave up on
    this.pings.delete(t0);
    const sample = clockSample(t0, m.server_receive_time, m.server_send_time, t3);
    if (sample) {
      if (this.clockReset) {
        // Another connection (and maybe a sleep of the machine): start a new window.
        this.estimator = new ClockEstimator(this.opts.clockSync.window);
        this.clockReset = false;
      }
      this.estimator.add(sample);
    }
    if (marker) this.finishResume(r);
    else resolve(sample !== null);
  }

  onDatagram(bytes) {
    const receivedAt = performance.now();
    this.heard();
    let datagram;
    try {
      datagram = decodeDatagram(bytes, this.limits);
    } catch {
      return; // undecodable, unknown tag or over the limit: dropped (§7)
    }
    const tick = datagram.Tick;
    const core = this.rooms.get(tick.room);
    // Ticks can overtake the control stream: ignore ticks from members this client
    // does not know (yet, or any more), and echoes of its own.
    if (!core || tick.sender === core.me || !core.replica.hasMember(tick.sender)) return;
    core.deliverTick({ sender: tick.sender, seq: tick.seq, payload: tick.payload, receivedAt });
  }

  onPackPiece(piece) {
    this.heard();
    const transfer = this.transfers.get(piece.requestId);
    if (transfer?.piece) transfer.piece(piece);
  }

  /** A pack became available in a room: completes the uploads of that pack there. */
  packAvailable(core, pack) {
    for (const t of new Set(this.transfers.values())) {
      if (t.kind === 'upload' && t.core === core && t.hex === pack.hash) t.available(pack);
    }
  }

  // ---- requests --------------------------------------------------------------

  allocRequestId() {
    for (;;) {
      const id = this.nextRequestId;
      this.nextRequestId = id >= 0xffffffff ? 1 : id + 1;
      if (!this.pending.has(id) && !this.transfers.has(id)) return id;
    }
  }

  /** Encodes and checks a message against the server's limits; throws ChorusError. */
  encodeChecked(message) {
    const body = encodeClientMessage(message);
    const v = validateClientMessage(message, this.limits);
    if (v) throw limitError(v.field, v.limit, v.actual);
    if (body.length > this.limits.max_frame_bytes) throw limitError('message', this.limits.max_frame_bytes, body.length);
    return body;
  }

  /**
   * Sends the request `build(requestId)` and resolves with its reply of kind
   * `expect` ('Joined', 'Left', 'StateAck', 'CommandAck', 'Ack', 'Snapshot',
   * 'IceServers'), rejects with the server's error, a timeout, or 'closed'.
   * `room`: the slot the request is about, so it fails with 'not_joined' when
   * this client leaves that room. While the connection is down, the request
   * waits (within its timeout) and goes out once the session is resumed.
   */
  request(expect, build, room = null) {
    if (this.closeReason) return Promise.reject(this.closedError());
    const id = this.allocRequestId();
    let body;
    let tag;
    let message;
    try {
      message = build(id);
      tag = Object.keys(message)[0];
      body = this.encodeChecked(message);
    } catch (e) {
      return Promise.reject(e);
    }
    const idempotent = tag === 'Command' && message.Command.idempotency_key !== null && message.Command.idempotency_key !== undefined;
    return new Promise((resolve, reject) => {
      const ms = this.opts.requestTimeoutMs;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(timeoutError(`no reply to request ${id} within ${ms} ms (it may still have been applied)`, id));
      }, ms);
      const entry = { expect, tag, room, resolve, reject, timer, body, idempotent, sent: false };
      this.pending.set(id, entry);
      if (this.live) {
        entry.sent = true;
        this.link.sendControl(body);
      }
    });
  }

  /** Sends a message nobody waits for (on the current connection, if it is up). */
  sendNoWait(message) {
    if (this.closeReason || this.link.closedInfo) return;
    try {
      this.link.sendControl(this.encodeChecked(message));
    } catch {
      // nothing to report to: the message is best effort
    }
  }

  /**
   * The room is no longer joined. With `why` (the server removed this client:
   * kicked, room closed, ...), requests still waiting on that room fail with
   * 'not_joined', except those of a kind in `keep` (the CloseRoom that
   * closed it still gets its Ack).
   */
  detachRoom(core, why = null, keep = []) {
    if (this.rooms.get(core.slot) === core) this.rooms.delete(core.slot);
    core.detach();
    if (why === null) return;
    for (const [id, p] of [...this.pending]) {
      if (p.room !== core.slot || keep.includes(p.tag)) continue;
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.reject(notJoinedError(`not joined to room ${JSON.stringify(core.id)} any more: ${why}`, id));
    }
    for (const t of new Set(this.transfers.values())) if (t.core === core) t.fail(notJoinedError(`not joined to room ${JSON.stringify(core.id)} any more: ${why}`, t.requestId));
  }

  // ---- ticks -----------------------------------------------------------------

  /** The largest tick payload sendable now: the server's limit, and on WebTransport the datagram size minus the tick header. */
  maxTickPayload() {
    const limit = this.limits.max_tick_payload_bytes;
    if (this.link.kind === 'websocket') return limit;
    const sizes = [this.link.maxDatagramSize(), this.hello.max_datagram_size || null].filter((n) => n !== null);
    if (sizes.length === 0) return 0; // no datagrams on this connection
    return Math.max(0, Math.min(limit, Math.min(...sizes) - TICK_MAX_OVERHEAD));
  }

  /** Sends a tick now; while the connection is down it is dropped (and counted). */
  sendTick(slot, datagram) {
    if (!this.live) {
      this.ticksDroppedBefore++;
      return;
    }
    this.link.sendTick(slot, datagram);
  }

  get ticksDropped() {
    return this.ticksDroppedBefore + this.link.ticksDropped;
  }

  // ---- clock and keepalive ----------------------------------------------------

  clockEstimate() {
    const e = this.estimator.estimate();
    return e.samples > 0 ? e : { offsetUs: this.helloOffsetUs, rttUs: 0, samples: 0 };
  }

  /** Sends one Ping; `onAnswer(gotSample)` when its Pong comes (or false when given up). Returns its client_time. */
  ping(onAnswer = () => {}) {
    let t0 = localNowUs();
    while (this.pings.has(t0)) t0++;
    this.pings.set(t0, onAnswer);
    if (this.awaitingSince === null) this.awaitingSince = performance.now();
    this.link.sendControl(encodeClientMessage({ Ping: { client_time: t0 } }));
    return t0;
  }

  /** Sends `pings` pings one after another, each waiting up to `perPingMs`; returns the samples gained. */
  async syncClock(pings, perPingMs) {
    let gained = 0;
    for (let i = 0; i < pings && this.live; i++) {
      if (i > 0 && this.opts.clockSync.spacingMs > 0) await delay(this.opts.clockSync.spacingMs);
      if (!this.live) break;
      let t0;
      const answered = new Promise((resolve) => {
        t0 = this.ping(resolve);
      });
      let timer;
      const gotSample = await Promise.race([
        answered,
        new Promise((resolve) => {
          timer = setTimeout(() => resolve(false), Math.max(1, perPingMs));
        }),
      ]);
      clearTimeout(timer);
      this.pings.delete(t0);
      if (gotSample) gained++;
    }
    return gained;
  }

  heard() {
    this.lastInboundAt = performance.now();
    this.probe = null;
    this.awaitingSince = null;
  }

  startTimers() {
    this.scheduleClockSync();
    this.startKeepalive();
    this.startWatchdog();
  }

  /**
   * The keepalive (§15.2): a Ping every `keepaliveMs` (5 s), which tells the
   * rooms this client is there (a silent host goes away) and is a clock
   * sample. When a ping goes unanswered and nothing at all arrives for three
   * intervals (at least a second), the connection is taken for dropped. Only
   * silence after a ping counts, so a throttled background tab, whose timers
   * run late, is not cut off for pinging late.
   */
  startKeepalive() {
    const every = this.opts.keepaliveMs;
    if (!(every > 0) || !this.live) return;
    const silentMs = Math.max(1000, 3 * every);
    this.keepaliveTimer = setInterval(() => {
      if (!this.live) return;
      if (this.awaitingSince !== null && performance.now() - this.awaitingSince >= silentMs) {
        const seconds = Math.round(silentMs / 100) / 10;
        this.dropped({ code: null, name: 'connection_lost', message: `nothing from the server for ${seconds} s`, detail: null }, { code: 0, text: 'silent' });
        return;
      }
      this.ping();
    }, every);
    this.keepaliveTimer?.unref?.();
  }

  /**
   * WebSocket only (QUIC has its own idle timeout, and browsers hide WebSocket
   * pings): after a quiet spell, send a Ping (which is also a clock sample);
   * if it stays unanswered for `idleTimeoutMs`, the connection is lost. Only
   * an unanswered probe counts, so a throttled background tab that merely
   * received nothing is never cut off.
   */
  startWatchdog() {
    const idle = this.opts.idleTimeoutMs;
    if (this.link.kind !== 'websocket' || !(idle > 0) || !this.live) return;
    const period = Math.max(10, Math.min(idle / 3, 10000));
    this.watchdog = setInterval(() => {
      if (!this.live) return;
      const now = performance.now();
      if (this.probe && now - this.probe.sentAt >= idle) {
        const seconds = Math.round(idle / 100) / 10;
        this.dropped({ code: null, name: 'connection_lost', message: `no answer from the server for ${seconds} s`, detail: null }, { code: 0, text: 'idle timeout' });
      } else if (!this.probe && now - this.lastInboundAt >= period) {
        this.probe = { sentAt: now };
        this.ping();
      }
    }, period);
  }

  scheduleClockSync() {
    const { intervalMs, refreshPings } = this.opts.clockSync;
    if (!(intervalMs > 0) || !(refreshPings > 0) || !this.live) return;
    this.clockTimer = setTimeout(async () => {
      this.clockTimer = null;
      await this.syncClock(refreshPings, this.opts.requestTimeoutMs);
      if (this.live && this.clockTimer === null) this.scheduleClockSync();
    }, intervalMs);
    this.clockTimer?.unref?.();
  }
}

// ---- pack transfers (PROTOCOL.md §22) ------------------------------------------

/**
 * One pack upload: announce (PackUpload), send the content from the offset
 * the server gives (PackUploadReady), and complete on PackAvailable (or the
 * Ack of a pack the room already has). A dropped connection interrupts it;
 * after the resume it is announced again and goes on from where the server
 * got to.
 */
class Upload {
  constructor(driver, core, { hash, name, mediaType, content, onProgress }, resolve, reject) {
    this.kind = 'upload';
    this.driver = driver;
    this.core = core;
    this.hash = hash;
    this.hex = bytesToHex(hash);
    this.name = name;
    this.mediaType = mediaType;
    this.content = content;
    this.onProgress = onProgress;
    this.resolve = resolve;
    this.reject = reject;
    this.requestId = null;
    this.ids = new Set(); // every PackUpload request id of this upload (errors may come for older ones)
    this.generation = 0; // a new one stops the sending of the previous
    this.timer = null;
    this.done = false;
  }

  arm() {
    clearTimeout(this.timer);
    const ms = this.driver.opts.requestTimeoutMs;
    this.timer = setTimeout(() => this.fail(timeoutError(`pack upload ${this.hex.slice(0, 12)}… made no progress within ${ms} ms`, this.requestId)), ms);
  }

  /** Sends (or, while the connection is down, prepares) a PackUpload. */
  announce() {
    if (this.done) return;
    const d = this.driver;
    const id = d.allocRequestId();
    this.requestId = id;
    this.ids.add(id);
    d.transfers.set(id, this);
    this.generation++;
    this.arm();
    let body;
    try {
      body = d.encodeChecked({
        PackUpload: { request_id: id, room: this.core.slot, hash: this.hash, name: this.name, media_type: this.mediaType, size: this.content.length },
      });
    } catch (e) {
      this.fail(e);
      return;
    }
    if (d.live) d.link.sendControl(body); // else restart() announces again after the resume
  }

  /** PackUploadReady: send the content from `offset`. */
  ready(offset) {
    if (this.done) return;
    const d = this.driver;
    const gen = ++this.generation;
    const link = d.link;
    const live = () => !this.done && this.generation === gen && d.link === link && d.live;
    this.arm();
    link
      .sendPack(this.hash, Math.min(offset, this.content.length), this.content, live, (sent) => {
        if (!live()) return;
        this.arm();
        this.onProgress?.(sent, this.content.length);
      })
      .then((finished) => {
        if (finished && live()) this.arm(); // now the server checks it: PackAvailable, or an error
      });
  }

  /** Ack: the room already had the pack. */
  acked() {
    const pack = this.core.replica.packs.get(this.hex) ?? Object.freeze({ hash: this.hex, name: this.name, mediaType: this.mediaType, size: this.content.length, uploader: this.core.me });
    this.succeed(pack);
  }

  available(pack) {
    this.succeed(pack);
  }

  error(err) {
    if (this.done) return;
    if (err.requestId !== this.requestId) return; // about an earlier announce of this upload
    if (err.code === ErrorCode.Conflict) {
      // A piece came at the wrong offset: stop, and ask the server again where to go on.
      this.generation++;
      this.announce();
      return;
    }
    this.fail(err);
  }

  interrupted() {
    this.generation++;
  }

  restart() {
    this.announce();
  }

  finish() {
    this.done = true;
    clearTimeout(this.timer);
    for (const id of this.ids) if (this.driver.transfers.get(id) === this) this.driver.transfers.delete(id);
  }

  succeed(pack) {
    if (this.done) return;
    this.finish();
    this.onProgress?.(this.content.length, this.content.length);
    this.resolve(pack);
  }

  fail(error) {
    if (this.done) return;
    this.finish();
    this.reject(error);
  }
}

/**
 * One pack download: PackFetch, then the content in pieces on the pack lane
 * (a stream on WebTransport, pack messages on WebSocket), checked against
 * its SHA-256 at the end. After an interruption it asks again from the offset
 * reached.
 */
class Fetch {
  constructor(driver, core, hash, onProgress, resolve, reject) {
    this.kind = 'fetch';
    this.driver = driver;
    this.core = core;
    this.hash = hash;
    this.hex = bytesToHex(hash);
    this.onProgress = onProgress;
    this.resolve = resolve;
    this.reject = reject;
    this.buffer = null;
    this.size = null;
    this.received = 0;
    this.requestId = null;
    this.timer = null;
    this.done = false;
    this.checking = false;
  }

  arm() {
    clearTimeout(this.timer);
    const ms = this.driver.opts.requestTimeoutMs;
    this.timer = setTimeout(() => this.fail(timeoutError(`pack ${this.hex.slice(0, 12)}… sent nothing for ${ms} ms`, this.requestId)), ms);
  }

  request() {
    if (this.done) return;
    const d = this.driver;
    if (this.requestId !== null && d.transfers.get(this.requestId) === this) d.transfers.delete(this.requestId);
    const id = d.allocRequestId();
    this.requestId = id;
    d.transfers.set(id, this);
    this.arm();
    let body;
    try {
      body = d.encodeChecked({ PackFetch: { request_id: id, room: this.core.slot, hash: this.hash, offset: this.received } });
    } catch (e) {
      this.fail(e);
      return;
    }
    if (d.live) d.link.sendControl(body);
  }

  piece(p) {
    if (this.done || this.checking || p.requestId !== this.requestId || !sameBytes(p.hash, this.hash)) return;
    if (this.buffer === null) {
      const max = Math.max(this.driver.limits.max_pack_bytes, 0);
      if (!Number.isSafeInteger(p.size) || p.size > max) {
        this.fail(limitError('pack', max, p.size));
        return;
      }
      this.size = p.size;
      this.buffer = new Uint8Array(p.size);
    }
    if (p.size !== this.size) {
      this.fail(new ChorusError(ErrorCode.Malformed, errorName(ErrorCode.Malformed), `the pack's size changed from ${this.size} to ${p.size} bytes`));
      return;
    }
    this.arm();
    if (p.offset > this.received) {
      this.request(); // a gap: ask for the rest from what arrived
      return;
    }
    const part = p.content.subarray(Math.min(p.content.length, this.received - p.offset));
    if (this.received + part.length > this.size) {
      this.fail(new ChorusError(ErrorCode.Malformed, errorName(ErrorCode.Malformed), `the pack's content runs past its ${this.size} bytes`));
      return;
    }
    if (part.length > 0) {
      this.buffer.set(part, this.received);
      this.received += part.length;
      this.onProgress?.(this.received, this.size);
    }
    if (this.received === this.size) this.check();
    else if (p.end) this.request(); // the stream ended early
  }

  async check() {
    this.checking = true;
    clearTimeout(this.timer);
    let digest;
    try {
      digest = await sha256(this.buffer);
    } catch (e) {
      this.fail(e);
      return;
    }
    if (sameBytes(digest, this.hash)) this.succeed(this.buffer);
    else this.fail(new ChorusError(ErrorCode.HashMismatch, errorName(ErrorCode.HashMismatch), `the content of pack ${this.hex} has another SHA-256 (${bytesToHex(digest)})`, { requestId: this.requestId }));
  }

  error(err) {
    if (err.requestId === this.requestId) this.fail(err);
  }

  acked() {}

  interrupted() {}

  restart() {
    if (!this.checking) this.request();
  }

  finish() {
    this.done = true;
    clearTimeout(this.timer);
    if (this.driver.transfers.get(this.requestId) === this) this.driver.transfers.delete(this.requestId);
  }

  succeed(bytes) {
    if (this.done) return;
    this.finish();
    this.resolve(bytes);
  }

  fail(error) {
    if (this.done) return;
    this.finish();
    this.reject(error);
  }
}

/** The events a Room emits. */
const ROOM_EVENT_NAMES = [
  'tick',
  'memberJoined',
  'memberLeft',
  'stateChanged',
  'command',
  'roleChanged',
  'memberKicked',
  'kicked',
  'closed',
  'presenceChanged',
  'timelineChanged',
  'packAvailable',
  'direct',
  'broadcast',
  'snapshot',
  'resumed',
  'lost',
];

/** One joined room: its replica, listeners and iterators. Owned by the Driver. */
class RoomCore {
  constructor(driver, snapshot) {
    this.driver = driver;
    this.replica = new RoomReplica(snapshot, { serverTime: () => driver.client.serverTime() });
    this.slot = this.replica.slot;
    this.me = this.replica.me;
    this.id = this.replica.roomId;
    this.events = new Emitter(ROOM_EVENT_NAMES);
    this.tickQueues = new Set();
    this.commandQueues = new Set();
    this.messageQueues = new Set();
    this.joined = true;
    this.tickSeq = 0;
    this.replayed = null; // while resuming: events applied since Resumed
    this.room = new Room(PRIVATE, this);
  }

  /**
   * Applies a room event to the replica, then publishes it. When the event
   * removes this client (it was kicked, the room closed, the server removed
   * it), the room is detached first, so listeners already see `joined` false,
   * and requests still waiting on it fail with 'not_joined'.
   */
  apply(message) {
    const out = this.replica.apply(message);
    if (!out || out.stale) return;
    if (this.replayed !== null) this.replayed++;
    const { name, event } = out;
    if (out.removed) {
      if (name === 'closed') this.driver.detachRoom(this, `the room was closed by member ${event.by}${event.reason ? `: ${event.reason}` : ''}`, ['CloseRoom']);
      else if (name === 'memberKicked') this.driver.detachRoom(this, `kicked by member ${event.by}${event.reason ? `: ${event.reason}` : ''}`);
      else this.driver.detachRoom(this, `removed by the server (${event.reason})`, ['Leave']);
    }
    this.events.emit(name, event);
    if (name === 'command') for (const q of this.commandQueues) q.push(event);
    if (name === 'packAvailable') this.driver.packAvailable(this, event.pack);
    if (out.removed && name === 'memberKicked') {
      this.events.emit('kicked', { by: event.by, reason: event.reason, banMs: event.banMs, seq: event.seq });
    }
  }

  /** A fresh snapshot (requested, or from a resume) replaces the replica. */
  replaceSnapshot(snapshot, reason) {
    this.replica = new RoomReplica(snapshot, { serverTime: () => this.driver.client.serverTime() });
    this.me = this.replica.me;
    this.events.emit('snapshot', { reason, lastSeq: this.replica.lastSeq });
  }

  /** A DirectMessage or BroadcastMessage (not sequenced, not stored). */
  message(type, m) {
    const event = { type, from: m.from, kind: m.kind, payload: m.payload, text: lenientUtf8.decode(m.payload) };
    this.events.emit(type, event);
    for (const q of this.messageQueues) q.push(event);
  }

  deliverTick(tick) {
    this.events.emit('tick', tick);
    for (const q of this.tickQueues) q.push(tick);
  }

  queue(set, capacity) {
    const q = new EventQueue(capacity, () => set.delete(q));
    if (this.joined) set.add(q);
    else q.end();
    return q;
  }

  /** No longer joined: ends the iterators (after what they hold). */
  detach() {
    if (!this.joined) return;
    this.joined = false;
    for (const q of [...this.tickQueues, ...this.commandQueues, ...this.messageQueues]) q.end();
  }
}

function versionArg(v, what) {
  if (v === undefined || v === null) return null;
  if ((typeof v === 'number' && Number.isInteger(v) && v >= 0) || (typeof v === 'bigint' && v >= 0n)) return v;
  throw invalidArgument(`${what} must be a non-negative integer, got ${describe(v)}`);
}

/** A broadcast audience: 'everyone', 'others' or { role } (API or wire names). */
function wireAudience(audience) {
  if (audience === 'everyone' || audience === 'Everyone') return 'Everyone';
  if (audience === 'others' || audience === 'Others') return 'Others';
  if (audience !== null && typeof audience === 'object') {
    const role = audience.role ?? audience.Role;
    if (role !== undefined) return { Role: wireRole(role) };
  }
  throw invalidArgument(`an audience is 'everyone', 'others' or { role: 'host' | 'editor' | 'viewer' }, got ${describe(audience)}`);
}

/** A member id from a number or a member object. */
function memberArg(member, what = 'a member') {
  const id = member !== null && typeof member === 'object' ? member.id : member;
  if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id > 0xffffffff) throw invalidArgument(`${what} is a member id or a member, got ${describe(member)}`);
  return id;
}

/**
 * A joined room. Its replica (members, state, timelines, packs, chat,
 * lastSeq) is updated before the matching event fires and before the ack of
 * your own write resolves. A Room stays valid across a reconnect: after the
 * session is resumed it goes on as if the connection had never dropped.
 */
export class Room {
  #core;

  constructor(token, core) {
    if (token !== PRIVATE) throw new TypeError('Room objects come from client.join()');
    this.#core = core;
  }

  /** The room's string id. */
  get id() {
    return this.#core.id;
  }

  /** The room's numeric slot on this server. */
  get slot() {
    return this.#core.slot;
  }

  /** This client's member id in the room. */
  get me() {
    return this.#core.me;
  }

  /** This client's role: 'host', 'editor' or 'viewer' (kept current by 'roleChanged'). */
  get role() {
    return this.#core.replica.role;
  }

  /** 'normal', or 'relay' (a room that stores nothing: no state, commands, timelines or packs). */
  get kind() {
    return this.#core.replica.kind;
  }

  /** What happens when the host goes away: 'next_member', 'pause_timeline' or 'nothing'. */
  get failover() {
    return this.#core.replica.failover;
  }

  /**
   * The room's own permission rules, in API form: `{ rules: [{ action, scope,
   * roles }] }` (empty when the room uses the defaults, `DEFAULT_PERMISSION_RULES`).
   */
  get policy() {
    return this.#core.replica.policy;
  }

  /**
   * Whether this client, with its current role, may do `action` (e.g.
   * 'set_state', 'kick'; see `ACTIONS`) on `target` (a state key or command
   * kind; '' for other actions) under the room's policy, by the server's own
   * rule (`PermissionPolicy::allows`). False once the room is no longer joined.
   * A prediction for the user interface, not a guarantee: kick and setRole
   * also depend on the other member's rank (a host outranks an editor, an
   * editor a viewer), and a role can change before a request arrives.
   */
  can(action, target = '') {
    const allowed = this.#core.replica.can(action, target);
    return allowed && this.#core.joined;
  }

  /** Members in join order, this client included: `[{ id, role, name, meta, presence }]`. */
  get members() {
    return [...this.#core.replica.members.values()];
  }

  /** One member by id, or undefined. */
  member(id) {
    return this.#core.replica.member(id);
  }

  /** The seq of the last room event applied. */
  get lastSeq() {
    return this.#core.replica.lastSeq;
  }

  /** The state map's version (the highest version written). */
  get stateVersion() {
    return this.#core.replica.stateVersion;
  }

  /** False once the room was left, this client was removed, or the connection closed (not while reconnecting). */
  get joined() {
    return this.#core.joined;
  }

  /** The largest tick payload `sendTick` accepts now. */
  get maxTickPayload() {
    return this.#core.driver.maxTickPayload();
  }

  /** One state key: `{ value, text, version, author }`, or undefined. */
  getState(key) {
    return this.#core.replica.state.get(key);
  }

  /** All state, sorted by key: `Map<key, { value, text, version, author }>`. */
  stateEntries() {
    const entries = [...this.#core.replica.state.entries()];
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return new Map(entries);
  }

  /** The last chat messages (commands of kind 'chat'), oldest first: `[{ seq, author, time, payload, text }]` (`time`: server µs). */
  get chat() {
    return [...this.#core.replica.chat];
  }

  /** The packs available in the room, oldest first: `[{ hash, name, mediaType, size, uploader }]` (`hash`: SHA-256 in hex). */
  get packs() {
    return [...this.#core.replica.packs.values()];
  }

  /** One pack by its hash (hex or 32 bytes), or undefined. */
  pack(hash) {
    let hex;
    try {
      hex = bytesToHex(packHashArg(hash));
    } catch {
      return undefined;
    }
    return this.#core.replica.packs.get(hex);
  }

  // ---- timelines -------------------------------------------------------------

  /**
   * The state of timeline `name` in force at server time `at` (µs; default
   * now, `client.serverTime()`): `{ name, playing, ratePpm, rate, anchorTime,
   * anchorPositionUs, tempoMbpm, bpm, seq }`, or undefined when the room has
   * no such timeline. A change scheduled ahead is not in force before its
   * `anchorTime` (PROTOCOL.md §16.4).
   */
  timeline(name, at = this.#core.driver.client.serverTime()) {
    return this.#core.replica.timelineAt(name, toNumber(at));
  }

  /** Every timeline's state in force now: `Map<name, state>`. */
  timelines() {
    const now = this.#core.driver.client.serverTime();
    const out = new Map();
    for (const [name, schedule] of this.#core.replica.timelines) out.set(name, schedule.at(now));
    return out;
  }

  /**
   * Timeline `name`'s position in µs at server time `at` (default now),
   * computed locally from the synced clock (no request), as the server does
   * (§16.2). 0 for a timeline never changed.
   */
  timelinePosition(name, at = this.#core.driver.client.serverTime()) {
    const t = toNumber(at);
    return this.#core.replica.timelines.get(name)?.positionAt(t) ?? 0;
  }

  /** The seq of timeline `name`'s last change (a scheduled one included), 0 if never changed: the value for `expectedSeq`. */
  timelineSeq(name) {
    return this.#core.replica.timelines.get(name)?.latest.seq ?? 0;
  }

  #timeline(name, op, options = {}) {
    const slot = this.#core.slot;
    return this.#request('Ack', (id) => ({
      Timeline: {
        request_id: id,
        room: slot,
        name,
        op,
        at: versionArg(options?.at === undefined || options?.at === null ? null : typeof options.at === 'number' ? Math.round(options.at) : options.at, 'at'),
        expected_seq: versionArg(options?.expectedSeq, 'expectedSeq'),
      },
    }));
  }

  /**
   * Plays timeline `name` from its position. Options: `at` (server time in µs
   * when it takes effect; default now; at most `limits.maxScheduleAheadMs`
   * ahead) and `expectedSeq` (only if the timeline's last change has this seq,
   * else 'conflict' with `err.currentSeq`). Resolves with the seq of its
   * 'timelineChanged' (already applied).
   */
  play(name, options = {}) {
    return this.#timeline(name, 'Play', options);
  }

  /** Pauses timeline `name` at its position. See `play`. */
  pause(name, options = {}) {
    return this.#timeline(name, 'Pause', options);
  }

  /** Moves timeline `name` to `positionUs` (µs from its start). See `play`. */
  seek(name, positionUs, options = {}) {
    let position;
    try {
      position = versionArg(typeof positionUs === 'number' ? Math.round(positionUs) : positionUs, 'positionUs') ?? 0;
    } catch (e) {
      return Promise.reject(e);
    }
    return this.#timeline(name, { Seek: { position_us: position } }, options);
  }

  /** Sets timeline `name`'s playback rate: 1 is normal speed, 0.5 half, 2 double (sent in parts per million; 0 is refused). See `play`. */
  setRate(name, rate, options = {}) {
    const ppm = Math.round(rate * NORMAL_RATE_PPM);
    if (typeof rate !== 'number' || !(ppm >= 1 && ppm <= 0xffffffff)) {
      return Promise.reject(invalidArgument(`a rate is a number above 0 (1 = normal speed), got ${describe(rate)}`));
    }
    return this.#timeline(name, { SetRate: { rate_ppm: ppm } }, options);
  }

  /** Sets timeline `name`'s tempo in beats per minute (sent in milli-BPM), or removes it (null). See `play`. */
  setTempo(name, bpm, options = {}) {
    let mbpm = null;
    if (bpm !== null && bpm !== undefined) {
      mbpm = Math.round(bpm * 1000);
      if (typeof bpm !== 'number' || !(mbpm >= 0 && mbpm <= 0xffffffff)) {
        return Promise.reject(invalidArgument(`a tempo is a number of beats per minute, or null; got ${describe(bpm)}`));
      }
    }
    return this.#timeline(name, { SetTempo: { tempo_mbpm: mbpm } }, options);
  }

  // ---- requests --------------------------------------------------------------

  #request(expect, build) {
    const core = this.#core;
    if (!core.joined) return Promise.reject(core.driver.closeReason ? core.driver.closedError() : notJoinedError());
    return core.driver.request(expect, build, core.slot);
  }

  /**
   * Sets a state key (value: Uint8Array, or a string sent as UTF-8). With
   * `ifVersion`, only if the key's version is that (0: only if absent).
   * @returns {Promise<{ version: number, seq: number }>}
   */
  setState(key, value, options = {}) {
    const slot = this.#core.slot;
    return this.#request('StateAck', (id) => ({
      SetState: {
        request_id: id,
        room: slot,
        key,
        value: appBytes(value, 'a state value'),
        if_version: versionArg(options?.ifVersion, 'ifVersion'),
      },
    }));
  }

  /**
   * Deletes a state key. Deleting an absent key resolves with `{ version: 0 }`
   * and no event.
   * @returns {Promise<{ version: number, seq: number }>}
   */
  deleteState(key, options = {}) {
    const slot = this.#core.slot;
    return this.#request('StateAck', (id) => ({
      DeleteState: { request_id: id, room: slot, key, if_version: versionArg(options?.ifVersion, 'ifVersion') },
    }));
  }

  /**
   * Sends an application command to every member (this client included).
   * A repeated `idempotencyKey` resolves with `duplicate: true` and the first
   * seq; a command with a key is also sent again after a reconnect, so it
   * takes effect exactly once.
   * @returns {Promise<{ seq: number, duplicate: boolean }>}
   */
  sendCommand(kind, payload = EMPTY_BYTES, options = {}) {
    const slot = this.#core.slot;
    return this.#request('CommandAck', (id) => ({
      Command: {
        request_id: id,
        room: slot,
        kind,
        payload: appBytes(payload, 'a command payload'),
        idempotency_key: options?.idempotencyKey ?? null,
      },
    }));
  }

  /**
   * Sends a message to one member only (WebRTC signalling, private notes):
   * it arrives as 'direct' there. Not sequenced, not stored, not replayed.
   * Fails with 'not_joined' when `to` is not in the room or is reconnecting.
   * @returns {Promise<number>} the room's last seq
   */
  sendDirect(to, kind, payload = EMPTY_BYTES) {
    const slot = this.#core.slot;
    return this.#request('Ack', (id) => ({
      Direct: { request_id: id, room: slot, to: memberArg(to, 'to'), kind, payload: appBytes(payload, 'a message payload') },
    }));
  }

  /**
   * Sends a message to `audience`: 'everyone' (this client too), 'others', or
   * `{ role }` (members with that role). It arrives as 'broadcast'. Not
   * sequenced, not stored, not replayed; needs the send_commands permission
   * for `kind`.
   * @returns {Promise<number>} the room's last seq
   */
  broadcast(audience, kind, payload = EMPTY_BYTES) {
    const slot = this.#core.slot;
    return this.#request('Ack', (id) => ({
      Broadcast: { request_id: id, room: slot, audience: wireAudience(audience), kind, payload: appBytes(payload, 'a message payload') },
    }));
  }

  /** Asks for a fresh snapshot: it replaces the replica ('snapshot' fires); resolves with this room. */
  requestSnapshot() {
    const slot = this.#core.slot;
    return this.#request('Snapshot', (id) => ({ RequestSnapshot: { request_id: id, room: slot } }));
  }

  /**
   * STUN and TURN servers for WebRTC, as an RTCConfiguration: `{ iceServers:
   * [{ urls, username?, credential? }], expiresAt }` (`expiresAt`: server µs
   * when TURN credentials stop working, 0 without TURN), so
   * `new RTCPeerConnection(await room.iceServers())` works.
   */
  iceServers() {
    const slot = this.#core.slot;
    return this.#request('IceServers', (id) => ({ GetIceServers: { request_id: id, room: slot } }));
  }

  /**
   * Names the member who becomes host if the host goes away (failover
   * 'next_member'), or nobody (null). Needs grant_roles.
   * @param {number | { id: number } | null} member
   * @returns {Promise<number>} the room's last seq
   */
  setDelegate(member) {
    const slot = this.#core.slot;
    return this.#request('Ack', (id) => ({
      SetDelegate: { request_id: id, room: slot, member: member === null || member === undefined ? null : memberArg(member, 'the delegate') },
    }));
  }

  /**
   * Uploads a pack (an image or a video clip the members share): computes its
   * SHA-256 (Web Crypto), announces it, sends the content (on WebTransport a
   * stream of its own, on WebSocket 16 KiB pack-lane messages), and resolves
   * with the pack `{ hash, name, mediaType, size, uploader }` once the room
   * has it ('packAvailable', already applied). A pack the room already has
   * resolves at once. A dropped connection does not fail the upload: after
   * the resume it goes on from where the server got to.
   * @param {string} name e.g. 'cover.png'
   * @param {string} mediaType e.g. 'image/png'
   * @param {Uint8Array | ArrayBuffer | ArrayBufferView} content
   * @param {{ onProgress?: (sent: number, total: number) => void }} [options]
   */
  async uploadPack(name, mediaType, content, options = {}) {
    const core = this.#core;
    const driver = core.driver;
    if (!core.joined) throw driver.closeReason ? driver.closedError() : notJoinedError();
    if (typeof name !== 'string' || typeof mediaType !== 'string') throw invalidArgument('a pack needs a name and a media type (strings)');
    if (typeof content === 'string') throw invalidArgument('pack content is bytes (Uint8Array, ArrayBuffer), not a string');
    const bytes = appBytes(content, 'pack content').slice();
    if (bytes.length > driver.limits.max_pack_bytes) throw limitError('pack', driver.limits.max_pack_bytes, bytes.length);
    const hash = await sha256(bytes);
    if (!core.joined) throw driver.closeReason ? driver.closedError() : notJoinedError();
    return new Promise((resolve, reject) => {
      new Upload(driver, core, { hash, name, mediaType, content: bytes, onProgress: options?.onProgress }, resolve, reject).announce();
    });
  }

  /**
   * Downloads a pack's content (its hash in hex or bytes, or the pack) and
   * checks its SHA-256 ('hash_mismatch' otherwise). A dropped connection does
   * not fail the fetch: after the resume it asks for the rest. 'pack_not_found'
   * when the room has no such pack.
   * @param {string | Uint8Array | { hash: string }} hash
   * @param {{ onProgress?: (received: number, total: number) => void }} [options]
   * @returns {Promise<Uint8Array>}
   */
  fetchPack(hash, options = {}) {
    const core = this.#core;
    const driver = core.driver;
    if (!core.joined) return Promise.reject(driver.closeReason ? driver.closedError() : notJoinedError());
    let bytes;
    try {
      bytes = packHashArg(hash);
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => {
      new Fetch(driver, core, bytes, options?.onProgress, resolve, reject).request();
    });
  }

  /**
   * Sends a tick (unreliable, newest-wins). Returns its tick seq. Throws a
   * ChorusError 'limit_exceeded' when the payload is over `maxTickPayload`
   * (the server's limit, and on WebTransport the datagram size minus the tick
   * header), 'not_joined' or 'closed'. While reconnecting, ticks are dropped
   * (and counted in `client.ticksDropped`).
   */
  sendTick(payload) {
    const core = this.#core;
    const driver = core.driver;
    if (driver.closeReason) throw driver.closedError();
    if (!core.joined) throw notJoinedError();
    const bytes = appBytes(payload, 'a tick payload');
    const max = driver.maxTickPayload();
    if (bytes.length > max) {
      const why = max < driver.limits.max_tick_payload_bytes ? `the largest that fits this connection's datagrams` : `the server's max_tick_payload_bytes`;
      throw new ChorusError(ErrorCode.LimitExceeded, errorName(ErrorCode.LimitExceeded), `tick payload of ${bytes.length} bytes is over ${max}, ${why}`, {
        detail: { limit: max, actual: bytes.length },
      });
    }
    const seq = core.tickSeq;
    driver.sendTick(core.slot, encodeDatagram({ Tick: { room: core.slot, sender: core.me, seq, payload: bytes } }));
    core.tickSeq = (seq + 1) >>> 0;
    return seq;
  }

  /**
   * Removes a member from the room; it cannot rejoin for the server's ban
   * time. Every member (the kicked one too) sees 'memberKicked'.
   * @param {number} memberId
   * @param {string} [reason] shown to the members (at most `limits.maxReasonLen` bytes)
   * @returns {Promise<number>} the seq of the memberKicked event
   */
  kick(memberId, reason = '') {
    const slot = this.#core.slot;
    return this.#request('Ack', (id) => ({ Kick: { request_id: id, room: slot, member: memberId, reason } }));
  }

  /**
   * Gives a member a role ('host', 'editor' or 'viewer'). Every member sees
   * 'roleChanged'.
   * @returns {Promise<number>} the seq of the roleChanged event
   */
  setRole(memberId, role) {
    const slot = this.#core.slot;
    return this.#request('Ack', (id) => ({ SetRole: { request_id: id, room: slot, member: memberId, role: wireRole(role) } }));
  }

  /**
   * Sets the room's password (a string), or removes it (null). Members
   * already in the room stay; later joins need `password`.
   * @param {string|null} password
   * @returns {Promise<number>} the room's last seq (this makes no event)
   */
  setPassword(password) {
    const slot = this.#core.slot;
    if (password !== null && password !== undefined && typeof password !== 'string') {
      return Promise.reject(invalidArgument(`a password is a string, or null to remove it; got ${describe(password)}`));
    }
    return this.#request('Ack', (id) => ({ SetPassword: { request_id: id, room: slot, password: password ?? null } }));
  }

  /**
   * Ends the room for everyone: every member (this client too) sees 'closed'
   * and is no longer joined.
   * @param {string} [reason] shown to the members (at most `limits.maxReasonLen` bytes)
   * @returns {Promise<number>} the seq of the room's closing event
   */
  close(reason = '') {
    const slot = this.#core.slot;
    return this.#request('Ack', (id) => ({ CloseRoom: { request_id: id, room: slot, reason } }));
  }

  /**
   * Listens to a room event: 'tick', 'memberJoined', 'memberLeft',
   * 'stateChanged', 'command', 'roleChanged', 'memberKicked', 'kicked' (this
   * client was kicked), 'closed' (the room ended), 'presenceChanged',
   * 'timelineChanged', 'packAvailable', 'direct', 'broadcast', 'snapshot' (a
   * new snapshot replaced the replica), 'resumed' (after a reconnect) or
   * 'lost' (the room could not be resumed).
   * @returns {() => void} removes the listener
   */
  on(event, listener) {
    return this.#core.events.on(event, listener);
  }

  off(event, listener) {
    this.#core.events.off(event, listener);
  }

  /** Ticks from now on as a bounded async iterator (the oldest are dropped when you fall behind). */
  ticks(options = {}) {
    return this.#core.queue(this.#core.tickQueues, options?.capacity ?? 256);
  }

  /** Commands from now on as a bounded async iterator. */
  commands(options = {}) {
    return this.#core.queue(this.#core.commandQueues, options?.capacity ?? 1024);
  }

  /** Direct and broadcast messages from now on (`{ type: 'direct' | 'broadcast', from, kind, payload, text }`), bounded. */
  messages(options = {}) {
    return this.#core.queue(this.#core.messageQueues, options?.capacity ?? 256);
  }

  /** Leaves the room (resolves at once if it is no longer joined). */
  async leave() {
    const core = this.#core;
    if (!core.joined) return;
    try {
      await core.driver.request('Left', (id) => ({ Leave: { request_id: id, room: core.slot } }));
    } catch (e) {
      core.driver.detachRoom(core);
      if (e instanceof ChorusError && (e.name === 'closed' || e.code === ErrorCode.NotJoined)) return;
      throw e;
    }
  }
}

/** A connection to a Chorus server, from `connect()`. */
export class Client {
  #d;

  constructor(token, driver) {
    if (token !== PRIVATE) throw new TypeError('Client objects come from connect()');
    this.#d = driver;
  }

  /** 'webtransport' or 'websocket' (of the current connection: a resume may change it). */
  get transport() {
    return this.#d.link.kind;
  }

  /** 'connected', 'reconnecting' (the connection dropped and the session is being resumed) or 'closed'. */
  get state() {
    return this.#d.state;
  }

  /** This session's id on the server (a bigint; a resume gives a new one). */
  get sessionId() {
    return this.#d.hello.session_id;
  }

  /** The server's limits, camelCase: `{ maxFrameBytes, maxTickPayloadBytes, ... }`. */
  get limits() {
    return this.#d.limitsCamel;
  }

  /**
   * This session's rate budgets, from the server's hello: `{ messages,
   * stateUpdates, commands, ticks, joins, direct }`, each `{ perSecond, burst }`.
   * Past one, requests fail with 'rate_limited' and `err.retryAfterMs`.
   */
  get rateLimits() {
    return this.#d.rateLimitsCamel;
  }

  /** The server's hello, in codec form (the latest connection's). */
  get serverHello() {
    return this.#d.hello;
  }

  /** The largest tick payload usable now (transport datagram size and server limit). */
  get maxTickPayload() {
    return this.#d.maxTickPayload();
  }

  /** Ticks that never reached the network (replaced by a newer one, the send queue was full, or the connection was down). */
  get ticksDropped() {
    return this.#d.ticksDropped;
  }

  /**
   * Estimated server time now, in microseconds since the Unix epoch: the
   * local clock plus the offset of the least-RTT ping of recent ones. Its
   * error is at most half that ping's round trip, in practice half the
   * path's asymmetry: well under 1 ms on loopback or a LAN, a few ms across
   * the internet (PROTOCOL.md §17.3).
   */
  serverTime() {
    return localNowUs() + this.#d.clockEstimate().offsetUs;
  }

  /** Estimated server time at a `performance.now()` timestamp (e.g. a tick's `receivedAt`). */
  serverTimeAt(perfNow) {
    return Math.round((performance.timeOrigin + perfNow) * 1000) + this.#d.clockEstimate().offsetUs;
  }

  /** `{ offsetUs, rttUs, samples }`: server clock minus local clock, from the min-RTT sample. */
  get clock() {
    return this.#d.clockEstimate();
  }

  /** Runs a clock sync now and returns the new estimate. */
  async syncClock(pings = this.#d.opts.clockSync.refreshPings) {
    await this.#d.syncClock(pings, this.#d.opts.requestTimeoutMs);
    return this.clock;
  }

  /** Why the connection ended (`{ code, name, message, detail }`), or null while open (or reconnecting). */
  get closeReason() {
    return this.#d.closeReason;
  }

  /** Resolves with the close reason when the connection ends for good. */
  get closed() {
    return this.#d.closed;
  }

  /**
   * Listens to 'error' (a server error no pending request takes), 'close'
   * (the close reason, once), 'reconnecting' (`{ attempt, delayMs, reason }`),
   * 'resumed' (`{ transport, sessionResumed, attempts, downtimeMs, rooms }`)
   * or 'lost' (`{ reason, rooms, sessionLost }`: rooms, or the whole session,
   * that are gone).
   * @returns {() => void} removes the listener
   */
  on(event, listener) {
    return this.#d.events.on(event, listener);
  }

  off(event, listener) {
    this.#d.events.off(event, listener);
  }

  /**
   * Joins a room, creating it unless `create: false` (or `createIfMissing:
   * false`). With `roomId` '' and create, the server makes a new room with a
   * generated id (an invite code): the room's `id`.
   * @param {string} roomId
   * @param {{ name?: string, meta?: Uint8Array|string, create?: boolean, createIfMissing?: boolean, maxMembers?: number,
   *   password?: string, token?: string, policy?: object, template?: string, kind?: 'normal'|'relay',
   *   failover?: 'next_member'|'pause_timeline'|'nothing' }} [options]
   * @returns {Promise<Room>}
   */
  join(roomId, options = {}) {
    return this.#d.request('Joined', (id) => {
      const wireOptions = [];
      const given = (v) => v !== undefined && v !== null;
      const create = options?.create ?? options?.createIfMissing ?? true;
      if (given(options?.create) && given(options?.createIfMissing) && options.create !== options.createIfMissing) {
        throw invalidArgument('create and createIfMissing are the same option and disagree');
      }
      if (create) wireOptions.push('CreateIfMissing');
      if (given(options?.maxMembers)) wireOptions.push({ MaxMembers: options.maxMembers });
      if (given(options?.password)) wireOptions.push({ Password: options.password });
      if (given(options?.token)) wireOptions.push({ Token: options.token });
      if (given(options?.policy)) wireOptions.push({ Policy: wirePolicy(options.policy) });
      if (given(options?.template)) wireOptions.push({ Template: options.template });
      if (given(options?.kind)) {
        const kind = WIRE_ROOM_KINDS.get(options.kind);
        if (!kind) throw invalidArgument(`kind is 'normal' or 'relay', got ${describe(options.kind)}`);
        wireOptions.push({ Kind: kind });
      }
      if (given(options?.failover)) {
        const failover = WIRE_FAILOVER_MODES.get(options.failover);
        if (!failover) throw invalidArgument(`failover is 'next_member', 'pause_timeline' or 'nothing', got ${describe(options.failover)}`);
        wireOptions.push({ Failover: failover });
      }
      return {
        Join: {
          request_id: id,
          room_id: roomId,
          display: {
            name: options?.name ?? '',
            meta: options?.meta === undefined || options?.meta === null ? EMPTY_BYTES : appBytes(options.meta, 'meta'),
          },
          options: wireOptions,
        },
      };
    });
  }

  /**
   * Closes the connection: first a Leave for each joined room (so the others
   * see this client leave rather than reconnect), then WebSocket 1000 /
   * WebTransport code 0. Resolves once the close is sent (at most ~1.5 s).
   */
  close() {
    return this.#d.closeGracefully();
  }
}

/**
 * Opens a link to `target` by the transport choice of `opts`: WebSocket for a
 * ws:/wss: URL or `transport: 'websocket'`; WebTransport for 'webtransport';
 * 'auto': WebTransport, then WebSocket when it is missing or not ready within
 * `fallbackAfterMs`. Resolves with `{ link, deadline }` (the handshake's
 * deadline, a performance.now() time). Used by connect and every reconnect.
 */
async function openLink(target, opts) {
  const WebSocketImpl = opts.WebSocket ?? globalThis.WebSocket;
  const WebTransportImpl = opts.WebTransport ?? globalThis.WebTransport;
  let deadline = performance.now() + opts.handshakeTimeoutMs;

  const viaWebSocket = async (wsUrl) => {
    if (typeof WebSocketImpl !== 'function') throw closedError('WebSocket is not available here');
    deadline = performance.now() + opts.handshakeTimeoutMs;
    return WebSocketLink.open(wsUrl, WebSocketImpl, opts.handshakeTimeoutMs, DEFAULT_LIMITS.max_frame_bytes);
  };

  let link;
  if (target.protocol !== 'https:') {
    if (opts.transport === 'webtransport') throw invalidArgument(`transport 'webtransport' needs an https:// URL`);
    link = await viaWebSocket(target.href);
  } else if (opts.transport === 'websocket') {
    link = await viaWebSocket(websocketUrlFor(target, opts));
  } else if (typeof WebTransportImpl !== 'function') {
    if (opts.transport === 'webtransport') throw closedError('WebTransport is not available here');
    link = await viaWebSocket(websocketUrlFor(target, opts)); // auto: no WebTransport in this browser
  } else if (opts.transport === 'webtransport') {
    link = await openWebTransport(target.href, WebTransportImpl, opts, opts.handshakeTimeoutMs);
  } else {
    const wait = Math.min(opts.fallbackAfterMs, opts.handshakeTimeoutMs);
    try {
      link = await openWebTransport(target.href, WebTransportImpl, opts, wait);
    } catch (webTransportError) {
      const wsUrl = websocketUrlFor(target, opts);
      try {
        link = await viaWebSocket(wsUrl);
      } catch (webSocketError) {
        throw new ChorusError(
          webSocketError.code ?? null,
          webSocketError.name ?? 'closed',
          `WebTransport failed (${webTransportError.message}), then WebSocket failed (${webSocketError.message})`,
          { cause: webSocketError },
        );
      }
    }
  }
  return { link, deadline };
}

/** Hello, then the initial clock sync, before `deadline` (a performance.now() time). */
async function establish(link, opts, deadline, target) {
  let hello;
  try {
    hello = await handshake(link, opts, deadline - performance.now());
  } catch (e) {
    link.close(e.code === ErrorCode.Malformed || e.code === ErrorCode.FrameTooLarge ? e.code : 0, 'handshake failed');
    throw e;
  }
  const driver = new Driver(link, hello, opts, target);
  const pings = opts.clockSync.pings;
  if (pings > 0) {
    const perPing = (deadline - performance.now()) / pings;
    const gained = await driver.syncClock(pings, perPing);
    if (driver.closeReason) throw driver.closedError();
    if (gained === 0) {
      driver.shutdown(LOCAL_CLOSE, { code: 0, text: 'no pong' });
      throw timeoutError('the server answered no clock sync ping in time');
    }
  }
  driver.startTimers();
  if (opts.closeOnPageHide) closeOnPageHide(driver.client);
  return driver.client;
}

/**
 * Closes the client when its page goes away, after a Leave for each room
 * (sent at once, before the page is gone). Chromium does not always close a
 * WebTransport session when a tab closes (no CONNECTION_CLOSE, no answer to
 * keep-alives), which would leave the member reconnecting in its rooms for
 * the resume window; the Leaves and an explicit close tell the server at once.
 */
function closeOnPageHide(client) {
  const target = globalThis;
  if (typeof target.addEventListener !== 'function' || typeof target.document === 'undefined') return;
  const onPageHide = () => {
    client.close().catch(() => {});
  };
  target.addEventListener('pagehide', onPageHide);
  client.on('close', () => target.removeEventListener('pagehide', onPageHide));
}

/**
 * Connects to a Chorus server, performs the handshake and the initial clock
 * sync. `url`: `https://host:port/chorus` (WebTransport, falling back to
 * WebSocket with `transport: 'auto'`), or `wss://` / `ws://` (WebSocket);
 * omitted in a page: `https://<page host>/chorus`.
 * @returns {Promise<Client>}
 */
export async function connect(url, options = {}) {
  const opts = normalizeOptions(options);
  const target = resolveServerUrl(url);
  const { link, deadline } = await openLink(target, opts);
  return establish(link, opts, deadline, target);
}

/**
 * The codec and framing, for tests and advanced users: encoders and decoders
 * of every message in codec form, frames, WebSocket lanes.
 */
export const codec = Object.freeze({
  encodeClientMessage,
  decodeClientMessage,
  encodeServerMessage,
  decodeServerMessage,
  encodeDatagram,
  decodeDatagram,
  validateClientMessage,
  limitsToCamel,
  rateLimitsToCamel,
  utf8Length,
  encodeFrame,
  readFrameLength,
  FrameDecoder,
  wsControlMessages,
  wsTickMessage,
  WsReassembler,
  CodecError,
  DEFAULT_LIMITS,
  DEFAULT_RATE_LIMITS,
  TICK_MAX_OVERHEAD,
  CLIENT_MESSAGE_TAGS,
  SERVER_MESSAGE_TAGS,
  DATAGRAM_TAGS,
  MAX_FRAME_PREFIX,
  WS_LANE_CONTROL,
  WS_LANE_TICK,
  WS_LANE_CHUNK,
  WS_CHUNK_BYTES,
  WS_SUBPROTOCOL,
  encodePackHeader,
  splitPackMessage,
  wsPackMessage,
  MAX_PACK_HEADER_BYTES,
  PACK_HASH_BYTES,
  WS_LANE_PACK,
  WS_PACK_CHUNK_BYTES,
});
