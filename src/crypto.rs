//! Secrets at rest: AES-SIV-512 (RFC 5297, AEAD mode with a random nonce) under a keyring of
//! master keys. A sealed value is `base64(version || key id || nonce || ciphertext)` and is bound
//! to its owner by the associated data (e.g. `ai_api_key|v1|account:acme`), so a ciphertext copied
//! to another row does not open.

use aes_siv::siv::Aes256Siv;
use aes_siv::KeyInit;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::{Digest, Sha256};

/// Format version of sealed values.
const VERSION: u8 = 1;
const KID_LEN: usize = 4;
const NONCE_LEN: usize = 16;
const TAG_LEN: usize = 16;
/// AES-SIV-512: a 256-bit MAC key and a 256-bit encryption key.
pub const MASTER_KEY_LEN: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("master key must be base64 of 64 bytes (AES-SIV-512), got {0} bytes")]
    BadKeyLength(usize),
    #[error("master key is not valid base64")]
    BadKeyEncoding,
    #[error("sealed value is malformed")]
    Malformed,
    #[error("sealed value was made with key id {0}, which is not in the keyring")]
    UnknownKey(KeyId),
    #[error("sealed value does not open (wrong owner or tampered)")]
    Decrypt,
    #[error("sealed value is not UTF-8")]
    NotUtf8,
}

/// A 64-byte master key. Its bytes never appear in `Debug` output and are zeroized on drop.
pub struct MasterKey(SecretBox<[u8; MASTER_KEY_LEN]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.kid())
    }
}

impl MasterKey {
    /// A new random key from the OS RNG.
    pub fn generate() -> Self {
        let mut bytes = Box::new([0u8; MASTER_KEY_LEN]);
        rand::rng().fill_bytes(bytes.as_mut());
        MasterKey(SecretBox::new(bytes))
    }

    pub fn from_base64(s: &str) -> Result<Self, CryptoError> {
        let raw = STANDARD
            .decode(s.trim())
            .map_err(|_| CryptoError::BadKeyEncoding)?;
        let bytes: [u8; MASTER_KEY_LEN] = raw
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::BadKeyLength(raw.len()))?;
        Ok(MasterKey(SecretBox::new(Box::new(bytes))))
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.expose_secret())
    }

    /// First 4 bytes of SHA-256("wagate-kid-v1" || key).
    pub fn kid(&self) -> KeyId {
        let mut h = Sha256::new();
        h.update(b"wagate-kid-v1");
        h.update(self.0.expose_secret());
        let d = h.finalize();
        KeyId([d[0], d[1], d[2], d[3]])
    }

    fn cipher(&self) -> Aes256Siv {
        // The key is exactly 64 bytes, the size AES-256-SIV takes.
        #[allow(clippy::expect_used)]
        Aes256Siv::new_from_slice(self.0.expose_secret()).expect("64-byte key")
    }
}

/// Identifies the master key a value was sealed with.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct KeyId(pub [u8; KID_LEN]);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", hex::encode(self.0))
    }
}

/// The current master key (seals) plus old ones (still open).
pub struct Keyring {
    current: MasterKey,
    old: Vec<MasterKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.kid())
            .field(
                "old",
                &self.old.iter().map(MasterKey::kid).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The associated data binding an API key to its owner: `global` or `account:<id>`.
pub fn api_key_ad(owner: &str) -> String {
    format!("ai_api_key|v1|{owner}")
}

impl Keyring {
    pub fn new(current: MasterKey, old: Vec<MasterKey>) -> Self {
        Self { current, old }
    }

    pub fn current_kid(&self) -> KeyId {
        self.current.kid()
    }

    pub fn kids(&self) -> Vec<KeyId> {
        std::iter::once(&self.current)
            .chain(&self.old)
            .map(MasterKey::kid)
            .collect()
    }

    /// Seals `plaintext` for `owner_ad` under the current key with a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8], owner_ad: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ct = self
            .current
            .cipher()
            .encrypt([owner_ad.as_bytes(), &nonce[..]], plaintext);
        // SIV encryption fails only for more than 126 headers; we pass two.
        #[allow(clippy::expect_used)]
        let ct = ct.expect("two SIV headers");
        let mut out = Vec::with_capacity(1 + KID_LEN + NONCE_LEN + ct.len());
        out.push(VERSION);
        out.extend_from_slice(&self.current.kid().0);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        STANDARD.encode(out)
    }

    fn parse(sealed: &str) -> Result<(KeyId, Vec<u8>), CryptoError> {
        let raw = STANDARD
            .decode(sealed)
            .map_err(|_| CryptoError::Malformed)?;
        if raw.len() < 1 + KID_LEN + NONCE_LEN + TAG_LEN || raw[0] != VERSION {
            return Err(CryptoError::Malformed);
        }
        let mut kid = [0u8; KID_LEN];
        kid.copy_from_slice(&raw[1..1 + KID_LEN]);
        Ok((KeyId(kid), raw))
    }

    /// Opens a sealed value for `owner_ad`.
    pub fn open(&self, sealed: &str, owner_ad: &str) -> Result<SecretBox<Vec<u8>>, CryptoError> {
        let (kid, raw) = Self::parse(sealed)?;
        let key = std::iter::once(&self.current)
            .chain(&self.old)
            .find(|k| k.kid() == kid)
            .ok_or(CryptoError::UnknownKey(kid))?;
        let nonce = &raw[1 + KID_LEN..1 + KID_LEN + NONCE_LEN];
        let ct = &raw[1 + KID_LEN + NONCE_LEN..];
        let pt = key
            .cipher()
            .decrypt([owner_ad.as_bytes(), nonce], ct)
            .map_err(|_| CryptoError::Decrypt)?;
        Ok(SecretBox::new(Box::new(pt)))
    }

    /// Opens a sealed UTF-8 secret (an API key).
    pub fn open_string(&self, sealed: &str, owner_ad: &str) -> Result<SecretString, CryptoError> {
        let bytes = self.open(sealed, owner_ad)?;
        let s = std::str::from_utf8(bytes.expose_secret()).map_err(|_| CryptoError::NotUtf8)?;
        Ok(SecretString::from(s.to_string()))
    }

    /// Whether `sealed` was made with another key than the current one.
    pub fn needs_rotation(&self, sealed: &str) -> bool {
        Self::parse(sealed).is_ok_and(|(kid, _)| kid != self.current_kid())
    }

    /// Opens with whichever key made it and seals again under the current key.
    pub fn reseal(&self, sealed: &str, owner_ad: &str) -> Result<String, CryptoError> {
        let pt = self.open(sealed, owner_ad)?;
        Ok(self.seal(pt.expose_secret(), owner_ad))
    }
}

#[cfg(test)]
mod tests {
    use aes_siv::siv::Aes128Siv;

    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).expect("hex")
    }

    /// RFC 5297 appendix A.1: deterministic authenticated encryption.
    #[test]
    fn rfc5297_a1_deterministic() {
        let key = h("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
        let ad = h("101112131415161718191a1b1c1d1e1f2021222324252627");
        let pt = h("112233445566778899aabbccddee");
        let expected = h("85632d07c6e8f37f950acd320a2ecc9340c02b9690c4dc04daef7f6afe5c");
        let mut siv = Aes128Siv::new_from_slice(&key).expect("key");
        assert_eq!(siv.encrypt([&ad], &pt).expect("encrypt"), expected);
        assert_eq!(siv.decrypt([&ad], &expected).expect("decrypt"), pt);
    }

    /// RFC 5297 appendix A.2: nonce-based authenticated encryption (headers AD1, AD2, nonce:
    /// the same header layout `seal` uses with AD, nonce).
    #[test]
    fn rfc5297_a2_nonce_based() {
        let key = h("7f7e7d7c7b7a79787776757473727170404142434445464748494a4b4c4d4e4f");
        let ad1 =
            h("00112233445566778899aabbccddeeffdeaddadadeaddadaffeeddccbbaa99887766554433221100");
        let ad2 = h("102030405060708090a0");
        let nonce = h("09f911029d74e35bd84156c5635688c0");
        let pt = h("7468697320697320736f6d6520706c61696e7465787420746f20656e6372797074207573696e67205349562d414553");
        let expected = h("7bdb6e3b432667eb06f4d14bff2fbd0fcb900f2fddbe404326601965c889bf17dba77ceb094fa663b7a3f748ba8af829ea64ad544a272e9c485b62a3fd5c0d");
        let mut siv = Aes128Siv::new_from_slice(&key).expect("key");
        assert_eq!(
            siv.encrypt([&ad1, &ad2, &nonce], &pt).expect("encrypt"),
            expected
        );
        assert_eq!(
            siv.decrypt([&ad1, &ad2, &nonce], &expected)
                .expect("decrypt"),
            pt
        );
    }

    fn ring() -> Keyring {
        Keyring::new(MasterKey::generate(), vec![])
    }

    #[test]
    fn round_trip_and_random_nonce() {
        let k = ring();
        let a = k.seal(b"sk-secret", "ai_api_key|v1|global");
        let b = k.seal(b"sk-secret", "ai_api_key|v1|global");
        assert_ne!(a, b, "a fresh nonce per seal");
        let opened = k.open_string(&a, "ai_api_key|v1|global").expect("opens");
        assert_eq!(opened.expose_secret(), "sk-secret");
        assert!(!a.contains("sk-secret"));
    }

    #[test]
    fn ciphertext_copied_to_another_owner_fails() {
        let k = ring();
        let sealed = k.seal(b"sk-a", &api_key_ad("account:a"));
        assert_eq!(
            k.open(&sealed, &api_key_ad("account:b")).err(),
            Some(CryptoError::Decrypt)
        );
    }

    #[test]
    fn tampering_fails() {
        let k = ring();
        let sealed = k.seal(b"sk-a", "x");
        let mut raw = STANDARD.decode(&sealed).expect("b64");
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert_eq!(
            k.open(&STANDARD.encode(&raw), "x").err(),
            Some(CryptoError::Decrypt)
        );
        assert_eq!(k.open("bm9wZQ==", "x").err(), Some(CryptoError::Malformed));
        assert_eq!(k.open("%%%", "x").err(), Some(CryptoError::Malformed));
    }

    #[test]
    fn rotation_with_old_keys() {
        let k1 = MasterKey::generate();
        let k1_copy = MasterKey::from_base64(&k1.to_base64()).expect("copy");
        let ring1 = Keyring::new(k1, vec![]);
        let sealed = ring1.seal(b"sk-rot", "o");
        let k2 = MasterKey::generate();
        let k2_copy = MasterKey::from_base64(&k2.to_base64()).expect("copy");
        let ring2 = Keyring::new(k2, vec![k1_copy]);
        assert!(ring2.needs_rotation(&sealed));
        assert_eq!(
            ring2
                .open_string(&sealed, "o")
                .expect("old key opens")
                .expose_secret(),
            "sk-rot"
        );
        let resealed = ring2.reseal(&sealed, "o").expect("reseal");
        assert!(!ring2.needs_rotation(&resealed));
        let ring3 = Keyring::new(k2_copy, vec![]);
        assert!(ring3.open(&resealed, "o").is_ok());
        assert!(matches!(
            ring3.open(&sealed, "o"),
            Err(CryptoError::UnknownKey(_))
        ));
    }

    #[test]
    fn master_key_parsing_and_debug() {
        assert_eq!(
            MasterKey::from_base64("bm90LWEta2V5").err(),
            Some(CryptoError::BadKeyLength(9))
        );
        assert_eq!(
            MasterKey::from_base64("!!").err(),
            Some(CryptoError::BadKeyEncoding)
        );
        let k = MasterKey::generate();
        let b64 = k.to_base64();
        let ring = Keyring::new(k, vec![]);
        let dbg = format!("{ring:?}");
        assert!(!dbg.contains(&b64[..12]), "{dbg}");
        assert_eq!(ring.kids().len(), 1);
    }
}
