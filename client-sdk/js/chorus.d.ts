// Type declarations for chorus.js, the Chorus browser SDK. Hand-written: keep
// them in step with chorus.js (`npm run typecheck` checks them, and
// test/types/usage.ts exercises them).

// ===========================================================================
// Errors
// ===========================================================================

/** The protocol version this SDK speaks. */
export declare const PROTOCOL_VERSION: Readonly<ProtocolVersion>;
/** The SDK's version. */
export declare const SDK_VERSION: string;

/** Wire error codes (PROTOCOL.md §8.1). */
export declare const ErrorCode: Readonly<{
  Malformed: 100;
  UnknownMessage: 101;
  FrameTooLarge: 102;
  VersionMismatch: 103;
  ProtocolViolation: 104;
  LimitExceeded: 105;
  HandshakeTimeout: 106;
  RoomNotFound: 200;
  RoomFull: 201;
  TooManyRooms: 202;
  TooManyJoined: 203;
  AlreadyJoined: 204;
  NotJoined: 205;
  InvalidSender: 206;
  InvalidRoomId: 207;
  Banned: 208;
  ResumeFailed: 209;
  PackNotFound: 210;
  Forbidden: 300;
  Conflict: 301;
  StateFull: 302;
  Unauthorized: 303;
  InvalidToken: 304;
  TokenExpired: 305;
  WrongPassword: 306;
  PasswordRequired: 307;
  HashMismatch: 308;
  MediaTypeRefused: 309;
  NotStored: 310;
  SlowConsumer: 400;
  RateLimited: 401;
  Blocked: 402;
  TooManyConnections: 403;
  Internal: 500;
  ShuttingDown: 501;
}>;

/** The snake_case names of the wire error codes. */
export type ErrorCodeName =
  | 'malformed'
  | 'unknown_message'
  | 'frame_too_large'
  | 'version_mismatch'
  | 'protocol_violation'
  | 'limit_exceeded'
  | 'handshake_timeout'
  | 'room_not_found'
  | 'room_full'
  | 'too_many_rooms'
  | 'too_many_joined'
  | 'already_joined'
  | 'not_joined'
  | 'invalid_sender'
  | 'invalid_room_id'
  | 'banned'
  | 'resume_failed'
  | 'pack_not_found'
  | 'forbidden'
  | 'conflict'
  | 'state_full'
  | 'unauthorized'
  | 'invalid_token'
  | 'token_expired'
  | 'wrong_password'
  | 'password_required'
  | 'hash_mismatch'
  | 'media_type_refused'
  | 'not_stored'
  | 'slow_consumer'
  | 'rate_limited'
  | 'blocked'
  | 'too_many_connections'
  | 'internal'
  | 'shutting_down'
  /** A code this SDK does not know (newer servers may add codes). */
  | 'unknown';

/**
 * Names of local conditions (their `code` is null): 'closed' (the connection is closed or could not
 * be opened), 'timeout', 'invalid_argument', 'connection_lost' (a request was in flight when the
 * connection dropped; it may or may not have been carried out), 'unsupported' (no Web Crypto here).
 */
export type LocalErrorName = 'closed' | 'timeout' | 'invalid_argument' | 'connection_lost' | 'unsupported';

/** `errorName(200) === 'room_not_found'`; `'unknown'` for codes this SDK does not know. */
export declare function errorName(code: number): ErrorCodeName;

/** Structured data with some errors. */
export type ErrorDetail =
  | { currentVersion: number }
  | { server: ProtocolVersion; client: ProtocolVersion }
  | { limit: number; actual: number }
  /** With rate_limited, blocked, banned and too_many_connections: how long to wait before trying again. */
  | { retryAfterMs: number }
  /** With conflict on a timeline request: the seq of the timeline's last change. */
  | { currentSeq: number }
  | null;

/** Why a connection ended; the value of the client's 'close' event. */
export interface CloseReason {
  /** The Chorus error code when the server closed because of one (or the client found the server's bytes malformed); null otherwise. */
  readonly code: number | null;
  /** An ErrorCode name, or 'closed' (a normal close by either side) or 'connection_lost' (the transport failed). */
  readonly name: ErrorCodeName | 'closed' | 'connection_lost';
  readonly message: string;
  readonly detail: ErrorDetail;
}

/** Every error the SDK throws or rejects with. */
export declare class ChorusError extends Error {
  constructor(
    code: number | null,
    name: string,
    message: string,
    extra?: { requestId?: number | null; detail?: ErrorDetail; reason?: CloseReason; cause?: unknown },
  );
  /** The wire error code, e.g. 200; null for local conditions ('closed', 'timeout', 'invalid_argument'). */
  code: number | null;
  /** The code's name ('room_not_found'), or a local condition's. */
  name: ErrorCodeName | LocalErrorName | (string & {});
  /** The request the server's error answers, or null. */
  requestId: number | null;
  detail: ErrorDetail;
  /** Milliseconds to wait before trying again (the detail's `retryAfterMs`), or null. */
  retryAfterMs: number | null;
  /** On a timeline conflict: the seq of the timeline's last change (the detail's `currentSeq`), or null. */
  currentSeq: number | null;
  /** For 'closed' errors: why the connection ended, when known. */
  reason?: CloseReason;
  /** The error an `Error` frame (codec form) stands for. */
  static fromFrame(frame: ErrorFrame): ChorusError;
}

/** A codec failure (bytes that do not decode) or a value that cannot be encoded ('invalid'). */
export declare class CodecError extends ChorusError {
  constructor(kind: CodecErrorKind, reason: string, extra?: { tag?: number; detail?: ErrorDetail; path?: string });
  kind: CodecErrorKind;
  /** What is wrong, without the path. */
  problem: string;
  /** The field, e.g. 'ClientMessage.Join.display.name'; '' at the top. */
  path: string;
  /** For 'unknown_tag': the tag. */
  tag?: number;
  withPath(segment: string): this;
}

export type CodecErrorKind = 'empty' | 'malformed' | 'trailing' | 'unknown_tag' | 'frame_too_large' | 'limit_exceeded' | 'invalid';

// ===========================================================================
// Client API
// ===========================================================================

export type TransportName = 'webtransport' | 'websocket';

export interface ClockSyncOptions {
  /** Pings at connect (connect resolves after them). Default 8; 0 skips the initial sync. */
  pings?: number;
  /** Background re-sync bursts, on top of the keepalive pings. Default 60000; 0 turns them off. */
  intervalMs?: number;
  /** Pings per background re-sync. Default 3. */
  refreshPings?: number;
  /** Pause between the pings of one sync. Default 10. */
  spacingMs?: number;
  /** Samples kept; the one with the least RTT gives the offset. Default 32. */
  window?: number;
}

export interface ReconnectOptions {
  /** Reconnect and resume after a dropped connection. Default true. */
  enabled?: boolean;
  /** The delay bound of the first attempt; it doubles with each attempt. Default 250. */
  initialDelayMs?: number;
  /** The largest delay bound. Default 10000. */
  maxDelayMs?: number;
  /** The jitter's randomness, in [0, 1). Default Math.random (tests inject their own). */
  random?: () => number;
  /** The timer that waits before an attempt. Default the global setTimeout (tests inject their own). */
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (timer: unknown) => void;
}

export interface ConnectOptions {
  /** Default 'auto': WebTransport for an https: URL, WebSocket if it is missing or not ready by `fallbackAfterMs`. */
  transport?: 'auto' | TransportName;
  /** Default 3000. */
  fallbackAfterMs?: number;
  /** SHA-256 certificate hashes (hex, colons allowed, or 32 bytes). Default: fetched from `/cert-hash` when WebTransport is tried; `[]` pins none. */
  certHashes?: string | Uint8Array | ReadonlyArray<string | Uint8Array | ArrayBuffer>;
  /** Default: the server URL's host, port and path with ws: on an http: page, else wss:. */
  websocketUrl?: string;
  /** Sent in the hello. Default 'chorus-js/0.1'. */
  clientName?: string;
  /** The server's API key, sent in the hello, when the server requires one (else connect fails with 'unauthorized'). */
  apiKey?: string;
  /** Default 10000. */
  requestTimeoutMs?: number;
  /** Bound on connecting, the hello and the initial clock sync. Default 10000. */
  handshakeTimeoutMs?: number;
  /** WebSocket: a Ping sent after a quiet spell and unanswered this long means the connection is lost. Default 30000; 0 turns it off. */
  idleTimeoutMs?: number;
  /** In a page, send Leave for each room and close the connection on `pagehide`. Default true. */
  closeOnPageHide?: boolean;
  /** Default `{ pings: 8, intervalMs: 60000 }`; false turns clock sync off. */
  clockSync?: ClockSyncOptions | false;
  /** A Ping this often (keeps a host from being seen away, refreshes the clock; silence after one for 3 intervals means the connection dropped). Default 5000; 0 turns it off. */
  keepaliveMs?: number;
  /** Reconnect with exponential backoff and full jitter, and resume the session, after a dropped connection. Default on; false turns it off. */
  reconnect?: boolean | ReconnectOptions;
  /** A WebSocket constructor to use instead of the global one (polyfills, tests). */
  WebSocket?: unknown;
  /** A WebTransport constructor to use instead of the global one; null to act as if there were none. */
  WebTransport?: unknown;
  /** A fetch to use for `/cert-hash` instead of the global one. */
  fetch?: (url: string, init?: { signal?: AbortSignal }) => Promise<{ ok: boolean; json(): Promise<unknown> }>;
}

/** The server's limits (PROTOCOL.md §4.3), camelCase. */
export interface Limits {
  readonly maxFrameBytes: number;
  readonly maxTickPayloadBytes: number;
  readonly maxRoomsPerSession: number;
  readonly maxMembersPerRoom: number;
  readonly maxRoomIdLen: number;
  readonly maxNameLen: number;
  readonly maxDisplayMetaBytes: number;
  readonly maxStateKeyLen: number;
  readonly maxStateValueBytes: number;
  readonly maxStateTotalBytes: number;
  readonly maxStateKeys: number;
  readonly maxCommandKindLen: number;
  readonly maxCommandPayloadBytes: number;
  readonly maxIdempotencyKeyLen: number;
  /** Options in a join (and in the hello). */
  readonly maxJoinOptions: number;
  readonly maxPasswordLen: number;
  /** Reason text of a kick or a room close. */
  readonly maxReasonLen: number;
  readonly maxTokenLen: number;
  readonly maxApiKeyLen: number;
  /** Rules in a room's permission policy. */
  readonly maxPolicyRules: number;
  readonly maxTimelineNameLen: number;
  readonly maxTimelinesPerRoom: number;
  /** How far ahead a timeline change may be scheduled (`at`). */
  readonly maxScheduleAheadMs: number;
  /** Direct and broadcast message payload. */
  readonly maxDirectPayloadBytes: number;
  /** One pack. */
  readonly maxPackBytes: number;
  readonly maxPacksPerRoom: number;
  readonly maxPackBytesPerRoom: number;
  /** A pack's name and media type. */
  readonly maxPackNameLen: number;
}

/** A token-bucket budget: `perSecond` on average, up to `burst` at once. */
export interface Rate {
  readonly perSecond: number;
  readonly burst: number;
}

/** The per-session rate budgets the server announced in its hello. */
export interface RateLimits {
  /** Every control message (ticks not included). */
  readonly messages: Rate;
  /** setState and deleteState. */
  readonly stateUpdates: Rate;
  /** sendCommand. */
  readonly commands: Rate;
  /** Ticks, a separate and higher budget. */
  readonly ticks: Rate;
  /** join. */
  readonly joins: Rate;
  /** sendDirect and broadcast. */
  readonly direct: Rate;
}

export interface ClockEstimate {
  /** Server clock minus local clock, µs (from the hello's rough time until the first sample). */
  offsetUs: number;
  /** RTT of the sample the offset comes from, µs (0 before the first sample). */
  rttUs: number;
  /** Samples in the window (0: not synced). */
  samples: number;
}

export type Role = 'host' | 'editor' | 'viewer';
/** A role as the SDK accepts it: a Role, its wire name, or an alias (leader and owner: host; participant: editor; follower: viewer). */
export type RoleName = Role | WireRole | 'leader' | 'owner' | 'participant' | 'follower';
export type LeaveReason = 'left' | 'disconnected' | 'too_slow' | 'timed_out';
/** Whether a member is reachable: connected, its connection dropped (it may resume), or a host silent past the host timeout. */
export type Presence = 'online' | 'reconnecting' | 'away';
/** A relay room stores nothing (no state, commands, timelines, packs); it relays ticks, direct and broadcast messages. */
export type RoomKind = 'normal' | 'relay';
/** What happens when the host goes away. */
export type FailoverMode = 'next_member' | 'pause_timeline' | 'nothing';
/** Who a broadcast goes to. */
export type BroadcastAudience = 'everyone' | 'others' | { role: RoleName };
export type ConnectionState = 'connected' | 'reconnecting' | 'closed';

/** What a permission policy governs. */
export type Action =
  | 'set_state'
  | 'send_commands'
  | 'send_ticks'
  | 'control_timeline'
  | 'upload_packs'
  | 'direct_messages'
  | 'kick'
  | 'grant_roles'
  | 'close_room'
  | 'set_password';

/** One rule: which roles may do `action`, for state keys (set_state) or command kinds (send_commands) starting with `scope` ('' for all). */
export interface PermissionRule {
  readonly action: Action;
  readonly scope: string;
  readonly roles: readonly Role[];
}

/** A room's own permission rules; the defaults (DEFAULT_PERMISSION_RULES) apply where none matches. */
export interface PermissionPolicy {
  readonly rules: readonly PermissionRule[];
}

/** A policy as the SDK accepts it (join's `policy`, policyAllows): API or wire names, scope optional, or a bare list of rules. */
export type PolicyInput =
  | {
      readonly rules: ReadonlyArray<{ readonly action: Action | WireAction; readonly scope?: string; readonly roles: readonly RoleName[] }>;
    }
  | ReadonlyArray<{ readonly action: Action | WireAction; readonly scope?: string; readonly roles: readonly RoleName[] }>;

export interface Member {
  readonly id: number;
  /** null only for a member this client never saw (in a 'memberLeft' event). */
  readonly role: Role | null;
  readonly name: string;
  readonly meta: Uint8Array;
  readonly presence: Presence;
}

export interface StateValue {
  readonly value: Uint8Array;
  /** The value decoded as UTF-8 (invalid sequences become U+FFFD). */
  readonly text: string;
  /** The room's state version at this key's last write; use it as `ifVersion`. */
  readonly version: number;
  readonly author: number;
}

export interface TickEvent {
  sender: number;
  /** The sender's tick counter (wraps at 2^32). */
  seq: number;
  payload: Uint8Array;
  /** performance.now() when it arrived; `client.serverTimeAt(receivedAt)` converts it. */
  receivedAt: number;
}

export interface MemberLeftEvent {
  member: Member;
  reason: LeaveReason;
  seq: number;
}

export interface StateChangedEvent {
  key: string;
  /** null when the key was deleted. */
  value: Uint8Array | null;
  text: string | null;
  version: number;
  author: number;
  seq: number;
}

export interface CommandEvent {
  seq: number;
  author: number;
  kind: string;
  payload: Uint8Array;
  text: string;
  idempotencyKey: string | null;
}

export interface RoleChangedEvent {
  /** The member, with its new role. */
  member: Member;
  role: Role;
  /** Its role before, or null for a member this client never saw. */
  previousRole: Role | null;
  /** Who changed it. */
  by: number;
  seq: number;
}

export interface MemberKickedEvent {
  /** Who was removed (a bare member if this client never saw it). */
  member: Member;
  /** Who removed it. */
  by: number;
  /** The reason given (may be ''). */
  reason: string;
  /** How long it may not rejoin (joins fail with 'banned'). */
  banMs: number;
  seq: number;
}

/** This client was kicked: the room is no longer joined. */
export interface KickedEvent {
  by: number;
  reason: string;
  banMs: number;
  seq: number;
}

/** The room ended for everyone: it is no longer joined. */
export interface ClosedEvent {
  by: number;
  reason: string;
  seq: number;
}

/** A timeline's state (PROTOCOL.md §16), times in µs of server time. */
export interface Timeline {
  readonly name: string;
  readonly playing: boolean;
  /** Rate in parts per million (1 000 000 = normal speed). */
  readonly ratePpm: number;
  /** ratePpm / 1e6. */
  readonly rate: number;
  /** Server time (µs since the epoch) the state takes effect from. */
  readonly anchorTime: number;
  /** Position at anchorTime, µs. */
  readonly anchorPositionUs: number;
  /** Tempo in milli-BPM, or null. */
  readonly tempoMbpm: number | null;
  /** tempoMbpm / 1000, or null. */
  readonly bpm: number | null;
  /** The seq of the change that made this state (0: never changed): the value for `expectedSeq`. */
  readonly seq: number;
}

export interface TimelineOptions {
  /** Server time (µs since the epoch, e.g. `client.serverTime() + 200_000`) the change takes effect; default now. */
  at?: number | bigint;
  /** Only if the timeline's last change has this seq (0: never changed); else 'conflict' with `err.currentSeq`. */
  expectedSeq?: number | bigint;
}

export interface Pack {
  /** SHA-256 of the content, lowercase hex. */
  readonly hash: string;
  readonly name: string;
  readonly mediaType: string;
  readonly size: number;
  readonly uploader: number;
}

export interface ChatMessage {
  readonly seq: number;
  readonly author: number;
  /** Server time (µs) the room applied it (for live messages: this client's estimate when it arrived). */
  readonly time: number;
  readonly payload: Uint8Array;
  readonly text: string;
}

/** An RTCConfiguration: `new RTCPeerConnection(await room.iceServers())`. */
export interface IceConfiguration {
  readonly iceServers: ReadonlyArray<{ readonly urls: readonly string[]; readonly username?: string; readonly credential?: string }>;
  /** Server time (µs) the TURN credentials stop working; 0 without TURN. */
  readonly expiresAt: number;
}

export interface PresenceChangedEvent {
  /** The member, with its new presence. */
  member: Member;
  presence: Presence;
  previousPresence: Presence | null;
  seq: number;
}

export interface TimelineChangedEvent {
  name: string;
  /** The new state; when `scheduled`, the previous one stays in force until its anchorTime. */
  timeline: Timeline;
  /** Who changed it; 0 for the server (failover pausing it). */
  by: number;
  seq: number;
  scheduled: boolean;
}

export interface PackAvailableEvent {
  pack: Pack;
  seq: number;
}

/** A direct or broadcast message (not sequenced, not stored, not replayed). */
export interface MessageEvent {
  type: 'direct' | 'broadcast';
  from: number;
  kind: string;
  payload: Uint8Array;
  text: string;
}

export interface SnapshotEvent {
  /** 'requested' (requestSnapshot) or 'resumed' (the gap after a drop was too old to replay). */
  reason: 'requested' | 'resumed';
  lastSeq: number;
}

export interface RoomResumedEvent {
  /** Events applied since the resume (the missed ones); 0 with a snapshot. */
  replayed: number;
  snapshot: boolean;
}

export interface RoomLostEvent {
  /** 200 room_not_found, 205 not_joined, 209 resume_failed; null when the server did not answer for the room. */
  code: number | null;
  name: string;
  message: string;
}

export interface RoomEvents {
  tick: TickEvent;
  memberJoined: Member;
  memberLeft: MemberLeftEvent;
  stateChanged: StateChangedEvent;
  command: CommandEvent;
  roleChanged: RoleChangedEvent;
  /** Every member removed by a kick, this client included (then 'kicked' follows). */
  memberKicked: MemberKickedEvent;
  /** This client was kicked. */
  kicked: KickedEvent;
  /** The room was closed. */
  closed: ClosedEvent;
  presenceChanged: PresenceChangedEvent;
  timelineChanged: TimelineChangedEvent;
  packAvailable: PackAvailableEvent;
  direct: MessageEvent;
  broadcast: MessageEvent;
  /** A snapshot replaced the replica. */
  snapshot: SnapshotEvent;
  /** The session was resumed after a dropped connection; the room goes on. */
  resumed: RoomResumedEvent;
  /** The room could not be resumed: it is no longer joined. */
  lost: RoomLostEvent;
}

export interface ReconnectingEvent {
  /** The attempt about to be made, from 1. */
  attempt: number;
  /** The wait before it. */
  delayMs: number;
  /** Why the connection dropped. */
  reason: CloseReason;
}

export interface ResumedRoom {
  room: Room;
  roomId: string;
  slot: number;
  /** 'replayed': the missed events were replayed; 'snapshot': a snapshot replaced the replica; 'lost' / 'unanswered': the room is gone. */
  outcome: 'replayed' | 'snapshot' | 'lost' | 'unanswered';
  replayed: number;
  code: number | null;
}

export interface ResumedEvent {
  transport: TransportName;
  /** False when the server no longer knew the session (resume_failed): the connection works, as a fresh session, but every room was lost. */
  sessionResumed: boolean;
  attempts: number;
  downtimeMs: number;
  rooms: ResumedRoom[];
}

export interface LostEvent {
  reason: CloseReason | { code: number | null; name: string; message: string; detail: ErrorDetail };
  /** The rooms that are gone (no longer joined). */
  rooms: Room[];
  /** True when the whole session is gone (the connection ended for good, or resume_failed). */
  sessionLost: boolean;
}

export interface ClientEvents {
  /** A server error no pending request takes: not tied to a request (a refused tick, the reason for an imminent close), or answering one that timed out. */
  error: ChorusError;
  /** Once, when the connection ends for good. */
  close: CloseReason;
  /** The connection dropped; a reconnect attempt follows after `delayMs`. */
  reconnecting: ReconnectingEvent;
  /** A new connection resumed the session. */
  resumed: ResumedEvent;
  /** Rooms or the whole session are gone (the window passed, resume_failed, a room's ResumeLost, or the server ended the connection). Not after close(). */
  lost: LostEvent;
}

export interface JoinOptions {
  /** Display name. Default ''. */
  name?: string;
  /** Opaque display data relayed to others (a string is sent as UTF-8). Default empty. */
  meta?: Uint8Array | string;
  /** Create the room if it does not exist. Default true. With roomId '', the server creates a room with a generated id (an invite code), `room.id`. */
  create?: boolean;
  /** The same as `create` (the older name). */
  createIfMissing?: boolean;
  /** When this join creates the room: its member cap. */
  maxMembers?: number;
  /** The room's password; when this join creates the room, sets it. */
  password?: string;
  /** A signed join token from the application's backend: admits to the room it names, with the role it names. */
  token?: string;
  /** When this join creates the room: its permission rules (over the defaults). */
  policy?: PolicyInput;
  /** When this join creates the room: a room template from the server's configuration. */
  template?: string;
  /** When this join creates the room: 'relay' for a room that stores nothing. Default 'normal'. */
  kind?: RoomKind | WireRoomKind;
  /** When this join creates the room: what happens when its host goes away. Default 'next_member'. */
  failover?: FailoverMode | WireFailoverMode;
}

export interface StateAck {
  /** The version the write produced (0 for deleting an absent key). */
  version: number;
  /** The seq of the write's stateChanged event (for a quiet delete: the room's last seq). */
  seq: number;
}

export interface CommandAck {
  seq: number;
  /** The idempotency key had been used: nothing was broadcast, `seq` is the first command's. */
  duplicate: boolean;
}

export type Bytes = Uint8Array | ArrayBuffer | ArrayBufferView;

/** A bounded async iterator: the oldest items are dropped when the consumer falls behind. */
export declare class EventQueue<T> implements AsyncIterableIterator<T> {
  constructor(capacity?: number, onEnd?: ((queue: EventQueue<T>) => void) | null);
  readonly capacity: number;
  /** Items dropped so far because the consumer was slow. */
  dropped: number;
  readonly ended: boolean;
  push(item: T): void;
  end(): void;
  next(): Promise<IteratorResult<T, undefined>>;
  return(): Promise<IteratorResult<T, undefined>>;
  [Symbol.asyncIterator](): this;
}

/** A connection to a Chorus server, from `connect()`. */
export declare class Client {
  private constructor();
  /** The current connection's transport (a resume may change it). */
  readonly transport: TransportName;
  readonly state: ConnectionState;
  readonly sessionId: bigint;
  readonly limits: Limits;
  /** This session's rate budgets (past one, requests fail with 'rate_limited' and `retryAfterMs`). */
  readonly rateLimits: RateLimits;
  /** The server's hello, in codec form. */
  readonly serverHello: ServerHello;
  /** The largest tick payload usable now (transport datagram size and server limit). */
  readonly maxTickPayload: number;
  /** Ticks that never reached the network (replaced by a newer one, or the send queue was full). */
  readonly ticksDropped: number;
  readonly clock: ClockEstimate;
  /** Why the connection ended, or null while it is open. */
  readonly closeReason: CloseReason | null;
  /** Resolves with the close reason when the connection ends. */
  readonly closed: Promise<CloseReason>;
  /**
   * Estimated server time now, µs since the Unix epoch (least-RTT ping of recent ones). Error at most half
   * that ping's round trip, in practice half the path's asymmetry: well under 1 ms on loopback or a LAN,
   * a few ms across the internet.
   */
  serverTime(): number;
  /** Estimated server time at a performance.now() timestamp, µs since the Unix epoch. */
  serverTimeAt(performanceNow: number): number;
  /** Runs a clock sync now; resolves with the new estimate. */
  syncClock(pings?: number): Promise<ClockEstimate>;
  /** @returns a function that removes the listener */
  on<E extends keyof ClientEvents>(event: E, listener: (value: ClientEvents[E]) => void): () => void;
  off<E extends keyof ClientEvents>(event: E, listener: (value: ClientEvents[E]) => void): void;
  join(roomId: string, options?: JoinOptions): Promise<Room>;
  /** Sends Leave for each joined room, then closes the connection; resolves once the close is sent (at most about 1.5 s). */
  close(): Promise<void>;
}

/** A joined room. Its replica is updated before events fire and before your own write's ack resolves. */
export declare class Room {
  private constructor();
  readonly id: string;
  readonly slot: number;
  /** This client's member id. */
  readonly me: number;
  /** This client's role, kept current by 'roleChanged'. */
  readonly role: Role | null;
  readonly kind: RoomKind;
  readonly failover: FailoverMode;
  /** The last chat messages (commands of kind 'chat'), oldest first. */
  readonly chat: ChatMessage[];
  /** The packs available in the room, oldest first. */
  readonly packs: Pack[];
  /** The room's own permission rules (from the join snapshot). */
  readonly policy: PermissionPolicy;
  /** Members in join order, this client included. */
  readonly members: Member[];
  readonly lastSeq: number;
  readonly stateVersion: number;
  /** False once left, removed by the server, or closed. */
  readonly joined: boolean;
  readonly maxTickPayload: number;
  member(id: number): Member | undefined;
  /** A pack by its hash (hex or 32 bytes). */
  pack(hash: string | Uint8Array): Pack | undefined;
  /** Timeline `name`'s state in force at server time `at` (µs, default now); undefined if the room has no such timeline. */
  timeline(name: string, at?: number | bigint): Timeline | undefined;
  /** Every timeline's state in force now. */
  timelines(): Map<string, Timeline>;
  /** Timeline `name`'s position in µs at server time `at` (default now), computed locally; 0 for an unknown timeline. */
  timelinePosition(name: string, at?: number | bigint): number;
  /** The seq of timeline `name`'s last change (scheduled ones included), 0 if never changed. */
  timelineSeq(name: string): number;
  /** Resolves with the seq of its timelineChanged (already applied). */
  play(name: string, options?: TimelineOptions): Promise<number>;
  pause(name: string, options?: TimelineOptions): Promise<number>;
  seek(name: string, positionUs: number | bigint, options?: TimelineOptions): Promise<number>;
  /** `rate`: 1 normal speed, 0.5 half, 2 double. */
  setRate(name: string, rate: number, options?: TimelineOptions): Promise<number>;
  /** Beats per minute, or null for none. */
  setTempo(name: string, bpm: number | null, options?: TimelineOptions): Promise<number>;
  /** A message to one member ('direct' there); resolves with the room's last seq. */
  sendDirect(to: number | Member, kind: string, payload?: Bytes | string): Promise<number>;
  /** A message to an audience ('broadcast' there); resolves with the room's last seq. */
  broadcast(audience: BroadcastAudience, kind: string, payload?: Bytes | string): Promise<number>;
  /** A fresh snapshot replaces the replica; resolves with this room. */
  requestSnapshot(): Promise<Room>;
  /** STUN/TURN servers as an RTCConfiguration. */
  iceServers(): Promise<IceConfiguration>;
  /** The member who becomes host if the host goes away, or null; resolves with the room's last seq. */
  setDelegate(member: number | Member | null): Promise<number>;
  /** Uploads a pack (SHA-256 by Web Crypto); resolves with it once the room has it. */
  uploadPack(name: string, mediaType: string, content: Bytes, options?: { onProgress?: (sent: number, total: number) => void }): Promise<Pack>;
  /** Downloads a pack's content, checked against its SHA-256. */
  fetchPack(hash: string | Uint8Array | Pack, options?: { onProgress?: (received: number, total: number) => void }): Promise<Uint8Array>;
  getState(key: string): StateValue | undefined;
  /** All state, sorted by key. */
  stateEntries(): Map<string, StateValue>;
  setState(key: string, value: Bytes | string, options?: { ifVersion?: number | bigint }): Promise<StateAck>;
  deleteState(key: string, options?: { ifVersion?: number | bigint }): Promise<StateAck>;
  sendCommand(kind: string, payload?: Bytes | string, options?: { idempotencyKey?: string }): Promise<CommandAck>;
  /** Sends a tick; returns its seq. Throws ChorusError 'limit_exceeded' (over maxTickPayload), 'not_joined' or 'closed'. */
  sendTick(payload: Bytes | string): number;
  /**
   * Whether this client's current role may do `action` on `target` (a state key or command kind; '' for
   * other actions) under the room's policy, by the server's rule. False once the room is no longer joined.
   */
  can(action: Action | WireAction, target?: string): boolean;
  /** Removes a member (banned for the server's ban time); resolves with the memberKicked event's seq. */
  kick(memberId: number, reason?: string): Promise<number>;
  /** Gives a member a role; resolves with the roleChanged event's seq. */
  setRole(memberId: number, role: RoleName): Promise<number>;
  /** Sets (a string) or removes (null) the room's password; resolves with the room's last seq. */
  setPassword(password: string | null): Promise<number>;
  /** Ends the room for everyone; resolves with the closing event's seq. */
  close(reason?: string): Promise<number>;
  /** @returns a function that removes the listener */
  on<E extends keyof RoomEvents>(event: E, listener: (value: RoomEvents[E]) => void): () => void;
  off<E extends keyof RoomEvents>(event: E, listener: (value: RoomEvents[E]) => void): void;
  /** Ticks from now on. Default capacity 256. */
  ticks(options?: { capacity?: number }): EventQueue<TickEvent>;
  /** Commands from now on. Default capacity 1024. */
  commands(options?: { capacity?: number }): EventQueue<CommandEvent>;
  /** Direct and broadcast messages from now on. Default capacity 256. */
  messages(options?: { capacity?: number }): EventQueue<MessageEvent>;
  leave(): Promise<void>;
}

/**
 * Connects, performs the handshake and the initial clock sync.
 * @param url `https://host:port/chorus` (WebTransport, falling back to WebSocket with transport 'auto'),
 *   `wss://` or `ws://` (WebSocket); omitted in a page: `https://<page host>/chorus`.
 */
export declare function connect(url?: string, options?: ConnectOptions): Promise<Client>;

// ===========================================================================
// Codec: messages in serde's JSON shape (PROTOCOL.md §5)
// ===========================================================================
//
// Enums are externally tagged (`{ Join: {...} }`, unit variants as strings),
// fields snake_case, byte fields Uint8Array. Decoders return u64 fields as
// bigint; encoders also take safe-integer numbers there (type parameter U)
// and plain arrays of 0-255 for bytes.

export interface ProtocolVersion {
  major: number;
  minor: number;
}

export type WireRole = 'Host' | 'Editor' | 'Viewer';
export type WireLeaveReason = 'Left' | 'Disconnected' | 'TooSlow' | 'TimedOut';
export type WireAction =
  | 'SetState'
  | 'SendCommands'
  | 'SendTicks'
  | 'ControlTimeline'
  | 'UploadPacks'
  | 'DirectMessages'
  | 'Kick'
  | 'GrantRoles'
  | 'CloseRoom'
  | 'SetPassword';

export interface WirePermissionRule {
  action: WireAction;
  scope: string;
  roles: WireRole[];
}

export interface WirePermissionPolicy {
  rules: WirePermissionRule[];
}

export type JoinOption =
  | 'CreateIfMissing'
  | { MaxMembers: number }
  | { Password: string }
  | { Token: string }
  | { Policy: WirePermissionPolicy }
  | { Template: string }
  | { Kind: WireRoomKind }
  | { Failover: WireFailoverMode };

export type WirePresence = 'Online' | 'Reconnecting' | 'Away';
export type WireRoomKind = 'Normal' | 'Relay';
export type WireFailoverMode = 'NextMember' | 'PauseTimeline' | 'Nothing';

export interface ResumeRoom<U = bigint> {
  room: number;
  last_seq: U;
}

export type HelloOption<U = bigint> = { ApiKey: string } | { Resume: { token: string; rooms: ResumeRoom<U>[] } };

export type TimelineOp<U = bigint> =
  | 'Play'
  | 'Pause'
  | { Seek: { position_us: U } }
  | { SetRate: { rate_ppm: number } }
  | { SetTempo: { tempo_mbpm: number | null } };

export type Audience = 'Everyone' | 'Others' | { Role: WireRole };

export interface TimelineState<U = bigint> {
  name: string;
  playing: boolean;
  rate_ppm: number;
  anchor_time: U;
  anchor_position_us: U;
  tempo_mbpm: number | null;
  seq: U;
}

export interface PackInfo<U = bigint> {
  hash: Uint8Array;
  name: string;
  media_type: string;
  size: U;
  uploader: number;
}

export interface ChatEntry<U = bigint> {
  seq: U;
  author: number;
  time: U;
  payload: Uint8Array;
}

export interface IceServer {
  urls: string[];
  username: string | null;
  credential: string | null;
}

export type PackStreamHeader<U = bigint> =
  | { Upload: { hash: Uint8Array; offset: U } }
  | { Download: { request_id: number; hash: Uint8Array; offset: U; size: U } };

/** An addition of a later 2.x server to its hello; clients ignore kinds they do not know (2.0 defines none). */
export interface HelloExtension {
  kind: number;
  data: Uint8Array;
}

export interface WireRate {
  per_second: number;
  burst: number;
}

export interface WireRateLimits {
  messages: WireRate;
  state_updates: WireRate;
  commands: WireRate;
  ticks: WireRate;
  joins: WireRate;
  direct: WireRate;
}

export interface DisplayInfo {
  name: string;
  meta: Uint8Array;
}

export interface MemberInfo {
  id: number;
  role: WireRole;
  display: DisplayInfo;
  presence: WirePresence;
}

export interface StateEntry<U = bigint> {
  key: string;
  value: Uint8Array;
  version: U;
  author: number;
}

export interface RoomSnapshot<U = bigint> {
  room_id: string;
  room: number;
  you: number;
  role: WireRole;
  members: MemberInfo[];
  state: StateEntry<U>[];
  state_version: U;
  last_seq: U;
  policy: WirePermissionPolicy;
  kind: WireRoomKind;
  failover: WireFailoverMode;
  timelines: TimelineState<U>[];
  packs: PackInfo<U>[];
  chat: ChatEntry<U>[];
}

/** Limits in codec (snake_case) form. */
export interface WireLimits {
  max_frame_bytes: number;
  max_tick_payload_bytes: number;
  max_rooms_per_session: number;
  max_members_per_room: number;
  max_room_id_len: number;
  max_name_len: number;
  max_display_meta_bytes: number;
  max_state_key_len: number;
  max_state_value_bytes: number;
  max_state_total_bytes: number;
  max_state_keys: number;
  max_command_kind_len: number;
  max_command_payload_bytes: number;
  max_idempotency_key_len: number;
  max_join_options: number;
  max_password_len: number;
  max_reason_len: number;
  max_token_len: number;
  max_api_key_len: number;
  max_policy_rules: number;
  max_timeline_name_len: number;
  max_timelines_per_room: number;
  max_schedule_ahead_ms: number;
  max_direct_payload_bytes: number;
  max_pack_bytes: number;
  max_packs_per_room: number;
  max_pack_bytes_per_room: number;
  max_pack_name_len: number;
}

export interface ClientHello<U = bigint> {
  version: ProtocolVersion;
  client_name: string;
  capabilities: U;
  options: HelloOption<U>[];
}

export interface ServerHello<U = bigint> {
  version: ProtocolVersion;
  server_name: string;
  session_id: U;
  server_time: U;
  max_datagram_size: number;
  limits: WireLimits;
  rate_limits: WireRateLimits;
  /** Presented in a later hello (HelloOption Resume) to resume this session; '' when resuming is off. */
  resume_token: string;
  resume_window_ms: U;
  extensions: HelloExtension[];
}

export type WireErrorDetail<U = bigint> =
  | 'None'
  | { Conflict: { current_version: U } }
  | { Version: { server: ProtocolVersion; client: ProtocolVersion } }
  | { Limit: { limit: U; actual: U } }
  | { RetryAfter: { retry_after_ms: U } }
  | { Sequence: { current_seq: U } };

export interface ErrorFrame<U = bigint> {
  request_id: number | null;
  code: number;
  message: string;
  detail: WireErrorDetail<U>;
}

export type ClientMessage<U = bigint> =
  | { Hello: ClientHello<U> }
  | { Join: { request_id: number; room_id: string; display: DisplayInfo; options: JoinOption[] } }
  | { Leave: { request_id: number; room: number } }
  | { SetState: { request_id: number; room: number; key: string; value: Uint8Array; if_version: U | null } }
  | { DeleteState: { request_id: number; room: number; key: string; if_version: U | null } }
  | { Command: { request_id: number; room: number; kind: string; payload: Uint8Array; idempotency_key: string | null } }
  | { Ping: { client_time: U } }
  | { Kick: { request_id: number; room: number; member: number; reason: string } }
  | { SetRole: { request_id: number; room: number; member: number; role: WireRole } }
  | { SetPassword: { request_id: number; room: number; password: string | null } }
  | { CloseRoom: { request_id: number; room: number; reason: string } }
  | { Timeline: { request_id: number; room: number; name: string; op: TimelineOp<U>; at: U | null; expected_seq: U | null } }
  | { Direct: { request_id: number; room: number; to: number; kind: string; payload: Uint8Array } }
  | { Broadcast: { request_id: number; room: number; audience: Audience; kind: string; payload: Uint8Array } }
  | { RequestSnapshot: { request_id: number; room: number } }
  | { GetIceServers: { request_id: number; room: number } }
  | { SetDelegate: { request_id: number; room: number; member: number | null } }
  | { PackUpload: { request_id: number; room: number; hash: Uint8Array; name: string; media_type: string; size: U } }
  | { PackFetch: { request_id: number; room: number; hash: Uint8Array; offset: U } };

export type ServerMessage<U = bigint> =
  | { Hello: ServerHello<U> }
  | { Joined: { request_id: number; snapshot: RoomSnapshot<U> } }
  | { Left: { request_id: number; room: number } }
  | { MemberJoined: { room: number; seq: U; member: MemberInfo } }
  | { MemberLeft: { room: number; seq: U; member: number; reason: WireLeaveReason } }
  | { StateChanged: { room: number; seq: U; key: string; value: Uint8Array | null; version: U; author: number } }
  | { StateAck: { request_id: number; room: number; version: U; seq: U } }
  | {
      CommandEvent: { room: number; seq: U; author: number; kind: string; payload: Uint8Array; idempotency_key: string | null };
    }
  | { CommandAck: { request_id: number; room: number; seq: U; duplicate: boolean } }
  | { Pong: { client_time: U; server_receive_time: U; server_send_time: U } }
  | { Error: ErrorFrame<U> }
  | { RoleChanged: { room: number; seq: U; member: number; role: WireRole; by: number } }
  | { MemberKicked: { room: number; seq: U; member: number; by: number; reason: string; ban_ms: U } }
  | { RoomClosed: { room: number; seq: U; by: number; reason: string } }
  | { Ack: { request_id: number; room: number; seq: U } }
  | { PresenceChanged: { room: number; seq: U; member: number; presence: WirePresence } }
  | { TimelineChanged: { room: number; seq: U; timeline: TimelineState<U>; by: number } }
  | { DirectMessage: { room: number; from: number; kind: string; payload: Uint8Array } }
  | { BroadcastMessage: { room: number; from: number; kind: string; payload: Uint8Array } }
  | { Snapshot: { request_id: number; snapshot: RoomSnapshot<U> } }
  | { IceServers: { request_id: number; servers: IceServer[]; expires: U } }
  | { Resumed: { room: number; member: number; snapshot: RoomSnapshot<U> | null } }
  | { ResumeLost: { room: number; code: number } }
  | { PackAvailable: { room: number; seq: U; pack: PackInfo<U> } }
  | { PackUploadReady: { request_id: number; hash: Uint8Array; offset: U } };

export interface Tick {
  room: number;
  sender: number;
  /** Per-sender counter, wrapping at 2^32. */
  seq: number;
  payload: Uint8Array;
}

export type Datagram = { Tick: Tick };

/** What encoders accept for u64 fields. */
export type U64Input = bigint | number;

export type BytesInput = Bytes | number[];

export declare const DEFAULT_LIMITS: Readonly<WireLimits>;
/** The server's default rate budgets, codec form. */
export declare const DEFAULT_RATE_LIMITS: Readonly<{ [K in keyof WireRateLimits]: Readonly<WireRate> }>;
/** Bytes of a tick besides its payload, at most (19). */
export declare const TICK_MAX_OVERHEAD: number;
export declare const CLIENT_MESSAGE_TAGS: number;
export declare const SERVER_MESSAGE_TAGS: number;
export declare const DATAGRAM_TAGS: number;

export declare function encodeClientMessage(message: ClientMessage<U64Input>): Uint8Array;
/** With `limits`, also checks lengths and counts (kind 'limit_exceeded'). */
export declare function decodeClientMessage(bytes: Bytes, limits?: WireLimits): ClientMessage;
export declare function encodeServerMessage(message: ServerMessage<U64Input>): Uint8Array;
/** Unknown tags fail with kind 'unknown_tag' (clients skip those frames). */
export declare function decodeServerMessage(bytes: Bytes): ServerMessage;
export declare function encodeDatagram(datagram: Datagram): Uint8Array;
/** With `limits`, also checks the tick payload size. */
export declare function decodeDatagram(bytes: Bytes, limits?: WireLimits): Datagram;
/** The first length or count over `limits`, or null. */
export declare function validateClientMessage(
  message: ClientMessage<U64Input>,
  limits: WireLimits,
): { field: string; limit: number; actual: number } | null;
export declare function limitsToCamel(limits: WireLimits): Limits;
export declare function rateLimitsToCamel(rateLimits: WireRateLimits): RateLimits;
/** UTF-8 length of a string, without encoding it. */
export declare function utf8Length(s: string): number;

// ---- packs ----

/** Largest pack stream header body (256 bytes). */
export declare const MAX_PACK_HEADER_BYTES: number;
/** Bytes of a pack hash (SHA-256: 32). */
export declare const PACK_HASH_BYTES: number;
/** A pack stream header as a frame (varint length + body): the start of a pack stream or pack-lane message. Throws CodecError 'invalid' for a hash that is not 32 bytes. */
export declare function encodePackHeader(header: PackStreamHeader<U64Input>): Uint8Array;
/**
 * Splits a pack-lane message (or the start of a pack stream) into its header and the content after it.
 * Throws CodecError 'empty', 'malformed', 'frame_too_large' (header over 256 bytes), 'unknown_tag' or 'limit_exceeded' (hash not 32 bytes).
 */
export declare function splitPackMessage(bytes: Bytes): { header: PackStreamHeader; content: Uint8Array };

// ---- framing ----

/** Longest frame length prefix (5). */
export declare const MAX_FRAME_PREFIX: number;
/** Reads a frame length prefix; null when more bytes are needed. Throws CodecError 'malformed'. */
export declare function readFrameLength(bytes: Uint8Array, start?: number, end?: number): { value: number; used: number } | null;
/** varint length prefix + body. */
export declare function encodeFrame(body: Bytes): Uint8Array;

/** Splits a control stream into frame bodies. */
export declare class FrameDecoder {
  constructor(maxFrameBytes?: number);
  maxFrameBytes: number;
  readonly buffered: number;
  setMaxFrameBytes(max: number): void;
  push(chunk: Bytes): void;
  /** The next body, or null. Throws CodecError 'malformed' or 'frame_too_large'. */
  next(): Uint8Array | null;
}

export declare const WS_LANE_CONTROL: 0;
export declare const WS_LANE_TICK: 1;
export declare const WS_LANE_CHUNK: 2;
/** Pack messages: a framed PackStreamHeader, then one chunk of content. */
export declare const WS_LANE_PACK: 3;
/** Pack content goes out in chunks of at most this many bytes (16 KiB). */
export declare const WS_PACK_CHUNK_BYTES: number;
/** Control messages over this many bytes are chunked (16 KiB). */
export declare const WS_CHUNK_BYTES: number;
export declare const WS_SUBPROTOCOL: 'chorus.v1';

/** The WebSocket messages of one control message body: one 0x00 message or 0x02 chunks and a last 0x00 piece. */
export declare function wsControlMessages(body: Bytes, chunkBytes?: number): Uint8Array[];
/** The WebSocket message (lane 0x01) carrying one tick datagram. */
export declare function wsTickMessage(datagram: Bytes): Uint8Array;
/** The WebSocket pack-lane message (0x03): the framed header, then the chunk. */
export declare function wsPackMessage(header: PackStreamHeader<U64Input>, chunk: Bytes): Uint8Array;

/** Joins the WebSocket control lane's chunks. */
export declare class WsReassembler {
  constructor(maxFrameBytes?: number);
  maxFrameBytes: number;
  setMaxFrameBytes(max: number): void;
  /** A whole control message, a tick or a pack message; null for a chunk or a skipped message. Throws CodecError 'frame_too_large'. */
  push(message: Bytes): { lane: 'control' | 'tick' | 'pack'; body: Uint8Array } | null;
}

/** How a link saw its connection end. */
export type LinkCloseInfo =
  | { kind: 'normal'; reason: string }
  | { kind: 'error'; code: number; reason: string }
  | { kind: 'lost'; reason: string }
  | { kind: 'protocol'; error: CodecError }
  | { kind: 'local' };

/** WebSocket close code: 1000/1001 normal, 4000+N Chorus error N, anything else lost. */
export declare function wsCloseInfo(code: number, reason?: string): LinkCloseInfo;
/** WebTransport `closed` value: code 0 normal, else the Chorus error code. */
export declare function wtCloseInfo(info: { closeCode?: number; reason?: string } | undefined): LinkCloseInfo;
/** Where the server publishes its certificate hash for this server URL. */
export declare function certHashUrl(serverUrl: string | URL): string;
/** 64 hex digits (colons allowed) -> 32 bytes, or null. */
export declare function parseCertHash(hex: string): Uint8Array | null;

// ---- clock ----

export declare const MAX_SAMPLE_ROUND_TRIP_US: number;

export interface ClockSample {
  t0: number;
  t1: number;
  t2: number;
  t3: number;
  /** ((t1 - t0) + (t2 - t3)) / 2, toward zero. */
  offsetUs: number;
  /** (t3 - t0) - (t2 - t1), at least 0. */
  rttUs: number;
}

/** One ping/pong exchange (µs since the epoch), or null when its timestamps are impossible. */
export declare function clockSample(t0: U64Input, t1: U64Input, t2: U64Input, t3: U64Input): ClockSample | null;
/** The least-RTT sample, the latest among equals; null for none. */
export declare function bestSample(samples: Iterable<ClockSample>): ClockSample | null;

export declare class ClockEstimator {
  constructor(capacity?: number);
  readonly capacity: number;
  readonly samples: ClockSample[];
  readonly size: number;
  add(sample: ClockSample): void;
  estimate(): ClockEstimate;
}

/** performance.timeOrigin + performance.now(), in whole µs. */
export declare function localNowUs(): number;

// ---- permissions ----

/** Every action, in wire order. */
export declare const ACTIONS: readonly Action[];
/** The rules every room starts from (`PermissionPolicy::default_rules()`). */
export declare const DEFAULT_PERMISSION_RULES: readonly PermissionRule[];
/**
 * Whether `role` may do `action` on `target` under `policy`, exactly as the server decides: of the rules
 * for the action whose scope is a prefix of `target`, the longest scope decides; room rules before the
 * defaults. A null role is allowed nothing. Throws ChorusError 'invalid_argument' for an unknown action.
 */
export declare function policyAllows(
  policy: PolicyInput | PermissionPolicy | WirePermissionPolicy | null,
  role: RoleName | null,
  action: Action | WireAction,
  target?: string,
): boolean;

// ---- replica ----

export type ReplicaOutcome =
  | null
  | { stale: true; seq: number; last: number }
  | { name: 'memberJoined'; event: Member; removed: false }
  | { name: 'memberLeft'; event: MemberLeftEvent; removed: boolean }
  | { name: 'stateChanged'; event: StateChangedEvent; removed: false }
  | { name: 'command'; event: CommandEvent; removed: false }
  | { name: 'roleChanged'; event: RoleChangedEvent; removed: false }
  | { name: 'memberKicked'; event: MemberKickedEvent; removed: boolean }
  | { name: 'closed'; event: ClosedEvent; removed: true }
  | { name: 'presenceChanged'; event: PresenceChangedEvent; removed: false }
  | { name: 'timelineChanged'; event: TimelineChangedEvent; removed: false }
  | { name: 'packAvailable'; event: PackAvailableEvent; removed: false };

/** Members and state of one room, updated by its events in seq order (pure, no I/O). */
export declare class RoomReplica {
  /** `serverTime`: the server's clock (µs), for scheduled timeline changes and new chat entries. Default: the local clock. */
  constructor(snapshot: RoomSnapshot<U64Input>, options?: { serverTime?: () => number });
  readonly roomId: string;
  readonly slot: number;
  readonly me: number;
  readonly role: Role | null;
  readonly members: Map<number, Member>;
  readonly state: Map<string, StateValue>;
  readonly stateVersion: number;
  readonly lastSeq: number;
  readonly policy: PermissionPolicy;
  readonly kind: RoomKind;
  readonly failover: FailoverMode;
  readonly timelines: Map<string, TimelineSchedule>;
  /** hex hash -> pack, oldest first. */
  readonly packs: Map<string, Pack>;
  readonly chat: ChatMessage[];
  /** Events whose seq skipped ahead (applied anyway). */
  readonly gaps: number;
  timelineAt(name: string, at?: number): Timeline | undefined;
  /** policyAllows(policy, role, action, target). */
  can(action: Action | WireAction, target?: string): boolean;
  member(id: number): Member | undefined;
  hasMember(id: number): boolean;
  apply(message: ServerMessage<U64Input>): ReplicaOutcome;
  static eventRoom(message: ServerMessage<U64Input>): number | null;
}

// ---- timelines ----

/** Normal speed in parts per million (1 000 000). */
export declare const NORMAL_RATE_PPM: number;
/** Commands of this kind are the room's chat ('chat'). */
export declare const CHAT_KIND: string;
/** A codec-form TimelineState in API form. */
export declare function publicTimeline(state: TimelineState<U64Input>): Timeline;
/** The position in µs at server time `at`, exactly as the server computes it (§16.2). */
export declare function timelinePosition(state: Timeline, at: number | bigint): number;

/** One timeline as a client follows it (§16.4): the state in force and a change scheduled ahead. */
export declare class TimelineSchedule {
  constructor(state: Timeline);
  static initial(name: string): TimelineSchedule;
  current: Timeline;
  pending: Timeline | null;
  /** A newer state that arrived at server time `now`. */
  push(state: Timeline, now: number): void;
  settle(now: number): void;
  at(t: number): Timeline;
  positionAt(t: number): number;
  readonly latest: Timeline;
}

/** Lowercase hex of bytes. */
export declare function bytesToHex(bytes: Uint8Array): string;

// ---- reconnecting ----

/** Attempt `attempt`'s delay bound: initialDelayMs × 2^(attempt−1), at most maxDelayMs. */
export declare function reconnectCeiling(attempt: number, options?: ReconnectOptions): number;
/** Attempt `attempt`'s delay with full jitter, at least `atLeastMs`, cut to the window; null once the window has passed. */
export declare function nextReconnectDelay(
  args: { attempt: number; elapsedMs?: number; windowMs?: number; atLeastMs?: number; random?: number },
  options?: ReconnectOptions,
): number | null;

/** The codec and framing in one object. */
export declare const codec: Readonly<{
  encodeClientMessage: typeof encodeClientMessage;
  decodeClientMessage: typeof decodeClientMessage;
  encodeServerMessage: typeof encodeServerMessage;
  decodeServerMessage: typeof decodeServerMessage;
  encodeDatagram: typeof encodeDatagram;
  decodeDatagram: typeof decodeDatagram;
  validateClientMessage: typeof validateClientMessage;
  limitsToCamel: typeof limitsToCamel;
  rateLimitsToCamel: typeof rateLimitsToCamel;
  utf8Length: typeof utf8Length;
  encodeFrame: typeof encodeFrame;
  readFrameLength: typeof readFrameLength;
  FrameDecoder: typeof FrameDecoder;
  wsControlMessages: typeof wsControlMessages;
  wsTickMessage: typeof wsTickMessage;
  WsReassembler: typeof WsReassembler;
  CodecError: typeof CodecError;
  DEFAULT_LIMITS: typeof DEFAULT_LIMITS;
  DEFAULT_RATE_LIMITS: typeof DEFAULT_RATE_LIMITS;
  TICK_MAX_OVERHEAD: number;
  CLIENT_MESSAGE_TAGS: number;
  SERVER_MESSAGE_TAGS: number;
  DATAGRAM_TAGS: number;
  MAX_FRAME_PREFIX: number;
  WS_LANE_CONTROL: 0;
  WS_LANE_TICK: 1;
  WS_LANE_CHUNK: 2;
  WS_CHUNK_BYTES: number;
  WS_SUBPROTOCOL: 'chorus.v1';
  encodePackHeader: typeof encodePackHeader;
  splitPackMessage: typeof splitPackMessage;
  wsPackMessage: typeof wsPackMessage;
  MAX_PACK_HEADER_BYTES: number;
  PACK_HASH_BYTES: number;
  WS_LANE_PACK: 3;
  WS_PACK_CHUNK_BYTES: number;
}>;
