//! Which web origins may open sessions (PROTOCOL.md §1.4).
//!
//! Browsers attach an `Origin` to WebTransport session requests and WebSocket
//! upgrades; this decides, before any session exists, whether a page from that
//! origin may connect. Native clients send no `Origin` and are let through
//! deliberately: an origin check protects users' browsers, not the server.

/// See the [module docs](self).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginPolicy {
    /// Exact origins allowed besides loopback and same-host ones, lowercase,
    /// without a trailing slash, e.g. `https://app.example.com`.
    allowed: Vec<String>,
    /// `*` was configured: any origin.
    allow_any: bool,
}

impl OriginPolicy {
    /// A policy from configured values: exact origins, or `*` for any.
    pub fn new<I, S>(allowed: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut policy = OriginPolicy::default();
        for origin in allowed {
            let origin = origin
                .as_ref()
                .trim()
                .trim_end_matches('/')
                .to_ascii_lowercase();
            if origin == "*" {
                policy.allow_any = true;
            } else if !origin.is_empty() {
                policy.allowed.push(origin);
            }
        }
        policy
    }

    /// Whether a request with this `Origin` header, sent to `request_host` (the
    /// `Host` or `:authority`, port optional), may open a session.
    pub fn allows(&self, origin: Option<&str>, request_host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        if self.allow_any {
            return true;
        }
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        if self.allowed.contains(&origin) {
            return true;
        }
        let Some(host) = origin_host(&origin) else {
            // "null" (sandboxed pages, file://) and anything unparsable.
            return false;
        };
        if is_loopback_host(host) {
            return true;
        }
        request_host
            .map(|h| strip_port(&h.to_ascii_lowercase()).to_owned())
            .is_some_and(|h| h == host)
    }
}

/// The host of `scheme://host[:port]`, without brackets' port.
fn origin_host(origin: &str) -> Option<&str> {
    let (scheme, rest) = origin.split_once("://")?;
    if scheme.is_empty() || rest.is_empty() || rest.contains('/') {
        return None;
    }
    Some(strip_port(rest))
}

/// `host:port` → `host`; `[::1]:port` → `[::1]`.
fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_clients_and_loopback_pages_are_allowed_by_default() {
        let policy = OriginPolicy::default();
        assert!(policy.allows(None, Some("example.com")));
        assert!(policy.allows(Some("http://localhost:5173"), None));
        assert!(policy.allows(Some("http://127.0.0.1:4433"), None));
        assert!(policy.allows(Some("https://[::1]:4433"), None));
        assert!(policy.allows(Some("http://127.5.0.1"), None));
    }

    #[test]
    fn same_host_is_allowed_and_foreign_origins_are_not() {
        let policy = OriginPolicy::default();
        assert!(policy.allows(
            Some("https://chorus.example.com"),
            Some("chorus.example.com:4433")
        ));
        assert!(!policy.allows(Some("https://evil.example"), Some("chorus.example.com")));
        assert!(!policy.allows(Some("https://evil.example"), None));
        assert!(!policy.allows(Some("null"), Some("chorus.example.com")));
        // A look-alike host is not loopback.
        assert!(!policy.allows(Some("http://localhost.evil.example"), None));
    }

    #[test]
    fn configured_origins_and_wildcard() {
        let policy = OriginPolicy::new(["https://App.Example.com/"]);
        assert!(policy.allows(Some("https://app.example.com"), Some("chorus.example.com")));
        assert!(!policy.allows(Some("http://app.example.com"), Some("chorus.example.com")));
        let any = OriginPolicy::new(["*"]);
        assert!(any.allows(Some("https://anything.example"), None));
    }
}
