//! Access control on the wire: the actions a room's permission policy governs,
//! the policy itself, and the rate limits a server announces.
//!
//! These are data only. The server's room core evaluates a policy
//! ([`PermissionPolicy::allows`] is the one rule, so SDKs can predict what the
//! server will refuse); this module never decides anything by itself.

use crate::types::Role;
use serde::{Deserialize, Serialize};

/// Something a member may or may not do in a room.
///
/// The order is the wire format (append only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    /// Set or delete state keys (scope: key prefix).
    SetState,
    /// Send commands (scope: command kind prefix).
    SendCommands,
    /// Send ticks.
    SendTicks,
    /// Play, pause, seek, set rate or tempo of the room's timeline.
    ControlTimeline,
    /// Upload packs (asset bundles, images, video).
    UploadPacks,
    /// Send direct messages to one member.
    DirectMessages,
    /// Remove another member (who is then banned for the server's ban time).
    Kick,
    /// Change another member's role.
    GrantRoles,
    /// End the room for everyone.
    CloseRoom,
    /// Set, change or remove the room's password.
    SetPassword,
}

impl Action {
    /// Every action, in wire order.
    pub const ALL: [Action; 10] = [
        Action::SetState,
        Action::SendCommands,
        Action::SendTicks,
        Action::ControlTimeline,
        Action::UploadPacks,
        Action::DirectMessages,
        Action::Kick,
        Action::GrantRoles,
        Action::CloseRoom,
        Action::SetPassword,
    ];

    /// A short stable name, e.g. `"set_state"`, for errors, logs and config files.
    pub const fn name(self) -> &'static str {
        match self {
            Action::SetState => "set_state",
            Action::SendCommands => "send_commands",
            Action::SendTicks => "send_ticks",
            Action::ControlTimeline => "control_timeline",
            Action::UploadPacks => "upload_packs",
            Action::DirectMessages => "direct_messages",
            Action::Kick => "kick",
            Action::GrantRoles => "grant_roles",
            Action::CloseRoom => "close_room",
            Action::SetPassword => "set_password",
        }
    }

    /// The action named `name` (as [`Action::name`] spells it).
    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// One rule of a policy: which roles may do `action`, for the keys or command
/// kinds starting with `scope` (every key or kind when `scope` is empty).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PermissionRule {
    pub action: Action,
    /// A prefix of state keys (for `SetState`) or command kinds (for
    /// `SendCommands`); must be empty for other actions.
    pub scope: String,
    pub roles: Vec<Role>,
}

/// A room's permission policy: rules over the [default policy](PermissionPolicy::default_rules).
///
/// To decide whether `role` may do `action` on `target` (a state key or command
/// kind; empty for other actions), take the rules for that action whose `scope`
/// is a prefix of `target`; the one with the longest scope decides. The room's
/// own rules are considered before the defaults, so a room rule with the same
/// scope as a default rule replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PermissionPolicy {
    pub rules: Vec<PermissionRule>,
}

impl PermissionPolicy {
    /// The defaults every room starts from: hosts and editors write state, send
    /// commands, control the timeline and upload packs; everyone sends ticks and
    /// direct messages; only hosts kick, grant roles, close the room and set its
    /// password.
    pub fn default_rules() -> Vec<PermissionRule> {
        use Role::{Editor, Host, Viewer};
        let rule = |action, roles: &[Role]| PermissionRule {
            action,
            scope: String::new(),
            roles: roles.to_vec(),
        };
        vec![
            rule(Action::SetState, &[Host, Editor]),
            rule(Action::SendCommands, &[Host, Editor]),
            rule(Action::SendTicks, &[Host, Editor, Viewer]),
            rule(Action::ControlTimeline, &[Host, Editor]),
            rule(Action::UploadPacks, &[Host, Editor]),
            rule(Action::DirectMessages, &[Host, Editor, Viewer]),
            rule(Action::Kick, &[Host]),
            rule(Action::GrantRoles, &[Host]),
            rule(Action::CloseRoom, &[Host]),
            rule(Action::SetPassword, &[Host]),
        ]
    }

    /// Whether `role` may do `action` on `target` (see the type docs).
    pub fn allows(&self, role: Role, action: Action, target: &str) -> bool {
        let defaults = Self::default_rules();
        let mut best: Option<&PermissionRule> = None;
        for rule in self.rules.iter().chain(defaults.iter()) {
            if rule.action != action || !target.starts_with(rule.scope.as_str()) {
                continue;
            }
            // Strictly longer wins, so an earlier (room) rule beats a default
            // with the same scope.
            if best.is_none_or(|b| rule.scope.len() > b.scope.len()) {
                best = Some(rule);
            }
        }
        best.is_some_and(|rule| rule.roles.contains(&role))
    }

    /// Checks the rules' shape: scopes only on `SetState` and `SendCommands`,
    /// and each scope at most `max_scope_len` bytes.
    pub fn validate(&self, max_scope_len: usize) -> Result<(), String> {
        for rule in &self.rules {
            if !rule.scope.is_empty()
                && !matches!(rule.action, Action::SetState | Action::SendCommands)
            {
                return Err(format!(
                    "action {} takes no scope (got {:?})",
                    rule.action.name(),
                    rule.scope
                ));
            }
            if rule.scope.len() > max_scope_len {
                return Err(format!(
                    "scope of a {} rule is {} bytes, over {max_scope_len}",
                    rule.action.name(),
                    rule.scope.len()
                ));
            }
        }
        Ok(())
    }
}

/// A token-bucket budget: `per_second` on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

/// The per-session budgets a server enforces, announced in its hello so a
/// client can pace itself. Past a budget, a message is refused with
/// `RateLimited` (401) and the time to wait; repeated violations disconnect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimits {
    /// Every control message (ticks not included).
    pub messages: Rate,
    /// `SetState` and `DeleteState`.
    pub state_updates: Rate,
    /// `Command`.
    pub commands: Rate,
    /// Ticks, a separate and higher budget.
    pub ticks: Rate,
    /// `Join`.
    pub joins: Rate,
    /// `Direct` and `Broadcast`.
    pub direct: Rate,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            messages: Rate {
                per_second: 45,
                burst: 90,
            },
            state_updates: Rate {
                per_second: 20,
                burst: 40,
            },
            commands: Rate {
                per_second: 30,
                burst: 60,
            },
            ticks: Rate {
                per_second: 120,
                burst: 240,
            },
            joins: Rate {
                per_second: 5,
                burst: 10,
            },
            direct: Rate {
                per_second: 30,
                burst: 60,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_policy() {
        let p = PermissionPolicy::default();
        assert!(p.allows(Role::Editor, Action::SetState, "scene"));
        assert!(!p.allows(Role::Viewer, Action::SetState, "scene"));
        assert!(p.allows(Role::Viewer, Action::SendTicks, ""));
        assert!(!p.allows(Role::Editor, Action::Kick, ""));
        assert!(p.allows(Role::Host, Action::Kick, ""));
        assert!(!p.allows(Role::Viewer, Action::ControlTimeline, ""));
    }

    #[test]
    fn longest_scope_wins_and_room_rules_replace_defaults() {
        let p = PermissionPolicy {
            rules: vec![
                PermissionRule {
                    action: Action::SetState,
                    scope: String::new(),
                    roles: vec![Role::Host],
                },
                PermissionRule {
                    action: Action::SetState,
                    scope: "cursor/".into(),
                    roles: vec![Role::Host, Role::Editor, Role::Viewer],
                },
                PermissionRule {
                    action: Action::SendCommands,
                    scope: "chat".into(),
                    roles: vec![Role::Host, Role::Editor, Role::Viewer],
                },
            ],
        };
        assert!(!p.allows(Role::Editor, Action::SetState, "scene"));
        assert!(p.allows(Role::Viewer, Action::SetState, "cursor/7"));
        assert!(p.allows(Role::Viewer, Action::SendCommands, "chat"));
        assert!(!p.allows(Role::Viewer, Action::SendCommands, "draw"));
        assert!(p.allows(Role::Editor, Action::SendCommands, "draw"));
    }

    #[test]
    fn scopes_only_where_they_mean_something() {
        let bad = PermissionPolicy {
            rules: vec![PermissionRule {
                action: Action::Kick,
                scope: "x".into(),
                roles: vec![],
            }],
        };
        assert!(bad.validate(128).is_err());
        let long = PermissionPolicy {
            rules: vec![PermissionRule {
                action: Action::SetState,
                scope: "x".repeat(129),
                roles: vec![],
            }],
        };
        assert!(long.validate(128).is_err());
        assert!(PermissionPolicy::default().validate(128).is_ok());
    }

    #[test]
    fn action_names_round_trip() {
        for a in Action::ALL {
            assert_eq!(Action::from_name(a.name()), Some(a));
        }
    }
}
