//! A test's temporary directory, laid out so that walship run by PostgreSQL
//! (archive_command, restore_command, the streamer as the test user) can use
//! what the test puts there.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::pg::give_to_test_user;
use super::s3::S3Server;

/// A 256-bit key, as a key file holds it.
pub const KEY_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// Another key, for wrong-key tests.
pub const OTHER_KEY_HEX: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

/// A temp dir the PostgreSQL test user can traverse; removed on drop.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// A new one under /tmp whose name starts with `prefix`.
    pub fn new(prefix: &str) -> Scratch {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        Scratch { dir }
    }

    /// A path inside it (not created).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A directory owned by the PostgreSQL test user.
    pub fn user_dir(&self, name: &str) -> PathBuf {
        let p = self.path(name);
        fs::create_dir_all(&p).unwrap();
        give_to_test_user(&p);
        p
    }

    /// A key file (mode 0600) owned by the PostgreSQL test user.
    pub fn key_file(&self, name: &str, hex: &str) -> PathBuf {
        let p = self.path(name);
        fs::write(&p, format!("{hex}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        give_to_test_user(&p);
        p
    }

    /// An AWS shared-credentials file (0600, owned by the PostgreSQL test
    /// user) for `s3`: walship run by PostgreSQL finds its credentials there
    /// (`AWS_SHARED_CREDENTIALS_FILE`), never on a command line.
    pub fn aws_credentials(&self, s3: &S3Server) -> PathBuf {
        let p = self.path("aws-credentials");
        fs::write(
            &p,
            format!(
                "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
                s3.access_key(),
                s3.secret_key()
            ),
        )
        .unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        give_to_test_user(&p);
        p
    }
}
