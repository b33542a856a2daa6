// Type-level checks of chorus.d.ts: the API.md example and the codec, as a
// TypeScript user would write them. Checked by `npm run typecheck` (tsc,
// no emit) and by test/types.test.js; never run.

import {
  ChorusError,
  ClockEstimator,
  CodecError,
  ErrorCode,
  FrameDecoder,
  ACTIONS,
  DEFAULT_PERMISSION_RULES,
  policyAllows,
  RoomReplica,
  WsReassembler,
  clockSample,
  codec,
  connect,
  decodeServerMessage,
  encodeClientMessage,
  errorName,
  type Client,
  type Action,
  type CloseReason,
  type PermissionPolicy,
  type RateLimits,
  type Room,
  type ServerMessage,
  type StateValue,
  type Timeline,
  type Pack,
  type ResumedEvent,
  TimelineSchedule,
  nextReconnectDelay,
  timelinePosition,
} from '@chorus/client';
import { DEFAULT_LIMITS } from '../../chorus.js';

export async function apiExample(): Promise<void> {
  const client: Client = await connect('https://127.0.0.1:4433/chorus', {
    transport: 'auto',
    fallbackAfterMs: 3000,
    certHashes: undefined,
    websocketUrl: undefined,
    clientName: 'chorus-js/0.1',
    requestTimeoutMs: 10000,
    clockSync: { pings: 8, intervalMs: 10000 },
    apiKey: 'k3y',
  });
  const rates: RateLimits = client.rateLimits;
  const perSecond: number = rates.stateUpdates.perSecond + rates.messages.burst + rates.joins.burst;
  void perSecond;
  const transport: 'webtransport' | 'websocket' = client.transport;
  const session: bigint = client.sessionId;
  const maxTick: number = client.limits.maxTickPayloadBytes + client.maxTickPayload;
  const now: number = client.serverTime();
  const { offsetUs, rttUs, samples } = client.clock;
  void [transport, session, maxTick, now, offsetUs, rttUs, samples];
  const onError = (err: ChorusError) => console.log(err.code, err.name, err.requestId, err.detail);
  const off = client.on('error', onError);
  client.on('close', (reason: CloseReason) => console.log(reason.code, reason.name, reason.message));
  client.off('error', onError);
  off();

  const room: Room = await client.join('lobby', { name: 'ada', meta: new Uint8Array(), createIfMissing: true, maxMembers: undefined });
  const ids: [string, number, number] = [room.id, room.slot, room.me];
  const role: 'host' | 'editor' | 'viewer' | null = room.role;
  const names: string[] = room.members.map((m) => `${m.id} ${m.role} ${m.name} ${m.meta.length}`);
  const last: number = room.lastSeq;
  const entry: StateValue | undefined = room.getState('title');
  const entries: Map<string, StateValue> = room.stateEntries();
  void [ids, role, names, last, entry?.text, entry?.version, entry?.author, entry?.value, entries];
  const { version, seq } = await room.setState('title', 'Hello', { ifVersion: 3 });
  await room.setState('blob', new Uint8Array([1, 2]));
  await room.deleteState('title', { ifVersion: version });
  const ack = await room.sendCommand('chat', 'hi', { idempotencyKey: 'k1' });
  const dup: boolean = ack.duplicate;
  const tickSeq: number = room.sendTick(new Uint8Array(8));
  void [seq, dup, tickSeq];
  room.on('tick', ({ sender, seq, payload, receivedAt }) => void [sender, seq, payload.length, client.serverTimeAt(receivedAt)]);
  room.on('memberJoined', (member) => void member.name);
  room.on('memberLeft', ({ member, reason }) => void [member.id, reason === 'timed_out']);
  room.on('stateChanged', ({ key, value, text, version, author, seq }) => void [key, value?.length, text, version, author, seq]);
  room.on('command', ({ seq, author, kind, payload, text, idempotencyKey }) => void [seq, author, kind, payload, text, idempotencyKey]);
  room.on('roleChanged', ({ member, role, previousRole, by, seq }) => void [member.id, role, previousRole, by, seq]);
  room.on('memberKicked', ({ member, by, reason, banMs, seq }) => void [member.name, by, reason, banMs, seq]);
  room.on('kicked', ({ by, reason, banMs, seq }) => void [by, reason, banMs, seq]);
  room.on('closed', ({ by, reason, seq }) => void [by, reason, seq]);
  const policy: PermissionPolicy = room.policy;
  const mayEdit: boolean = room.can('set_state', 'title') && room.can('kick') && room.can('SendCommands', 'chat');
  const kickSeq: number = await room.kick(3, 'spam');
  const roleSeq: number = await room.setRole(3, 'viewer');
  await room.setRole(3, 'participant');
  await room.setPassword('hunter2');
  await room.setPassword(null);
  const closeSeq: number = await room.close('done');
  void [policy.rules.map((r) => `${r.action} ${r.scope} ${r.roles.join()}`), mayEdit, kickSeq, roleSeq, closeSeq];
  const invite: Room = await client.join('', {
    create: true,
    password: 'pw',
    token: 'a.b.c',
    template: 'classroom',
    policy: { rules: [{ action: 'set_state', scope: 'cursor/', roles: ['host', 'editor', 'viewer'] }] },
  });
  void invite.id;
  const actions: readonly Action[] = ACTIONS;
  void [actions, DEFAULT_PERMISSION_RULES[0]?.roles, policyAllows(room.policy, room.role, 'send_ticks')];
  for await (const tick of room.ticks()) void tick.payload;
  for await (const cmd of room.commands({ capacity: 16 })) void cmd.kind;
  await room.leave();

  // Sync semantics.
  const state: 'connected' | 'reconnecting' | 'closed' = client.state;
  client.on('reconnecting', ({ attempt, delayMs, reason }) => void [attempt, delayMs, reason.name]);
  client.on('resumed', (e: ResumedEvent) => void e.rooms.map((r) => [r.room.id, r.outcome, r.replayed]));
  client.on('lost', ({ reason, rooms, sessionLost }) => void [reason.code, rooms.length, sessionLost]);
  const party = await client.join('party', { kind: 'normal', failover: 'pause_timeline' });
  const film: Timeline | undefined = party.timeline('film');
  const position: number = party.timelinePosition('film');
  await party.seek('film', 90_000_000, { expectedSeq: party.timelineSeq('film') });
  await party.play('film', { at: client.serverTime() + 200_000 });
  await party.setRate('film', 1.5);
  await party.setTempo('film', null);
  await party.pause('film');
  party.on('timelineChanged', ({ name, timeline, by, seq, scheduled }) => void [name, timeline.anchorTime, by, seq, scheduled]);
  party.on('presenceChanged', ({ member, presence }) => void [member.presence, presence]);
  party.on('direct', ({ from, kind, text }) => void [from, kind, text]);
  party.on('broadcast', ({ type, payload }) => void [type, payload.length]);
  party.on('packAvailable', ({ pack }) => void pack.hash);
  party.on('snapshot', ({ reason }) => void reason);
  party.on('resumed', ({ replayed, snapshot }) => void [replayed, snapshot]);
  party.on('lost', ({ code, name }) => void [code, name]);
  await party.sendDirect(2, 'rtc-offer', 'v=0');
  await party.broadcast({ role: 'viewer' }, 'note', 'hi');
  await party.broadcast('others', 'note', new Uint8Array(1));
  const rtc = await party.iceServers();
  void [rtc.iceServers[0]?.urls, rtc.expiresAt];
  await party.setDelegate(null);
  const again: Room = await party.requestSnapshot();
  const pack: Pack = await party.uploadPack('cover.png', 'image/png', new Uint8Array(8), { onProgress: (sent, total) => void [sent, total] });
  const bytes: Uint8Array = await party.fetchPack(pack);
  await party.fetchPack(pack.hash);
  void [state, film?.bpm, position, again.chat[0]?.text, party.packs.length, party.kind, party.failover, bytes];
  for await (const m of party.messages()) void m.from;
  const delay: number | null = nextReconnectDelay({ attempt: 3, random: 0.5 }, { initialDelayMs: 100 });
  const schedule = TimelineSchedule.initial('x');
  void [delay, schedule.positionAt(5), timelinePosition(schedule.latest, 10n)];

  try {
    await client.join('x');
  } catch (e) {
    if (e instanceof ChorusError && e.code === ErrorCode.RoomNotFound && e.name === 'room_not_found') {
      const d = e.detail;
      if (d && 'currentVersion' in d) void d.currentVersion;
    }
    if (e instanceof ChorusError && e.code === ErrorCode.RateLimited && e.retryAfterMs !== null) {
      const wait: number = e.retryAfterMs;
      void wait;
      const d = e.detail;
      if (d && 'retryAfterMs' in d) void d.retryAfterMs;
    }
  }
  const n: 200 = ErrorCode.RoomNotFound;
  void [n, errorName(301)];
  await client.close();
}

export function codecExample(): void {
  const body: Uint8Array = encodeClientMessage({
    Join: { request_id: 1, room_id: 'lobby', display: { name: 'Ada', meta: new Uint8Array() }, options: ['CreateIfMissing', { MaxMembers: 8 }] },
  });
  encodeClientMessage({ Ping: { client_time: 5 } });
  encodeClientMessage({ Hello: { version: { major: 2, minor: 0 }, client_name: 'app', capabilities: 0, options: [{ ApiKey: 'k3y' }] } });
  encodeClientMessage({ Kick: { request_id: 20, room: 1, member: 3, reason: 'spam' } });
  encodeClientMessage({ SetRole: { request_id: 21, room: 1, member: 3, role: 'Viewer' } });
  encodeClientMessage({ SetPassword: { request_id: 22, room: 1, password: null } });
  encodeClientMessage({ CloseRoom: { request_id: 23, room: 1, reason: '' } });
  encodeClientMessage({
    Join: {
      request_id: 7,
      room_id: '',
      display: { name: '', meta: new Uint8Array() },
      options: ['CreateIfMissing', { Password: 'pw' }, { Token: 'a.b.c' }, { Policy: { rules: [] } }, { Template: 'classroom' }],
    },
  });
  encodeClientMessage({ SetState: { request_id: 3, room: 1, key: 'k', value: new Uint8Array(), if_version: 70000n } });
  const message: ServerMessage = decodeServerMessage(body);
  if ('Hello' in message) {
    const id: bigint = message.Hello.session_id;
    const budget: number = message.Hello.rate_limits.ticks.per_second;
    const kinds: number[] = message.Hello.extensions.map((x) => x.kind);
    void [id, budget, kinds];
  }
  if ('MemberKicked' in message) {
    const ban: bigint = message.MemberKicked.ban_ms;
    void ban;
  }
  if ('Ack' in message) void message.Ack.seq;
  const decoder = new FrameDecoder(DEFAULT_LIMITS.max_frame_bytes);
  decoder.push(codec.encodeFrame(body));
  const frame: Uint8Array | null = decoder.next();
  const ws = new WsReassembler();
  const inbound = ws.push(codec.wsControlMessages(body)[0]);
  if (inbound?.lane === 'control') void inbound.body;
  const sample = clockSample(0, 510, 510, 20);
  const estimator = new ClockEstimator(8);
  if (sample) estimator.add(sample);
  const replica = new RoomReplica({
    room_id: 'r',
    room: 1,
    you: 1,
    role: 'Host',
    members: [],
    state: [],
    state_version: 0,
    last_seq: 1n,
    policy: { rules: [{ action: 'SendCommands', scope: 'chat', roles: ['Viewer'] }] },
    kind: 'Normal',
    failover: 'NextMember',
    timelines: [{ name: 'main', playing: true, rate_ppm: 1_000_000, anchor_time: 5n, anchor_position_us: 0, tempo_mbpm: null, seq: 1 }],
    packs: [],
    chat: [{ seq: 1, author: 1, time: 2n, payload: new Uint8Array() }],
  });
  const packMessage = codec.wsPackMessage({ Upload: { hash: new Uint8Array(32), offset: 0 } }, new Uint8Array(3));
  const split = codec.splitPackMessage(packMessage.subarray(1));
  if ('Download' in split.header) void split.header.Download.size;
  const allowed: boolean = replica.can('send_commands', 'chat');
  void allowed;
  const outcome = replica.apply({ StateChanged: { room: 1, seq: 2n, key: 'k', value: null, version: 1n, author: 1 } });
  if (outcome && 'name' in outcome && outcome.name === 'stateChanged') void outcome.event.key;
  try {
    codec.decodeDatagram(new Uint8Array([9]));
  } catch (e) {
    if (e instanceof CodecError) void [e.kind, e.path, e.problem, e.code];
  }
  void [frame, estimator.estimate().offsetUs];
}
