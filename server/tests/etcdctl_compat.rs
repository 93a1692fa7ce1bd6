//! etcdctl compatibility: the same sequence of `etcdctl` commands is run against a real etcd and
//! against the `t4` binary, and every answer (exit code, stdout, stderr) must be identical once
//! cluster id, member id and raft term are normalised.
//!
//! The work is done by `scripts/compat/etcdctl_compat.py` (the command sequence is in
//! `scripts/compat/commands.py`); this test builds `t4`, runs the script and forwards its output
//! line by line (shown on failure, or live with `--nocapture`). Set `T4_COMPAT_KEEP_LOGS=DIR`
//! to keep both servers' logs and a transcript of every answer.
//!
//! etcd, etcdctl (Debian packages etcd-server, etcd-client) and python3 are required: when one
//! is missing the test fails, it does not skip, so that a machine without them is noticed.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;

const SETUP_HINT: &str = "run the project's setup, `scripts/setup`: it installs etcd (Debian \
     etcd-server), etcdctl (Debian etcd-client) and python3";

/// The first executable file called `name` on `PATH`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn require_tool(name: &str) -> PathBuf {
    find_on_path(name).unwrap_or_else(|| {
        panic!("`{name}` is not installed (not found on PATH); the etcdctl compatibility test needs it: {SETUP_HINT}")
    })
}

/// Kills the script if the test unwinds before it exited (the script itself then stops the
/// servers it started: it handles SIGTERM, and its servers die with it).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn forward_lines<R: Read + Send + 'static>(reader: R, to_stderr: bool) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(reader).split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line);
            if to_stderr {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
        }
    })
}

/// etcdctl answers from `t4` are identical to a real etcd's for the whole KV command sequence.
#[test]
fn etcdctl_answers_match_etcd() {
    let python = require_tool("python3");
    let etcd = require_tool("etcd");
    let etcdctl = require_tool("etcdctl");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/compat/etcdctl_compat.py");
    assert!(script.is_file(), "missing {}", script.display());
    let t4 = env!("CARGO_BIN_EXE_t4");

    let mut cmd = Command::new(python);
    cmd.arg(&script)
        .arg("--t4-bin")
        .arg(t4)
        .arg("--etcd-bin")
        .arg(&etcd)
        .arg("--etcdctl-bin")
        .arg(&etcdctl)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = std::env::var_os("T4_COMPAT_KEEP_LOGS") {
        cmd.arg("--keep-logs").arg(dir);
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", script.display()));
    let mut guard = ChildGuard(child);
    let out = forward_lines(guard.0.stdout.take().expect("stdout is piped"), false);
    let err = forward_lines(guard.0.stderr.take().expect("stderr is piped"), true);
    let status = guard.0.wait().expect("wait for etcdctl_compat.py");
    out.join().expect("stdout forwarder");
    err.join().expect("stderr forwarder");

    let keep_hint = "Rerun with T4_COMPAT_KEEP_LOGS=DIR to keep both servers' logs and a \
                     transcript of every answer.";
    match status.code() {
        Some(0) => {}
        Some(2) => panic!(
            "etcdctl_compat.py could not run the comparison ({status}): a server did not start \
             or answer, see its log above. {keep_hint}"
        ),
        _ => panic!(
            "etcdctl_compat.py {status}: t4 answered etcdctl differently from etcd, or died \
             (each differing command is printed above with both answers side by side). \
             {keep_hint}"
        ),
    }
}
