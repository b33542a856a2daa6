//! Validation of server URLs before any socket is opened.
//!
//! A Chorus WebTransport URL is `https://HOST[:PORT][/PATH][?QUERY]`, e.g.
//! `https://127.0.0.1:4433/chorus`. This module checks the shape so mistakes
//! (`http://`, `wss://`, a missing host, a bad port) come back as a typed
//! [`UrlError`] instead of a transport error; the transport parses it again.

use thiserror::Error;

/// Why a server URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UrlError {
    /// The URL has no `scheme://` part.
    #[error("missing scheme: expected https://host:port/path")]
    MissingScheme,
    /// The scheme is not `https` (WebTransport runs over HTTP/3, which is always TLS).
    #[error("unsupported scheme {0:?}: WebTransport URLs use https://")]
    UnsupportedScheme(String),
    /// The host is empty.
    #[error("missing host")]
    MissingHost,
    /// The URL carries user information (`user@host`), which WebTransport does not use.
    #[error("user information in the URL is not supported")]
    UserInfo,
    /// An IPv6 literal is missing its closing `]`, or has something other than a
    /// port after it.
    #[error("malformed IPv6 host")]
    BadIpv6,
    /// The port is not a number in `1..=65535`.
    #[error("invalid port {0:?}")]
    BadPort(String),
    /// The URL contains whitespace or control characters.
    #[error("the URL contains whitespace or control characters")]
    BadCharacter,
}

/// The parts of a validated server URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// Port, 443 when the URL has none.
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
}

impl ServerUrl {
    /// Parses and validates `url`.
    pub fn parse(url: &str) -> Result<ServerUrl, UrlError> {
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(UrlError::BadCharacter);
        }
        let (scheme, rest) = url.split_once("://").ok_or(UrlError::MissingScheme)?;
        if !scheme.eq_ignore_ascii_case("https") {
            return Err(UrlError::UnsupportedScheme(scheme.to_owned()));
        }
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let path = match tail.split_once('#') {
            Some((before, _fragment)) => before,
            None => tail,
        };
        let path = if path.is_empty() {
            "/".to_owned()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        if authority.contains('@') {
            return Err(UrlError::UserInfo);
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or(UrlError::BadIpv6)?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or(UrlError::BadIpv6)?),
            };
            if host.is_empty() {
                return Err(UrlError::MissingHost);
            }
            (host, port)
        } else {
            let (host, port) = match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            };
            if host.contains(':') {
                // An IPv6 literal must be in brackets.
                return Err(UrlError::BadIpv6);
            }
            (host, port)
        };
        if host.is_empty() {
            return Err(UrlError::MissingHost);
        }
        let port = match port {
            None => 443,
            Some(p) => match p.parse::<u16>() {
                Ok(port) if port != 0 && p.bytes().all(|b| b.is_ascii_digit()) => port,
                _ => return Err(UrlError::BadPort(p.to_owned())),
            },
        };
        Ok(ServerUrl {
            host: host.to_owned(),
            port,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> (String, u16, String) {
        let u = ServerUrl::parse(url).expect("valid url");
        (u.host, u.port, u.path)
    }

    #[test]
    fn accepts_typical_urls() {
        assert_eq!(
            ok("https://127.0.0.1:4433/chorus"),
            ("127.0.0.1".into(), 4433, "/chorus".into())
        );
        assert_eq!(
            ok("https://chorus.example.com"),
            ("chorus.example.com".into(), 443, "/".into())
        );
        assert_eq!(
            ok("HTTPS://localhost:1/a/b?x=1#frag"),
            ("localhost".into(), 1, "/a/b?x=1".into())
        );
        assert_eq!(
            ok("https://[::1]:4433/chorus"),
            ("::1".into(), 4433, "/chorus".into())
        );
        assert_eq!(ok("https://[::1]"), ("::1".into(), 443, "/".into()));
        assert_eq!(
            ok("https://h:8443?token=x"),
            ("h".into(), 8443, "/?token=x".into())
        );
    }

    #[test]
    fn refuses_wrong_schemes() {
        assert_eq!(
            ServerUrl::parse("http://127.0.0.1:4433/chorus"),
            Err(UrlError::UnsupportedScheme("http".into()))
        );
        assert_eq!(
            ServerUrl::parse("wss://h/"),
            Err(UrlError::UnsupportedScheme("wss".into()))
        );
        assert_eq!(
            ServerUrl::parse("127.0.0.1:4433"),
            Err(UrlError::MissingScheme)
        );
    }

    #[test]
    fn refuses_bad_hosts_and_ports() {
        assert_eq!(ServerUrl::parse("https:///x"), Err(UrlError::MissingHost));
        assert_eq!(
            ServerUrl::parse("https://:4433/x"),
            Err(UrlError::MissingHost)
        );
        assert_eq!(
            ServerUrl::parse("https://[]:1/"),
            Err(UrlError::MissingHost)
        );
        assert_eq!(ServerUrl::parse("https://[::1/"), Err(UrlError::BadIpv6));
        assert_eq!(ServerUrl::parse("https://[::1]x/"), Err(UrlError::BadIpv6));
        assert_eq!(
            ServerUrl::parse("https://h:0/"),
            Err(UrlError::BadPort("0".into()))
        );
        assert_eq!(
            ServerUrl::parse("https://h:65536/"),
            Err(UrlError::BadPort("65536".into()))
        );
        assert_eq!(
            ServerUrl::parse("https://h:+44/"),
            Err(UrlError::BadPort("+44".into()))
        );
        assert_eq!(
            ServerUrl::parse("https://h:/"),
            Err(UrlError::BadPort("".into()))
        );
        assert_eq!(
            ServerUrl::parse("https://::1:4433/"),
            Err(UrlError::BadIpv6)
        );
        assert_eq!(
            ServerUrl::parse("https://user:pw@h:1/"),
            Err(UrlError::UserInfo)
        );
        assert_eq!(
            ServerUrl::parse("https://h :1/"),
            Err(UrlError::BadCharacter)
        );
    }
}
