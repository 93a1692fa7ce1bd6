//! t4-core: the sans-I/O heart of t4.
//!
//! Every decision lives here: MVCC (`mvcc`), the WAL codec (`wal`), the log
//! entry (`log`) and the node state machine (`node`) that batches client
//! writes into log entries, asks the driver for appends and fsyncs, applies
//! committed entries and releases replies. This crate does no I/O, reads no
//! clock and draws no entropy (enforced by `clippy.toml`); drivers (io-real
//! with tokio and RocksDB, io-sim with madsim) execute what it asks for.
#![warn(missing_docs)]

pub mod bucket;
pub mod cluster;
pub mod engine;
pub mod error;
pub mod kv;
pub mod lease;
pub mod log;
pub mod mvcc;
pub mod node;
pub mod object;
pub mod types;
pub mod wal;
pub mod watch;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use engine::{KvEngine, KvRead, MemEngine, WriteBatch};
pub use error::{Error, Invalid, Result};
pub use node::{Action, ClientRequest, IoDone, Node, NodeConfig, Response};
pub use types::{Index, IoId, NodeId, ReqId, Revision, Term, Time};
