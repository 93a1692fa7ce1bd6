//! Where the bucket is: the `--s3-*` / `--object-store-dir` flags shared by
//! `t4 run` and the commands that read a bucket (`t4 status`, `t4 gc`,
//! `t4 restore list`).

use std::path::PathBuf;

use t4_io_real::object::{S3Config, S3Credentials, StoreConfig};

/// Where the bucket is (T4's flags). With a bucket a single node is durable
/// beyond its disk: a write is acknowledged once fsynced and uploaded.
#[derive(Debug, clap::Args)]
pub struct BucketArgs {
    /// S3 bucket for the WAL (and, later, checkpoints); off unless given.
    #[arg(long, env = "T4_S3_BUCKET")]
    s3_bucket: Option<String>,
    /// Key prefix inside the bucket (`t4/`; slashes at either end do not
    /// matter).
    #[arg(long, env = "T4_S3_PREFIX", default_value = "")]
    s3_prefix: String,
    /// S3-compatible endpoint (MinIO, moto …): path-style addressing.
    #[arg(long, env = "T4_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// Region (default: from the environment or profile, else us-east-1).
    #[arg(long, env = "T4_S3_REGION")]
    s3_region: Option<String>,
    /// Named profile of the AWS config and credentials files.
    #[arg(long, env = "T4_S3_PROFILE", conflicts_with = "s3_access_key_id")]
    s3_profile: Option<String>,
    /// Static access key id (default: the standard AWS credential chain).
    #[arg(long, env = "T4_S3_ACCESS_KEY_ID", requires = "s3_secret_access_key")]
    s3_access_key_id: Option<String>,
    /// Static secret access key.
    #[arg(
        long,
        env = "T4_S3_SECRET_ACCESS_KEY",
        hide_env_values = true,
        requires = "s3_access_key_id"
    )]
    s3_secret_access_key: Option<String>,
    /// A local directory acting as the bucket (instead of S3).
    #[arg(long, env = "T4_OBJECT_STORE_DIR", conflicts_with = "s3_bucket")]
    object_store_dir: Option<PathBuf>,
}

impl BucketArgs {
    /// The store these flags name, if any.
    pub fn store_config(&self) -> Option<StoreConfig> {
        match (&self.s3_bucket, &self.object_store_dir) {
            (None, None) => None,
            (Some(bucket), _) => Some(StoreConfig::S3(S3Config {
                bucket: bucket.clone(),
                prefix: self.s3_prefix.clone(),
                region: self.s3_region.clone(),
                endpoint: self.s3_endpoint.clone(),
                credentials: match (
                    &self.s3_profile,
                    &self.s3_access_key_id,
                    &self.s3_secret_access_key,
                ) {
                    (Some(profile), _, _) => S3Credentials::Profile(profile.clone()),
                    (None, Some(id), Some(secret)) => S3Credentials::Static {
                        access_key_id: id.clone(),
                        secret_access_key: secret.clone(),
                        session_token: None,
                    },
                    _ => S3Credentials::Default,
                },
            })),
            (None, Some(dir)) => Some(StoreConfig::Directory(dir.clone())),
        }
    }

    /// The store of a command that only reads (or prunes) an existing
    /// bucket: one must be named, and a directory store must already exist
    /// (opening one creates it, and such a command changes nothing it was
    /// not asked to).
    ///
    /// # Errors
    /// No bucket named, or the directory is missing.
    pub fn existing_store_config(&self) -> Result<StoreConfig, String> {
        let store = self.store_config().ok_or_else(|| {
            "no bucket given: name one with --s3-bucket (S3) or --object-store-dir (a local folder)"
                .to_owned()
        })?;
        if let StoreConfig::Directory(dir) = &store {
            if !dir.is_dir() {
                return Err(format!(
                    "object store directory {} does not exist (or is not a directory)",
                    dir.display()
                ));
            }
        }
        Ok(store)
    }
}
