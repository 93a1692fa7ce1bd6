//! Lease expiry storm: grants N leases with one key each, all expiring at
//! about the same time, while one client keeps putting serially. Reports
//! how long the revokes took (from the first to the last key vanishing)
//! and the put latency before and during the storm. Works against any
//! etcd-compatible server. Usage:
//!   lease_storm <endpoint> <leases> <ttl seconds>
//! e.g. `lease_storm http://127.0.0.1:3379 5000 3`.

use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, PutOptions};

fn pct(sorted: &[Duration], p: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_micros()
}

fn summary(name: &str, mut lat: Vec<Duration>) {
    lat.sort_unstable();
    println!(
        "{name}: {} puts, p50 {} µs, p99 {} µs, max {} µs",
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().map_or(0, Duration::as_micros)
    );
}

async fn storm_keys(c: &mut Client) -> i64 {
    c.get(
        "storm/",
        Some(GetOptions::new().with_prefix().with_count_only()),
    )
    .await
    .expect("count")
    .count()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let endpoint = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:3379".into());
    let leases: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5000);
    let ttl: i64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let c = Client::connect([endpoint], None).await.expect("connect");

    // Grant and attach with 16 concurrent clients, so every lease expires
    // within a short window.
    let granted_at = Instant::now();
    let per = leases / 16;
    let tasks: Vec<_> = (0..16)
        .map(|w| {
            let mut c = c.clone();
            tokio::spawn(async move {
                for i in 0..per {
                    let id = c.lease_grant(ttl, None).await.expect("grant").id();
                    c.put(
                        format!("storm/{w}/{i}"),
                        "v",
                        Some(PutOptions::new().with_lease(id)),
                    )
                    .await
                    .expect("put with lease");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let grant_s = granted_at.elapsed().as_secs_f64();
    println!(
        "granted {} leases with TTL {ttl} s in {grant_s:.2} s",
        per * 16
    );

    // Serial puts until every storm key is gone; sample the key count.
    let mut writer = c.clone();
    let mut counter = c.clone();
    let mut before = Vec::new();
    let mut during = Vec::new();
    let mut first_gone: Option<Instant> = None;
    let mut last_sample = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(u64::try_from(ttl).unwrap_or(3) * 4 + 20);
    let mut i = 0u64;
    loop {
        let t = Instant::now();
        writer
            .put(format!("writer/{i}"), "x", None)
            .await
            .expect("put");
        let lat = t.elapsed();
        i += 1;
        if first_gone.is_some() {
            during.push(lat);
        } else {
            before.push(lat);
        }
        if last_sample.elapsed() >= Duration::from_millis(50) {
            last_sample = Instant::now();
            let left = storm_keys(&mut counter).await;
            if left < (per * 16) as i64 && first_gone.is_none() {
                first_gone = Some(Instant::now());
            }
            if left == 0 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "leases did not expire in time");
    }
    let storm_s = first_gone.map_or(0.0, |t| t.elapsed().as_secs_f64());
    println!(
        "all {} keys gone {:.2} s after the first; {:.0} revokes/s",
        per * 16,
        storm_s,
        (per * 16) as f64 / storm_s.max(0.001)
    );
    summary("puts before expiry", before);
    summary("puts during the storm", during);
}
