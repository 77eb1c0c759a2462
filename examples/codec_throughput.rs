//! Codec throughput on real WAL segments, in CPU time of one core: each
//! building block per 1 MiB chunk (lz4 both ways, BLAKE3, CRC-32C,
//! AES-256-GCM), then whole objects encoded and decoded in every mode.
//!
//! A measurement, not a test (performance goals live in `bench/`):
//!
//! ```sh
//! cargo run --release --example codec_throughput -- bench/work/segments/*
//! ```

use std::sync::Arc;

use walship::codec::{decode_bytes, encode_bytes, CodecSettings, Compression, Key};

const CHUNK: usize = 1 << 20;
const ROUNDS: usize = 8;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        return Err("usage: codec_throughput WAL-SEGMENT... (bench/archive.sh leaves two in bench/work/segments)".into());
    }
    for path in paths {
        let data = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
        println!("{path} ({:.1} MB)", data.len() as f64 / 1e6);
        blocks(&data)?;
        objects(&data)?;
    }
    Ok(())
}

/// CPU seconds of this thread (wall time where schedstat is unavailable).
fn cpu_seconds() -> f64 {
    let ns = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
    match ns {
        Some(ns) => ns as f64 / 1e9,
        None => {
            static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
            START
                .get_or_init(std::time::Instant::now)
                .elapsed()
                .as_secs_f64()
        }
    }
}

/// MB/s of `bytes` per round of `f`, in CPU time.
fn rate(bytes: usize, mut f: impl FnMut()) -> f64 {
    let t = cpu_seconds();
    for _ in 0..ROUNDS {
        f();
    }
    bytes as f64 / 1e6 / ((cpu_seconds() - t) / ROUNDS as f64)
}

fn blocks(data: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
    let n = data.len();
    let mut comp = vec![0u8; lz4_flex::block::get_maximum_output_size(CHUNK)];
    let lz4c = rate(n, || {
        for c in data.chunks(CHUNK) {
            std::hint::black_box(lz4_flex::block::compress_into(c, &mut comp).ok());
        }
    });
    let packed: Vec<Vec<u8>> = data.chunks(CHUNK).map(lz4_flex::block::compress).collect();
    let mut plain = vec![0u8; CHUNK];
    let lz4d = rate(n, || {
        for (c, p) in packed.iter().zip(data.chunks(CHUNK)) {
            std::hint::black_box(lz4_flex::block::decompress_into(c, &mut plain[..p.len()]).ok());
        }
    });
    let b3 = rate(n, || {
        std::hint::black_box(blake3::hash(data));
    });
    let crc = rate(n, || {
        std::hint::black_box(crc32c::crc32c(data));
    });
    let key = UnboundKey::new(&AES_256_GCM, &[1u8; 32]).map_err(|_| "AES-256-GCM key")?;
    let cipher = LessSafeKey::new(key);
    let mut buf = data.to_vec();
    let gcm = rate(n, || {
        for c in buf.chunks_mut(CHUNK) {
            std::hint::black_box(
                cipher
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key([0u8; 12]),
                        Aad::from(b"ad"),
                        c,
                    )
                    .ok(),
            );
        }
    });
    println!(
        "  blocks (MB/s): lz4 compress {lz4c:.0}, lz4 decompress {lz4d:.0}, blake3 {b3:.0}, crc32c {crc:.0}, aes-256-gcm {gcm:.0}"
    );
    Ok(())
}

fn objects(data: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
    let key = Arc::new(Key::from_bytes([7; 32]));
    for (label, compression, key) in [
        ("lz4+enc", Compression::Lz4, Some(key.clone())),
        ("lz4", Compression::Lz4, None),
        ("none+enc", Compression::None, Some(key)),
        ("none", Compression::None, None),
    ] {
        let settings = CodecSettings { compression, key };
        let mut stored = Vec::new();
        let mut failed = None;
        let enc = rate(data.len(), || {
            match encode_bytes("bench", data, &settings) {
                Ok((s, _)) => stored = s,
                Err(e) => failed = Some(e),
            }
        });
        let mut back = Vec::new();
        let dec = rate(data.len(), || {
            match decode_bytes("bench", &stored, settings.key.clone()) {
                Ok((p, _)) => back = p,
                Err(e) => failed = Some(e),
            }
        });
        if let Some(e) = failed {
            return Err(e.into());
        }
        if back != data {
            return Err(format!("{label}: decoded bytes differ").into());
        }
        println!(
            "  {label:9} -> {:.0}%: encode {enc:.0} MB/s, decode {dec:.0} MB/s (plaintext, one core)",
            100.0 * stored.len() as f64 / data.len() as f64,
        );
    }
    Ok(())
}
