//! Which transport each bench client uses, as a pure function of its index,
//! so a receiver can tell a tick's sender transport from the sender index in
//! the tick header.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The transport of one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientTransport {
    /// WebTransport (QUIC, UDP): ticks are datagrams.
    WebTransport,
    /// WebSocket (TCP): ticks in-band, newest-wins per slot.
    WebSocket,
}

impl ClientTransport {
    /// Both, in index order.
    pub const ALL: [ClientTransport; 2] =
        [ClientTransport::WebTransport, ClientTransport::WebSocket];

    /// 0 for WebTransport, 1 for WebSocket.
    pub fn index(self) -> usize {
        match self {
            ClientTransport::WebTransport => 0,
            ClientTransport::WebSocket => 1,
        }
    }

    /// `"webtransport"` or `"websocket"` (as in the JSON line).
    pub fn name(self) -> &'static str {
        match self {
            ClientTransport::WebTransport => "webtransport",
            ClientTransport::WebSocket => "websocket",
        }
    }

    /// `"WT"` or `"WS"` (as in the table).
    pub fn short(self) -> &'static str {
        match self {
            ClientTransport::WebTransport => "WT",
            ClientTransport::WebSocket => "WS",
        }
    }

    /// The SDK's name for it.
    pub fn sdk(self) -> chorus_client::Transport {
        match self {
            ClientTransport::WebTransport => chorus_client::Transport::WebTransport,
            ClientTransport::WebSocket => chorus_client::Transport::WebSocket,
        }
    }

    /// What to ask the SDK for: exactly this transport, never a fallback.
    pub fn choice(self) -> chorus_client::TransportChoice {
        match self {
            ClientTransport::WebTransport => chorus_client::TransportChoice::WebTransport,
            ClientTransport::WebSocket => chorus_client::TransportChoice::WebSocket,
        }
    }
}

impl fmt::Display for ClientTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How one run assigns transports to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportMix {
    /// Every client on WebTransport.
    WebTransport,
    /// Every client on WebSocket.
    WebSocket,
    /// In every room, even in-room indices on WebTransport and odd ones on
    /// WebSocket (an odd room size gives WebTransport the extra client).
    Mixed,
}

impl TransportMix {
    /// `"webtransport"`, `"websocket"` or `"mixed"`.
    pub fn name(self) -> &'static str {
        match self {
            TransportMix::WebTransport => "webtransport",
            TransportMix::WebSocket => "websocket",
            TransportMix::Mixed => "mixed",
        }
    }

    /// The transport of the client at `index_in_room` (0-based within its room).
    pub fn of(self, index_in_room: u32) -> ClientTransport {
        match self {
            TransportMix::WebTransport => ClientTransport::WebTransport,
            TransportMix::WebSocket => ClientTransport::WebSocket,
            TransportMix::Mixed if index_in_room.is_multiple_of(2) => ClientTransport::WebTransport,
            TransportMix::Mixed => ClientTransport::WebSocket,
        }
    }

    /// The transport of the client with this global index
    /// (`room * clients_per_room + index_in_room`).
    pub fn of_global(self, clients_per_room: u32, index: u32) -> ClientTransport {
        self.of(index % clients_per_room.max(1))
    }

    /// Clients per room on each transport.
    pub fn per_room(self, clients_per_room: u32) -> PerTransport {
        let mut counts = PerTransport::default();
        for i in 0..clients_per_room {
            *counts.get_mut(self.of(i)) += 1;
        }
        counts
    }
}

impl fmt::Display for TransportMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One count per transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerTransport {
    pub webtransport: u64,
    pub websocket: u64,
}

impl PerTransport {
    pub fn get(&self, t: ClientTransport) -> u64 {
        match t {
            ClientTransport::WebTransport => self.webtransport,
            ClientTransport::WebSocket => self.websocket,
        }
    }

    pub fn get_mut(&mut self, t: ClientTransport) -> &mut u64 {
        match t {
            ClientTransport::WebTransport => &mut self.webtransport,
            ClientTransport::WebSocket => &mut self.websocket,
        }
    }

    pub fn total(&self) -> u64 {
        self.webtransport + self.websocket
    }

    /// `b − a` per transport, 0 where it would be negative.
    pub fn delta(a: PerTransport, b: PerTransport) -> PerTransport {
        PerTransport {
            webtransport: b.webtransport.saturating_sub(a.webtransport),
            websocket: b.websocket.saturating_sub(a.websocket),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_rooms_alternate_and_favour_webtransport() {
        use ClientTransport::{WebSocket as WS, WebTransport as WT};
        let m = TransportMix::Mixed;
        assert_eq!(
            (0..5).map(|i| m.of(i)).collect::<Vec<_>>(),
            [WT, WS, WT, WS, WT]
        );
        assert_eq!(
            m.per_room(5),
            PerTransport {
                webtransport: 3,
                websocket: 2
            }
        );
        assert_eq!(
            m.per_room(10),
            PerTransport {
                webtransport: 5,
                websocket: 5
            }
        );
        assert_eq!(m.per_room(1).websocket, 0);
        // Global index: room 2 of 5-client rooms starts at 10.
        assert_eq!(m.of_global(5, 10), WT);
        assert_eq!(m.of_global(5, 11), WS);
        assert_eq!(m.of_global(5, 14), WT);
        assert_eq!(TransportMix::WebSocket.of_global(5, 3), WS);
        assert_eq!(TransportMix::WebTransport.per_room(4).total(), 4);
        assert_eq!(TransportMix::WebSocket.per_room(4).websocket, 4);
    }

    #[test]
    fn names_and_sdk_mapping() {
        assert_eq!(ClientTransport::WebSocket.name(), "websocket");
        assert_eq!(ClientTransport::WebTransport.short(), "WT");
        assert_eq!(
            ClientTransport::WebSocket.sdk(),
            chorus_client::Transport::WebSocket
        );
        assert_eq!(
            ClientTransport::WebTransport.choice(),
            chorus_client::TransportChoice::WebTransport
        );
        assert_eq!(
            serde_json::to_string(&TransportMix::Mixed).expect("serializes"),
            "\"mixed\""
        );
        assert_eq!(
            serde_json::to_string(&ClientTransport::WebTransport).expect("serializes"),
            "\"webtransport\""
        );
        let d = PerTransport::delta(
            PerTransport {
                webtransport: 5,
                websocket: 1,
            },
            PerTransport {
                webtransport: 7,
                websocket: 0,
            },
        );
        assert_eq!((d.webtransport, d.websocket), (2, 0));
    }
}
