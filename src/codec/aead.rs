//! AES-256-GCM for one object's chunks, and the random bytes the codec needs.
//!
//! Backed by ring: its AES-GCM is hand-written assembly that uses VAES and
//! VPCLMULQDQ where the CPU has them (about 3x the aes-gcm crate on the
//! development machine), and ring is already in the tree for TLS. The
//! construction is standard AES-256-GCM (12-byte nonce, 16-byte tag), so the
//! stored format does not depend on which implementation sealed it.

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};
use ring::rand::{SecureRandom, SystemRandom};

use super::format::TAG_LEN;

/// An object's AES-256-GCM key, ready to seal or open chunks.
pub(crate) struct ChunkCipher {
    key: LessSafeKey,
}

/// AES-GCM refused the operation: for `open`, the chunk is not authentic.
#[derive(Debug)]
pub(crate) struct AeadFailure;

impl ChunkCipher {
    /// A cipher under `key`; ring keeps its own expanded copy.
    pub(crate) fn new(key: &[u8; 32]) -> ChunkCipher {
        let unbound = UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte key fits AES-256-GCM");
        ChunkCipher {
            key: LessSafeKey::new(unbound),
        }
    }

    /// Encrypts `in_out` in place; returns the tag.
    pub(crate) fn seal(
        &self,
        nonce: [u8; 12],
        ad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], AeadFailure> {
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(ad), in_out)
            .map_err(|_| AeadFailure)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Authenticates and decrypts `in_out` in place against `tag`; on failure
    /// the content of `in_out` is unspecified and must not be used.
    pub(crate) fn open(
        &self,
        nonce: [u8; 12],
        ad: &[u8],
        in_out: &mut [u8],
        tag: &[u8],
    ) -> Result<(), AeadFailure> {
        let tag = Tag::try_from(tag).map_err(|_| AeadFailure)?;
        self.key
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(ad),
                tag,
                in_out,
                0..,
            )
            .map(|_| ())
            .map_err(|_| AeadFailure)
    }
}

/// Fills `out` from the operating system's CSPRNG. Failing to get randomness
/// is not recoverable for a tool that makes keys and nonces, so it aborts
/// with a message instead of producing predictable bytes.
pub(crate) fn fill_random(out: &mut [u8]) {
    if SystemRandom::new().fill(out).is_err() {
        panic!("the operating system's random number generator failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test Case 16 of McGrew and Viega, "The Galois/Counter Mode of
    /// Operation" (AES-256, 60-byte plaintext, 20 bytes of associated data).
    #[test]
    fn known_answer() {
        let key: [u8; 32] =
            hex::decode("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
                .unwrap()
                .try_into()
                .unwrap();
        let nonce: [u8; 12] = hex::decode("cafebabefacedbaddecaf888")
            .unwrap()
            .try_into()
            .unwrap();
        let ad = hex::decode("feedfacedeadbeeffeedfacedeadbeefabaddad2").unwrap();
        let plain = hex::decode(concat!(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72",
            "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
        ))
        .unwrap();
        let expected = concat!(
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa",
            "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
        );
        let cipher = ChunkCipher::new(&key);
        let mut buf = plain.clone();
        let tag = cipher.seal(nonce, &ad, &mut buf).unwrap();
        assert_eq!(hex::encode(&buf), expected);
        assert_eq!(hex::encode(tag), "76fc6ece0f4e1768cddf8853bb2d551b");
        cipher.open(nonce, &ad, &mut buf, &tag).unwrap();
        assert_eq!(buf, plain);
        let mut bad = tag;
        bad[0] ^= 1;
        assert!(cipher.open(nonce, &ad, &mut buf.clone(), &bad).is_err());
    }
}
