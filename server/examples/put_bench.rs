//! A first, minimal put benchmark over the etcd v3 API (the full `t4 bench`
//! comes with its own issue). Usage:
//!   put_bench <endpoint> <total puts> <concurrency>
//! Prints one line: ops/s, p50 and p99 latency in microseconds.

use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let endpoint = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:3379".into());
    let total: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let concurrency: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1);
    let per_client = total / concurrency;
    let value = vec![b'v'; 256];

    let mut clients = Vec::new();
    for _ in 0..concurrency {
        let mut c = etcd_client::Client::connect([endpoint.clone()], None)
            .await
            .expect("connect");
        c.put("warmup", "x", None).await.expect("warm-up put");
        clients.push(c);
    }
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(w, mut c)| {
            let value = value.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    let t = Instant::now();
                    c.put(format!("bench/{w}/{i}"), value.clone(), None)
                        .await
                        .expect("put");
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<Duration> = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("task"));
    }
    let elapsed = started.elapsed();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_micros();
    println!(
        "puts={} concurrency={} ops/s={:.0} p50_us={} p99_us={}",
        lat.len(),
        concurrency,
        lat.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99)
    );
}
