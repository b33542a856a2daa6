// Permission policies (protocol/src/policy.rs): policyAllows must decide
// exactly as PermissionPolicy::allows, so `room.can` predicts what the server
// refuses. The first cases are the Rust tests', one for one.

import test from 'node:test';
import assert from 'node:assert/strict';
import {
  ACTIONS,
  ChorusError,
  DEFAULT_LIMITS,
  DEFAULT_PERMISSION_RULES,
  decodeClientMessage,
  encodeClientMessage,
  policyAllows,
} from '../chorus.js';

/** PermissionPolicy::default(): no rules of its own. */
const EMPTY = { rules: [] };

test('defaults match the documented policy (policy.rs: defaults_match_the_documented_policy)', () => {
  assert.equal(policyAllows(EMPTY, 'editor', 'set_state', 'scene'), true);
  assert.equal(policyAllows(EMPTY, 'viewer', 'set_state', 'scene'), false);
  assert.equal(policyAllows(EMPTY, 'viewer', 'send_ticks', ''), true);
  assert.equal(policyAllows(EMPTY, 'editor', 'kick', ''), false);
  assert.equal(policyAllows(EMPTY, 'host', 'kick', ''), true);
  assert.equal(policyAllows(EMPTY, 'viewer', 'control_timeline', ''), false);
});

test('the longest scope wins and room rules replace defaults (policy.rs: longest_scope_wins_and_room_rules_replace_defaults)', () => {
  const p = {
    rules: [
      { action: 'set_state', scope: '', roles: ['host'] },
      { action: 'set_state', scope: 'cursor/', roles: ['host', 'editor', 'viewer'] },
      { action: 'send_commands', scope: 'chat', roles: ['host', 'editor', 'viewer'] },
    ],
  };
  assert.equal(policyAllows(p, 'editor', 'set_state', 'scene'), false);
  assert.equal(policyAllows(p, 'viewer', 'set_state', 'cursor/7'), true);
  assert.equal(policyAllows(p, 'viewer', 'send_commands', 'chat'), true);
  assert.equal(policyAllows(p, 'viewer', 'send_commands', 'draw'), false);
  assert.equal(policyAllows(p, 'editor', 'send_commands', 'draw'), true);
});

test('scopes only where they mean something (policy.rs: scopes_only_where_they_mean_something)', () => {
  // The server refuses such a policy at join (PermissionPolicy::validate), and
  // client.join refuses to send it (test/access.test.js); the codec carries it
  // and evaluating one is still possible, as in Rust.
  const join = (policy) => ({ request_id: 1, room_id: 'r', display: { name: '', meta: [] }, options: [{ Policy: policy }] });
  const bad = { rules: [{ action: 'Kick', scope: 'x', roles: [] }] };
  assert.ok(encodeClientMessage({ Join: join(bad) }).length > 0, 'the codec carries any policy');
  assert.equal(policyAllows(bad, 'host', 'kick', 'x'), false, 'evaluated like allows: the scoped rule wins');
  // A scope over the state key limit is a limit violation.
  const long = { rules: [{ action: 'SetState', scope: 'x'.repeat(129), roles: [] }] };
  assert.throws(
    () => decodeClientMessage(encodeClientMessage({ Join: join(long) }), DEFAULT_LIMITS),
    (e) => e.kind === 'limit_exceeded' && e.detail.limit === 128 && e.detail.actual === 129,
  );
  assert.equal(policyAllows(EMPTY, 'host', 'set_password'), true);
});

test('action names: ACTIONS is the wire order, and API and wire names are the same action (policy.rs: action_names_round_trip)', () => {
  assert.deepEqual(ACTIONS, [
    'set_state',
    'send_commands',
    'send_ticks',
    'control_timeline',
    'upload_packs',
    'direct_messages',
    'kick',
    'grant_roles',
    'close_room',
    'set_password',
  ]);
  const wire = ['SetState', 'SendCommands', 'SendTicks', 'ControlTimeline', 'UploadPacks', 'DirectMessages', 'Kick', 'GrantRoles', 'CloseRoom', 'SetPassword'];
  wire.forEach((name, index) => {
    // Each action's variant index on the wire is its place in ACTIONS.
    const body = encodeClientMessage({
      Join: { request_id: 1, room_id: '', display: { name: '', meta: [] }, options: [{ Policy: { rules: [{ action: name, scope: '', roles: [] }] } }] },
    });
    assert.equal(body[body.length - 3], index, name);
    for (const role of ['host', 'editor', 'viewer']) {
      assert.equal(policyAllows(EMPTY, role, ACTIONS[index]), policyAllows(EMPTY, role, name), `${role} ${name}`);
    }
  });
});

test('DEFAULT_PERMISSION_RULES is PermissionPolicy::default_rules()', () => {
  assert.deepEqual(
    DEFAULT_PERMISSION_RULES.map((r) => [r.action, r.scope, [...r.roles]]),
    [
      ['set_state', '', ['host', 'editor']],
      ['send_commands', '', ['host', 'editor']],
      ['send_ticks', '', ['host', 'editor', 'viewer']],
      ['control_timeline', '', ['host', 'editor']],
      ['upload_packs', '', ['host', 'editor']],
      ['direct_messages', '', ['host', 'editor', 'viewer']],
      ['kick', '', ['host']],
      ['grant_roles', '', ['host']],
      ['close_room', '', ['host']],
      ['set_password', '', ['host']],
    ],
  );
  assert.ok(Object.isFrozen(DEFAULT_PERMISSION_RULES) && Object.isFrozen(DEFAULT_PERMISSION_RULES[0]));
  // Every default, for every role, is what the table says.
  for (const rule of DEFAULT_PERMISSION_RULES) {
    for (const role of ['host', 'editor', 'viewer']) {
      assert.equal(policyAllows(null, role, rule.action), rule.roles.includes(role), `${role} ${rule.action}`);
    }
  }
});

test('ties, prefixes and empty rule lists behave as allows does', () => {
  // A room rule with the same scope as a default replaces it, in either direction.
  assert.equal(policyAllows({ rules: [{ action: 'send_ticks', scope: '', roles: ['host'] }] }, 'viewer', 'send_ticks'), false);
  assert.equal(policyAllows({ rules: [{ action: 'kick', roles: ['editor'] }] }, 'editor', 'kick'), true, 'scope defaults to empty');
  // Two room rules with the same scope: the first one decides.
  const twice = { rules: [{ action: 'set_state', scope: 'a', roles: ['viewer'] }, { action: 'set_state', scope: 'a', roles: [] }] };
  assert.equal(policyAllows(twice, 'viewer', 'set_state', 'ab'), true);
  // A scope is a prefix, not a path segment; a longer scope than the target never matches.
  const p = { rules: [{ action: 'set_state', scope: 'doc', roles: ['viewer'] }] };
  assert.equal(policyAllows(p, 'viewer', 'set_state', 'document'), true);
  assert.equal(policyAllows(p, 'viewer', 'set_state', 'do'), false);
  assert.equal(policyAllows(p, 'viewer', 'set_state', ''), false);
  // A rule allowing nobody.
  assert.equal(policyAllows({ rules: [{ action: 'set_state', scope: 'x', roles: [] }] }, 'host', 'set_state', 'x1'), false);
  // Multi-byte scopes: prefixes by characters agree with prefixes by UTF-8 bytes.
  const u = { rules: [{ action: 'send_commands', scope: 'ü', roles: ['viewer'] }, { action: 'send_commands', scope: 'üb', roles: [] }] };
  assert.equal(policyAllows(u, 'viewer', 'send_commands', 'üa'), true);
  assert.equal(policyAllows(u, 'viewer', 'send_commands', 'übung'), false);
  // Only the rules of the asked action count.
  assert.equal(policyAllows({ rules: [{ action: 'send_commands', scope: '', roles: ['viewer'] }] }, 'viewer', 'set_state', 'k'), false);
});

test('names: wire forms and role aliases are accepted; a null role may do nothing; unknown names throw', () => {
  const p = { rules: [{ action: 'SetState', scope: 'cursor/', roles: ['Viewer'] }] };
  assert.equal(policyAllows(p, 'Viewer', 'SetState', 'cursor/1'), true);
  assert.equal(policyAllows(p, 'follower', 'set_state', 'cursor/1'), true);
  assert.equal(policyAllows(EMPTY, 'leader', 'kick'), true);
  assert.equal(policyAllows(EMPTY, 'owner', 'kick'), true);
  assert.equal(policyAllows(EMPTY, 'participant', 'set_state', 'k'), true);
  assert.equal(policyAllows(EMPTY, null, 'send_ticks'), false);
  assert.equal(policyAllows(EMPTY, 'admin', 'send_ticks'), false);
  for (const bad of [() => policyAllows(EMPTY, 'host', 'fly'), () => policyAllows(EMPTY, 'host', 'set_state', 5)]) {
    assert.throws(bad, (e) => e instanceof ChorusError && e.name === 'invalid_argument');
  }
  assert.throws(() => policyAllows({ rules: [{ action: 'kick', roles: ['admin'] }] }, 'host', 'kick'), (e) => e.name === 'invalid_argument');
});
