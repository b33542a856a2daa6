//! Room templates from a TOML file: named presets (permission rules, member
//! cap, default role, persistence) that a join creating a room can ask for
//! with `JoinOption::Template`.
//!
//! This module only reads and checks the file; the registry applies templates.
//!
//! ```toml
//! [templates.classroom]
//! max_members = 30
//! default_role = "viewer"      # host | editor | viewer (or leader | participant | follower)
//! persistent = false           # true: never expires when empty
//! rules = [
//!   { action = "set_state", scope = "cursor/", roles = ["host", "editor", "viewer"] },
//!   { action = "send_commands", scope = "chat", roles = ["host", "editor", "viewer"] },
//!   { action = "control_timeline", roles = ["host"] },
//! ]
//! ```

use crate::rooms::RoomTemplate;
use chorus_protocol::{Action, PermissionPolicy, PermissionRule, Role};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// Why a templates file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read room templates from {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("room templates file {path} is not valid TOML: {message}")]
    Parse { path: String, message: String },
    #[error("room template {template:?}: {message}")]
    Invalid { template: String, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    templates: HashMap<String, TemplateEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateEntry {
    max_members: Option<u32>,
    default_role: Option<String>,
    #[serde(default)]
    persistent: bool,
    #[serde(default)]
    rules: Vec<RuleEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEntry {
    action: String,
    #[serde(default)]
    scope: String,
    roles: Vec<String>,
}

fn role(template: &str, name: &str) -> Result<Role, TemplateError> {
    Role::from_name(name).ok_or_else(|| TemplateError::Invalid {
        template: template.to_owned(),
        message: format!(
            "unknown role {name:?} (host, editor, viewer, leader, participant, follower)"
        ),
    })
}

/// Parses templates from TOML text; `origin` names the source in errors.
pub fn parse_templates(
    text: &str,
    origin: &str,
) -> Result<HashMap<String, RoomTemplate>, TemplateError> {
    let file: File = toml::from_str(text).map_err(|e| TemplateError::Parse {
        path: origin.to_owned(),
        message: e.to_string(),
    })?;
    let mut templates = HashMap::new();
    for (name, entry) in file.templates {
        let invalid = |message: String| TemplateError::Invalid {
            template: name.clone(),
            message,
        };
        if entry.max_members == Some(0) {
            return Err(invalid("max_members must be at least 1".into()));
        }
        let mut rules = Vec::new();
        for rule in entry.rules {
            let action = Action::from_name(&rule.action).ok_or_else(|| {
                let known: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
                invalid(format!(
                    "unknown action {:?} (one of {})",
                    rule.action,
                    known.join(", ")
                ))
            })?;
            let roles = rule
                .roles
                .iter()
                .map(|r| role(&name, r))
                .collect::<Result<Vec<_>, _>>()?;
            rules.push(PermissionRule {
                action,
                scope: rule.scope,
                roles,
            });
        }
        let default_role = entry
            .default_role
            .as_deref()
            .map(|r| role(&name, r))
            .transpose()?;
        templates.insert(
            name,
            RoomTemplate {
                policy: PermissionPolicy { rules },
                max_members: entry.max_members,
                default_role,
                persistent: entry.persistent,
            },
        );
    }
    Ok(templates)
}

/// Reads templates from a TOML file.
pub fn load_templates(path: &Path) -> Result<HashMap<String, RoomTemplate>, TemplateError> {
    let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_templates(&text, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let text = r#"
            [templates.classroom]
            max_members = 30
            default_role = "follower"
            persistent = true
            rules = [
              { action = "set_state", scope = "cursor/", roles = ["host", "editor", "viewer"] },
              { action = "control_timeline", roles = ["leader"] },
            ]
        "#;
        let templates = parse_templates(text, "test").expect("valid");
        let t = &templates["classroom"];
        assert_eq!(t.max_members, Some(30));
        assert_eq!(t.default_role, Some(Role::Viewer));
        assert!(t.persistent);
        assert!(t.policy.allows(Role::Viewer, Action::SetState, "cursor/1"));
        assert!(!t.policy.allows(Role::Editor, Action::ControlTimeline, ""));
    }

    #[test]
    fn names_what_is_wrong() {
        let err = parse_templates(
            "[templates.x]\nrules = [{ action = \"fly\", roles = [] }]",
            "t",
        )
        .expect_err("unknown action");
        assert!(err.to_string().contains("\"fly\""), "{err}");
        let err = parse_templates("[templates.x]\ndefault_role = \"king\"", "t")
            .expect_err("unknown role");
        assert!(err.to_string().contains("king"), "{err}");
        let err = parse_templates("[templates.x]\ncolour = 1", "t").expect_err("unknown field");
        assert!(err.to_string().contains("colour"), "{err}");
    }
}
