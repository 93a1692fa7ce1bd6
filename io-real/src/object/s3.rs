//! The S3 store: S3 or an S3-compatible server through the AWS SDK.
//!
//! # Keys
//!
//! Every key is stored under the configured root prefix, joined with one
//! `/`: prefix `t4`, `t4/` and `/t4/` all give `t4/wal/…`; an empty prefix
//! uses the bucket's top level. Listings strip the prefix off again, and
//! skip objects under it whose remaining name is not a valid key (a console's
//! `folder/` marker, say).
//!
//! # Outcomes
//!
//! | S3 says | outcome |
//! |---|---|
//! | 404 (`NoSuchKey`; also for `If-Match` on a missing key) | [`ObjectError::NotFound`] |
//! | 404 `NoSuchBucket` | [`ObjectError::Failed`] |
//! | 412 `PreconditionFailed` | [`ObjectError::PreconditionFailed`] |
//! | 409 `ConditionalRequestConflict` (a concurrent conditional write) | [`ObjectError::PreconditionFailed`] |
//! | 409 `OperationAborted`, 429, 5xx, `SlowDown`, `RequestTimeout`, throttling codes | [`ObjectError::Retryable`] |
//! | no answer: timeout, connection refused or lost, truncated response | [`ObjectError::Retryable`] |
//! | no credentials found, or a bad credentials configuration | [`ObjectError::Failed`] |
//! | the server's TLS certificate is refused (untrusted, expired, wrong name) | [`ObjectError::Failed`] |
//! | anything else (403, 301 wrong region, 400 …) | [`ObjectError::Failed`], with status, code and message |
//!
//! The SDK's own retries are off: [`super::Retrying`] is the one retry
//! layer, so attempts and deadlines are counted in one place.
//!
//! # Client
//!
//! HTTPS through rustls with the *ring* crypto provider and the system's
//! root certificates (the SDK's default, aws-lc-rs, is a large C build);
//! plain HTTP for local endpoints. Region and credentials come from
//! [`aws_config::defaults`] (environment, shared config and credentials
//! files, web identity, ECS container and EC2 instance roles, `credential_process`)
//! unless [`S3Config`] names them; the region falls back to `us-east-1`.
//! Request and response checksums are only sent or checked where S3 requires
//! them (`WhenRequired`): several S3-compatible servers reject the SDK's
//! default trailing checksums, and t4 checks its own objects' checksums.

use std::fmt;

use aws_config::BehaviorVersion;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use futures::future::BoxFuture;
use t4_core::object::{
    validate_key, validate_list, ETag, ObjectError, ObjectInfo, ObjectOp, ObjectReply,
    ObjectResult, PutCondition,
};

use super::{ObjectStore, OpenStoreError};

/// The region used when neither the configuration nor the environment names
/// one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Most ListObjectsV2 calls one list page may take when it has to skip
/// objects whose names are not valid keys.
const LIST_CALLS_MAX: usize = 16;

/// Where and how to reach the bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// The root prefix every key is stored under (`""`, `"t4"` or `"t4/"`;
    /// slashes at either end do not matter).
    pub prefix: String,
    /// The region; `None` takes it from the environment / profile, else
    /// [`DEFAULT_REGION`].
    pub region: Option<String>,
    /// An endpoint URL instead of AWS's (`http://127.0.0.1:9000` for MinIO
    /// or moto). Requests then use path-style addressing
    /// (`<endpoint>/<bucket>/<key>`), which such servers expect.
    pub endpoint: Option<String>,
    /// Where the credentials come from.
    pub credentials: S3Credentials,
}

impl S3Config {
    /// The bucket with no prefix, region, endpoint or credentials of its
    /// own: everything from the environment.
    #[must_use]
    pub fn new(bucket: impl Into<String>) -> S3Config {
        S3Config {
            bucket: bucket.into(),
            prefix: String::new(),
            region: None,
            endpoint: None,
            credentials: S3Credentials::Default,
        }
    }
}

/// Where the S3 store's credentials come from.
#[derive(Clone, PartialEq, Eq)]
pub enum S3Credentials {
    /// The standard AWS chain: environment (`AWS_ACCESS_KEY_ID` …), the
    /// shared config and credentials files (`AWS_PROFILE`), web identity
    /// tokens, ECS container and EC2 instance roles.
    Default,
    /// A named profile of the shared config and credentials files (also
    /// used for the region).
    Profile(String),
    /// Fixed keys.
    Static {
        /// The access key id.
        access_key_id: String,
        /// The secret access key.
        secret_access_key: String,
        /// A session token, for temporary credentials.
        session_token: Option<String>,
    },
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            S3Credentials::Default => f.write_str("Default"),
            S3Credentials::Profile(name) => f.debug_tuple("Profile").field(name).finish(),
            S3Credentials::Static {
                access_key_id,
                session_token,
                ..
            } => f
                .debug_struct("Static")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &"<redacted>")
                .field(
                    "session_token",
                    &session_token.as_ref().map(|_| "<redacted>"),
                )
                .finish(),
        }
    }
}

/// `"t4/"` for `"t4"`, `"/t4/"` or `"t4/"`; `""` for `""` or `"/"`.
///
/// # Errors
/// The prefix is not a valid key (after trimming slashes).
pub(crate) fn root_prefix(prefix: &str) -> Result<String, OpenStoreError> {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    validate_key(trimmed)
        .map_err(|e| OpenStoreError::Config(format!("S3 prefix {prefix:?}: {e}")))?;
    Ok(format!("{trimmed}/"))
}

/// A bucket (under a root prefix) on S3 or an S3-compatible server.
#[derive(Clone, Debug)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// `""` or `"<prefix>/"`.
    root: String,
    describe: String,
}

impl S3Store {
    /// Builds the client. Resolves the region and the credentials source
    /// but sends no request: [`super::open_store`] probes the bucket.
    ///
    /// # Errors
    /// [`OpenStoreError::Config`] for an empty bucket name or a bad prefix.
    pub async fn connect(config: &S3Config) -> Result<S3Store, OpenStoreError> {
        if config.bucket.is_empty() {
            return Err(OpenStoreError::Config("S3 bucket name is empty".into()));
        }
        let root = root_prefix(&config.prefix)?;
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client)
            .retry_config(aws_config::retry::RetryConfig::disabled());
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        match &config.credentials {
            S3Credentials::Default => {}
            S3Credentials::Profile(name) => loader = loader.profile_name(name),
            S3Credentials::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => {
                loader = loader.credentials_provider(Credentials::new(
                    access_key_id,
                    secret_access_key,
                    session_token.clone(),
                    None,
                    "t4-static",
                ));
            }
        }
        let sdk_config = loader.load().await;

        let mut s3 = aws_sdk_s3::config::Builder::from(&sdk_config)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if sdk_config.region().is_none() {
            s3 = s3.region(Region::new(DEFAULT_REGION));
        }
        if let Some(endpoint) = &config.endpoint {
            s3 = s3.endpoint_url(endpoint).force_path_style(true);
        }
        let s3 = s3.build();
        let region = s3
            .region()
            .map_or_else(|| DEFAULT_REGION.to_owned(), ToString::to_string);
        let at = config
            .endpoint
            .as_deref()
            .map_or_else(String::new, |e| format!(" at {e}"));
        let describe = format!("s3://{}/{root}{at} (region {region})", config.bucket);
        Ok(S3Store {
            client: aws_sdk_s3::Client::from_conf(s3),
            bucket: config.bucket.clone(),
            root,
            describe,
        })
    }

    /// The bucket-level name of `key`.
    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    async fn run(&self, op: ObjectOp) -> ObjectResult {
        match op {
            ObjectOp::Get { key } => {
                let out = self
                    .client
                    .get_object()
                    .bucket(&self.bucket)
                    .key(self.full_key(&key))
                    .send()
                    .await
                    .map_err(|e| map_sdk_error("get", &key, &e))?;
                let etag = etag_of("get", &key, out.e_tag)?;
                let body = out.body.collect().await.map_err(|e| {
                    ObjectError::Retryable(format!(
                        "get {key}: reading the body: {}",
                        error_chain(&e)
                    ))
                })?;
                Ok(ObjectReply::Got {
                    body: body.into_bytes(),
                    etag,
                })
            }
            ObjectOp::Put {
                key,
                body,
                condition,
            } => {
                let request = self
                    .client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(self.full_key(&key))
                    .body(ByteStream::from(body));
                let request = match condition {
                    PutCondition::None => request,
                    PutCondition::IfAbsent => request.if_none_match("*"),
                    PutCondition::IfMatch(etag) => request.if_match(etag.0),
                };
                let out = request
                    .send()
                    .await
                    .map_err(|e| map_sdk_error("put", &key, &e))?;
                Ok(ObjectReply::Put {
                    etag: etag_of("put", &key, out.e_tag)?,
                })
            }
            ObjectOp::Delete { key } => {
                self.client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(self.full_key(&key))
                    .send()
                    .await
                    .map_err(|e| map_sdk_error("delete", &key, &e))?;
                Ok(ObjectReply::Deleted)
            }
            ObjectOp::List {
                prefix,
                start_after,
                max_keys,
            } => self.list(&prefix, start_after.as_deref(), max_keys).await,
        }
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, max_keys: usize) -> ObjectResult {
        let full_prefix = self.full_key(prefix);
        let mut after = start_after.map(|a| self.full_key(a));
        let mut objects: Vec<ObjectInfo> = Vec::new();
        for _ in 0..LIST_CALLS_MAX {
            let want = max_keys - objects.len();
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .set_prefix(Some(full_prefix.clone()).filter(|p| !p.is_empty()))
                .set_start_after(after.clone())
                .max_keys(i32::try_from(want).expect("max_keys is at most 1000"))
                .send()
                .await
                .map_err(|e| map_sdk_error("list", &format!("{full_prefix:?}"), &e))?;
            let truncated = out.is_truncated.unwrap_or(false);
            for object in out.contents.unwrap_or_default() {
                let Some(full) = object.key else { continue };
                let key = full.strip_prefix(&self.root).unwrap_or(&full);
                if validate_key(key).is_ok() {
                    objects.push(ObjectInfo {
                        key: key.to_owned(),
                        size_bytes: object.size.map_or(0, |s| u64::try_from(s).unwrap_or(0)),
                        etag: ETag(object.e_tag.unwrap_or_default()),
                    });
                } else {
                    tracing::debug!(bucket = %self.bucket, key = %full, "list: skipping an object whose name is not a t4 key");
                }
                after = Some(full);
            }
            if objects.len() > max_keys {
                // More than asked for (a server ignoring max-keys): the rest
                // comes with the next page.
                objects.truncate(max_keys);
                return Ok(ObjectReply::Listed {
                    objects,
                    truncated: true,
                });
            }
            if !truncated || objects.len() == max_keys {
                return Ok(ObjectReply::Listed { objects, truncated });
            }
        }
        Err(ObjectError::Failed(format!(
            "list {prefix:?}: {LIST_CALLS_MAX} pages in a row were mostly objects whose names are not t4 keys"
        )))
    }
}

impl ObjectStore for S3Store {
    fn execute(&self, op: ObjectOp) -> BoxFuture<'_, ObjectResult> {
        let valid = match &op {
            ObjectOp::Get { key } | ObjectOp::Put { key, .. } | ObjectOp::Delete { key } => {
                validate_key(key)
            }
            ObjectOp::List {
                prefix, max_keys, ..
            } => validate_list(prefix, *max_keys),
        };
        match valid {
            Ok(()) => Box::pin(self.run(op)),
            Err(invalid) => Box::pin(std::future::ready(Err(invalid))),
        }
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

fn etag_of(what: &str, key: &str, etag: Option<String>) -> Result<ETag, ObjectError> {
    etag.map(ETag)
        .ok_or_else(|| ObjectError::Failed(format!("{what} {key}: the answer has no ETag")))
}

/// `err` and its sources, `: `-separated (the SDK's `Debug` dump is long and
/// repeats them), skipping a source whose text its parent already shows.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

/// Maps an SDK error to an outcome (the table in the module docs).
fn map_sdk_error<E>(
    what: &str,
    key: &str,
    err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> ObjectError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let e = service.err();
            classify(what, key, status, e.code(), e.message())
        }
        // An answer the SDK could not read: an HTTP status without the
        // usual XML error body (e.g. a proxy's 503), or a 2xx cut short.
        SdkError::ResponseError(response) => {
            let status = response.raw().status().as_u16();
            if (200..300).contains(&status) {
                ObjectError::Retryable(format!(
                    "{what} {key}: unreadable answer: {}",
                    error_chain(err)
                ))
            } else {
                classify(what, key, status, None, None)
            }
        }
        SdkError::TimeoutError(_) => {
            ObjectError::Retryable(format!("{what} {key}: {}", error_chain(err)))
        }
        SdkError::DispatchFailure(dispatch) => {
            let message = format!("{what} {key}: {}", error_chain(err));
            if dispatch.is_user() || credentials_missing(err) || certificate_refused(err) {
                ObjectError::Failed(message)
            } else {
                // I/O, timeouts, connection refused or reset: no answer.
                ObjectError::Retryable(message)
            }
        }
        _ => ObjectError::Failed(format!("{what} {key}: {}", error_chain(err))),
    }
}

/// The first error of type `T` in `err`'s chain. An I/O error hides its
/// payload from `source()` (it skips to the payload's own source), so the
/// walk looks inside those with `get_ref`.
fn find_in_chain<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        source = match e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(payload) => Some(payload as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// Whether `err` comes from a credentials source that has no credentials or
/// is misconfigured (retrying will not help), as opposed to one that timed
/// out or failed transiently (an instance metadata service under load).
fn credentials_missing(err: &(dyn std::error::Error + 'static)) -> bool {
    matches!(
        find_in_chain::<CredentialsError>(err),
        Some(CredentialsError::CredentialsNotLoaded(_) | CredentialsError::InvalidConfiguration(_))
    )
}

/// Whether the TLS handshake failed on the server's certificate (untrusted,
/// expired, wrong name): retrying will not help without an operator.
fn certificate_refused(err: &(dyn std::error::Error + 'static)) -> bool {
    matches!(
        find_in_chain::<rustls::Error>(err),
        Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
    )
}

/// An HTTP error answer as an outcome.
fn classify(
    what: &str,
    key: &str,
    status: u16,
    code: Option<&str>,
    message: Option<&str>,
) -> ObjectError {
    const RETRYABLE_CODES: &[&str] = &[
        "SlowDown",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "OperationAborted",
    ];
    let describe = || {
        format!(
            "{what} {key}: HTTP {status} {}: {}",
            code.unwrap_or("(no error code)"),
            message.unwrap_or("(no message)")
        )
    };
    match (status, code) {
        (_, Some("NoSuchBucket")) => ObjectError::Failed(describe()),
        (404, _) => ObjectError::NotFound,
        (412, _) => ObjectError::PreconditionFailed,
        (409, Some("ConditionalRequestConflict")) => ObjectError::PreconditionFailed,
        (429 | 500..=599, _) => ObjectError::Retryable(describe()),
        (_, Some(code)) if RETRYABLE_CODES.contains(&code) => ObjectError::Retryable(describe()),
        _ => ObjectError::Failed(describe()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The root prefix is joined with exactly one slash.
    #[test]
    fn root_prefix_joins_with_one_slash() {
        for (given, root) in [
            ("", ""),
            ("/", ""),
            ("t4", "t4/"),
            ("t4/", "t4/"),
            ("/t4/", "t4/"),
            ("a/b", "a/b/"),
        ] {
            assert_eq!(root_prefix(given).expect(given), root, "{given:?}");
        }
        for bad in ["a//b", "../x", "sp ace"] {
            assert!(root_prefix(bad).is_err(), "{bad:?}");
        }
    }

    /// HTTP answers map to the outcomes in the module docs.
    #[test]
    fn classification() {
        let c = |status, code| classify("put", "k", status, code, Some("msg"));
        assert_eq!(c(404, Some("NoSuchKey")), ObjectError::NotFound);
        assert_eq!(c(404, None), ObjectError::NotFound);
        assert!(
            matches!(c(404, Some("NoSuchBucket")), ObjectError::Failed(m) if m.contains("NoSuchBucket"))
        );
        assert_eq!(
            c(412, Some("PreconditionFailed")),
            ObjectError::PreconditionFailed
        );
        assert_eq!(
            c(409, Some("ConditionalRequestConflict")),
            ObjectError::PreconditionFailed
        );
        assert!(matches!(
            c(409, Some("OperationAborted")),
            ObjectError::Retryable(_)
        ));
        assert!(matches!(
            c(409, Some("BucketNotEmpty")),
            ObjectError::Failed(_)
        ));
        assert!(matches!(
            c(503, Some("SlowDown")),
            ObjectError::Retryable(_)
        ));
        assert!(matches!(c(500, None), ObjectError::Retryable(_)));
        assert!(matches!(c(429, None), ObjectError::Retryable(_)));
        assert!(matches!(
            c(400, Some("RequestTimeout")),
            ObjectError::Retryable(_)
        ));
        assert!(
            matches!(c(403, Some("AccessDenied")), ObjectError::Failed(m) if m.contains("HTTP 403 AccessDenied: msg"))
        );
    }
}
