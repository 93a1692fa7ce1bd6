//! t4-io-real: the real-world driver. It executes what t4-core asks for with
//! real files, RocksDB, sockets and clocks, and feeds the results back.
#![warn(missing_docs)]

pub mod checkpoint;
pub mod engine;
pub mod hard_state;
pub mod object;
pub mod peer;
pub mod wal;

pub mod snapshot;

mod config;
mod driver;
mod node;
mod watch_stream;

pub use config::{ClusterOptions, Config, FollowerWaitMode, PeerTls, ReadConsistency};
pub use engine::RocksEngine;
pub use node::{member_id_of, ClusterStatus, Node, NodeStatus, OpenError};
pub use snapshot::{restore_snapshot, RestoreError, RestoreReport, SnapshotStream};
pub use watch_stream::{WatchControl, WatchStream};

// The core types the embedding API speaks, so embedders need not depend on
// t4-core themselves.
pub use t4_core::bucket::lock::Member;
pub use t4_core::kv;
pub use t4_core::node::ClusterRole;
pub use t4_core::watch::{StreamId, WatchOutput};
pub use t4_core::{Error, Index, Invalid, NodeId, Term};
