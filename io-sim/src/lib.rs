//! t4-io-sim: drives the real `t4-core` node inside madsim (ARCHITECTURE §2,
//! §6 layer 2, §8.3).
//!
//! - [`disk`]: the fake disk — unsynced bytes are lost on a crash, the last
//!   write may be torn, fsync and write errors can be injected, the whole
//!   disk can be lost. It lives outside the madsim node, so a restart finds
//!   what was durable.
//! - [`checkpoint`]: checkpoints of the engine as in-memory files (SSTs
//!   by content-defined chunks, so unchanged ones are reused), and the
//!   start-up restore from the bucket with io-real's fallback rules.
//! - [`engine`]: core's `MemEngine` with a durable image that behaves like
//!   RocksDB without its own WAL (flushes persist, memtables flush on their
//!   own in order).
//! - [`wal`]: the WAL segment files on the fake disk, replayed with core's
//!   `plan_replay` (the same decisions as io-real), and the run's ledger of
//!   durable entries.
//! - [`hard_state`]: the few bytes a node must not forget across a crash
//!   (cluster mode: the highest term it promised), saved atomically on the
//!   fake disk with io-real's steps.
//! - [`server`]: one node process — the core `Node` and its driver loop —
//!   serving clients over madsim's network.
//! - [`client`]: what a simulated client uses to talk to a node.
//! - [`clock`]: per-node clocks with drift and wall-clock offset.
//! - [`s3`]: the fake S3 — a bucket on its own madsim node, with seeded
//!   latency, throttling, 500s, lost answers, late landings, 409s and outages.
//!
//! Everything random comes from madsim's seeded RNG; nothing here reads the
//! host's clock, touches real files or opens real sockets. RocksDB, tokio's
//! networking and the AWS SDK are not in this crate's dependency tree.
#[cfg(not(madsim))]
compile_error!("t4-io-sim only builds with `--cfg madsim` (set for every build by the workspace's .cargo/config.toml)");

pub mod checkpoint;
pub mod client;
pub mod clock;
pub mod disk;
pub mod engine;
pub mod hard_state;
pub mod proto;
pub mod s3;
pub mod server;
pub mod wal;
