//! A gRPC service that answers every method with `Unimplemented` and a
//! clear message, for the parts of the etcd API whose issue has not landed.
//! Without it, tonic would answer unknown services with an empty-message
//! status; with it, `etcdctl watch` says exactly what is missing.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::marker::PhantomData;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http;
use tonic::codegen::Service;
use tonic::server::NamedService;
use tonic::Status;

/// Names one etcd service answered as unimplemented.
pub trait Unserved: Send + Sync + 'static {
    /// Fully qualified gRPC service name.
    const NAME: &'static str;
    /// Which issue brings it (for the message).
    const WHEN: &'static str;
}

/// The service for `S`.
pub struct Unimplemented<S>(PhantomData<S>);

impl<S> Unimplemented<S> {
    /// The service.
    #[must_use]
    pub fn new() -> Self {
        Unimplemented(PhantomData)
    }
}

impl<S> Clone for Unimplemented<S> {
    fn clone(&self) -> Self {
        Unimplemented(PhantomData)
    }
}

impl<S: Unserved> NamedService for Unimplemented<S> {
    const NAME: &'static str = S::NAME;
}

impl<S: Unserved, B> Service<http::Request<B>> for Unimplemented<S> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let message = format!(
            "t4: {}/{} is not implemented yet ({})",
            S::NAME,
            method,
            S::WHEN
        );
        ready(Ok(Status::unimplemented(message).into_http()))
    }
}

macro_rules! unserved {
    ($ty:ident, $name:expr, $when:expr) => {
        /// An etcd service answered `Unimplemented` (see [`Unserved::NAME`]).
        pub struct $ty;
        impl Unserved for $ty {
            const NAME: &'static str = $name;
            const WHEN: &'static str = $when;
        }
    };
}

unserved!(Auth, t4_proto::service_names::AUTH, "the auth issue");
unserved!(
    Election,
    t4_proto::service_names::ELECTION,
    "not planned yet"
);
unserved!(Lock, t4_proto::service_names::LOCK, "not planned yet");
