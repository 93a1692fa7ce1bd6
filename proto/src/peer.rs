//! The peer transport's wire types and gRPC glue (`proto/peer.proto`).
//!
//! One service, `t4.peer.Peer`, with one client-streaming method, `Stream`:
//! a member opens one long-lived stream to each member it sends to and
//! writes [`PeerFrame`]s on it; the receiver answers ([`StreamClosed`])
//! only when the stream ends. Each direction of a pair of members is its
//! own stream (see `t4_io_real::peer` for why).
//!
//! # Why written by hand
//!
//! tonic-build would generate this from `proto/peer.proto`, but needs
//! `protoc` at build time. Two messages and one method are a few dozen
//! lines, the same shape tonic-build produces (a `tower::Service` routing
//! one path to [`tonic::server::Grpc::client_streaming`], and a client
//! calling [`tonic::client::Grpc::client_streaming`]), so the peer protocol
//! builds from crates.io alone. The tests below pin the field tags to the
//! `.proto` file's.

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body as TonicBody;
use tonic::codegen::http;
use tonic::codegen::{Body, BoxFuture, StdError};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

/// The service's fully qualified name.
pub const SERVICE_NAME: &str = "t4.peer.Peer";
/// The `Stream` method's path.
pub const STREAM_PATH: &str = "/t4.peer.Peer/Stream";

/// One message from one member to another.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PeerFrame {
    /// The sender's member id.
    #[prost(string, tag = "1")]
    pub from_id: String,
    /// The sender's peer address (`host:port`).
    #[prost(string, tag = "2")]
    pub from_addr: String,
    /// The member the sender means to reach; a receiver with another id
    /// drops the frame.
    #[prost(string, tag = "3")]
    pub to_id: String,
    /// The message: core's `PeerMsg::encode` bytes.
    #[prost(bytes = "vec", tag = "4")]
    pub msg: Vec<u8>,
}

/// The answer to a `Stream` call, sent when the stream ends. Empty.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct StreamClosed {}

/// What a receiving member implements: consume one incoming stream of
/// frames until it ends (or fails), then answer.
#[tonic::async_trait]
pub trait PeerService: Send + Sync + 'static {
    /// Handles one sender's stream.
    async fn stream(
        &self,
        request: Request<Streaming<PeerFrame>>,
    ) -> Result<Response<StreamClosed>, Status>;
}

/// The `t4.peer.Peer` server over a [`PeerService`], for
/// [`tonic::transport::Server::add_service`].
#[derive(Debug)]
pub struct PeerServer<T> {
    inner: Arc<T>,
    max_decoding_message_size: Option<usize>,
}

impl<T> Clone for PeerServer<T> {
    fn clone(&self) -> Self {
        PeerServer {
            inner: Arc::clone(&self.inner),
            max_decoding_message_size: self.max_decoding_message_size,
        }
    }
}

impl<T: PeerService> PeerServer<T> {
    /// The server over `inner`.
    pub fn new(inner: T) -> Self {
        PeerServer {
            inner: Arc::new(inner),
            max_decoding_message_size: None,
        }
    }

    /// Largest frame accepted (tonic's default is 4 MiB; an append can be
    /// far larger). A larger frame ends the stream with an error.
    #[must_use]
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        self.max_decoding_message_size = Some(limit);
        self
    }
}

impl<T, B> tonic::codegen::Service<http::Request<B>> for PeerServer<T>
where
    T: PeerService,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<TonicBody>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != STREAM_PATH {
            let path = req.uri().path().to_owned();
            return Box::pin(async move {
                Ok(
                    Status::unimplemented(format!("t4 peer service has no method {path}"))
                        .into_http(),
                )
            });
        }
        let inner = Arc::clone(&self.inner);
        let max_decoding = self.max_decoding_message_size;
        Box::pin(async move {
            let mut grpc =
                tonic::server::Grpc::new(ProstCodec::<StreamClosed, PeerFrame>::default())
                    .apply_max_message_size_config(max_decoding, None);
            Ok(grpc.client_streaming(StreamMethod(inner), req).await)
        })
    }
}

impl<T> tonic::server::NamedService for PeerServer<T> {
    const NAME: &'static str = SERVICE_NAME;
}

/// The `Stream` method as tonic's server wants it.
struct StreamMethod<T>(Arc<T>);

impl<T: PeerService> tonic::server::ClientStreamingService<PeerFrame> for StreamMethod<T> {
    type Response = StreamClosed;
    type Future = BoxFuture<Response<StreamClosed>, Status>;

    fn call(&mut self, request: Request<Streaming<PeerFrame>>) -> Self::Future {
        let inner = Arc::clone(&self.0);
        Box::pin(async move { inner.stream(request).await })
    }
}

/// A client of `t4.peer.Peer` over one channel.
#[derive(Clone, Debug)]
pub struct PeerClient {
    inner: tonic::client::Grpc<tonic::transport::Channel>,
}

impl PeerClient {
    /// A client over `channel`; frames up to `max_encoding_message_size`
    /// bytes may be sent.
    #[must_use]
    pub fn new(channel: tonic::transport::Channel, max_encoding_message_size: usize) -> Self {
        PeerClient {
            inner: tonic::client::Grpc::new(channel)
                .max_encoding_message_size(max_encoding_message_size),
        }
    }

    /// Sends `frames` on one stream; resolves when the stream ends: with
    /// the receiver's answer once `frames` ended, or with the error that
    /// broke it (connection lost, receiver refused a frame).
    ///
    /// # Errors
    /// The channel is not usable, or the stream broke.
    pub async fn stream(
        &mut self,
        frames: impl tonic::codegen::tokio_stream::Stream<Item = PeerFrame> + Send + 'static,
    ) -> Result<Response<StreamClosed>, Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("peer channel not ready: {e}")))?;
        let path = http::uri::PathAndQuery::from_static(STREAM_PATH);
        self.inner
            .client_streaming(
                Request::new(frames),
                path,
                ProstCodec::<PeerFrame, StreamClosed>::default(),
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// The hand-written structs use `peer.proto`'s tags: a frame encodes
    /// to exactly the bytes protoc's code would produce.
    #[test]
    fn frame_tags_match_the_proto_file() {
        let frame = PeerFrame {
            from_id: "a".into(),
            from_addr: "b".into(),
            to_id: "c".into(),
            msg: vec![7],
        };
        assert_eq!(
            frame.encode_to_vec(),
            vec![0x0a, 1, b'a', 0x12, 1, b'b', 0x1a, 1, b'c', 0x22, 1, 7]
        );
        assert_eq!(PeerFrame::decode(&frame.encode_to_vec()[..]), Ok(frame));
        assert!(StreamClosed {}.encode_to_vec().is_empty());
    }

    /// Bytes that are not a frame are refused by the codec, not misread.
    #[test]
    fn garbage_is_not_a_frame() {
        assert!(PeerFrame::decode(&[0x0a, 5, b'a'][..]).is_err());
        assert!(PeerFrame::decode(&[0xff; 3][..]).is_err());
    }
}
