//! The client side of [`crate::proto`]: unary calls with a timeout, and
//! watch streams.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use madsim::net::{Endpoint, Receiver, Sender};
use madsim::time::Instant;
use t4_core::watch::WatchOutput;
use t4_core::Error;

use crate::proto::{Reply, ReplyMsg, Request, RequestMsg, WatchUp, REPLY_TAG, REQUEST_TAG};

/// A client of one node. Runs inside a madsim node of its own.
pub struct Client {
    ep: Endpoint,
    node: SocketAddr,
    next_id: u64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("node", &self.node).finish()
    }
}

impl Client {
    /// Binds a client endpoint that talks to `node`.
    ///
    /// # Errors
    /// The simulated network refused the bind.
    pub async fn bind(node: SocketAddr) -> io::Result<Client> {
        Ok(Client {
            ep: Endpoint::bind("0.0.0.0:0").await?,
            node,
            next_id: 1,
        })
    }

    /// Sends `req` and waits at most `timeout` for its answer. `None`: no
    /// answer in time (the request may or may not have been executed).
    /// Answers to earlier, abandoned requests are discarded.
    pub async fn call(&mut self, req: Request, timeout: Duration) -> Option<Result<Reply, Error>> {
        let id = self.next_id;
        self.next_id += 1;
        let deadline = Instant::now() + timeout;
        let msg = RequestMsg { id, req };
        self.ep
            .send_to_raw(self.node, REQUEST_TAG, Box::new(msg))
            .await
            .ok()?;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let (payload, _from) = madsim::time::timeout(left, self.ep.recv_from_raw(REPLY_TAG))
                .await
                .ok()?
                .ok()?;
            let Ok(reply) = payload.downcast::<ReplyMsg>() else {
                continue;
            };
            if reply.id == id {
                return Some(reply.result);
            }
        }
    }

    /// Opens a watch stream to the node.
    ///
    /// # Errors
    /// The node is unreachable.
    pub async fn watch_stream(&self) -> io::Result<WatchStream> {
        let (tx, rx) = self.ep.connect1(self.node).await?;
        Ok(WatchStream { tx, rx })
    }
}

/// One watch stream (a gRPC `Watch` call).
pub struct WatchStream {
    tx: Sender,
    rx: Receiver,
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WatchStream")
    }
}

impl WatchStream {
    /// Sends a request on the stream.
    ///
    /// # Errors
    /// The stream broke.
    pub async fn send(&mut self, up: WatchUp) -> io::Result<()> {
        self.tx.send(Box::new(up)).await
    }

    /// The next response; tells the node it was read (flow control).
    ///
    /// # Errors
    /// The stream broke (the node died or closed it).
    pub async fn recv(&mut self) -> io::Result<WatchOutput> {
        let payload = self.rx.recv().await?;
        let out = payload
            .downcast::<WatchOutput>()
            .map(|out| *out)
            .map_err(|_| io::Error::other("unexpected message on a watch stream"))?;
        self.send(WatchUp::Consumed(1)).await?;
        Ok(out)
    }
}
