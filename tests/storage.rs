//! Storage backends against the real thing: a temp directory (and a tiny tmpfs
//! for "disk full") and a real S3 server (s3s-fs, see `support/s3.rs`).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::s3::S3Server;
use walship::config::{RepoLocation, S3Settings, Secret};
use walship::storage::{PutMode, PutOutcome, S3Tuning, Storage, StorageError};

/// Deterministic pseudo-random content (incompressible, position-dependent).
fn content(len: usize, seed: u64) -> Bytes {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    Bytes::from(v)
}

async fn fs_storage() -> (tempfile::TempDir, Storage) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let s = Storage::open(&RepoLocation::Fs(root), &S3Settings::default())
        .await
        .unwrap();
    (dir, s)
}

async fn s3_storage(server: &S3Server, prefix: &str) -> Storage {
    Storage::open(&server.location(prefix), &server.settings())
        .await
        .unwrap()
}

/// Test tuning: few quick retries so failure paths stay well under 15 s.
fn fast_tuning() -> S3Tuning {
    S3Tuning {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(500),
        connect_timeout: Duration::from_secs(2),
        attempt_timeout: Duration::from_secs(5),
        operation_timeout: Duration::from_secs(10),
        ..S3Tuning::default()
    }
}

// ---- the contract, run against each backend ----

async fn small_round_trip(s: &Storage) {
    let key = "main/wal/00000001/000000010000000000000001.obj";
    let body = content(1000, 1);
    assert_eq!(
        s.put(key, body.clone(), PutMode::Overwrite).await.unwrap(),
        PutOutcome::Stored
    );
    assert_eq!(s.get_bytes(key).await.unwrap().unwrap(), body);
    let mut g = s.get(key).await.unwrap().unwrap();
    assert_eq!(g.size(), 1000);
    let mut read = Vec::new();
    while let Some(c) = g.next_chunk().await.unwrap() {
        read.extend_from_slice(&c);
    }
    assert_eq!(read, body);
    // Overwrite replaces.
    let other = content(10, 2);
    s.put(key, other.clone(), PutMode::Overwrite).await.unwrap();
    assert_eq!(s.get_bytes(key).await.unwrap().unwrap(), other);
    // Empty objects are objects.
    s.put("main/empty", Bytes::new(), PutMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(s.get_bytes("main/empty").await.unwrap().unwrap().len(), 0);
    assert_eq!(s.head("main/empty").await.unwrap().unwrap().size, 0);
}

async fn streamed_round_trip(s: &Storage, len: usize) {
    let key = "main/backup/20261121-000000F/base.tar.obj";
    let body = content(len, 3);
    let mut w = s.put_stream(key, PutMode::Overwrite).await.unwrap();
    // Odd piece size so parts do not line up with pieces.
    for piece in body.chunks(1_000_003) {
        w.write(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    assert!(
        s.head(key).await.unwrap().is_none(),
        "visible before finish"
    );
    assert_eq!(w.finish().await.unwrap(), PutOutcome::Stored);
    let meta = s.head(key).await.unwrap().unwrap();
    assert_eq!(meta.size, len as u64);
    assert!(meta.modified.is_some());
    let got = s.get_bytes(key).await.unwrap().unwrap();
    assert_eq!(got.len(), len);
    assert!(got == body, "content differs");
    // A large in-memory put takes the same path.
    let key2 = "main/backup/20261121-000000F/other.obj";
    s.put(key2, body.clone(), PutMode::Overwrite).await.unwrap();
    assert!(s.get_bytes(key2).await.unwrap().unwrap() == body);
}

async fn if_absent(s: &Storage, big: usize) {
    let key = "main/wal/00000001/000000010000000000000002.obj";
    let first = content(500, 4);
    assert_eq!(
        s.put(key, first.clone(), PutMode::IfAbsent).await.unwrap(),
        PutOutcome::Stored
    );
    let outcome = s
        .put(key, content(500, 5), PutMode::IfAbsent)
        .await
        .unwrap();
    assert_eq!(outcome, PutOutcome::AlreadyExists);
    let e = outcome.require_stored(key).unwrap_err();
    assert!(
        matches!(e, StorageError::AlreadyExists { .. }) && e.to_string().contains(key),
        "{e}"
    );
    assert_eq!(
        s.get_bytes(key).await.unwrap().unwrap(),
        first,
        "IfAbsent changed the object"
    );

    // Streamed (multipart on S3) IfAbsent onto an existing key.
    let mut w = s.put_stream(key, PutMode::IfAbsent).await.unwrap();
    let other = content(big, 6);
    for piece in other.chunks(1 << 20) {
        w.write(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    assert_eq!(w.finish().await.unwrap(), PutOutcome::AlreadyExists);
    assert_eq!(
        s.get_bytes(key).await.unwrap().unwrap(),
        first,
        "IfAbsent stream changed the object"
    );

    // Streamed IfAbsent onto a new key stores it.
    let key2 = "main/wal/00000001/000000010000000000000003.obj";
    let mut w = s.put_stream(key2, PutMode::IfAbsent).await.unwrap();
    for piece in other.chunks(1 << 20) {
        w.write(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    assert_eq!(w.finish().await.unwrap(), PutOutcome::Stored);
    assert!(s.get_bytes(key2).await.unwrap().unwrap() == other);
}

async fn list_head_delete(s: &Storage) {
    for k in [
        "main/wal/00000001/000000010000000000000001.obj",
        "main/wal/00000001/000000010000000000000002.obj",
        "main/wal/00000002/000000020000000000000003.obj",
        "main/backup/b1/manifest.json",
        "other/wal/x",
    ] {
        s.put(k, Bytes::from(k.to_string()), PutMode::Overwrite)
            .await
            .unwrap();
    }
    let keys =
        |v: Vec<walship::storage::ObjectMeta>| v.into_iter().map(|m| m.key).collect::<Vec<_>>();
    assert_eq!(
        keys(s.list("main/wal/").await.unwrap()),
        [
            "main/wal/00000001/000000010000000000000001.obj",
            "main/wal/00000001/000000010000000000000002.obj",
            "main/wal/00000002/000000020000000000000003.obj",
        ]
    );
    assert_eq!(
        keys(
            s.list("main/wal/00000001/0000000100000000000000")
                .await
                .unwrap()
        ),
        [
            "main/wal/00000001/000000010000000000000001.obj",
            "main/wal/00000001/000000010000000000000002.obj",
        ]
    );
    let all = s.list("").await.unwrap();
    assert_eq!(all.len(), 5);
    assert!(all.windows(2).all(|w| w[0].key < w[1].key), "not sorted");
    let m = all.iter().find(|m| m.key == "other/wal/x").unwrap();
    assert_eq!(m.size, "other/wal/x".len() as u64);
    assert!(s.list("nothing/").await.unwrap().is_empty());

    let h = s
        .head("main/backup/b1/manifest.json")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h.key, "main/backup/b1/manifest.json");
    assert_eq!(h.size, "main/backup/b1/manifest.json".len() as u64);
    assert!(s.head("main/backup/b1/missing").await.unwrap().is_none());
    assert!(s.get("main/backup/b1/missing").await.unwrap().is_none());
    assert!(s
        .get_bytes("main/backup/b1/missing")
        .await
        .unwrap()
        .is_none());

    s.delete("other/wal/x").await.unwrap();
    assert!(s.head("other/wal/x").await.unwrap().is_none());
    s.delete("other/wal/x").await.unwrap();
    s.delete("never/was").await.unwrap();
    assert_eq!(s.list("").await.unwrap().len(), 4);
}

async fn invalid_keys(s: &Storage) {
    for key in ["", "/etc/passwd", "a/../b", "..", "a//b", "a/", "./a"] {
        for e in [
            s.put(key, Bytes::from_static(b"x"), PutMode::Overwrite)
                .await
                .unwrap_err(),
            s.get(key).await.unwrap_err(),
            s.head(key).await.unwrap_err(),
            s.delete(key).await.unwrap_err(),
            s.put_stream(key, PutMode::Overwrite).await.unwrap_err(),
        ] {
            assert!(
                matches!(e, StorageError::InvalidKey { .. }),
                "{key:?}: {e:?}"
            );
            assert!(
                e.to_string().contains(&format!("{key:?}")),
                "names the key: {e}"
            );
        }
    }
    assert!(matches!(
        s.list("../").await.unwrap_err(),
        StorageError::InvalidKey { .. }
    ));
}

async fn aborted_stream_stores_nothing(s: &Storage, len: usize) {
    let key = "main/aborted.obj";
    let body = content(len, 7);
    // Dropped without finish.
    let mut w = s.put_stream(key, PutMode::Overwrite).await.unwrap();
    for piece in body.chunks(1 << 20) {
        w.write(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    drop(w);
    // Explicit abort.
    let mut w = s.put_stream(key, PutMode::Overwrite).await.unwrap();
    for piece in body.chunks(1 << 20) {
        w.write(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    w.abort().await;
    // Give the dropped writer's cleanup a moment (it runs in the background).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.head(key).await.unwrap().is_none());
    assert!(s.list("main/").await.unwrap().iter().all(|m| m.key != key));
}

async fn contract(s: &Storage, big: usize) {
    small_round_trip(s).await;
    streamed_round_trip(s, big).await;
    if_absent(s, big).await;
    aborted_stream_stores_nothing(s, big).await;
    invalid_keys(s).await;
}

// ---- fs ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_contract() {
    let (_dir, s) = fs_storage().await;
    assert!(s.describe().starts_with("file:///"), "{}", s.describe());
    contract(&s, 20 << 20).await;
    let (_dir2, s2) = fs_storage().await;
    list_head_delete(&s2).await;
    // A directory is a key prefix, not an object. (S3 has no directories;
    // s3s-fs answers 500 to a HEAD on one, so this is checked on fs only.)
    assert!(s2.head("main/backup/b1").await.unwrap().is_none());
    assert!(s2.get("main/backup").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_modes_and_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let s = Storage::open(&RepoLocation::Fs(root.clone()), &S3Settings::default())
        .await
        .unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // Opening creates nothing: the first write does.
    assert!(!root.exists());
    s.put(
        "main/wal/00000001/seg",
        Bytes::from_static(b"x"),
        PutMode::Overwrite,
    )
    .await
    .unwrap();
    assert_eq!(mode(&root), 0o700);
    let mut w = s
        .put_stream("main/backup/b/big", PutMode::IfAbsent)
        .await
        .unwrap();
    w.write(Bytes::from_static(b"y")).await.unwrap();
    w.finish().await.unwrap();
    for d in [
        "main",
        "main/wal",
        "main/wal/00000001",
        "main/backup",
        "main/backup/b",
    ] {
        assert_eq!(mode(&root.join(d)), 0o700, "{d}");
    }
    assert_eq!(mode(&root.join("main/wal/00000001/seg")), 0o600);
    assert_eq!(mode(&root.join("main/backup/b/big")), 0o600);
    // No temp files anywhere (the IfAbsent link path unlinks its temp name too).
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            assert!(
                !name.contains(".tmp."),
                "temp file left: {}",
                e.path().display()
            );
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }

    // A write whose directory cannot be created (its parent is a regular file)
    // fails naming the path and leaves nothing behind.
    s.put("main/file", Bytes::from_static(b"z"), PutMode::Overwrite)
        .await
        .unwrap();
    let e = s
        .put(
            "main/file/below",
            Bytes::from_static(b"z"),
            PutMode::Overwrite,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("main/file"), "{e}");
    assert_eq!(std::fs::read(root.join("main/file")).unwrap(), b"z");
    // An aborted stream removes its temp file.
    let mut w = s
        .put_stream("main/wal/00000001/aborted", PutMode::Overwrite)
        .await
        .unwrap();
    w.write(Bytes::from_static(b"partial")).await.unwrap();
    w.abort().await;
    let names: Vec<_> = std::fs::read_dir(root.join("main/wal/00000001"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["seg"]);
}

/// A tmpfs mounted for one test; unmounted on drop.
struct TinyFs {
    dir: tempfile::TempDir,
}

impl TinyFs {
    fn mount(size: &str) -> TinyFs {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .expect("run mount(8)");
        assert!(
            out.status.success(),
            "this test mounts a tiny tmpfs to fill it up and needs root with mount(8) \
             (CAP_SYS_ADMIN): mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TinyFs { dir }
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_disk_full_is_no_space_and_leaves_no_temp_file() {
    let tiny = TinyFs::mount("1m");
    let root = tiny.dir.path().join("repo");
    let s = Storage::open(&RepoLocation::Fs(root.clone()), &S3Settings::default())
        .await
        .unwrap();
    let e = s
        .put("main/wal/big", content(2 << 20, 8), PutMode::Overwrite)
        .await
        .unwrap_err();
    assert!(matches!(e, StorageError::NoSpace { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("disk full") && text.contains("main/wal"),
        "{text}"
    );
    assert!(!e.is_transient());

    let mut w = s
        .put_stream("main/wal/big2", PutMode::IfAbsent)
        .await
        .unwrap();
    let mut failed = None;
    for piece in content(2 << 20, 9).chunks(64 << 10) {
        if let Err(e) = w.write(Bytes::copy_from_slice(piece)).await {
            failed = Some(e);
            break;
        }
    }
    let e = match failed {
        Some(e) => e,
        None => w.finish().await.unwrap_err(),
    };
    assert!(matches!(e, StorageError::NoSpace { .. }), "{e:?}");

    let left: Vec<_> = std::fs::read_dir(root.join("main/wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        left.is_empty(),
        "left behind after a failed write: {left:?}"
    );
    // Space is back: a small write works.
    s.put("main/wal/small", content(1000, 10), PutMode::Overwrite)
        .await
        .unwrap();
}

// ---- S3 (a real s3s-fs server) ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_contract() {
    let server = S3Server::start();
    let s = s3_storage(&server, "repo1").await;
    assert_eq!(s.describe(), format!("s3://{}/repo1", server.bucket()));
    contract(&s, 20 << 20).await;
    // Objects are where they should be in the bucket (under the prefix).
    assert!(server.object_path("repo1/main/empty").is_file());
    // No multipart upload left open (aborted streams, IfAbsent refusals):
    // s3s-fs keeps pending parts as `.upload_id-*` / `.upload-*` files.
    let left = walk(&server.root());
    assert!(
        !left.iter().any(|p| p.contains("/.upload")),
        "multipart uploads left behind: {left:?}"
    );
    // The 20 MiB stream went up as a 3-part multipart upload (an S3 multipart
    // ETag ends in -<parts>), a small stream as one PutObject.
    let client = raw_client(&server);
    let etag = |key: &str| {
        let client = client.clone();
        let key = format!("repo1/{key}");
        let bucket = server.bucket().to_string();
        async move {
            let out = client
                .head_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap();
            out.e_tag().unwrap().trim_matches('"').to_string()
        }
    };
    assert!(etag("main/backup/20261121-000000F/base.tar.obj")
        .await
        .ends_with("-3"));
    assert!(etag("main/backup/20261121-000000F/other.obj")
        .await
        .ends_with("-3"));
    let mut w = s
        .put_stream("main/small-stream", PutMode::Overwrite)
        .await
        .unwrap();
    w.write(content(100_000, 11)).await.unwrap();
    w.finish().await.unwrap();
    assert!(!etag("main/small-stream").await.contains('-'));

    let s2 = s3_storage(&server, "").await;
    assert_eq!(s2.describe(), format!("s3://{}", server.bucket()));
    list_head_delete(
        &Storage::open(&server.location("repo2/deeper"), &server.settings())
            .await
            .unwrap(),
    )
    .await;
}

/// A plain SDK client for looking at what the backend stored.
fn raw_client(server: &S3Server) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(server.endpoint())
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            server.access_key(),
            server.secret_key(),
            None,
            None,
            "test",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_checksums_when_required() {
    let server = S3Server::start();
    let settings = S3Settings {
        checksum_when_required: true,
        ..server.settings()
    };
    let s = Storage::open(&server.location("cwr"), &settings)
        .await
        .unwrap();
    small_round_trip(&s).await;
    streamed_round_trip(&s, 20 << 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_server_down_then_back() {
    let mut server = S3Server::start();
    let s = Storage::open_with_tuning(&server.location("down"), &server.settings(), &fast_tuning())
        .await
        .unwrap();
    s.put("main/a", Bytes::from_static(b"a"), PutMode::Overwrite)
        .await
        .unwrap();

    server.stop();
    let started = Instant::now();
    let e = s
        .put("main/b", Bytes::from_static(b"b"), PutMode::IfAbsent)
        .await
        .unwrap_err();
    let took = started.elapsed();
    eprintln!("server down, after {took:?}: {e}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(matches!(e, StorageError::Unreachable { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains(&server.endpoint()) && text.contains("retries"),
        "{text}"
    );
    assert!(e.is_transient());
    // Reads fail too: never "not found" while the store cannot be asked.
    let e = s.get("main/a").await.unwrap_err();
    assert!(matches!(e, StorageError::Unreachable { .. }), "{e:?}");
    let e = s.head("main/zzz").await.unwrap_err();
    assert!(matches!(e, StorageError::Unreachable { .. }), "{e:?}");

    server.start_again();
    assert_eq!(
        s.put("main/b", Bytes::from_static(b"b"), PutMode::IfAbsent)
            .await
            .unwrap(),
        PutOutcome::Stored
    );
    assert_eq!(
        s.get_bytes("main/b").await.unwrap().unwrap(),
        Bytes::from_static(b"b")
    );
    assert_eq!(
        s.get_bytes("main/a").await.unwrap().unwrap(),
        Bytes::from_static(b"a")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_wrong_secret_is_access_denied() {
    let server = S3Server::start();
    let secret = "not-the-secret-at-all-0123456789abcdefgh";
    let settings = S3Settings {
        secret_access_key: Some(Secret::new(secret)),
        ..server.settings()
    };
    let s = Storage::open_with_tuning(&server.location("x"), &settings, &fast_tuning())
        .await
        .unwrap();
    let e = s
        .put("main/a", Bytes::from_static(b"a"), PutMode::Overwrite)
        .await
        .unwrap_err();
    assert!(matches!(e, StorageError::AccessDenied { .. }), "{e:?}");
    let text = e.to_string();
    eprintln!("wrong secret: {text}");
    assert!(
        text.contains(&format!("access denied to bucket {}", server.bucket())),
        "{text}"
    );
    assert!(
        !text.contains(secret) && !text.contains(server.secret_key()),
        "secret leaked: {text}"
    );
    assert!(!format!("{e:?}").contains(secret));
    for e in [
        s.get("main/a").await.unwrap_err(),
        s.head("main/a").await.unwrap_err(),
        s.list("main/").await.unwrap_err(),
    ] {
        assert!(matches!(e, StorageError::AccessDenied { .. }), "{e:?}");
    }
    assert!(!e.is_transient());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_missing_bucket_is_bucket_not_found() {
    let server = S3Server::start();
    let location = RepoLocation::S3 {
        bucket: "no-such-bucket".to_string(),
        prefix: "p".to_string(),
    };
    let s = Storage::open_with_tuning(&location, &server.settings(), &fast_tuning())
        .await
        .unwrap();
    let expected = format!(
        "bucket no-such-bucket does not exist at {}",
        server.endpoint()
    );
    // Reads only: s3s-fs's PutObject creates a missing bucket's directory
    // (real S3 answers NoSuchBucket, which maps the same way as below).
    for e in [
        s.get("main/a").await.unwrap_err(),
        s.head("main/a").await.unwrap_err(),
        s.list("main/").await.unwrap_err(),
        s.delete("main/a").await.unwrap_err(),
    ] {
        assert!(matches!(e, StorageError::BucketNotFound { .. }), "{e:?}");
        assert_eq!(e.to_string(), expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_stalled_server_times_out() {
    // A "server" that accepts connections and never answers: every attempt
    // hits the attempt timeout, then the error names the endpoint.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            match conn {
                Ok(c) => held.push(c),
                Err(_) => break,
            }
        }
    });
    let settings = S3Settings {
        endpoint: Some(endpoint.clone()),
        region: Some("us-east-1".into()),
        path_style: true,
        access_key_id: Some("AKIDEXAMPLE".into()),
        secret_access_key: Some(Secret::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")),
        ..S3Settings::default()
    };
    let tuning = S3Tuning {
        attempt_timeout: Duration::from_secs(1),
        operation_timeout: Duration::from_secs(6),
        ..fast_tuning()
    };
    let location = RepoLocation::S3 {
        bucket: "b".into(),
        prefix: String::new(),
    };
    let s = Storage::open_with_tuning(&location, &settings, &tuning)
        .await
        .unwrap();
    let started = Instant::now();
    let e = s
        .put("k", Bytes::from_static(b"x"), PutMode::Overwrite)
        .await
        .unwrap_err();
    let took = started.elapsed();
    eprintln!("stalled, after {took:?}: {e}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(took >= Duration::from_secs(2), "did not retry: {took:?}");
    assert!(matches!(e, StorageError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains(&endpoint), "{e}");
    assert!(e.is_transient());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_storage_class_and_sse_are_sent() {
    let server = S3Server::start();
    // s3s-fs accepts STANDARD and REDUCED_REDUNDANCY and refuses other
    // classes, which shows the header reaches the server.
    let ok = S3Settings {
        storage_class: Some("REDUCED_REDUNDANCY".into()),
        sse: Some("AES256".into()),
        ..server.settings()
    };
    let s = Storage::open(&server.location("sc"), &ok).await.unwrap();
    s.put("main/a", content(100, 12), PutMode::Overwrite)
        .await
        .unwrap();
    streamed_round_trip(&s, 9 << 20).await;

    let bad = S3Settings {
        storage_class: Some("NO_SUCH_CLASS".into()),
        ..server.settings()
    };
    let s = Storage::open_with_tuning(&server.location("sc"), &bad, &fast_tuning())
        .await
        .unwrap();
    let e = s
        .put("main/b", content(100, 13), PutMode::Overwrite)
        .await
        .unwrap_err();
    eprintln!("bad storage class: {e}");
    assert!(
        matches!(
            e,
            StorageError::S3 {
                status: Some(400),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("InvalidStorageClass") && e.to_string().contains("sc/main/b"),
        "{e}"
    );
    assert!(!e.is_transient());

    // A KMS key id without aws:kms is a settings error, caught at open.
    let kms = S3Settings {
        sse_kms_key_id: Some("arn:aws:kms:us-east-1:1:key/x".into()),
        ..server.settings()
    };
    let e = Storage::open(&server.location("sc"), &kms)
        .await
        .unwrap_err();
    assert!(matches!(e, StorageError::Config(_)), "{e:?}");
}
