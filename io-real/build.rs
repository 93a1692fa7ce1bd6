//! Intentionally empty: this build script exists only so the
//! `[build-dependencies]` in Cargo.toml pin the host-side features RocksDB's
//! build script sees (see the comment there).
fn main() {}
