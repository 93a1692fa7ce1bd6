//! Newtypes for the ids and counters that cross module boundaries.
//!
//! Units and qualifiers go last in names (`segment_bytes_max`); a bare
//! integer never stands for two different things.

use std::fmt;

/// A point on the driver's monotonic clock, in nanoseconds since an arbitrary
/// origin chosen by the driver. Core never reads a clock: every input carries
/// `now: Time`. Wall-clock time is never compared across nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    /// The instant `nanos` nanoseconds after `self` (saturating).
    #[must_use]
    pub fn plus_nanos(self, nanos: u64) -> Time {
        Time(self.0.saturating_add(nanos))
    }
}

/// Index of a log entry: a dense counter starting at 1. It is **not** the
/// etcd revision (entries such as compactions take no revision).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Index(pub u64);

impl Index {
    /// The index after this one.
    #[must_use]
    pub fn next(self) -> Index {
        Index(self.0 + 1)
    }
}

impl fmt::Display for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Leadership term. Local mode always writes term 1; terms only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Term(pub u64);

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An etcd revision: the store starts at 1 and every committed mutation takes
/// the next one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision(pub i64);

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Stable identity of a member of the cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

/// Identifies one client request from the driver's point of view; the reply
/// to it carries the same id. Chosen by the driver, unique while in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReqId(pub u64);

/// Identifies one I/O request core asked the driver to perform. Completions
/// carry it back together with the term the request was issued in, so a
/// completion from an older term can be recognised and dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IoId(pub u64);
