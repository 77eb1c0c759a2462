//! Unit tests of the object codec: round trips in every mode, every tamper
//! case, key handling. Throughput is measured by `examples/codec_throughput.rs`.

use std::ops::Range;
use std::sync::Arc;

use super::*;
use crate::config::Secret;

const CS: usize = 1 << DEFAULT_CHUNK_SHIFT;

/// Decodes with the streaming decoder, with [`decode_in_order`] (its sink
/// form) and with [`decode_parallel_at`], which must agree exactly: the same
/// plaintext, or the same error.
fn decode_both(
    name: &str,
    stored: &[u8],
    key: Option<Arc<Key>>,
) -> Result<(Vec<u8>, ObjectSummary), CodecError> {
    let sequential = decode_bytes(name, stored, key.clone());
    let mut plain = Vec::new();
    let in_order = decode_in_order(name, stored, key.clone(), &mut |p| {
        plain.extend_from_slice(p);
        Ok(())
    });
    agree(name, "in-order", &sequential, &in_order, &plain);
    let at = std::sync::Mutex::new(Vec::new());
    let positional = decode_parallel_at(name, stored, key, 3, &|offset, p| {
        let mut at = at.lock().unwrap();
        let end = offset as usize + p.len();
        if at.len() < end {
            at.resize(end, 0);
        }
        at[offset as usize..end].copy_from_slice(p);
        Ok(())
    });
    agree(
        name,
        "positional",
        &sequential,
        &positional,
        &at.into_inner().unwrap(),
    );
    sequential
}

/// The same plaintext and summary, or the same error.
fn agree(
    name: &str,
    what: &str,
    sequential: &Result<(Vec<u8>, ObjectSummary), CodecError>,
    other: &Result<ObjectSummary, CodecError>,
    plain: &[u8],
) {
    match (sequential, other) {
        (Ok((a, sa)), Ok(sb)) => {
            assert!(*a == plain, "{name}: {what} plaintext differs");
            assert_eq!(sa, sb, "{name}: {what} summaries differ");
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string(), "{name}: {what} errors differ")
        }
        (a, b) => panic!(
            "{name}: sequential {:?} but {what} {:?}",
            a.as_ref().err(),
            b.as_ref().err()
        ),
    }
}

fn key(seed: u8) -> Arc<Key> {
    Arc::new(Key::from_bytes([seed; 32]))
}

/// The four modes: (label, settings).
fn modes() -> Vec<(&'static str, CodecSettings)> {
    vec![
        (
            "lz4+enc",
            CodecSettings {
                compression: Compression::Lz4,
                key: Some(key(7)),
            },
        ),
        (
            "lz4",
            CodecSettings {
                compression: Compression::Lz4,
                key: None,
            },
        ),
        (
            "none+enc",
            CodecSettings {
                compression: Compression::None,
                key: Some(key(7)),
            },
        ),
        (
            "none",
            CodecSettings {
                compression: Compression::None,
                key: None,
            },
        ),
    ]
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

/// WAL-like data: 8 KiB pages with a small header, records mixing repeated
/// tuples and random bytes, and a zeroed tail.
fn wal_like(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v = Vec::with_capacity(len);
    let mut page = 0u32;
    while v.len() < len {
        let start = v.len();
        v.extend_from_slice(&[0x10, 0xD1, 0x05, 0x00]);
        v.extend_from_slice(&page.to_le_bytes());
        v.extend_from_slice(&[0u8; 16]);
        let fill = rng.usize(4096..8000);
        while v.len() - start < fill {
            let rec = rng.usize(40..300);
            v.extend_from_slice(&(rec as u32).to_le_bytes());
            v.extend_from_slice(&rng.u32(..).to_le_bytes());
            for i in 0..rec {
                if i % 5 == 0 {
                    v.push(rng.u8(..));
                } else {
                    v.push(b"pgbench_accounts"[i % 16]);
                }
            }
        }
        v.resize(start + 8192, 0);
        page += 1;
    }
    v.truncate(len);
    v
}

fn kind(e: &CodecError) -> &'static str {
    match e {
        CodecError::KeyFile { .. } => "KeyFile",
        CodecError::Kdf { .. } => "Kdf",
        CodecError::WrongKey { .. } => "WrongKey",
        CodecError::KeyRequired { .. } => "KeyRequired",
        CodecError::NotEncrypted { .. } => "NotEncrypted",
        CodecError::NameMismatch { .. } => "NameMismatch",
        CodecError::Tampered { .. } => "Tampered",
        CodecError::Corrupt { .. } => "Corrupt",
        CodecError::Truncated { .. } => "Truncated",
        CodecError::NotAnObject { .. } => "NotAnObject",
        CodecError::UnsupportedVersion { .. } => "UnsupportedVersion",
        CodecError::LengthMismatch { .. } => "LengthMismatch",
        CodecError::Invalid { .. } => "Invalid",
        CodecError::Io { .. } => "Io",
    }
}

fn key_of(s: &CodecSettings) -> Option<Arc<Key>> {
    s.key.clone()
}

/// Frame byte ranges of a stored object (header excluded).
fn frames(stored: &[u8], encrypted: bool) -> Vec<Range<usize>> {
    let mut pos = HEADER_LEN;
    let mut out = Vec::new();
    while pos < stored.len() {
        let len = u32::from_le_bytes(stored[pos + 4..pos + 8].try_into().unwrap()) as usize;
        let end = pos + 8 + len + if encrypted { 0 } else { 4 };
        out.push(pos..end);
        pos = end;
    }
    assert_eq!(pos, stored.len());
    out
}

fn encode_small(name: &str, plain: &[u8], settings: &CodecSettings, shift: u8) -> Vec<u8> {
    let mut enc =
        ObjectEncoder::with_chunk_shift(name, plain.len() as u64, settings, shift).unwrap();
    let mut out = enc.header();
    enc.push(plain, &mut out);
    enc.finish(&mut out).unwrap();
    out
}

#[test]
fn round_trips_every_mode_and_size() {
    let sizes = [0usize, 1, CS - 1, CS, CS + 1, 5 * CS];
    for (label, settings) in modes() {
        for &size in &sizes {
            for (dlabel, data) in [
                ("random", random_bytes(size, size as u64)),
                ("wal-like", wal_like(size, size as u64)),
            ] {
                let name = format!("archive/{label}/{size}");
                let (stored, sum) = encode_bytes(&name, &data, &settings).unwrap();
                assert_eq!(sum.plain_len, size as u64);
                assert_eq!(sum.stored_len, stored.len() as u64);
                assert_eq!(sum.checksum, Checksum::of(&data));
                let (plain, dsum) = decode_both(&name, &stored, key_of(&settings))
                    .unwrap_or_else(|e| panic!("{label} {dlabel} {size}: {e}"));
                assert!(plain == data, "{label} {dlabel} {size}: content differs");
                assert_eq!(dsum, sum);
                let h = read_header(&stored).unwrap();
                assert_eq!(h.plain_len, size as u64);
                assert_eq!(h.compression, settings.compression);
                assert_eq!(h.encrypted, settings.key.is_some());
                assert_eq!(h.key_id, settings.key.as_ref().map(|k| k.id()));
                assert!(h.matches_name(&name));
                if dlabel == "wal-like" && size >= CS && settings.compression == Compression::Lz4 {
                    assert!(stored.len() < size * 3 / 4, "{label}: lz4 did not shrink");
                }
                if dlabel == "random" && size > 0 {
                    // Incompressible chunks are stored as is: small, fixed overhead.
                    let chunks = size.div_ceil(CS);
                    let per = if settings.key.is_some() {
                        8 + 16
                    } else {
                        8 + 4
                    };
                    assert_eq!(stored.len(), HEADER_LEN + size + chunks * per + per + 48);
                }
            }
        }
    }
}

#[test]
fn arbitrary_push_and_feed_splits_give_the_same_bytes() {
    let data = wal_like(3 * CS + 12345, 9);
    for (label, settings) in modes() {
        let salt = [3u8; 32];
        let mut one = ObjectEncoder::with_salt("o", data.len() as u64, &settings, 20, salt);
        let mut a = one.header();
        one.push(&data, &mut a);
        one.finish(&mut a).unwrap();

        let mut rng = fastrand::Rng::with_seed(1);
        let mut many = ObjectEncoder::with_salt("o", data.len() as u64, &settings, 20, salt);
        let mut b = many.header();
        let mut rest = &data[..];
        while !rest.is_empty() {
            let n = rng.usize(0..=rest.len().min(CS + 7));
            many.push(&rest[..n], &mut b);
            rest = &rest[n..];
        }
        many.finish(&mut b).unwrap();
        assert!(a == b, "{label}: chunking depends on push sizes");

        let mut dec = ObjectDecoder::new("o", key_of(&settings));
        let mut out = Vec::new();
        let mut rest = &b[..];
        while !rest.is_empty() {
            let n = rng.usize(0..=rest.len().min(70_000));
            dec.feed(&rest[..n], &mut out).unwrap();
            rest = &rest[n..];
        }
        dec.finish().unwrap();
        assert!(out == data, "{label}");
    }
}

#[test]
fn byte_at_a_time_decoding() {
    let data = wal_like(5000, 2);
    for (label, settings) in modes() {
        let stored = encode_small("tiny", &data, &settings, 10);
        let mut dec = ObjectDecoder::new("tiny", key_of(&settings));
        let mut out = Vec::new();
        for b in &stored {
            dec.feed(std::slice::from_ref(b), &mut out).unwrap();
        }
        assert_eq!(dec.finish().unwrap().plain_len, 5000, "{label}");
        assert!(out == data);
    }
}

#[test]
fn every_single_bit_flip_is_detected() {
    // 3 data chunks of 1 KiB (one compressible, one not, one partial) + trailer.
    let mut data = wal_like(2048, 4);
    data.extend(random_bytes(900, 5));
    for (label, settings) in modes() {
        let stored = encode_small("flip/me", &data, &settings, 10);
        assert_eq!(frames(&stored, settings.key.is_some()).len(), 4);
        // Headers and frame headers steer the parallel decoder's walk: every
        // bit of them goes through both decoders; elsewhere every 11th.
        let heads: Vec<usize> = frames(&stored, settings.key.is_some())
            .iter()
            .map(|r| r.start)
            .collect();
        let in_a_head =
            |byte: usize| byte < HEADER_LEN || heads.iter().any(|&h| (h..h + 8).contains(&byte));
        for bit in 0..stored.len() * 8 {
            let mut bad = stored.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let r = if in_a_head(bit / 8) || bit % 37 == 0 {
                decode_both("flip/me", &bad, key_of(&settings))
            } else {
                decode_bytes("flip/me", &bad, key_of(&settings))
            };
            assert!(r.is_err(), "{label}: flip of bit {bit} not detected");
        }
    }
}

#[test]
fn every_truncation_is_reported_as_truncated() {
    let data = wal_like(3000, 6);
    for (label, settings) in modes() {
        let stored = encode_small("cut", &data, &settings, 10);
        let boundaries: Vec<usize> = frames(&stored, settings.key.is_some())
            .iter()
            .map(|r| r.start)
            .collect();
        assert!(boundaries.len() >= 3);
        // Every prefix: chunk boundaries, mid-chunk, mid-header, empty.
        for cut in 0..stored.len() {
            let err = decode_both("cut", &stored[..cut], key_of(&settings)).unwrap_err();
            assert_eq!(kind(&err), "Truncated", "{label} cut at {cut}: {err}");
            let msg = err.to_string();
            assert!(msg.contains("cut"), "{msg}");
        }
        // A streaming decoder that saw everything but the trailer says so.
        let last = *boundaries.last().unwrap();
        let mut dec = ObjectDecoder::new("cut", key_of(&settings));
        let mut out = Vec::new();
        dec.feed(&stored[..last], &mut out).unwrap();
        let msg = dec.finish().unwrap_err().to_string();
        assert!(msg.contains("trailer"), "{msg}");
    }
}

#[test]
fn reordered_chunks_are_detected() {
    // Random data: equal-sized stored chunks, so a swap keeps the framing valid.
    let data = random_bytes(4 * 1024, 8);
    for (label, settings) in modes() {
        let enc = settings.key.is_some();
        let stored = encode_small("order", &data, &settings, 10);
        let f = frames(&stored, enc);
        assert_eq!(f[1].len(), f[2].len());
        let mut bad = stored[..f[1].start].to_vec();
        bad.extend_from_slice(&stored[f[2].clone()]);
        bad.extend_from_slice(&stored[f[1].clone()]);
        bad.extend_from_slice(&stored[f[2].end..]);
        assert_eq!(bad.len(), stored.len());
        let err = decode_both("order", &bad, key_of(&settings)).unwrap_err();
        let want = if enc { "Tampered" } else { "Corrupt" };
        assert_eq!(kind(&err), want, "{label}: {err}");
        assert!(err.to_string().contains("chunk 1"), "{err}");
        // Dropping a middle chunk is detected too.
        let mut dropped = stored[..f[1].start].to_vec();
        dropped.extend_from_slice(&stored[f[2].start..]);
        assert!(decode_both("order", &dropped, key_of(&settings)).is_err());
        // So is the trailer moved up (chunk count mismatch).
        let mut early = stored[..f[3].start].to_vec();
        early.extend_from_slice(&stored[f.last().unwrap().clone()]);
        assert!(decode_both("order", &early, key_of(&settings)).is_err());
    }
}

#[test]
fn swapped_objects_are_detected() {
    for (label, settings) in modes() {
        let a = encode_bytes("wal/000000010000000000000001", b"segment one", &settings)
            .unwrap()
            .0;
        let err = decode_both("wal/000000010000000000000002", &a, key_of(&settings)).unwrap_err();
        assert_eq!(kind(&err), "NameMismatch", "{label}: {err}");
        assert!(err.to_string().contains("000000010000000000000002"));
    }
}

#[test]
fn chunks_spliced_between_versions_of_one_object_are_detected() {
    // Two objects with the same name and length: splice chunk 1 of B into A.
    let a_data = random_bytes(3 * 1024, 10);
    let b_data = random_bytes(3 * 1024, 11);
    for (label, settings) in modes() {
        let enc = settings.key.is_some();
        let a = encode_small("same", &a_data, &settings, 10);
        let b = encode_small("same", &b_data, &settings, 10);
        let (fa, fb) = (frames(&a, enc), frames(&b, enc));
        let mut bad = a[..fa[1].start].to_vec();
        bad.extend_from_slice(&b[fb[1].clone()]);
        bad.extend_from_slice(&a[fa[1].end..]);
        let err = decode_both("same", &bad, key_of(&settings)).unwrap_err();
        let want = if enc { "Tampered" } else { "Corrupt" };
        assert_eq!(kind(&err), want, "{label}: {err}");
    }
}

#[test]
fn key_errors_are_distinct() {
    let data = wal_like(10_000, 3);
    let enc = CodecSettings {
        compression: Compression::Lz4,
        key: Some(key(1)),
    };
    let (stored, _) = encode_bytes("k", &data, &enc).unwrap();

    let err = decode_both("k", &stored, Some(key(2))).unwrap_err();
    assert_eq!(kind(&err), "WrongKey", "{err}");
    assert!(err.to_string().contains(&key(1).id().to_string()));
    assert!(err.to_string().contains(&key(2).id().to_string()));

    let err = decode_both("k", &stored, None).unwrap_err();
    assert_eq!(kind(&err), "KeyRequired", "{err}");

    let (plain_obj, _) = encode_bytes("k", &data, &CodecSettings::default()).unwrap();
    let err = decode_both("k", &plain_obj, Some(key(1))).unwrap_err();
    assert_eq!(kind(&err), "NotEncrypted", "{err}");

    // Right key id but tampered ciphertext: Tampered, not WrongKey.
    let mut bad = stored.clone();
    let last = bad.len() - 20;
    bad[last] ^= 0x40;
    let err = decode_both("k", &bad, Some(key(1))).unwrap_err();
    assert_eq!(kind(&err), "Tampered", "{err}");

    // The header is readable without a key.
    let h = read_header(&stored).unwrap();
    assert!(h.encrypted);
    assert_eq!(h.key_id, Some(key(1).id()));
    assert_eq!(h.plain_len, 10_000);
    assert_eq!(
        kind(&read_header(b"not an object at all, nope").unwrap_err()),
        "NotAnObject"
    );
}

#[test]
fn trailing_garbage_and_bad_headers_are_rejected() {
    let (mut stored, _) = encode_bytes("t", b"hello", &CodecSettings::default()).unwrap();
    stored.push(0);
    let err = decode_both("t", &stored, None).unwrap_err();
    assert_eq!(kind(&err), "Corrupt", "{err}");
    assert!(err.to_string().contains("after the trailer"));

    let (mut v3, _) = encode_bytes("t", b"hello", &CodecSettings::default()).unwrap();
    v3[8] = 3;
    assert_eq!(
        kind(&decode_both("t", &v3, None).unwrap_err()),
        "UnsupportedVersion"
    );
    assert_eq!(
        kind(&decode_both("t", b"PK\x03\x04 zip file", None).unwrap_err()),
        "NotAnObject"
    );
}

#[test]
fn encoder_rejects_a_wrong_length() {
    for (label, settings) in modes() {
        let mut enc = ObjectEncoder::new("len", 10, &settings);
        let mut out = enc.header();
        enc.push(b"123456789", &mut out);
        let err = enc.finish(&mut out).unwrap_err();
        assert_eq!(kind(&err), "LengthMismatch", "{label}");
        let mut enc = ObjectEncoder::new("len", 10, &settings);
        enc.push(b"12345678901", &mut out);
        let err = enc.finish(&mut out).unwrap_err();
        assert!(err.to_string().contains("11 bytes"), "{err}");
    }
    assert!(ObjectEncoder::with_chunk_shift("x", 1, &CodecSettings::default(), 9).is_err());
    assert!(ObjectEncoder::with_chunk_shift("x", 1, &CodecSettings::default(), 25).is_err());
}

#[test]
fn file_helpers_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("000000010000000000000003");
    let data = wal_like(2 * CS + 77, 12);
    std::fs::write(&src, &data).unwrap();
    for (label, settings) in modes() {
        let mut stored = Vec::new();
        let sum = encode_file("seg", &src, &settings, &mut stored).unwrap();
        assert_eq!(sum.stored_len, stored.len() as u64, "{label}");
        let mut plain = Vec::new();
        let dsum =
            decode_to_writer("seg", &mut &stored[..], key_of(&settings), &mut plain).unwrap();
        assert_eq!(dsum, sum);
        assert!(plain == data);
        let mut sink = Vec::new();
        let err = decode_to_writer(
            "seg",
            &mut &stored[..stored.len() - 1],
            key_of(&settings),
            &mut sink,
        )
        .unwrap_err();
        assert_eq!(kind(&err), "Truncated");
    }
    let missing = dir.path().join("missing");
    let err = encode_file("seg", &missing, &CodecSettings::default(), &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn key_files() {
    let dir = tempfile::tempdir().unwrap();
    let hexkey = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
    let write = |name: &str, content: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p
    };
    let a = Key::from_hex_file(&write("plain", hexkey)).unwrap();
    let b = Key::from_hex_file(&write("newline", &format!("{hexkey}\n"))).unwrap();
    let c = Key::from_hex_file(&write("crlf", &format!("{hexkey}\r\n"))).unwrap();
    assert_eq!(a.id(), b.id());
    assert_eq!(a.id(), c.id());
    assert_eq!(
        a.id(),
        Key::from_bytes(hex::decode(hexkey).unwrap().try_into().unwrap()).id()
    );

    let secretish = "zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    for (file, content, expect) in [
        ("badhex", secretish, "non-hex"),
        ("short", &hexkey[..63], "found 63"),
        ("long", &format!("{hexkey}00"), "found 66"),
        ("empty", "", "found 0"),
        (
            "spaces",
            &format!("{} {}", &hexkey[..32], &hexkey[32..]),
            "found 65",
        ),
    ] {
        let p = write(file, content);
        let err = Key::from_hex_file(&p).unwrap_err();
        assert_eq!(kind(&err), "KeyFile");
        let msg = err.to_string();
        assert!(msg.contains(&p.display().to_string()), "{msg}");
        assert!(msg.contains(expect), "{msg}");
        assert!(!msg.contains("445566778899"), "key material leaked: {msg}");
    }
    let err = Key::from_hex_file(&dir.path().join("nope")).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");

    // Debug never prints key bytes.
    let single = format!("{a:?}");
    let settings = CodecSettings {
        compression: Compression::Lz4,
        key: Some(Arc::new(a)),
    };
    let dbg = format!("{single} {settings:?}");
    assert!(!dbg.to_lowercase().contains("00112233"), "{dbg}");
    assert!(!dbg.contains("[0, 17"), "{dbg}");
}

fn small_kdf(salt: u8) -> KdfParams {
    KdfParams {
        salt: vec![salt; 16],
        m_cost: 256,
        t_cost: 1,
        p_cost: 1,
    }
}

#[test]
fn passphrase_kdf_is_deterministic() {
    let pass = Secret::new("correct horse battery staple");
    let k1 = Key::from_passphrase(&pass, &small_kdf(1)).unwrap();
    let k2 = Key::from_passphrase(&pass, &small_kdf(1)).unwrap();
    assert_eq!(k1.id(), k2.id());
    assert_eq!(k1.subkey("chunks"), k2.subkey("chunks"));
    assert_ne!(k1.subkey("chunks"), k1.subkey("other"));
    let k3 = Key::from_passphrase(&pass, &small_kdf(2)).unwrap();
    assert_ne!(k1.id(), k3.id());
    let k4 =
        Key::from_passphrase(&Secret::new("Correct horse battery staple"), &small_kdf(1)).unwrap();
    assert_ne!(k1.id(), k4.id());
    // Objects written with one derivation decode with the other.
    let s = CodecSettings {
        compression: Compression::Lz4,
        key: Some(Arc::new(k1)),
    };
    let (stored, _) = encode_bytes("p", b"data", &s).unwrap();
    decode_both("p", &stored, Some(Arc::new(k2))).unwrap();

    assert_eq!(
        kind(&Key::from_passphrase(&Secret::new(""), &small_kdf(1)).unwrap_err()),
        "Kdf"
    );
    let mut bad = small_kdf(1);
    bad.salt = vec![1; 4];
    assert_eq!(kind(&Key::from_passphrase(&pass, &bad).unwrap_err()), "Kdf");
    let mut huge = small_kdf(1);
    huge.m_cost = u32::MAX;
    assert_eq!(
        kind(&Key::from_passphrase(&pass, &huge).unwrap_err()),
        "Kdf"
    );

    let g = KdfParams::generate();
    assert_eq!(g.salt.len(), 16);
    assert_eq!(g.m_cost, 64 * 1024);
    assert_ne!(g.salt, KdfParams::generate().salt);
    let json = serde_json::to_string(&g).unwrap();
    let back: KdfParams = serde_json::from_str(&json).unwrap();
    assert_eq!(back, g);
}

#[test]
fn key_check_detects_a_wrong_key() {
    let k = key(9);
    let check = KeyCheck::create(&k);
    check.verify(&k).unwrap();
    let err = check.verify(&key(10)).unwrap_err();
    assert_eq!(kind(&err), "WrongKey");
    let json = serde_json::to_string(&check).unwrap();
    let back: KeyCheck = serde_json::from_str(&json).unwrap();
    back.verify(&k).unwrap();
    // A forged check with the right key id but a wrong MAC is still refused.
    let mut forged = check.clone();
    forged.mac[0] ^= 1;
    assert_eq!(kind(&forged.verify(&k).unwrap_err()), "WrongKey");
    assert!(!json.contains(&hex::encode([9u8; 32])));
}

#[test]
fn checksum_serde_and_display() {
    let c = Checksum::of(b"abc");
    let s = c.to_string();
    assert_eq!(s.len(), 64);
    assert_eq!(s.parse::<Checksum>().unwrap(), c);
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(json, format!("\"{s}\""));
    assert_eq!(serde_json::from_str::<Checksum>(&json).unwrap(), c);
}

/// CPU time of this thread (Linux `schedstat`), so a measurement on a busy
/// machine is not skewed by waiting for a core; wall time elsewhere.
/// The test vectors printed in `docs/format.md`, so a second reader can be
/// checked against them; this test keeps the document truthful.
fn test_vectors() -> Vec<(&'static str, String)> {
    let mut key_bytes = [0u8; 32];
    for (i, b) in key_bytes.iter_mut().enumerate() {
        *b = i as u8;
    }
    let key = Arc::new(Key::from_bytes(key_bytes));
    let plain = b"hello, walship";
    let mut out = Vec::new();
    for (label, settings) in [
        (
            "lz4+enc",
            CodecSettings {
                compression: Compression::Lz4,
                key: Some(key.clone()),
            },
        ),
        ("lz4", CodecSettings::default()),
    ] {
        let mut enc =
            ObjectEncoder::with_salt("vector", plain.len() as u64, &settings, 10, [0x5a; 32]);
        let mut stored = enc.header();
        enc.push(plain, &mut stored);
        enc.finish(&mut stored).unwrap();
        let (back, _) = decode_both("vector", &stored, settings.key.clone()).unwrap();
        assert_eq!(back, plain);
        out.push((label, hex::encode(&stored)));
    }
    // Version 2: the trailer holds the keyed content id.
    let settings = CodecSettings {
        compression: Compression::Lz4,
        key: Some(key.clone()),
    };
    let id = content_id(&settings, plain);
    let mut enc = ObjectEncoder::with_salt_and_content_id(
        "vector",
        plain.len() as u64,
        &settings,
        10,
        [0x5a; 32],
        id,
    );
    let mut stored = enc.header();
    enc.push(plain, &mut stored);
    enc.finish(&mut stored).unwrap();
    let (back, summary) = decode_both("vector", &stored, settings.key.clone()).unwrap();
    assert_eq!((back.as_slice(), summary.checksum), (&plain[..], id));
    out.push(("lz4+enc, content id", hex::encode(&stored)));
    out.push(("content id", id.to_string()));
    out
}

#[test]
fn content_id_objects_verify_the_id_in_every_mode() {
    // Three 1 MiB chunks and a tail: the parallel decoder's keyed tree hash too.
    let plain = wal_like(3 * CS + 4321, 21);
    for (label, settings) in modes() {
        let id = content_id(&settings, &plain);
        let (stored, summary) = encode_bytes_with_id("cid", &plain, &settings, id).unwrap();
        let h = read_header(&stored).unwrap();
        let expect_kind = ChecksumKind::of_content_ids(&settings);
        assert_eq!(summary.checksum_kind, expect_kind, "{label}");
        assert_eq!(
            (h.checksum, h.version),
            (expect_kind, expect_kind.version())
        );
        if settings.key.is_none() {
            // Unencrypted, the id is plain BLAKE3: the very object encode_bytes writes.
            assert_eq!(h.version, 1, "{label}");
            assert_eq!(id, Checksum::of(&plain), "{label}");
            assert_eq!(
                summary.checksum,
                encode_bytes("cid", &plain, &settings).unwrap().1.checksum
            );
        } else {
            assert_ne!(id, Checksum::of(&plain), "{label}: the id must be keyed");
        }
        let (back, dec) = decode_both("cid", &stored, key_of(&settings)).unwrap();
        assert!(back == plain, "{label}");
        assert_eq!(
            (dec.checksum, dec.checksum_kind),
            (id, expect_kind),
            "{label}"
        );

        // A wrong id makes an object that does not decode.
        let mut wrong = id;
        wrong.0[0] ^= 1;
        let mut enc = ObjectEncoder::with_salt_and_content_id(
            "cid",
            plain.len() as u64,
            &settings,
            DEFAULT_CHUNK_SHIFT,
            [3; 32],
            wrong,
        );
        let mut bad = enc.header();
        enc.push(&plain, &mut bad);
        enc.finish(&mut bad).unwrap();
        let err = decode_both("cid", &bad, key_of(&settings)).unwrap_err();
        assert_eq!(kind(&err), "Corrupt", "{label}: {err}");
        assert!(err.to_string().contains("mismatch"), "{label}: {err}");
    }
}

#[test]
fn a_keyed_checksum_needs_version_2_and_encryption() {
    let plain = b"a chunk";
    let enc_settings = CodecSettings {
        compression: Compression::Lz4,
        key: Some(key(4)),
    };
    let id = content_id(&enc_settings, plain);
    let (stored, _) = encode_bytes_with_id("k", plain, &enc_settings, id).unwrap();
    // Version 1 has no checksum kind: byte 12 is reserved there.
    let mut v1 = stored.clone();
    v1[8] = 1;
    let crc = crc32c::crc32c(&v1[..88]);
    v1[88..92].copy_from_slice(&crc.to_le_bytes());
    let err = read_header(&v1).unwrap_err();
    assert!(err.to_string().contains("reserved"), "{err}");
    // An unencrypted object cannot claim a keyed checksum (nobody could check it).
    let (mut plain_obj, _) = encode_bytes("k", plain, &CodecSettings::default()).unwrap();
    plain_obj[8] = 2;
    plain_obj[12] = 1;
    let crc = crc32c::crc32c(&plain_obj[..88]);
    plain_obj[88..92].copy_from_slice(&crc.to_le_bytes());
    let err = read_header(&plain_obj).unwrap_err();
    assert!(err.to_string().contains("keyed checksum"), "{err}");
    // Another key: the key id says so before any hashing.
    let err = decode_both("k", &stored, Some(key(5))).unwrap_err();
    assert_eq!(kind(&err), "WrongKey", "{err}");
}

#[test]
fn test_vectors_match_the_format_document() {
    let doc = include_str!("../../docs/format.md");
    let flat: String = doc.chars().filter(|c| !c.is_whitespace()).collect();
    let vectors = test_vectors();
    let missing: Vec<String> = vectors
        .iter()
        .filter(|(_, hex)| !flat.contains(hex.as_str()))
        .map(|(label, hex)| format!("{label}: {hex}"))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/format.md lacks test vectors:\n{}",
        missing.join("\n")
    );
    let key = Key::from_bytes(std::array::from_fn(|i| i as u8));
    let id = key.id().to_string();
    assert!(flat.contains(&id), "docs/format.md lacks the key id {id}");
}

#[test]
fn codec_types_can_cross_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<ObjectEncoder>();
    send_sync::<ObjectDecoder>();
    send_sync::<CodecError>();
    send_sync::<CodecSettings>();
}

#[test]
fn random_damage_never_panics_and_is_always_reported() {
    let data = wal_like(6 * 1024 + 100, 13);
    let mut rng = fastrand::Rng::with_seed(14);
    for (label, settings) in modes() {
        let stored = encode_small("dmg", &data, &settings, 10);
        for _ in 0..2000 {
            let mut bad = stored.clone();
            match rng.u8(0..3) {
                0 => {
                    for _ in 0..rng.usize(1..8) {
                        let i = rng.usize(0..bad.len());
                        bad[i] = rng.u8(..);
                    }
                }
                1 => {
                    let at = rng.usize(0..bad.len());
                    let n = rng.usize(1..64).min(bad.len() - at);
                    bad.drain(at..at + n);
                }
                _ => {
                    let at = rng.usize(0..bad.len());
                    let junk = random_bytes(rng.usize(1..64), rng.u64(..));
                    bad.splice(at..at, junk);
                }
            }
            if bad == stored {
                continue;
            }
            let mut dec = ObjectDecoder::new("dmg", key_of(&settings));
            let mut out = Vec::new();
            let mut rest = &bad[..];
            let mut failed = false;
            while !rest.is_empty() {
                let n = rng.usize(1..=rest.len().min(3000));
                if dec.feed(&rest[..n], &mut out).is_err() {
                    failed = true;
                    break;
                }
                rest = &rest[n..];
            }
            if !failed {
                assert!(dec.finish().is_err(), "{label}: damage not detected");
            }
        }
    }
}

#[test]
fn an_absurd_frame_length_is_refused_before_buffering() {
    for (label, settings) in modes() {
        let (stored, _) = encode_bytes("len", &wal_like(5000, 1), &settings).unwrap();
        let mut bad = stored[..HEADER_LEN + 8].to_vec();
        bad[HEADER_LEN + 4..HEADER_LEN + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut dec = ObjectDecoder::new("len", key_of(&settings));
        let err = dec.feed(&bad, &mut Vec::new()).unwrap_err();
        assert_eq!(kind(&err), "Corrupt", "{label}: {err}");
        assert!(err.to_string().contains("chunk 0"), "{err}");
        assert!(
            err.to_string().contains(&format!("offset {HEADER_LEN}")),
            "{err}"
        );
    }
}

/// An object sealed by an earlier build (aes-gcm crate, before the switch to
/// ring): whatever implements AES-256-GCM, objects already in repositories
/// must keep opening, byte for byte.
const GOLDEN_LZ4_ENC: &str = concat!(
    "895753480d0a1a0a0101010a00000000280a00000000000009eed0821fa99f0881aa012faa3173614ee6a0b9",
    "1c47cb831bf6f72c431b571d2cd97a267a8cec3ea6c78eb794b4464ee38c7e36c8ce2a1cd2abe23d222b37bc",
    "6eadff2301000000f3000000f2e8546e8db1e4946e7bbba9769402d0fdd2d7faeb49b14683a2605dfe814324",
    "b25617caede761be53646ce5124f4be04d05ba67d6dae5e55339f7101ef86f20893b8f6c1af4d8b832ea7bcc",
    "6b66ab6ab3654bcc78f6b1ae33440fee71e36d8d47f5ee17e35907d3f7b9f0067c0a215b7485517574f18cb9",
    "32e1467631e19331ea37a1e22dd8ab0ef83696d88dd1681429276ab2dff0530bf08e4b31fdb1a99ba0bfcb30",
    "2b590cb4f97823fe93a49ea691a9b186dfa4a65bbfb3565ce00cb82a8ab88ef3e06733f8d591e00c1ea903b1",
    "1b93500b378c6ef9fb045043995f22d42580aa901abd212ce8e176041b2f8a7a9d0cf101000000f800000041",
    "13a88bb0f49c82c7cc42f080e698b4502755982298b2bf20ddbef4f9dce7a53fda68d059d27e0ae17bfe8c77",
    "5faebc0f25b7d2a194319037184ceb31425f21bf6b7873fb2f5c1d972cbda74a1ef0af0c99b1516b2858a959",
    "9aa43a86db83ad228bec4ffeb8aff26e2a638bafd267639ad5cd0dd56f145d80d64b61abd9c7cf94ea051806",
    "5d61022582bdba4aeb511dea69e82fc2ad0fc3fe24b690cd7bdfcdbf2477885dd6fc9d4936526c7dad10addd",
    "5794146c24f96342d0d593fd85982fe89f38510aaa37bf2d596fc686a917b78a7ea8cc454eba77e67517a2e9",
    "28fc40c02e645a196f79de38820c23a8c6bbff382f7b003ae87562010000008f000000ee40ff4240a7949001",
    "692d159a0f9284f01ebaef3299edc9eceedd6855e51eb0e130a8431d28e98302ab11401e3b329a82a604372c",
    "b228f63d2c679c4842092ca8cb4a7ae58421a4d78a2a4a614afda166d753f3bdb4ba3bef3b3fd3c3e57aef0e",
    "7ba534466419adc8c8afa32ef52e229b39e6eeb7e209df60756342aaa3ed1925599df76e8651bd59bab0b06d",
    "edca02000000400000006521f474444f90446131358424bd16ff2f6014b81f8a177a4e252d0849a0bc20970f",
    "22a8f6a6ed17f2a76edd26ca546b0a42f92504e5c84ce6dacda9637f79a6",
);

fn golden_plain() -> Vec<u8> {
    (0..2600u32)
        .map(|i| b"walship golden "[(i % 15) as usize] ^ ((i / 97) as u8))
        .collect()
}

#[test]
fn objects_sealed_by_an_earlier_build_still_open() {
    let stored = hex::decode(GOLDEN_LZ4_ENC).unwrap();
    let (plain, sum) = decode_bytes("archive/golden", &stored, Some(key(7))).unwrap();
    assert_eq!(plain, golden_plain());
    assert_eq!(sum.checksum, Checksum::of(&plain));
    // The same bytes under another name or key are refused.
    assert!(decode_bytes("archive/other", &stored, Some(key(7))).is_err());
    assert!(decode_bytes("archive/golden", &stored, Some(key(8))).is_err());
}
