//! A real S3 server (s3s-fs) for tests. (Being written.)
