//! `t4 bench` against a real `t4`: every workload completes with no error
//! and reports one well-formed JSON line; bad input fails fast and clearly.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::Server;

/// Runs `t4 bench` with `args` and returns its output.
fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_t4"))
        .arg("bench")
        .args(args)
        .output()
        .expect("run t4 bench")
}

/// A started server that answers, with its data directory kept alive.
async fn server() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("data"), &[]);
    server.client().await;
    (server, dir)
}

/// Runs one workload and checks the JSON line's contract; returns it.
fn run_workload(endpoint: &str, workload: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "--endpoints",
        endpoint,
        "--workload",
        workload,
        "--output",
        "jsonl",
        "--warmup",
        "10",
        "--keys",
        "300",
        "--clients",
    ];
    let single = matches!(workload, "seq-put" | "seq-get" | "watch" | "watch-fanout");
    args.push(if single { "1" } else { "4" });
    args.extend_from_slice(extra);
    if !extra.contains(&"--duration") {
        args.extend_from_slice(&["--total", "200"]);
    }
    let out = bench(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{workload}: exit {}; stdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{workload}: one line expected:\n{stdout}");
    let report: serde_json::Value = serde_json::from_str(lines[0]).expect("valid JSON");
    let fields: Vec<&str> = report
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = [
        "workload",
        "endpoint",
        "clients",
        "ops",
        "errors",
        "duration_s",
        "ops_per_sec",
        "p50_us",
        "p90_us",
        "p99_us",
        "p999_us",
        "key_size",
        "val_size",
        "conflicts",
    ];
    expected.sort_unstable();
    let mut got = fields.clone();
    got.sort_unstable();
    assert_eq!(
        got, expected,
        "{workload}: the jsonl fields are the contract"
    );
    let u = |f: &str| {
        report[f]
            .as_u64()
            .unwrap_or_else(|| panic!("{f} in {report}"))
    };
    let x = |f: &str| {
        report[f]
            .as_f64()
            .unwrap_or_else(|| panic!("{f} in {report}"))
    };
    assert_eq!(report["workload"], workload);
    assert_eq!(report["endpoint"], endpoint);
    if extra.contains(&"--duration") {
        assert!(u("ops") > 0, "{report}");
    } else {
        assert_eq!(u("ops"), 200, "{report}");
    }
    assert_eq!(u("errors"), 0, "{report}; stderr:\n{stderr}");
    assert!(x("ops_per_sec") > 0.0, "{report}");
    assert!(x("duration_s") > 0.0, "{report}");
    assert!(u("p50_us") > 0, "{report}");
    assert!(u("p50_us") <= u("p90_us"), "{report}");
    assert!(u("p90_us") <= u("p99_us"), "{report}");
    assert!(u("p99_us") <= u("p999_us"), "{report}");
    assert_eq!((u("key_size"), u("val_size")), (64, 256), "{report}");
    if workload != "txn-cas" {
        assert_eq!(u("conflicts"), 0, "{report}");
    }
    report
}

/// Every workload runs 200 operations against t4 without an error.
#[tokio::test]
async fn every_workload_completes() {
    let (server, _dir) = server().await;
    let ep = server.endpoint();
    for workload in [
        "seq-put",
        "par-put",
        "seq-get",
        "par-get",
        "mixed",
        "range-100",
        "txn-cas",
        "watch",
        "lease-churn",
    ] {
        run_workload(&ep, workload, &[]);
    }
    let fanout = run_workload(&ep, "watch-fanout", &["--watchers", "10"]);
    assert_eq!(fanout["clients"], 1, "watchers are not clients");
}

/// Workers contending on few keys make txn-cas conflicts, which are not errors.
#[tokio::test]
async fn txn_cas_counts_conflicts() {
    let (server, _dir) = server().await;
    let out = bench(&[
        "--endpoints",
        &server.endpoint(),
        "--workload",
        "txn-cas",
        "--keys",
        "2",
        "--clients",
        "8",
        "--total",
        "400",
        "--warmup",
        "0",
        "--output",
        "jsonl",
    ]);
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["ops"], 400, "{report}");
    assert!(
        report["conflicts"].as_u64().expect("conflicts") > 0,
        "8 writers on 2 keys must conflict: {report}"
    );
}

/// --duration measures for about that long, and the text output is a
/// short block with the numbers.
#[tokio::test]
async fn duration_and_text_output() {
    let (server, _dir) = server().await;
    let ep = server.endpoint();
    run_workload(&ep, "par-put", &["--duration", "500ms"]);
    let out = bench(&[
        "--endpoints",
        &ep,
        "--workload",
        "seq-put",
        "--total",
        "50",
        "--warmup",
        "100ms",
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(text.starts_with("workload   seq-put (1 clients"), "{text}");
    assert!(text.contains("ops        50 in "), "{text}");
    assert!(text.contains("p99"), "{text}");
    assert!(out.stderr.is_empty(), "no progress line without a terminal");
}

/// An unknown workload is a usage error from clap, before any connection.
#[test]
fn unknown_workload_is_refused() {
    let out = bench(&["--workload", "no-such-load"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage error: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-load"), "{stderr}");
    assert!(stderr.contains("par-put"), "lists the workloads: {stderr}");
}

/// Flags that contradict the workload are refused with the reason.
#[test]
fn single_client_workloads_refuse_more() {
    let out = bench(&["--workload", "seq-put", "--clients", "4"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exactly one client"), "{stderr}");
}

/// Nobody listening: a non-zero exit, a message naming the endpoint, and
/// no JSON line, well within the connect timeout.
#[test]
fn unreachable_endpoint_fails_fast() {
    let endpoint = format!("http://{}", common::free_addr());
    let started = Instant::now();
    let out = bench(&[
        "--endpoints",
        &endpoint,
        "--workload",
        "par-put",
        "--output",
        "jsonl",
        "--connect-timeout",
        "2s",
    ]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "no report: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach") && stderr.contains(&endpoint),
        "{stderr}"
    );
}
