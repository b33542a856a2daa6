//! The bench's tick payload: a fixed header followed by padding. State
//! values and command payloads of the reliable-lane load are the header alone.
//!
//! Layout (little endian), then padding up to the payload size:
//!
//! | bytes  | field                                              |
//! |--------|----------------------------------------------------|
//! | 0..4   | sender's global client index (`u32`)               |
//! | 4..12  | send time, ns since the bench's shared epoch (`u64`) |
//! | 12..16 | the sender's own tick sequence (`u32`)             |

use crate::report::Anomalies;
use std::fmt;
use std::ops::Range;

/// Bytes the header takes; the smallest payload the bench sends.
pub const HEADER_LEN: usize = 16;

/// What every bench tick carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Global client index: `room * clients_per_room + index_in_room`.
    pub sender: u32,
    /// Send time in nanoseconds since the bench epoch (a shared `Instant`).
    pub send_ns: u64,
    /// The sender's bench sequence number, from 0, one per tick it sends.
    pub seq: u32,
}

/// A payload size the bench refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadSizeError {
    TooSmall { size: usize },
    TooLarge { size: usize, max: usize },
}

impl fmt::Display for PayloadSizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadSizeError::TooSmall { size } => write!(
                f,
                "payload of {size} bytes is too small: the bench header needs {HEADER_LEN}"
            ),
            PayloadSizeError::TooLarge { size, max } => {
                write!(f, "payload of {size} bytes is over the tick limit of {max}")
            }
        }
    }
}

impl std::error::Error for PayloadSizeError {}

/// Checks a payload size against the header and an upper limit.
pub fn check_size(size: usize, max: usize) -> Result<(), PayloadSizeError> {
    if size < HEADER_LEN {
        return Err(PayloadSizeError::TooSmall { size });
    }
    if size > max {
        return Err(PayloadSizeError::TooLarge { size, max });
    }
    Ok(())
}

impl Header {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `buf`; the rest
    /// (padding) is left as it is.
    pub fn write(&self, buf: &mut [u8]) -> Result<(), PayloadSizeError> {
        let Some(head) = buf.get_mut(..HEADER_LEN) else {
            return Err(PayloadSizeError::TooSmall { size: buf.len() });
        };
        head[0..4].copy_from_slice(&self.sender.to_le_bytes());
        head[4..12].copy_from_slice(&self.send_ns.to_le_bytes());
        head[12..16].copy_from_slice(&self.seq.to_le_bytes());
        Ok(())
    }

    /// Reads the header from a received payload; `None` if it is too short.
    pub fn read(buf: &[u8]) -> Option<Header> {
        let head = buf.get(..HEADER_LEN)?;
        let sender = u32::from_le_bytes(head[0..4].try_into().ok()?);
        let send_ns = u64::from_le_bytes(head[4..12].try_into().ok()?);
        let seq = u32::from_le_bytes(head[12..16].try_into().ok()?);
        Some(Header {
            sender,
            send_ns,
            seq,
        })
    }
}

/// A payload buffer of `size` bytes whose padding is pseudo-random from `seed`
/// (so payloads do not compress to nothing, and a run is reproducible).
pub fn padded_buffer(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut buf = Vec::with_capacity(size);
    while buf.len() < size {
        let word = splitmix64(&mut state).to_le_bytes();
        let take = word.len().min(size - buf.len());
        buf.extend_from_slice(&word[..take]);
    }
    buf
}

/// SplitMix64: a tiny deterministic generator, enough for padding and stagger order.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Per-sender duplicate detection over the last [`SeenWindow::SPAN`] sequence
/// numbers: a bitmap sliding with the highest sequence seen.
#[derive(Debug, Clone, Default)]
pub struct SeenWindow {
    /// Highest sequence seen + 1 (0: nothing seen yet).
    next: u64,
    /// Bit `i` set: sequence `next - 1 - i` was seen.
    bits: u128,
}

/// What a receiver makes of one (sender, seq).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time seen.
    New,
    /// Seen before: a duplicate.
    Duplicate,
    /// Older than the window can tell; not counted as delivered or duplicate.
    TooOld,
}

impl SeenWindow {
    /// Sequence numbers remembered per sender.
    pub const SPAN: u64 = 128;

    /// Records `seq` and says whether it is new.
    pub fn observe(&mut self, seq: u32) -> Seen {
        let seq = u64::from(seq);
        if seq >= self.next {
            let shift = seq + 1 - self.next;
            self.bits = if shift >= Self::SPAN {
                0
            } else {
                self.bits << shift
            };
            self.bits |= 1;
            self.next = seq + 1;
            return Seen::New;
        }
        let age = self.next - 1 - seq;
        if age >= Self::SPAN {
            return Seen::TooOld;
        }
        let mask = 1u128 << age;
        if self.bits & mask != 0 {
            Seen::Duplicate
        } else {
            self.bits |= mask;
            Seen::New
        }
    }
}

/// Duplicate windows of every sender of one room, by global sender index:
/// what a receiver uses to attribute and judge each message it gets.
#[derive(Debug, Clone)]
pub struct RoomSenders {
    /// Global index of the room's first client.
    room_base: u32,
    windows: Vec<SeenWindow>,
}

impl RoomSenders {
    /// For room `room_index` of rooms of `clients_per_room` clients.
    pub fn new(room_index: u32, clients_per_room: u32) -> RoomSenders {
        RoomSenders {
            room_base: room_index.saturating_mul(clients_per_room),
            windows: vec![SeenWindow::default(); clients_per_room as usize],
        }
    }

    /// Records `(h.sender, h.seq)`: the sender's index in the room and whether
    /// the message is new; `None` when the sender is not in this room.
    pub fn observe(&mut self, h: &Header) -> Option<(u32, Seen)> {
        let in_room = h.sender.checked_sub(self.room_base)?;
        let window = self.windows.get_mut(in_room as usize)?;
        Some((in_room, window.observe(h.seq)))
    }

    /// Judges one received message (a tick's payload, a state value, a
    /// command's payload): if it is new and was sent inside `window_ns` (ns
    /// since the bench epoch, end excluded), the sender's index in the room
    /// and the header. Otherwise `None`, and what was wrong with it is
    /// counted in `anomalies`; a message merely sent outside the window is
    /// not an anomaly.
    pub fn receive(
        &mut self,
        bytes: &[u8],
        window_ns: Range<u64>,
        anomalies: &mut Anomalies,
    ) -> Option<(u32, Header)> {
        let Some(h) = Header::read(bytes) else {
            anomalies.undecodable += 1;
            return None;
        };
        let Some((in_room, verdict)) = self.observe(&h) else {
            anomalies.misrouted += 1;
            return None;
        };
        if !window_ns.contains(&h.send_ns) {
            return None;
        }
        match verdict {
            Seen::New => return Some((in_room, h)),
            Seen::Duplicate => anomalies.duplicates += 1,
            Seen::TooOld => anomalies.too_old += 1,
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_keeps_padding() {
        let mut buf = padded_buffer(48, 7);
        let padding = buf[HEADER_LEN..].to_vec();
        let h = Header {
            sender: 0xDEAD_BEEF,
            send_ns: 0x0123_4567_89AB_CDEF,
            seq: 42,
        };
        h.write(&mut buf).expect("48 bytes fit the header");
        assert_eq!(Header::read(&buf), Some(h));
        assert_eq!(&buf[HEADER_LEN..], &padding[..]);
        assert_eq!(buf.len(), 48);
        // Exactly the header size works too.
        let mut small = vec![0u8; HEADER_LEN];
        h.write(&mut small).expect("fits");
        assert_eq!(Header::read(&small), Some(h));
    }

    #[test]
    fn header_layout_is_little_endian() {
        let mut buf = vec![0u8; HEADER_LEN];
        Header {
            sender: 1,
            send_ns: 2,
            seq: 3,
        }
        .write(&mut buf)
        .expect("fits");
        assert_eq!(buf, [1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0]);
    }

    #[test]
    fn short_payloads_are_refused() {
        assert_eq!(
            check_size(15, 1000),
            Err(PayloadSizeError::TooSmall { size: 15 })
        );
        assert_eq!(
            check_size(0, 1000),
            Err(PayloadSizeError::TooSmall { size: 0 })
        );
        assert_eq!(check_size(16, 1000), Ok(()));
        assert_eq!(check_size(1000, 1000), Ok(()));
        assert_eq!(
            check_size(1001, 1000),
            Err(PayloadSizeError::TooLarge {
                size: 1001,
                max: 1000
            })
        );
        let mut tiny = vec![0u8; 15];
        let h = Header {
            sender: 0,
            send_ns: 0,
            seq: 0,
        };
        assert!(h.write(&mut tiny).is_err());
        assert_eq!(Header::read(&tiny), None);
        assert!(
            check_size(8, 1000)
                .expect_err("too small")
                .to_string()
                .contains("16")
        );
    }

    #[test]
    fn padding_is_deterministic_per_seed() {
        assert_eq!(padded_buffer(100, 1), padded_buffer(100, 1));
        assert_ne!(padded_buffer(100, 1), padded_buffer(100, 2));
        assert_eq!(padded_buffer(13, 1).len(), 13);
    }

    #[test]
    fn room_senders_attribute_by_global_index() {
        // Room 2 of rooms of 3: global senders 6, 7, 8.
        let mut senders = RoomSenders::new(2, 3);
        let h = |sender, seq| Header {
            sender,
            send_ns: 0,
            seq,
        };
        assert_eq!(senders.observe(&h(7, 0)), Some((1, Seen::New)));
        assert_eq!(senders.observe(&h(7, 0)), Some((1, Seen::Duplicate)));
        assert_eq!(
            senders.observe(&h(6, 0)),
            Some((0, Seen::New)),
            "per sender"
        );
        assert_eq!(senders.observe(&h(8, 5)), Some((2, Seen::New)));
        assert_eq!(senders.observe(&h(5, 0)), None, "room 1");
        assert_eq!(senders.observe(&h(9, 0)), None, "room 3");
    }

    #[test]
    fn receive_counts_what_is_not_a_delivery() {
        let mut senders = RoomSenders::new(1, 2); // global senders 2 and 3
        let mut anomalies = Anomalies::default();
        let bytes = |sender, send_ns, seq| {
            let mut buf = vec![0u8; HEADER_LEN];
            let h = Header {
                sender,
                send_ns,
                seq,
            };
            h.write(&mut buf).expect("fits");
            buf
        };
        let window = 100..200;
        let mut got = |b: &[u8], a: &mut Anomalies| senders.receive(b, window.clone(), a);
        let new = got(&bytes(3, 150, 0), &mut anomalies);
        assert_eq!(new.map(|(k, h)| (k, h.send_ns)), Some((1, 150)));
        assert_eq!(got(&bytes(3, 150, 0), &mut anomalies), None);
        assert_eq!(got(&bytes(1, 150, 0), &mut anomalies), None);
        assert_eq!(got(&[0u8; 4], &mut anomalies), None);
        // Sent before the window or at its end: neither delivered nor anomalous.
        assert_eq!(got(&bytes(2, 99, 0), &mut anomalies), None);
        assert_eq!(got(&bytes(2, 200, 1), &mut anomalies), None);
        assert!(got(&bytes(2, 100, 500), &mut anomalies).is_some());
        assert_eq!(got(&bytes(2, 100, 2), &mut anomalies), None, "too old");
        assert_eq!(
            anomalies,
            Anomalies {
                duplicates: 1,
                misrouted: 1,
                too_old: 1,
                undecodable: 1,
            }
        );
    }

    #[test]
    fn seen_window_finds_duplicates() {
        let mut w = SeenWindow::default();
        assert_eq!(w.observe(0), Seen::New);
        assert_eq!(w.observe(0), Seen::Duplicate);
        assert_eq!(w.observe(2), Seen::New);
        assert_eq!(w.observe(1), Seen::New, "reordered, not a duplicate");
        assert_eq!(w.observe(1), Seen::Duplicate);
        assert_eq!(w.observe(2), Seen::Duplicate);
        assert_eq!(w.observe(500), Seen::New);
        assert_eq!(w.observe(500 - 127), Seen::New);
        assert_eq!(w.observe(500 - 127), Seen::Duplicate);
        assert_eq!(w.observe(500 - 128), Seen::TooOld);
        assert_eq!(w.observe(2), Seen::TooOld);
        // A jump wider than the window forgets everything before it.
        assert_eq!(w.observe(10_000), Seen::New);
        assert_eq!(w.observe(9_999), Seen::New);
        assert_eq!(w.observe(u32::MAX), Seen::New);
        assert_eq!(w.observe(u32::MAX), Seen::Duplicate);
    }
}
