//! t4-io-real: the real-world driver. It executes what t4-core asks for with
//! real files, RocksDB, sockets and clocks, and feeds the results back.
#![warn(missing_docs)]

pub mod engine;
pub mod wal;

mod config;
mod driver;
mod node;

pub use config::{Config, ReadConsistency};
pub use engine::RocksEngine;
pub use node::{Node, NodeStatus, OpenError};
