//! Free loopback addresses for servers a test starts later (shared by
//! io-real's and the server's tests through `#[path]`).
//!
//! Binding port 0 and releasing it hands out a port from the kernel's
//! ephemeral range, and until the server binds it any outgoing connection
//! (a client, a peer stream, moto's) may take the same port as its source
//! port: CI once failed with "cannot listen for peers …: Address already in
//! use" so. These ports come from below that range, where the kernel never
//! puts a source port, picked at random so that test processes running side
//! by side rarely pick the same one, and only if they bind now.

use std::collections::hash_map::RandomState;
use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;

/// The lowest port handed out.
const LOWEST: u16 = 10_000;

/// Ports this process handed out already: a port released after the check
/// is free again, so two calls could otherwise return the same one (CI once
/// started a server whose `--listen` and `--metrics-addr` were equal).
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A loopback address with a port below the ephemeral range that is free
/// now (bound and released), never one this process handed out before.
pub fn free_addr() -> SocketAddr {
    let top = ephemeral_low().max(LOWEST + 1_000);
    let span = u64::from(top - LOWEST);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1_000 {
        let port = LOWEST + (random() % span) as u16;
        if handed_out.contains(&port) {
            continue;
        }
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            handed_out.insert(port);
            return l.local_addr().expect("local addr");
        }
    }
    panic!("no free loopback port in {LOWEST}..{top}");
}

/// The first port of the kernel's ephemeral range (32768 if unknown).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A random number without a dependency: std seeds each process's hash keys
/// at random and changes them with every `RandomState`.
fn random() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}
