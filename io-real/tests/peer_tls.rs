//! Peer mTLS over loopback: TLS 1.3 only, both sides verified against the
//! cluster's CA. Certificates are made with the `openssl` command-line tool
//! for each test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use t4_core::cluster::PeerMsg;
use t4_core::Term;
use t4_io_real::peer::{self, Inbox, Listener, Outbox, PeerOptions, PeerTlsConfig, TlsError};
use t4_io_real::{Member, PeerTls};

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

/// A CA named `name` in `dir`: `<name>.pem`, `<name>.key`.
fn make_ca(dir: &Path, name: &str) {
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
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A member certificate `<leaf>.pem`/`<leaf>.key` signed by `ca`, valid for
/// `san` (e.g. `IP:127.0.0.1`), usable as client and server.
fn make_leaf(dir: &Path, ca: &str, leaf: &str, san: &str) -> PeerTls {
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
            &format!("{leaf}.key"),
            "-out",
            &format!("{leaf}.csr"),
            "-subj",
            &format!("/CN={leaf}"),
        ],
    );
    std::fs::write(
        dir.join(format!("{leaf}.ext")),
        format!(
            "subjectAltName={san}\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n"
        ),
    )
    .expect("write ext file");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{leaf}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{leaf}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{leaf}.ext"),
        ],
    );
    PeerTls {
        ca: dir.join(format!("{ca}.pem")),
        cert: dir.join(format!("{leaf}.pem")),
        key: dir.join(format!("{leaf}.key")),
    }
}

/// Two CAs; members a and b of `ca1` (valid for 127.0.0.1), c of `ca2`,
/// and d of `ca1` valid only for another host name.
struct Pki {
    _dir: tempfile::TempDir,
    a: PeerTls,
    b: PeerTls,
    c: PeerTls,
    d: PeerTls,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    make_ca(dir.path(), "ca1");
    make_ca(dir.path(), "ca2");
    Pki {
        a: make_leaf(dir.path(), "ca1", "a", "IP:127.0.0.1"),
        b: make_leaf(dir.path(), "ca1", "b", "IP:127.0.0.1,DNS:localhost"),
        c: make_leaf(dir.path(), "ca2", "c", "IP:127.0.0.1"),
        d: make_leaf(dir.path(), "ca1", "d", "DNS:elsewhere.example"),
        _dir: dir,
    }
}

fn prepare(term: u64) -> PeerMsg {
    PeerMsg::Prepare { term: Term(term) }
}

/// A TLS listener for member "b" whose messages land in the channel.
async fn listen(tls: &PeerTls) -> (Listener, mpsc::UnboundedReceiver<(Member, PeerMsg)>) {
    let config = PeerTlsConfig::load(tls).expect("load TLS files");
    let (tx, rx) = mpsc::unbounded_channel();
    let sink: peer::Sink = Arc::new(move |from, msg| tx.send((from, msg)).is_ok());
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let listener = peer::serve(socket, Inbox::new("b", sink), Some(&config)).expect("serve");
    (listener, rx)
}

fn outbox(id: &str, tls: Option<&PeerTls>) -> Outbox {
    Outbox::new(
        Member {
            id: id.into(),
            peer_addr: "127.0.0.1:1".into(),
        },
        PeerOptions {
            tls: tls.map(|t| PeerTlsConfig::load(t).expect("load TLS files")),
            ..PeerOptions::default()
        },
        tokio::runtime::Handle::current(),
    )
}

/// Sends `prepare(i)` every 50 ms for `limit` and reports whether anything
/// arrived (what did must come from `from`).
async fn delivered(
    outbox: &mut Outbox,
    to: &Member,
    rx: &mut mpsc::UnboundedReceiver<(Member, PeerMsg)>,
    from: &str,
    limit: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let mut i = 1;
    while tokio::time::Instant::now() < deadline {
        outbox.send(to, prepare(i));
        i += 1;
        if let Ok(Some((sender, _))) =
            tokio::time::timeout(Duration::from_millis(50), rx.recv()).await
        {
            assert_eq!(sender.id, from);
            return true;
        }
    }
    false
}

/// Members with certificates from the cluster's CA talk; one from another
/// CA, or without TLS, is refused at the handshake and never reaches the
/// node, while the listener keeps serving the good peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_peers_signed_by_the_cluster_ca_get_through() {
    let pki = pki();
    let (listener, mut rx) = listen(&pki.b).await;
    let to = Member {
        id: "b".into(),
        peer_addr: listener.local_addr().to_string(),
    };
    let mut good = outbox("a", Some(&pki.a));
    assert!(
        delivered(&mut good, &to, &mut rx, "a", Duration::from_secs(10)).await,
        "a peer signed by the CA gets through"
    );
    let mut foreign = outbox("c", Some(&pki.c));
    assert!(
        !delivered(&mut foreign, &to, &mut rx, "c", Duration::from_millis(1500)).await,
        "a peer signed by another CA is refused"
    );
    let mut plaintext = outbox("p", None);
    assert!(
        !delivered(
            &mut plaintext,
            &to,
            &mut rx,
            "p",
            Duration::from_millis(1500)
        )
        .await,
        "a plaintext peer is refused"
    );
    assert!(
        delivered(&mut good, &to, &mut rx, "a", Duration::from_secs(10)).await,
        "the listener still serves the good peer"
    );
    listener.stop();
}

/// A listener whose certificate does not name the host the member is
/// reached at is refused by the sender (no message leaves it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_named_for_another_host_is_refused() {
    let pki = pki();
    let (listener, mut rx) = listen(&pki.d).await;
    let to = Member {
        id: "b".into(),
        peer_addr: listener.local_addr().to_string(),
    };
    let mut sender = outbox("a", Some(&pki.a));
    assert!(!delivered(&mut sender, &to, &mut rx, "a", Duration::from_millis(1500)).await);
    listener.stop();
}

/// The listener speaks TLS 1.3 only: a TLS 1.2 client with a valid
/// certificate fails the handshake, a TLS 1.3 one completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_is_refused() {
    let pki = pki();
    let (listener, _rx) = listen(&pki.b).await;
    let addr = listener.local_addr().to_string();
    let handshake = |version: &'static str| {
        let (addr, a) = (addr.clone(), pki.a.clone());
        tokio::task::spawn_blocking(move || {
            Command::new("openssl")
                .args(["s_client", "-connect", &addr, version, "-alpn", "h2"])
                .arg("-cert")
                .arg(&a.cert)
                .arg("-key")
                .arg(&a.key)
                .arg("-CAfile")
                .arg(&a.ca)
                .args(["-verify_return_error", "-brief"])
                .stdin(Stdio::null())
                .output()
                .expect("run openssl s_client")
        })
    };
    let tls12 = handshake("-tls1_2").await.expect("task");
    assert!(
        !tls12.status.success(),
        "a TLS 1.2 handshake must fail: {}",
        String::from_utf8_lossy(&tls12.stderr)
    );
    let tls13 = handshake("-tls1_3").await.expect("task");
    let out = String::from_utf8_lossy(&tls13.stderr);
    assert!(tls13.status.success() && out.contains("TLSv1.3"), "{out}");
    listener.stop();
}

/// Bad files are refused when loaded, naming the file and what is wrong.
#[test]
fn bad_tls_files_are_refused_with_the_file_named() {
    let pki = pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not PEM at all\n").expect("write");
    let with = |f: &dyn Fn(&mut PeerTls)| {
        let mut files = pki.a.clone();
        f(&mut files);
        PeerTlsConfig::load(&files).expect_err("bad files")
    };
    let missing: PathBuf = dir.path().join("missing.pem");
    let e = with(&|f| f.ca = missing.clone());
    assert!(matches!(e, TlsError::Read { .. }), "{e}");
    assert!(
        e.to_string().contains("missing.pem") && e.to_string().contains("--peer-tls-ca"),
        "{e}"
    );
    let e = with(&|f| f.ca = junk.clone());
    assert!(
        e.to_string().contains("--peer-tls-ca") && e.to_string().contains("no certificate"),
        "{e}"
    );
    let e = with(&|f| f.cert = junk.clone());
    assert!(e.to_string().contains("--peer-tls-cert"), "{e}");
    let e = with(&|f| f.key = junk.clone());
    assert!(e.to_string().contains("--peer-tls-key"), "{e}");
    // b's key with a's certificate.
    let e = with(&|f| f.key = pki.b.key.clone());
    assert!(matches!(e, TlsError::Config(_)), "{e}");
    // The key file given as the certificate.
    let e = with(&|f| f.cert = pki.a.key.clone());
    assert!(e.to_string().contains("--peer-tls-cert"), "{e}");
}
