//! Reading a bucket for the CLI: the complete listing, and single objects
//! decoded with core's codecs.
//!
//! A store that does not answer (after the store's own retries) stops the
//! command: a report built on a partial view could mislead, and GC must not
//! act on one. An object that is missing or does not decode is not an
//! error here but a [`Read`] outcome, so a report can say what is damaged
//! instead of stopping at the first damage.

use std::fmt::Display;
use std::sync::Arc;

use t4_core::bucket::branch::{parse_branch_key, BranchRegistration};
use t4_core::bucket::layout::{BRANCH_PREFIX, LEADER_LOCK, MANIFEST_LATEST};
use t4_core::bucket::lock::LeaderLock;
use t4_core::bucket::manifest::{CheckpointManifest, LatestPointer};
use t4_core::object::{ObjectError, ObjectInfo, ObjectOp, ObjectReply, LIST_KEYS_MAX};
use t4_io_real::object::{open_store, ObjectStore, RetryConfig};

use crate::bucket_args::BucketArgs;

/// The most list pages one listing reads (a billion keys): a store that
/// keeps saying "truncated" cannot keep a command running forever.
const LIST_PAGES_MAX: usize = 1_000_000;

/// What reading one object gave.
#[derive(Clone, Debug)]
pub enum Read<T> {
    /// No object under the key.
    Missing,
    /// Read and decoded.
    Ok(T),
    /// There, but it could not be read or decoded: why.
    Bad(String),
}

impl<T> Read<T> {
    /// The value, if it was read.
    pub fn ok(&self) -> Option<&T> {
        match self {
            Read::Ok(value) => Some(value),
            Read::Missing | Read::Bad(_) => None,
        }
    }
}

/// A bucket opened for reading (and, for GC, deleting).
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    describe: String,
}

impl Bucket {
    /// Opens the bucket the flags name; it must exist (see
    /// [`BucketArgs::existing_store_config`]) and answer a probe.
    ///
    /// # Errors
    /// No bucket named, a missing directory, or a store that is not usable.
    pub async fn open(args: &BucketArgs) -> Result<Bucket, String> {
        let config = args.existing_store_config()?;
        let store = open_store(&config, RetryConfig::default())
            .await
            .map_err(|e| e.to_string())?;
        Ok(Bucket {
            describe: store.describe(),
            store,
        })
    }

    /// The store itself.
    pub fn store(&self) -> &dyn ObjectStore {
        &*self.store
    }

    /// Where the bucket is (`s3://bucket/prefix/ at …`, `dir:/path`).
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Every object, in key order, paging through the whole bucket.
    ///
    /// # Errors
    /// The store did not answer, or broke the paging contract.
    pub async fn list_all(&self) -> Result<Vec<ObjectInfo>, String> {
        let mut all: Vec<ObjectInfo> = Vec::new();
        for _ in 0..LIST_PAGES_MAX {
            let start_after = all.last().map(|o| o.key.clone());
            let op = ObjectOp::List {
                prefix: String::new(),
                start_after: start_after.clone(),
                max_keys: LIST_KEYS_MAX,
            };
            let (objects, truncated) = match self.store.execute(op).await {
                Ok(ObjectReply::Listed { objects, truncated }) => (objects, truncated),
                Ok(other) => {
                    return Err(format!(
                        "cannot list {}: a list was answered with {other:?}",
                        self.describe
                    ))
                }
                Err(e) => return Err(format!("cannot list {}: {e}", self.describe)),
            };
            // The contract: keys in byte order, strictly after `start_after`.
            let ordered = objects.windows(2).all(|w| w[0].key < w[1].key)
                && match (&start_after, objects.first()) {
                    (Some(after), Some(first)) => first.key > *after,
                    _ => true,
                };
            if !ordered {
                return Err(format!(
                    "cannot list {}: the store returned keys out of order after {start_after:?}",
                    self.describe
                ));
            }
            let progressed = !objects.is_empty();
            all.extend(objects);
            if !truncated {
                return Ok(all);
            }
            if !progressed {
                return Err(format!(
                    "cannot list {}: the store said more keys follow {start_after:?} but returned none",
                    self.describe
                ));
            }
        }
        Err(format!(
            "cannot list {}: more than {LIST_PAGES_MAX} pages of {LIST_KEYS_MAX} keys",
            self.describe
        ))
    }

    /// One object, decoded by `decode`.
    ///
    /// # Errors
    /// The store did not answer ([`ObjectError::Retryable`] after its
    /// retries). Any other failure is a [`Read`] outcome.
    pub async fn read<T, E: Display>(
        &self,
        key: &str,
        decode: impl FnOnce(&[u8]) -> Result<T, E>,
    ) -> Result<Read<T>, String> {
        match self
            .store
            .execute(ObjectOp::Get {
                key: key.to_owned(),
            })
            .await
        {
            Ok(ObjectReply::Got { body, .. }) => Ok(match decode(&body) {
                Ok(value) => Read::Ok(value),
                Err(e) => Read::Bad(e.to_string()),
            }),
            Ok(other) => Ok(Read::Bad(format!("a get was answered with {other:?}"))),
            Err(ObjectError::NotFound) => Ok(Read::Missing),
            Err(e @ ObjectError::Retryable(_)) => {
                Err(format!("cannot read {key} from {}: {e}", self.describe))
            }
            Err(e) => Ok(Read::Bad(e.to_string())),
        }
    }

    /// `manifest/latest`.
    ///
    /// # Errors
    /// As [`Bucket::get`].
    pub async fn latest(&self) -> Result<Read<LatestPointer>, String> {
        self.read(MANIFEST_LATEST, LatestPointer::decode).await
    }

    /// `leader-lock`.
    ///
    /// # Errors
    /// As [`Bucket::get`].
    pub async fn lock(&self) -> Result<Read<LeaderLock>, String> {
        self.read(LEADER_LOCK, LeaderLock::decode).await
    }

    /// The checkpoint manifest under `key`, validated.
    ///
    /// # Errors
    /// As [`Bucket::get`].
    pub async fn manifest(&self, key: &str) -> Result<Read<CheckpointManifest>, String> {
        self.read(key, |body| CheckpointManifest::decode(key, body))
            .await
    }

    /// Every listed branch registration, by key, in key order. A key under
    /// `branches/` that cannot name a branch is reported as unreadable.
    ///
    /// # Errors
    /// As [`Bucket::get`].
    pub async fn branches(
        &self,
        listing: &[ObjectInfo],
    ) -> Result<Vec<(String, Read<BranchRegistration>)>, String> {
        let mut out = Vec::new();
        for object in listing.iter().filter(|o| o.key.starts_with(BRANCH_PREFIX)) {
            let key = object.key.as_str();
            let read = if parse_branch_key(key).is_some() {
                self.read(key, |body| BranchRegistration::decode(key, body))
                    .await?
            } else {
                Read::Bad("not a branch registration key (branches/<id>)".to_owned())
            };
            out.push((key.to_owned(), read));
        }
        Ok(out)
    }

    /// Deletes one object.
    ///
    /// # Errors
    /// What the store answered (after its retries).
    pub async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        match self
            .store
            .execute(ObjectOp::Delete {
                key: key.to_owned(),
            })
            .await?
        {
            ObjectReply::Deleted => Ok(()),
            other => Err(ObjectError::Failed(format!(
                "a delete was answered with {other:?}"
            ))),
        }
    }
}
