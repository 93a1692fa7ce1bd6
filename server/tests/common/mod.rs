//! Starts the real `t4` binary on loopback for integration tests.

#![allow(dead_code)]

pub mod cluster;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[path = "../../../io-real/tests/support/ports.rs"]
mod ports;
pub use ports::free_addr;

/// A running `t4 run` process. Killed on drop.
pub struct Server {
    child: Option<Child>,
    /// The gRPC address.
    pub addr: SocketAddr,
    /// The metrics address.
    pub metrics: SocketAddr,
    /// The data directory.
    pub data_dir: PathBuf,
    log: PathBuf,
}

impl Server {
    /// Starts `t4 run` on `data_dir` with free ports and extra flags.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let addr = free_addr();
        let metrics = free_addr();
        let log = data_dir.with_extension("log");
        let log_file = std::fs::File::create(&log).expect("create log file");
        let child = Command::new(env!("CARGO_BIN_EXE_t4"))
            .args(["run", "--data-dir"])
            .arg(data_dir)
            .args([
                "--listen",
                &addr.to_string(),
                "--metrics-addr",
                &metrics.to_string(),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn t4");
        Server {
            child: Some(child),
            addr,
            metrics,
            data_dir: data_dir.to_path_buf(),
            log,
        }
    }

    /// The endpoint string for etcd clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the KV API answers; panics with the log after 60 s.
    pub async fn client(&mut self) -> etcd_client::Client {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("try_wait"))
            {
                panic!("t4 exited early with {status}; log:\n{}", self.log());
            }
            if let Ok(mut c) = etcd_client::Client::connect([self.endpoint()], None).await {
                if c.get("health-probe", None).await.is_ok() {
                    return c;
                }
            }
            assert!(
                Instant::now() < deadline,
                "t4 did not become ready; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id (panics once the process was killed or reaped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Sends `signal` (a name `kill` knows: `STOP`, `CONT` …) to the process.
    /// A stopped process is still killed by drop (SIGKILL ends it).
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -{signal} {}", self.pid());
    }

    /// The exit status if the process has exited, `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .expect("server not killed")
            .try_wait()
            .expect("try_wait")
    }

    /// Waits up to `limit` for the process to exit by itself; `None` if it
    /// still runs (it is left running).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill -9");
            c.wait().expect("wait");
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("server running");
        let ok = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = c.try_wait().expect("try_wait") {
                return s;
            }
            assert!(Instant::now() < deadline, "t4 did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A plain HTTP GET on loopback; returns (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect metrics");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t4\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut buf = String::new();
    s.read_to_string(&mut buf).expect("read");
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (code, body)
}

/// Awaits `fut`, panicking with `what` after 10 s (a hang is a failure).
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Opens a bidirectional gRPC call at the protobuf level, for what the
/// `etcd-client` crate hides (fragment flags, raw keep-alive ids, requests
/// without a body). Returns the request sender and the response stream.
pub async fn raw_bidi<Req, Resp>(
    endpoint: &str,
    path: &'static str,
) -> (tokio::sync::mpsc::Sender<Req>, tonic::Streaming<Resp>)
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + 'static,
{
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(64 << 20);
    grpc.ready().await.expect("channel ready");
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    let responses = grpc
        .streaming(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            tonic::codegen::http::uri::PathAndQuery::from_static(path),
            codec,
        )
        .await
        .expect("open the stream")
        .into_inner();
    (tx, responses)
}

/// The gRPC status inside an etcd-client error (panics on other errors).
pub fn status_of(e: etcd_client::Error) -> tonic::Status {
    match e {
        etcd_client::Error::GRpcStatus(s) => s,
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

/// The server's current revision (the header revision of a get).
pub async fn revision(c: &mut etcd_client::Client) -> i64 {
    c.get("any", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision()
}

/// The venv `scripts/setup` installs moto into.
pub fn moto_venv() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache")
        });
    cache.join("t4-rs/moto-venv")
}

/// A local S3 this test started: `scripts/pylib/moto_server.py`
/// (single-threaded, so conditional puts have one winner) on a free
/// loopback port. Killed on drop; it also exits by itself when the test
/// process dies (its stdin closes). The same start-up as io-real's
/// `tests/object_stores.rs`.
pub struct Moto {
    child: Child,
    /// The port it listens on.
    pub port: u16,
}

impl Moto {
    /// Starts moto; panics (telling to run `scripts/setup`) if its venv is
    /// missing or it is not ready within 60 s.
    pub fn start() -> Moto {
        const START_TIMEOUT: Duration = Duration::from_secs(60);
        let python = moto_venv().join("bin/python");
        assert!(
            python.exists(),
            "moto is not installed ({} is missing): run scripts/setup",
            python.display()
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pylib/moto_server.py");
        let started = Instant::now();
        let mut child = Command::new(&python)
            .arg(&script)
            .args(["--port", "0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {} {}: {e}", python.display(), script.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let port = loop {
            let left = START_TIMEOUT.saturating_sub(started.elapsed());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(port) = line.strip_prefix("MOTO_READY port=") {
                        break port.parse::<u16>().expect("a port number");
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let status = child.wait().expect("wait for moto");
                    panic!(
                        "moto did not get ready ({e:?} after {:?}, {status}); is it installed? run scripts/setup",
                        started.elapsed()
                    );
                }
            }
        };
        Moto { child, port }
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates `bucket` (an unsigned PUT, which moto accepts).
    pub fn create_bucket(&self, bucket: &str) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto");
        write!(
            s,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .expect("send");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("read");
        assert!(
            answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
            "PUT /{bucket}: {answer}"
        );
    }

    /// The `t4 run` flags for `bucket` under `prefix` on this server.
    pub fn flags(&self, bucket: &str, prefix: &str) -> Vec<String> {
        [
            "--s3-bucket",
            bucket,
            "--s3-prefix",
            prefix,
            "--s3-endpoint",
            &self.endpoint(),
            "--s3-region",
            "us-east-1",
            "--s3-access-key-id",
            "test",
            "--s3-secret-access-key",
            "test",
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Another process holding an `flock` (`flock(1)`), as a stopped process
/// holding a directory store's key lock would. Released on drop.
pub struct FlockHolder(Child);

impl FlockHolder {
    /// Takes the lock of `path` (creating the file) and waits until it is
    /// held.
    pub fn take(path: &Path) -> FlockHolder {
        // `-F`: no fork, so killing this child releases the lock.
        let mut child = Command::new("flock")
            .arg("-F")
            .arg(path)
            .args(["sh", "-c", "echo locked; exec sleep 600"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn flock (util-linux)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("read flock's output");
        assert_eq!(
            line,
            "locked\n",
            "flock took the lock of {}",
            path.display()
        );
        FlockHolder(child)
    }
}

impl Drop for FlockHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the `openssl` command-line tool in `dir` (for test certificates).
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl (the openssl command-line tool must be installed)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA `<name>.pem` / `<name>.key` in `dir`.
pub fn make_ca(dir: &Path, name: &str) {
    let (key, pem, subj) = (
        format!("{name}.key"),
        format!("{name}.pem"),
        format!("/CN={name}"),
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &subj,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A member certificate `<leaf>.pem` / `<leaf>.key` signed by CA `ca`,
/// valid for 127.0.0.1 as client and server. Returns the `--peer-tls-*`
/// flags for it.
pub fn make_leaf(dir: &Path, ca: &str, leaf: &str) -> Vec<String> {
    let (key, csr, pem, ext, subj) = (
        format!("{leaf}.key"),
        format!("{leaf}.csr"),
        format!("{leaf}.pem"),
        format!("{leaf}.ext"),
        format!("/CN={leaf}"),
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &subj,
        ],
    );
    std::fs::write(
        dir.join(&ext),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n",
    )
    .expect("write ext file");
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
    let path = |name: &str| dir.join(name).to_str().expect("utf-8 path").to_owned();
    vec![
        "--peer-tls-ca".to_owned(),
        path(&ca_pem),
        "--peer-tls-cert".to_owned(),
        path(&pem),
        "--peer-tls-key".to_owned(),
        path(&key),
    ]
}
