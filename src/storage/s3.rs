//! The S3 backend (aws-sdk-s3): AWS or any S3-compatible store (MinIO, Ceph,
//! R2, a local test server) through a custom endpoint and path-style URLs.
//!
//! Objects up to the part size go up in one PutObject; larger streams become a
//! multipart upload that is completed only when the producer finishes, and
//! aborted otherwise, so no reader ever sees half an object. `IfAbsent` uses
//! `If-None-Match: *` (on PutObject and CompleteMultipartUpload); a server that
//! answers 501 to it is remembered and handled by HEAD-then-PUT, which is racy
//! against a concurrent writer of the same key (one repository has one writer
//! per object, so the race is accepted and a warning says so). Retries
//! (standard mode: exponential backoff with jitter on 5xx, throttling, timeouts
//! and connection errors) and timeouts are the SDK's, configured from
//! [`S3Tuning`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ServerSideEncryption, StorageClass,
};
use aws_sdk_s3::Client;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{
    GetInner, GetStream, ObjectMeta, Piece, PutMode, PutOutcome, StorageError, UploadTask,
};
use crate::config::S3Settings;

/// S3's limit on the number of parts of one multipart upload.
const MAX_PARTS: i32 = 10_000;

/// Retry, timeout and multipart settings of the S3 client. The defaults suit
/// production; tests lower the retries to keep failure paths fast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Tuning {
    /// Attempts per request, the first included (SDK standard retry mode).
    pub max_attempts: u32,
    /// Base of the exponential backoff between attempts (jittered).
    pub initial_backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
    /// Time allowed to open a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Time allowed for one attempt of one request.
    pub attempt_timeout: Duration,
    /// Time allowed for one request, retries included.
    pub operation_timeout: Duration,
    /// Size of a multipart part, and the largest object sent in a single PUT
    /// by `put_stream` (at least 5 MiB on AWS). Grows by this much every 1,000
    /// parts so that one upload can reach 440 GiB at 8 MiB within S3's
    /// 10,000-part limit.
    pub part_size: usize,
    /// Parts uploaded concurrently (memory: about this plus one parts).
    pub parts_in_flight: usize,
}

impl Default for S3Tuning {
    fn default() -> Self {
        S3Tuning {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(120),
            operation_timeout: Duration::from_secs(600),
            part_size: 8 << 20,
            parts_in_flight: 2,
        }
    }
}

/// A repository under a prefix of an S3 bucket. Cheap to clone.
#[derive(Clone)]
pub struct S3Storage {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    bucket: String,
    /// No leading or trailing `/`; may be empty.
    prefix: String,
    /// The endpoint for messages (never with credentials).
    endpoint: String,
    storage_class: Option<StorageClass>,
    sse: Option<ServerSideEncryption>,
    sse_kms_key_id: Option<String>,
    /// Send CRC32 checksums with uploads (off with `checksum_when_required`).
    checksums: bool,
    tuning: S3Tuning,
    /// The server answered 501 to `If-None-Match`: use HEAD-then-PUT.
    no_conditional_writes: AtomicBool,
    /// A HeadBucket succeeded once: a 404 on HeadObject means "no such key".
    bucket_seen: AtomicBool,
}

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Storage")
            .field("bucket", &self.inner.bucket)
            .field("prefix", &self.inner.prefix)
            .field("endpoint", &self.inner.endpoint)
            .finish_non_exhaustive()
    }
}

/// Where an error happened, for mapping it.
struct Ctx<'a> {
    op: &'static str,
    key: &'a str,
}

impl S3Storage {
    /// Builds the client; nothing remote is contacted.
    pub async fn open(
        bucket: &str,
        prefix: &str,
        settings: &S3Settings,
        tuning: S3Tuning,
    ) -> Result<S3Storage, StorageError> {
        if bucket.is_empty() {
            return Err(StorageError::Config("the bucket name is empty".to_string()));
        }
        if tuning.max_attempts == 0 || tuning.part_size == 0 || tuning.parts_in_flight == 0 {
            return Err(StorageError::Config(
                "max_attempts, part_size and parts_in_flight must be positive".to_string(),
            ));
        }
        let region = RegionProviderChain::first_try(settings.region.clone().map(Region::new))
            .or_default_provider()
            .or_else(Region::from_static("us-east-1"));
        let retry = RetryConfig::standard()
            .with_max_attempts(tuning.max_attempts)
            .with_initial_backoff(tuning.initial_backoff)
            .with_max_backoff(tuning.max_backoff);
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(tuning.connect_timeout)
            .operation_attempt_timeout(tuning.attempt_timeout)
            .operation_timeout(tuning.operation_timeout)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .retry_config(retry)
            .timeout_config(timeouts);
        if settings.access_key_id.is_some() != settings.secret_access_key.is_some() {
            return Err(StorageError::Config(
                "an access key id and a secret access key must be given together".to_string(),
            ));
        }
        if let (Some(id), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                id.clone(),
                secret.expose().to_string(),
                settings
                    .session_token
                    .as_ref()
                    .map(|t| t.expose().to_string()),
                None,
                "walship-settings",
            ));
        }
        let sdk = loader.load().await;
        let mut conf =
            aws_sdk_s3::config::Builder::from(&sdk).force_path_style(settings.path_style);
        if let Some(endpoint) = &settings.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(StorageError::Config(format!(
                    "endpoint {endpoint:?} must start with http:// or https://"
                )));
            }
            conf = conf.endpoint_url(endpoint.clone());
        }
        if settings.checksum_when_required {
            conf = conf
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        let endpoint = match &settings.endpoint {
            Some(e) => e.clone(),
            None => format!(
                "AWS S3 ({})",
                sdk.region()
                    .map(|r| r.as_ref().to_string())
                    .unwrap_or_default()
            ),
        };
        let sse = settings.sse.as_deref().map(|s| match s {
            "AES256" | "aes256" => ServerSideEncryption::Aes256,
            "aws:kms" | "kms" => ServerSideEncryption::AwsKms,
            other => ServerSideEncryption::from(other),
        });
        if settings.sse_kms_key_id.is_some() && sse != Some(ServerSideEncryption::AwsKms) {
            return Err(StorageError::Config(
                "a KMS key id is set but server-side encryption is not aws:kms".to_string(),
            ));
        }
        Ok(S3Storage {
            inner: Arc::new(Inner {
                client: Client::from_conf(conf.build()),
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
                endpoint,
                storage_class: settings.storage_class.as_deref().map(StorageClass::from),
                sse,
                sse_kms_key_id: settings.sse_kms_key_id.clone(),
                checksums: !settings.checksum_when_required,
                tuning,
                no_conditional_writes: AtomicBool::new(false),
                bucket_seen: AtomicBool::new(false),
            }),
        })
    }

    /// `s3://bucket/prefix`, for messages.
    pub fn describe(&self) -> String {
        if self.inner.prefix.is_empty() {
            format!("s3://{}", self.inner.bucket)
        } else {
            format!("s3://{}/{}", self.inner.bucket, self.inner.prefix)
        }
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    /// The full object key in the bucket.
    fn full_key(&self, key: &str) -> String {
        if self.inner.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{}", self.inner.prefix, key)
        }
    }

    /// Maps an SDK error to the variant that says what happened.
    fn error<E>(
        &self,
        ctx: Ctx<'_>,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let inner = &self.inner;
        let unreachable = |what: String| StorageError::Unreachable {
            endpoint: inner.endpoint.clone(),
            message: format!(
                "{} {}/{}: {what} (after up to {} attempts)",
                ctx.op, inner.bucket, ctx.key, inner.tuning.max_attempts
            ),
        };
        match &err {
            SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => {
                unreachable(error_chain(&err))
            }
            SdkError::TimeoutError(_) => unreachable(error_chain(&err)),
            SdkError::ServiceError(service) => {
                let status = service.raw().status().as_u16();
                let code = service.err().code().unwrap_or("");
                let message = service.err().message().unwrap_or("");
                let detail = if code.is_empty() {
                    format!("HTTP {status}")
                } else if message.is_empty() {
                    format!("{code} (HTTP {status})")
                } else {
                    format!("{code}: {message} (HTTP {status})")
                };
                if code == "NoSuchBucket" {
                    StorageError::BucketNotFound {
                        bucket: inner.bucket.clone(),
                        endpoint: inner.endpoint.clone(),
                    }
                } else if status == 403
                    || matches!(
                        code,
                        "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch"
                    )
                {
                    StorageError::AccessDenied {
                        bucket: inner.bucket.clone(),
                        detail,
                    }
                } else {
                    StorageError::S3 {
                        op: ctx.op,
                        key: format!("{}/{}", inner.bucket, ctx.key),
                        message: detail,
                        status: Some(status),
                    }
                }
            }
            SdkError::ResponseError(r) => StorageError::S3 {
                op: ctx.op,
                key: format!("{}/{}", inner.bucket, ctx.key),
                message: format!("unreadable answer: {}", error_chain(&err)),
                status: Some(r.raw().status().as_u16()),
            },
            // The request could not even be built (bad settings, no
            // credentials): retrying will not help.
            SdkError::ConstructionFailure(_) => StorageError::Config(format!(
                "{} {}/{}: {}",
                ctx.op,
                inner.bucket,
                ctx.key,
                error_chain(&err)
            )),
            _ => StorageError::S3 {
                op: ctx.op,
                key: format!("{}/{}", inner.bucket, ctx.key),
                message: error_chain(&err),
                status: None,
            },
        }
    }

    /// The error's HTTP status and code, when the server answered.
    fn status_and_code<E: ProvideErrorMetadata>(
        err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> Option<(u16, String)> {
        match err {
            SdkError::ServiceError(s) => Some((
                s.raw().status().as_u16(),
                s.err().code().unwrap_or("").to_string(),
            )),
            _ => None,
        }
    }

    /// Whether `err` says the server does not implement conditional writes.
    fn conditional_unsupported<E: ProvideErrorMetadata>(
        err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> bool {
        matches!(Self::status_and_code(err), Some((501, _)))
            || matches!(Self::status_and_code(err), Some((_, c)) if c == "NotImplemented")
    }

    fn note_no_conditional_writes(&self) {
        if !self
            .inner
            .no_conditional_writes
            .swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                endpoint = %self.inner.endpoint,
                "the S3 server does not support conditional writes (If-None-Match); \
                 falling back to HEAD-then-PUT, which is not atomic against concurrent writers"
            );
        }
    }

    pub(crate) async fn put(
        &self,
        key: &str,
        body: Bytes,
        mode: PutMode,
    ) -> Result<PutOutcome, StorageError> {
        if body.len() <= self.inner.tuning.part_size {
            return self.put_object(key, body, mode).await;
        }
        // Too big for one request: a multipart upload fed from the buffer.
        let (tx, rx) = mpsc::channel(2);
        let task = self.spawn_put_stream(key, mode, rx);
        let step = self.inner.tuning.part_size;
        let mut at = 0;
        while at < body.len() {
            let end = (at + step).min(body.len());
            if tx.send(Piece::Data(body.slice(at..end))).await.is_err() {
                break;
            }
            at = end;
        }
        let _ = tx.send(Piece::Finish).await;
        drop(tx);
        match task.await {
            Ok(r) => r,
            Err(e) => Err(StorageError::Aborted {
                key: key.to_string(),
                reason: format!("upload task failed: {e}"),
            }),
        }
    }

    /// One PutObject, conditional for `IfAbsent`.
    async fn put_object(
        &self,
        key: &str,
        body: Bytes,
        mode: PutMode,
    ) -> Result<PutOutcome, StorageError> {
        let full = self.full_key(key);
        let conditional =
            mode == PutMode::IfAbsent && !self.inner.no_conditional_writes.load(Ordering::Relaxed);
        if mode == PutMode::IfAbsent && !conditional && self.head(key).await?.is_some() {
            return Ok(PutOutcome::AlreadyExists);
        }
        let send = |if_none_match: bool| {
            let mut req = self
                .inner
                .client
                .put_object()
                .bucket(&self.inner.bucket)
                .key(&full)
                .content_length(body.len() as i64)
                .body(ByteStream::from(body.clone()))
                .set_storage_class(self.inner.storage_class.clone())
                .set_server_side_encryption(self.inner.sse.clone())
                .set_ssekms_key_id(self.inner.sse_kms_key_id.clone());
            if self.inner.checksums {
                req = req.checksum_algorithm(ChecksumAlgorithm::Crc32);
            }
            if if_none_match {
                req = req.if_none_match("*");
            }
            req.send()
        };
        match send(conditional).await {
            Ok(_) => Ok(PutOutcome::Stored),
            Err(e) if conditional && matches!(Self::status_and_code(&e), Some((412, _))) => {
                Ok(PutOutcome::AlreadyExists)
            }
            Err(e) if conditional && Self::conditional_unsupported(&e) => {
                self.note_no_conditional_writes();
                if self.head(key).await?.is_some() {
                    return Ok(PutOutcome::AlreadyExists);
                }
                send(false).await.map(|_| PutOutcome::Stored).map_err(|e| {
                    self.error(
                        Ctx {
                            op: "PutObject",
                            key: &full,
                        },
                        e,
                    )
                })
            }
            Err(e) => Err(self.error(
                Ctx {
                    op: "PutObject",
                    key: &full,
                },
                e,
            )),
        }
    }

    pub(crate) fn spawn_put_stream(
        &self,
        key: &str,
        mode: PutMode,
        rx: mpsc::Receiver<Piece>,
    ) -> UploadTask {
        let this = self.clone();
        let key = key.to_string();
        tokio::spawn(async move { this.upload(key, mode, rx).await })
    }

    /// The task behind a `PutStream`: buffers up to one part; a stream that
    /// ends by then is one PutObject, a longer one a multipart upload.
    async fn upload(
        self,
        key: String,
        mode: PutMode,
        mut rx: mpsc::Receiver<Piece>,
    ) -> Result<PutOutcome, StorageError> {
        let part_size = self.inner.tuning.part_size;
        let mut buf = BytesMut::new();
        loop {
            match rx.recv().await {
                Some(Piece::Data(data)) => {
                    buf.extend_from_slice(&data);
                    if buf.len() > part_size {
                        break;
                    }
                }
                Some(Piece::Finish) => return self.put_object(&key, buf.freeze(), mode).await,
                None => return Err(dropped(&key)),
            }
        }
        if mode == PutMode::IfAbsent
            && self.inner.no_conditional_writes.load(Ordering::Relaxed)
            && self.head(&key).await?.is_some()
        {
            return Ok(PutOutcome::AlreadyExists);
        }

        let full = self.full_key(&key);
        let mut create = self
            .inner
            .client
            .create_multipart_upload()
            .bucket(&self.inner.bucket)
            .key(&full)
            .set_storage_class(self.inner.storage_class.clone())
            .set_server_side_encryption(self.inner.sse.clone())
            .set_ssekms_key_id(self.inner.sse_kms_key_id.clone());
        if self.inner.checksums {
            create = create.checksum_algorithm(ChecksumAlgorithm::Crc32);
        }
        let created = create.send().await.map_err(|e| {
            self.error(
                Ctx {
                    op: "CreateMultipartUpload",
                    key: &full,
                },
                e,
            )
        })?;
        let Some(upload_id) = created.upload_id().map(str::to_string) else {
            return Err(StorageError::S3 {
                op: "CreateMultipartUpload",
                key: format!("{}/{full}", self.inner.bucket),
                message: "the answer has no upload id".to_string(),
                status: None,
            });
        };
        tracing::debug!(bucket = %self.inner.bucket, key = %full, "multipart upload started");

        let result = self
            .multipart(&key, &full, &upload_id, buf, &mut rx, mode)
            .await;
        if !matches!(result, Ok(PutOutcome::Stored)) {
            // Nothing half-done may stay behind (it would also be billed).
            if let Err(e) = self
                .inner
                .client
                .abort_multipart_upload()
                .bucket(&self.inner.bucket)
                .key(&full)
                .upload_id(&upload_id)
                .send()
                .await
            {
                let e = self.error(
                    Ctx {
                        op: "AbortMultipartUpload",
                        key: &full,
                    },
                    e,
                );
                tracing::warn!(error = %e, "could not abort a multipart upload; a bucket lifecycle rule should clean it up");
            }
        }
        result
    }

    /// Uploads the parts (at most `parts_in_flight` at once) and completes.
    async fn multipart(
        &self,
        key: &str,
        full: &str,
        upload_id: &str,
        buf: BytesMut,
        rx: &mut mpsc::Receiver<Piece>,
        mode: PutMode,
    ) -> Result<PutOutcome, StorageError> {
        let mut in_flight = JoinSet::new();
        let parts = self
            .upload_parts(key, full, upload_id, buf, rx, &mut in_flight)
            .await;
        match parts {
            Ok(done) => self.complete(key, full, upload_id, done, mode).await,
            Err(e) => {
                // Let the parts already sent settle before the caller aborts
                // the upload: a part the server finishes storing after the
                // abort would stay behind, unlisted and billed (as S3's
                // AbortMultipartUpload documentation warns).
                while in_flight.join_next().await.is_some() {}
                Err(e)
            }
        }
    }

    /// Sends the parts, at most `parts_in_flight` at once, and returns them
    /// in order once all are stored; on error, parts may still be in flight.
    async fn upload_parts(
        &self,
        key: &str,
        full: &str,
        upload_id: &str,
        mut buf: BytesMut,
        rx: &mut mpsc::Receiver<Piece>,
        in_flight: &mut JoinSet<Result<CompletedPart, StorageError>>,
    ) -> Result<Vec<CompletedPart>, StorageError> {
        let base = self.inner.tuning.part_size;
        let mut done: Vec<CompletedPart> = Vec::new();
        let mut next_part: i32 = 1;
        let mut finished = false;
        loop {
            // This part's size: grows every 1,000 parts (see `S3Tuning::part_size`).
            let part_size = base * (1 + (next_part as usize - 1) / 1000);
            while !finished && buf.len() < part_size {
                match rx.recv().await {
                    Some(Piece::Data(data)) => buf.extend_from_slice(&data),
                    Some(Piece::Finish) => finished = true,
                    None => return Err(dropped(key)),
                }
            }
            if buf.is_empty() && next_part > 1 {
                break;
            }
            if next_part > MAX_PARTS {
                return Err(StorageError::S3 {
                    op: "UploadPart",
                    key: format!("{}/{full}", self.inner.bucket),
                    message: format!("the object needs more than {MAX_PARTS} parts"),
                    status: None,
                });
            }
            let take = buf.len().min(part_size);
            let body = buf.split_to(take).freeze();
            while in_flight.len() >= self.inner.tuning.parts_in_flight {
                done.push(join_part(in_flight.join_next().await, key)?);
            }
            let this = self.clone();
            let (full, upload_id, number) = (full.to_string(), upload_id.to_string(), next_part);
            in_flight.spawn(async move { this.upload_part(&full, &upload_id, number, body).await });
            next_part += 1;
            if finished && buf.is_empty() {
                break;
            }
        }
        while let Some(joined) = in_flight.join_next().await {
            done.push(join_part(Some(joined), key)?);
        }
        done.sort_by_key(|p| p.part_number());
        Ok(done)
    }

    async fn upload_part(
        &self,
        full: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<CompletedPart, StorageError> {
        let mut req = self
            .inner
            .client
            .upload_part()
            .bucket(&self.inner.bucket)
            .key(full)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(body.len() as i64)
            .body(ByteStream::from(body));
        if self.inner.checksums {
            req = req.checksum_algorithm(ChecksumAlgorithm::Crc32);
        }
        let out = req.send().await.map_err(|e| {
            self.error(
                Ctx {
                    op: "UploadPart",
                    key: full,
                },
                e,
            )
        })?;
        let Some(etag) = out.e_tag() else {
            return Err(StorageError::S3 {
                op: "UploadPart",
                key: format!("{}/{full}", self.inner.bucket),
                message: format!("the answer for part {number} has no ETag"),
                status: None,
            });
        };
        Ok(CompletedPart::builder()
            .part_number(number)
            .e_tag(etag)
            .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
            .build())
    }

    async fn complete(
        &self,
        key: &str,
        full: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        mode: PutMode,
    ) -> Result<PutOutcome, StorageError> {
        let conditional =
            mode == PutMode::IfAbsent && !self.inner.no_conditional_writes.load(Ordering::Relaxed);
        let send = |if_none_match: bool| {
            let mut req = self
                .inner
                .client
                .complete_multipart_upload()
                .bucket(&self.inner.bucket)
                .key(full)
                .upload_id(upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts.clone()))
                        .build(),
                );
            if if_none_match {
                req = req.if_none_match("*");
            }
            req.send()
        };
        match send(conditional).await {
            Ok(_) => Ok(PutOutcome::Stored),
            Err(e) if conditional && matches!(Self::status_and_code(&e), Some((412, _))) => {
                Ok(PutOutcome::AlreadyExists)
            }
            Err(e) if conditional && Self::conditional_unsupported(&e) => {
                self.note_no_conditional_writes();
                if self.head(key).await?.is_some() {
                    return Ok(PutOutcome::AlreadyExists);
                }
                send(false).await.map(|_| PutOutcome::Stored).map_err(|e| {
                    self.error(
                        Ctx {
                            op: "CompleteMultipartUpload",
                            key: full,
                        },
                        e,
                    )
                })
            }
            Err(e) => Err(self.error(
                Ctx {
                    op: "CompleteMultipartUpload",
                    key: full,
                },
                e,
            )),
        }
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<GetStream>, StorageError> {
        let full = self.full_key(key);
        let result = self
            .inner
            .client
            .get_object()
            .bucket(&self.inner.bucket)
            .key(&full)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Some(GetStream {
                key: key.to_string(),
                size: out
                    .content_length()
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
                inner: GetInner::S3 { body: out.body },
            })),
            Err(e) => match Self::status_and_code(&e) {
                // Some servers (s3s-fs) say NoSuchKey for a missing bucket
                // too: check the bucket (once) before saying "no such object".
                Some((status, code))
                    if code == "NoSuchKey" || (status == 404 && code != "NoSuchBucket") =>
                {
                    self.check_bucket().await?;
                    Ok(None)
                }
                _ => Err(self.error(
                    Ctx {
                        op: "GetObject",
                        key: &full,
                    },
                    e,
                )),
            },
        }
    }

    pub(crate) async fn get_range(
        &self,
        key: &str,
        offset: u64,
        len: u64,
    ) -> Result<Option<Bytes>, StorageError> {
        let full = self.full_key(key);
        let Some(last) = offset.checked_add(len).and_then(|end| end.checked_sub(1)) else {
            return Err(super::range_error(key, offset, len, 0));
        };
        let result = self
            .inner
            .client
            .get_object()
            .bucket(&self.inner.bucket)
            .key(&full)
            .range(format!("bytes={offset}-{last}"))
            .send()
            .await;
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                return match Self::status_and_code(&e) {
                    Some((status, code))
                        if code == "NoSuchKey" || (status == 404 && code != "NoSuchBucket") =>
                    {
                        self.check_bucket().await?;
                        Ok(None)
                    }
                    _ => Err(self.error(
                        Ctx {
                            op: "GetObject (range)",
                            key: &full,
                        },
                        e,
                    )),
                };
            }
        };
        let body = out.body.collect().await.map_err(|e| StorageError::S3 {
            op: "GetObject (range)",
            key: full.clone(),
            message: format!("reading the body failed: {}", error_chain(&e)),
            status: None,
        })?;
        let bytes = body.into_bytes();
        if bytes.len() as u64 != len {
            // A server that ignores Range sends the whole object: refuse it
            // rather than hand out the wrong bytes.
            return Err(StorageError::S3 {
                op: "GetObject (range)",
                key: full,
                message: format!(
                    "asked for {len} bytes at offset {offset}, got {} (range beyond the object's end, or Range ignored)",
                    bytes.len()
                ),
                status: None,
            });
        }
        Ok(Some(bytes))
    }

    pub(crate) async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StorageError> {
        let full = self.full_key(key);
        let result = self
            .inner
            .client
            .head_object()
            .bucket(&self.inner.bucket)
            .key(&full)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: out
                    .content_length()
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
                modified: out
                    .last_modified()
                    .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
            })),
            // A HEAD answer has no body, so a missing bucket also looks like
            // 404: check the bucket once before saying "no such object".
            Err(e) if matches!(Self::status_and_code(&e), Some((404, _))) => {
                self.check_bucket().await?;
                Ok(None)
            }
            Err(e) => Err(self.error(
                Ctx {
                    op: "HeadObject",
                    key: &full,
                },
                e,
            )),
        }
    }

    /// Fails with `BucketNotFound` when the bucket is missing (checked once
    /// per client: a bucket does not vanish under a running repository).
    async fn check_bucket(&self) -> Result<(), StorageError> {
        if self.inner.bucket_seen.load(Ordering::Relaxed) {
            return Ok(());
        }
        match self
            .inner
            .client
            .head_bucket()
            .bucket(&self.inner.bucket)
            .send()
            .await
        {
            Ok(_) => {
                self.inner.bucket_seen.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(e) if matches!(Self::status_and_code(&e), Some((404, _))) => {
                Err(StorageError::BucketNotFound {
                    bucket: self.inner.bucket.clone(),
                    endpoint: self.inner.endpoint.clone(),
                })
            }
            Err(e) => Err(self.error(
                Ctx {
                    op: "HeadBucket",
                    key: "",
                },
                e,
            )),
        }
    }

    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let root = if self.inner.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.inner.prefix)
        };
        let full_prefix = format!("{root}{prefix}");
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .inner
                .client
                .list_objects_v2()
                .bucket(&self.inner.bucket)
                .prefix(&full_prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| {
                    self.error(
                        Ctx {
                            op: "ListObjectsV2",
                            key: &full_prefix,
                        },
                        e,
                    )
                })?;
            for obj in page.contents() {
                let Some(key) = obj.key().and_then(|k| k.strip_prefix(&root)) else {
                    continue;
                };
                out.push(ObjectMeta {
                    key: key.to_string(),
                    size: obj.size().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
                    modified: obj
                        .last_modified()
                        .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
                });
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(t)) => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let full = self.full_key(key);
        match self
            .inner
            .client
            .delete_object()
            .bucket(&self.inner.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Some stores answer 404 for a missing key: deleting it is done.
            Err(e) if matches!(Self::status_and_code(&e), Some((404, c)) if c != "NoSuchBucket") => {
                Ok(())
            }
            Err(e) => Err(self.error(
                Ctx {
                    op: "DeleteObject",
                    key: &full,
                },
                e,
            )),
        }
    }
}

/// An error and its causes, `: `-separated (Display only: the SDK's Debug
/// output is long and says nothing more to an operator).
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let text = e.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = e.source();
    }
    out
}

fn dropped(key: &str) -> StorageError {
    StorageError::Aborted {
        key: key.to_string(),
        reason: "the writer was dropped or aborted before finish".to_string(),
    }
}

fn join_part(
    joined: Option<Result<Result<CompletedPart, StorageError>, tokio::task::JoinError>>,
    key: &str,
) -> Result<CompletedPart, StorageError> {
    match joined {
        Some(Ok(part)) => part,
        Some(Err(e)) => Err(StorageError::Aborted {
            key: key.to_string(),
            reason: format!("part upload task failed: {e}"),
        }),
        None => Err(StorageError::Aborted {
            key: key.to_string(),
            reason: "no part upload in flight".to_string(),
        }),
    }
}
