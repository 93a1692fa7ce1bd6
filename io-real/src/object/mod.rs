//! Object stores: the driver's side of core's [`ObjectOp`]s (ARCHITECTURE
//! §3.10).
//!
//! Core says *what* to do with the bucket as plain data; a store here does
//! it and answers an [`ObjectResult`]. Three stores, one semantics (the
//! contract in [`t4_core::object`], checked by
//! `t4_core::testkit::object_conformance` against each of them):
//!
//! - [`MemStore`]: a [`MemBucket`](t4_core::object::MemBucket) behind a
//!   mutex; for tests and throw-away nodes.
//! - [`DirStore`]: a local directory acting as a bucket, with real
//!   conditional writes (also between processes sharing the folder); the
//!   embedded default when no S3 is configured.
//! - [`S3Store`]: S3 or an S3-compatible server (MinIO, moto …) through the
//!   AWS SDK.
//!
//! [`Retrying`] wraps any of them with per-attempt timeouts and bounded,
//! jittered retries of [`ObjectError::Retryable`] outcomes. [`open_store`]
//! builds the configured store with the wrapper around it, and checks that
//! the store is usable before anything else starts.
//!
//! # Driving a store
//!
//! ```no_run
//! # async fn demo() -> Result<(), t4_io_real::object::OpenStoreError> {
//! use t4_core::object::{ObjectOp, ObjectReply};
//! use t4_io_real::object::{open_store, RetryConfig, StoreConfig};
//!
//! let store = open_store(&StoreConfig::Directory("t4-bucket".into()), RetryConfig::default()).await?;
//! let task = {
//!     let store = std::sync::Arc::clone(&store);
//!     tokio::spawn(async move { store.execute(ObjectOp::Get { key: "manifest/latest".into() }).await })
//! };
//! match task.await.expect("task") {
//!     Ok(ObjectReply::Got { body, etag }) => println!("{} bytes, {etag:?}", body.len()),
//!     other => println!("{other:?}"),
//! }
//! # Ok(())
//! # }
//! ```

mod dir;
mod mem;
mod retry;
mod s3;

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use t4_core::object::{ObjectError, ObjectOp, ObjectReply, ObjectResult};

pub use dir::{CreateWith, DirOptions, DirStore, DIR_KEY_COMPONENT_BYTES_MAX, UNREADABLE_ETAG};
pub use mem::MemStore;
pub use retry::{RetryConfig, Retrying};
pub use s3::{S3Config, S3Credentials, S3Store, DEFAULT_REGION};

/// Something that executes [`ObjectOp`]s with the semantics of
/// [`t4_core::object`].
///
/// Implementations refuse malformed keys and list requests
/// ([`t4_core::object::validate_key`] / [`validate_list`](t4_core::object::validate_list))
/// with [`ObjectError::InvalidKey`] before doing anything. The future borrows
/// the store; a driver that wants to run an operation on its own task keeps
/// the store in an `Arc<dyn ObjectStore>` and moves a clone into the task.
pub trait ObjectStore: Send + Sync + 'static {
    /// Runs one operation. Cancelling the future (dropping it) may leave the
    /// operation running or done: treat that like [`ObjectError::Retryable`].
    fn execute(&self, op: ObjectOp) -> BoxFuture<'_, ObjectResult>;

    /// Where the objects live, for logs and error messages
    /// (`s3://bucket/prefix/ at http://…`, `dir:/var/lib/t4-bucket`, `memory`).
    fn describe(&self) -> String;
}

impl<S: ObjectStore + ?Sized> ObjectStore for Arc<S> {
    fn execute(&self, op: ObjectOp) -> BoxFuture<'_, ObjectResult> {
        (**self).execute(op)
    }

    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// Which store to open.
#[derive(Clone, Debug)]
pub enum StoreConfig {
    /// Objects in memory, gone when the process exits.
    Memory,
    /// A local directory acting as a bucket (created if missing).
    Directory(PathBuf),
    /// An S3 bucket (or an S3-compatible server).
    S3(S3Config),
}

/// Why [`open_store`] could not give a usable store.
#[derive(Debug, thiserror::Error)]
pub enum OpenStoreError {
    /// The directory store's folder could not be created or opened.
    #[error("object store directory {path}: {source}")]
    Directory {
        /// The folder.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The configuration is unusable (bad prefix, bad endpoint URL …).
    #[error("object store configuration: {0}")]
    Config(String),
    /// The store was built but the probe (a one-key list) failed: wrong
    /// bucket, credentials, region or endpoint, or the server is down.
    #[error("object store {store} is not usable: {error}")]
    Unreachable {
        /// [`ObjectStore::describe`] of the store.
        store: String,
        /// The probe's outcome (after retries).
        error: ObjectError,
    },
}

/// Opens the configured store, wrapped in [`Retrying`] with `retry`, and
/// probes it with a one-key list under its root so that a wrong bucket,
/// credentials or endpoint is reported now, clearly, rather than at the
/// first upload.
///
/// # Errors
/// [`OpenStoreError`] saying which store and what went wrong.
pub async fn open_store(
    config: &StoreConfig,
    retry: RetryConfig,
) -> Result<Arc<dyn ObjectStore>, OpenStoreError> {
    let store: Arc<dyn ObjectStore> = match config {
        StoreConfig::Memory => Arc::new(Retrying::new(MemStore::new(), retry)),
        StoreConfig::Directory(path) => {
            let dir = DirStore::open(path).map_err(|source| OpenStoreError::Directory {
                path: path.clone(),
                source,
            })?;
            Arc::new(Retrying::new(dir, retry))
        }
        StoreConfig::S3(s3) => Arc::new(Retrying::new(S3Store::connect(s3).await?, retry)),
    };
    let probe = ObjectOp::List {
        prefix: String::new(),
        start_after: None,
        max_keys: 1,
    };
    match store.execute(probe).await {
        Ok(ObjectReply::Listed { .. }) => Ok(store),
        Ok(other) => Err(OpenStoreError::Unreachable {
            store: store.describe(),
            error: ObjectError::Failed(format!("a list was answered with {other:?}")),
        }),
        Err(error) => Err(OpenStoreError::Unreachable {
            store: store.describe(),
            error,
        }),
    }
}
