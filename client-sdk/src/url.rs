//! Validation of server URLs before any socket is opened.
//!
//! A Chorus URL is `SCHEME://HOST[:PORT][/PATH][?QUERY]` where the scheme is
//! `https` (WebTransport, with WebSocket fallback), `wss` (WebSocket over TLS)
//! or `ws` (plain WebSocket, for loopback development or behind a proxy that
//! terminates TLS), e.g. `https://127.0.0.1:4433/chorus`. This module checks the
//! shape so mistakes (`http://`, a missing host, a bad port) come back as a
//! typed [`UrlError`] instead of a transport error, and maps an `https://` URL
//! to the `wss://` URL of the same server ([`ServerUrl::websocket`]).

use std::fmt;
use thiserror::Error;

/// The scheme of a server URL, which says the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `https://`: WebTransport (HTTP/3); the WebSocket fallback uses `wss://`
    /// at the same host, port and path.
    Https,
    /// `wss://`: WebSocket over TLS.
    Wss,
    /// `ws://`: WebSocket without TLS.
    Ws,
}

impl Scheme {
    /// The scheme as written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Wss => "wss",
            Scheme::Ws => "ws",
        }
    }

    /// Whether this is a WebSocket scheme (`ws` or `wss`).
    pub fn is_websocket(self) -> bool {
        matches!(self, Scheme::Ws | Scheme::Wss)
    }

    /// The port used when the URL has none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Https | Scheme::Wss => 443,
            Scheme::Ws => 80,
        }
    }
}

/// Why a server URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UrlError {
    /// The URL has no `scheme://` part.
    #[error("missing scheme: expected https://host:port/path")]
    MissingScheme,
    /// The scheme is not `https` (WebTransport), `wss` or `ws` (WebSocket), or it
    /// is a WebSocket scheme where only WebTransport was asked for.
    #[error(
        "unsupported scheme {0:?}: use https:// (WebTransport, WebSocket fallback), \
         wss:// or ws:// (WebSocket)"
    )]
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
    /// The scheme.
    pub scheme: Scheme,
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// Port; when the URL has none, 443 (`https`, `wss`) or 80 (`ws`).
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
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "https" => Scheme::Https,
            "wss" => Scheme::Wss,
            "ws" => Scheme::Ws,
            _ => return Err(UrlError::UnsupportedScheme(scheme.to_owned())),
        };
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
            None => scheme.default_port(),
            Some(p) => match p.parse::<u16>() {
                Ok(port) if port != 0 && p.bytes().all(|b| b.is_ascii_digit()) => port,
                _ => return Err(UrlError::BadPort(p.to_owned())),
            },
        };
        Ok(ServerUrl {
            scheme,
            host: host.to_owned(),
            port,
            path,
        })
    }

    /// The URL of the same server for the WebSocket transport: `https://` becomes
    /// `wss://` with the same host, port and path (PROTOCOL.md §1.3: the TCP
    /// listener uses the WebTransport port number and path); `ws://` and `wss://`
    /// URLs stay as they are.
    pub fn websocket(&self) -> ServerUrl {
        let scheme = match self.scheme {
            Scheme::Https => Scheme::Wss,
            other => other,
        };
        ServerUrl {
            scheme,
            ..self.clone()
        }
    }
}

/// Writes the URL back out: `scheme://host:port/path?query`, with an IPv6 host
/// in brackets and the port always explicit.
impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.scheme.as_str();
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            write!(f, "{scheme}://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> (String, u16, String) {
        let u = ServerUrl::parse(url).expect("valid url");
        (u.host, u.port, u.path)
    }

    fn ws(url: &str) -> String {
        ServerUrl::parse(url)
            .expect("valid url")
            .websocket()
            .to_string()
    }

    #[test]
    fn accepts_websocket_schemes() {
        let u = ServerUrl::parse("ws://127.0.0.1:4433/chorus").expect("ws");
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port),
            (Scheme::Ws, "127.0.0.1", 4433)
        );
        assert_eq!(ServerUrl::parse("ws://h/").expect("ws").port, 80);
        let u = ServerUrl::parse("WSS://h").expect("wss");
        assert_eq!((u.scheme, u.port, u.path.as_str()), (Scheme::Wss, 443, "/"));
        assert!(Scheme::Wss.is_websocket() && !Scheme::Https.is_websocket());
    }

    #[test]
    fn https_maps_to_wss_at_the_same_place() {
        assert_eq!(
            ws("https://127.0.0.1:4433/chorus"),
            "wss://127.0.0.1:4433/chorus"
        );
        assert_eq!(ws("https://example.com"), "wss://example.com:443/");
        assert_eq!(
            ws("HTTPS://[::1]:8443/a/b?token=x#frag"),
            "wss://[::1]:8443/a/b?token=x"
        );
        assert_eq!(ws("https://h:1?q"), "wss://h:1/?q");
        // WebSocket URLs stay as they are.
        assert_eq!(ws("ws://h:9/chorus"), "ws://h:9/chorus");
        assert_eq!(ws("wss://h/chorus"), "wss://h:443/chorus");
        // Display writes back what parse reads.
        for url in ["https://[::1]:4433/chorus", "ws://h:80/", "wss://a.b:1/x?y"] {
            let u = ServerUrl::parse(url).expect("valid");
            assert_eq!(u.to_string(), url);
            assert_eq!(ServerUrl::parse(&u.to_string()), Ok(u));
        }
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
            ServerUrl::parse("wt://h/"),
            Err(UrlError::UnsupportedScheme("wt".into()))
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
