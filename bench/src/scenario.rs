//! The named scenario presets of issue 8 (S1..S5) and how a preset and the
//! explicit shape flags combine into the shape of a run.
//!
//! A preset fixes rooms, clients per room, tick rate and payload size; a flag
//! given explicitly wins over the preset. The run keeps the preset's name and
//! lists the fields an explicit flag changed, so a report never calls a run
//! "S2" when it was not S2's shape.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Tick payload size every preset uses: a pose (position, rotation,
/// sequence, timestamp).
pub const POSE_PAYLOAD_BYTES: usize = 48;

/// A named scenario of issue 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// 10 rooms × 5 clients at 30 Hz: the baseline comparison.
    S1,
    /// 50 rooms × 10 clients at 30 Hz: 135 000 deliveries per second.
    S2,
    /// 4 rooms × 50 clients at 30 Hz: dense rooms, 294 000 deliveries per second.
    S3,
    /// 20 rooms × 8 clients at 60 Hz.
    S4,
    /// 500 rooms × 4 clients at 20 Hz: 2000 connections.
    S5,
}

impl Scenario {
    /// Every preset, in order.
    pub const ALL: [Scenario; 5] = [
        Scenario::S1,
        Scenario::S2,
        Scenario::S3,
        Scenario::S4,
        Scenario::S5,
    ];

    /// `"s1"` .. `"s5"`, as `--scenario` takes it and the JSON line names it.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::S1 => "s1",
            Scenario::S2 => "s2",
            Scenario::S3 => "s3",
            Scenario::S4 => "s4",
            Scenario::S5 => "s5",
        }
    }

    /// The preset's shape.
    pub fn shape(self) -> Shape {
        let (rooms, clients_per_room, hz) = match self {
            Scenario::S1 => (10, 5, 30.0),
            Scenario::S2 => (50, 10, 30.0),
            Scenario::S3 => (4, 50, 30.0),
            Scenario::S4 => (20, 8, 60.0),
            Scenario::S5 => (500, 4, 20.0),
        };
        Shape {
            rooms,
            clients_per_room,
            hz,
            payload_bytes: POSE_PAYLOAD_BYTES,
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The size of a run's tick load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    pub rooms: u32,
    pub clients_per_room: u32,
    /// Ticks per second per client.
    pub hz: f64,
    pub payload_bytes: usize,
}

impl Shape {
    /// The shape of a run with neither a preset nor shape flags: S1's.
    pub fn default_shape() -> Shape {
        Scenario::S1.shape()
    }
}

/// Shape values given explicitly on the command line (`None`: not given).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ShapeFlags {
    pub rooms: Option<u32>,
    pub clients_per_room: Option<u32>,
    pub hz: Option<f64>,
    pub payload_bytes: Option<usize>,
}

/// The shape a run uses and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedShape {
    pub shape: Shape,
    /// The preset asked for, if any.
    pub scenario: Option<Scenario>,
    /// The fields (JSON `params` names) where an explicit flag replaced the
    /// preset's value with a different one. Empty without a preset.
    pub overrides: Vec<&'static str>,
}

/// The shape of a run: each field from its flag if given, else from the
/// preset, else from [`Shape::default_shape`].
pub fn resolve(scenario: Option<Scenario>, flags: ShapeFlags) -> ResolvedShape {
    let base = scenario.map_or_else(Shape::default_shape, Scenario::shape);
    let shape = Shape {
        rooms: flags.rooms.unwrap_or(base.rooms),
        clients_per_room: flags.clients_per_room.unwrap_or(base.clients_per_room),
        hz: flags.hz.unwrap_or(base.hz),
        payload_bytes: flags.payload_bytes.unwrap_or(base.payload_bytes),
    };
    let mut overrides = Vec::new();
    if scenario.is_some() {
        // A flag equal to the preset's value leaves the run that preset.
        let changed = [
            ("rooms", shape.rooms != base.rooms),
            (
                "clients_per_room",
                shape.clients_per_room != base.clients_per_room,
            ),
            ("hz", shape.hz != base.hz),
            ("payload_bytes", shape.payload_bytes != base.payload_bytes),
        ];
        overrides.extend(changed.iter().filter(|(_, c)| *c).map(|(name, _)| *name));
    }
    ResolvedShape {
        shape,
        scenario,
        overrides,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_the_shapes_of_issue_8() {
        let shapes: Vec<_> = Scenario::ALL
            .iter()
            .map(|s| {
                let sh = s.shape();
                (s.name(), sh.rooms, sh.clients_per_room, sh.hz)
            })
            .collect();
        assert_eq!(
            shapes,
            [
                ("s1", 10, 5, 30.0),
                ("s2", 50, 10, 30.0),
                ("s3", 4, 50, 30.0),
                ("s4", 20, 8, 60.0),
                ("s5", 500, 4, 20.0),
            ]
        );
        assert!(
            Scenario::ALL
                .iter()
                .all(|s| s.shape().payload_bytes == POSE_PAYLOAD_BYTES)
        );
        assert_eq!(
            serde_json::to_string(&Scenario::S3).expect("serializes"),
            "\"s3\""
        );
    }

    #[test]
    fn no_preset_and_no_flags_is_s1s_shape_unnamed() {
        let r = resolve(None, ShapeFlags::default());
        assert_eq!(r.shape, Scenario::S1.shape());
        assert_eq!(r.scenario, None);
        assert!(r.overrides.is_empty());
        // Flags without a preset are not overrides of anything.
        let r = resolve(
            None,
            ShapeFlags {
                rooms: Some(3),
                ..ShapeFlags::default()
            },
        );
        assert_eq!(r.shape.rooms, 3);
        assert_eq!(r.shape.clients_per_room, 5);
        assert!(r.overrides.is_empty());
    }

    #[test]
    fn an_explicit_flag_overrides_the_preset_and_is_named() {
        let r = resolve(
            Some(Scenario::S2),
            ShapeFlags {
                clients_per_room: Some(4),
                hz: Some(0.0),
                ..ShapeFlags::default()
            },
        );
        assert_eq!(
            r.shape,
            Shape {
                rooms: 50,
                clients_per_room: 4,
                hz: 0.0,
                payload_bytes: 48,
            }
        );
        assert_eq!(r.scenario, Some(Scenario::S2));
        assert_eq!(r.overrides, ["clients_per_room", "hz"]);
    }

    #[test]
    fn a_flag_equal_to_the_preset_is_no_override() {
        let r = resolve(
            Some(Scenario::S5),
            ShapeFlags {
                rooms: Some(500),
                payload_bytes: Some(64),
                ..ShapeFlags::default()
            },
        );
        assert_eq!(r.shape.rooms, 500);
        assert_eq!(r.shape.payload_bytes, 64);
        assert_eq!(r.overrides, ["payload_bytes"]);
    }
}
