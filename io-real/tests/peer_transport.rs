//! The peer transport over real loopback sockets: what arrives, what is
//! dropped, and that bad input never takes a receiver down.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use t4_core::cluster::PeerMsg;
use t4_core::kv::{PutRequest, WriteRequest};
use t4_core::{ClientRequest, Index, Term, Time};
use t4_io_real::peer::{self, Inbox, Listener, Outbox, PeerOptions};
use t4_io_real::Member;
use t4_proto::peer::{PeerClient, PeerFrame};

fn member(id: &str, addr: impl ToString) -> Member {
    Member {
        id: id.into(),
        peer_addr: addr.to_string(),
    }
}

fn ack(matched: u64) -> PeerMsg {
    PeerMsg::Ack {
        term: Term(3),
        matched: Index(matched),
        sent_at: Time(7),
    }
}

/// A listener for member `me` whose messages land in the returned channel.
async fn listen(me: &str, addr: &str) -> (Listener, mpsc::UnboundedReceiver<(Member, PeerMsg)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sink: peer::Sink = Arc::new(move |from, msg| tx.send((from, msg)).is_ok());
    let socket = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let listener = peer::serve(socket, Inbox::new(me, sink), None).expect("serve");
    (listener, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<(Member, PeerMsg)>) -> (Member, PeerMsg) {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a message within 10 s")
        .expect("the listener is up")
}

async fn raw_client(addr: std::net::SocketAddr) -> PeerClient {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    PeerClient::new(channel, peer::FRAME_BYTES_MAX)
}

/// Frames that do not decode, name no sender or are meant for another
/// member are dropped one by one; the stream carries on and the good
/// frames around them arrive, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_are_dropped_and_the_stream_survives() {
    let (listener, mut rx) = listen("b", "127.0.0.1:0").await;
    let mut client = raw_client(listener.local_addr()).await;
    let frame = |from: &str, to: &str, msg: Vec<u8>| PeerFrame {
        from_id: from.into(),
        from_addr: "a:1".into(),
        to_id: to.into(),
        msg,
    };
    let mut truncated = ack(5).encode();
    truncated.pop();
    let frames = vec![
        frame("a", "b", ack(1).encode()),
        frame("a", "b", vec![0xff, 0xff, 0xff]),
        frame("a", "b", Vec::new()),
        frame("a", "b", truncated),
        frame("a", "c", ack(99).encode()),
        frame("", "b", ack(98).encode()),
        frame("a", "b", ack(2).encode()),
    ];
    let (tx, frames_rx) = mpsc::channel(16);
    let call = tokio::spawn(async move {
        client
            .stream(tokio_stream::wrappers::ReceiverStream::new(frames_rx))
            .await
    });
    for f in frames {
        tx.send(f).await.expect("stream open");
    }
    assert_eq!(next(&mut rx).await, (member("a", "a:1"), ack(1)));
    assert_eq!(next(&mut rx).await, (member("a", "a:1"), ack(2)));
    // The same stream still works after the bad frames.
    tx.send(frame("a", "b", ack(3).encode()))
        .await
        .expect("stream open");
    assert_eq!(next(&mut rx).await, (member("a", "a:1"), ack(3)));
    drop(tx);
    let answer = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the call ends with its stream")
        .expect("task");
    assert!(
        answer.is_ok(),
        "a cleanly ended stream is answered: {answer:?}"
    );
    assert!(rx.try_recv().is_err(), "nothing else arrived");
    listener.stop();
}

/// A frame over the receiver's bound ends that stream with an error (it is
/// never buffered whole into memory); the sender can open a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_ends_only_its_stream() {
    const LIMIT: usize = 1 << 20;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sink: peer::Sink = Arc::new(move |from, msg| tx.send((from, msg)).is_ok());
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let listener = peer::serve_limited(socket, Inbox::new("b", sink), None, LIMIT).expect("serve");
    let mut client = raw_client(listener.local_addr()).await;
    let huge = PeerFrame {
        from_id: "a".into(),
        from_addr: "a:1".into(),
        to_id: "b".into(),
        msg: vec![0; LIMIT + 1],
    };
    let result = client.stream(tokio_stream::iter(vec![huge])).await;
    assert!(result.is_err(), "an oversized frame is refused");
    let ok = PeerFrame {
        from_id: "a".into(),
        from_addr: "a:1".into(),
        to_id: "b".into(),
        msg: ack(4).encode(),
    };
    client
        .stream(tokio_stream::iter(vec![ok]))
        .await
        .expect("a new stream works");
    assert_eq!(next(&mut rx).await.1, ack(4));
    listener.stop();
}

/// The outbox delivers in order, with the sender's identity, messages
/// over tonic's default 4 MiB limit included; after the receiver restarts
/// on the same address it reconnects by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_delivers_in_order_and_reconnects() {
    let (listener, mut rx) = listen("b", "127.0.0.1:0").await;
    let addr = listener.local_addr();
    let me = member("a", "127.0.0.1:1");
    let to = member("b", addr);
    let mut outbox = Outbox::new(
        me.clone(),
        PeerOptions::default(),
        tokio::runtime::Handle::current(),
    );
    for i in 1..=50 {
        outbox.send(&to, ack(i));
    }
    for i in 1..=50 {
        assert_eq!(next(&mut rx).await, (me.clone(), ack(i)));
    }
    let big = PeerMsg::Forward {
        id: 9,
        request: ClientRequest::Write(WriteRequest::Put(PutRequest {
            key: b"big".to_vec(),
            value: vec![7; 6 << 20],
            ..PutRequest::default()
        })),
    };
    outbox.send(&to, big.clone());
    assert_eq!(next(&mut rx).await.1, big);

    // The receiver goes away and comes back on the same port. Its sink
    // stays open: the stop itself must end the old stream.
    listener.stop();
    let _old = rx;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (listener, mut rx) = listen("b", &addr.to_string()).await;
    // Messages sent while it was away may be lost; keep sending until one
    // arrives (the link reconnects with backoff).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut i = 100;
    loop {
        outbox.send(&to, ack(i));
        if let Ok(Some((from, _))) =
            tokio::time::timeout(Duration::from_millis(100), rx.recv()).await
        {
            assert_eq!(from, me);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outbox reconnected"
        );
        i += 1;
    }
    listener.stop();
}

/// Sending never blocks the caller: to an address nobody listens on, with
/// a tiny queue, every message beyond the bound is dropped at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_to_an_unreachable_peer_never_blocks() {
    let nobody = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let mut outbox = Outbox::new(
        member("a", "127.0.0.1:1"),
        PeerOptions {
            queue_max: 2,
            tls: None,
        },
        tokio::runtime::Handle::current(),
    );
    let started = std::time::Instant::now();
    for i in 0..10_000 {
        outbox.send(&member("b", nobody), ack(i));
        outbox.send(&member("c", "not an address"), ack(i));
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "sending took {:?}",
        started.elapsed()
    );
}
