//! Secrets at rest (API keys, later other secrets): AES-SIV-512 (RFC 5297, AEAD mode with a random
//! 16-byte nonce) under a keyring of master keys. A sealed value is
//! `base64(version || key id || nonce || ciphertext)` and is bound to its owner row by the
//! associated data (see [`api_key_ad`]), so a ciphertext copied to another row does not open.

use aes_siv::siv::Aes256Siv;
use aes_siv::KeyInit;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::{Digest, Sha256};

/// Format version of sealed values (the first byte).
const VERSION: u8 = 1;
const KID_LEN: usize = 4;
const NONCE_LEN: usize = 16;
/// The synthetic IV that prefixes every SIV ciphertext.
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + KID_LEN + NONCE_LEN;
/// AES-SIV-512: a 256-bit CMAC key followed by a 256-bit CTR key.
pub const MASTER_KEY_LEN: usize = 64;
/// Domain separator of key ids.
const KID_CONTEXT: &[u8] = b"wagate-kid-v1";

/// Why a key could not be read or a sealed value could not be opened. The messages name key ids
/// and lengths only, never key or plaintext material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("master key must be base64 of 64 bytes (AES-SIV-512), got {0} bytes")]
    BadKeyLength(usize),
    #[error(
        "master key must be base64 of 64 bytes (AES-SIV-512), got text that is not standard base64"
    )]
    BadKeyEncoding,
    #[error("sealed value is malformed (bad base64, too short or unknown version)")]
    Malformed,
    #[error("sealed value was made with key id {0}, which is not in the keyring")]
    UnknownKey(KeyId),
    #[error("sealed value does not open (wrong owner or tampered)")]
    Decrypt,
    #[error("sealed value is not UTF-8")]
    NotUtf8,
}

/// A 64-byte AES-SIV-512 master key. The bytes live in a [`SecretBox`] (zeroized on drop) and
/// never appear in `Debug` output, which shows the key id only.
pub struct MasterKey(SecretBox<[u8; MASTER_KEY_LEN]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(kid={})", self.kid())
    }
}

impl MasterKey {
    /// A new random key from the OS RNG.
    pub fn generate() -> Self {
        let mut bytes = Box::new([0u8; MASTER_KEY_LEN]);
        rand::rng().fill_bytes(bytes.as_mut());
        MasterKey(SecretBox::new(bytes))
    }

    /// Parses standard base64 that must decode to exactly 64 bytes. ASCII whitespace anywhere is
    /// ignored, so the two-line output of `openssl rand -base64 64` is accepted as it is.
    pub fn from_base64(s: &str) -> Result<Self, CryptoError> {
        let compact = SecretString::from(
            s.chars()
                .filter(|c| !c.is_ascii_whitespace())
                .collect::<String>(),
        );
        let raw = SecretBox::new(Box::new(
            STANDARD
                .decode(compact.expose_secret())
                .map_err(|_| CryptoError::BadKeyEncoding)?,
        ));
        let raw = raw.expose_secret();
        if raw.len() != MASTER_KEY_LEN {
            return Err(CryptoError::BadKeyLength(raw.len()));
        }
        let mut bytes = Box::new([0u8; MASTER_KEY_LEN]);
        bytes.copy_from_slice(raw);
        Ok(MasterKey(SecretBox::new(bytes)))
    }

    /// Standard base64 of the key (for the dev key file; handle the result as a secret).
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.expose_secret())
    }

    /// First 4 bytes of SHA-256(`wagate-kid-v1` || key).
    pub fn kid(&self) -> KeyId {
        let mut h = Sha256::new();
        h.update(KID_CONTEXT);
        h.update(self.0.expose_secret());
        let d = h.finalize();
        KeyId([d[0], d[1], d[2], d[3]])
    }

    fn cipher(&self) -> Aes256Siv {
        // Infallible: the key is a `[u8; 64]`, exactly AES-256-SIV's key size, so it converts to
        // the cipher's key array by reference (no copy left behind).
        Aes256Siv::new(self.0.expose_secret().into())
    }
}

/// Identifies the master key a value was sealed with; `Display` is 8 lowercase hex chars.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct KeyId(pub [u8; KID_LEN]);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// The owner a layer's fallback key is sealed for (`global#fallback`, `account:<id>#fallback`):
/// distinct from the main key's, so one cannot be passed off as the other.
pub fn fallback_owner(owner: &str) -> String {
    format!("{owner}#fallback")
}

/// The associated data binding an AI API key to its owner row: `ai_api_key|v1|<owner>`, where
/// `owner` is `global` or `account:<id>`. Seal and open with the same value; a ciphertext sealed
/// for one owner does not open for another.
pub fn api_key_ad(owner: &str) -> String {
    format!("ai_api_key|v1|{owner}")
}

/// The current master key (seals and opens) plus old ones (open only, until re-sealed).
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

impl Keyring {
    pub fn new(current: MasterKey, old: Vec<MasterKey>) -> Self {
        Self { current, old }
    }

    pub fn current_kid(&self) -> KeyId {
        self.current.kid()
    }

    /// The current key id first, then the old ones.
    pub fn kids(&self) -> Vec<KeyId> {
        self.keys().map(MasterKey::kid).collect()
    }

    fn keys(&self) -> impl Iterator<Item = &MasterKey> {
        std::iter::once(&self.current).chain(&self.old)
    }

    /// Seals `plaintext` for `owner_ad` under the current key with a fresh random nonce:
    /// AES-SIV with headers `[owner_ad, nonce]`, the AEAD construction of RFC 5297 section 3.
    pub fn seal(&self, plaintext: &[u8], owner_ad: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        self.seal_with_nonce(plaintext, owner_ad, nonce)
    }

    fn seal_with_nonce(&self, plaintext: &[u8], owner_ad: &str, nonce: [u8; NONCE_LEN]) -> String {
        // Infallible: SIV encryption only fails with more than 126 headers; we pass two.
        #[allow(clippy::expect_used)]
        let ct = self
            .current
            .cipher()
            .encrypt([owner_ad.as_bytes(), &nonce[..]], plaintext)
            .expect("two SIV headers");
        let mut out = Vec::with_capacity(HEADER_LEN + ct.len());
        out.push(VERSION);
        out.extend_from_slice(&self.current.kid().0);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        STANDARD.encode(out)
    }

    /// Splits a sealed value into (kid, nonce, ciphertext) after the format checks.
    fn parse(sealed: &str) -> Result<(KeyId, Vec<u8>), CryptoError> {
        let raw = STANDARD
            .decode(sealed.trim())
            .map_err(|_| CryptoError::Malformed)?;
        if raw.len() < HEADER_LEN + TAG_LEN || raw[0] != VERSION {
            return Err(CryptoError::Malformed);
        }
        let mut kid = [0u8; KID_LEN];
        kid.copy_from_slice(&raw[1..1 + KID_LEN]);
        Ok((KeyId(kid), raw))
    }

    /// Opens a sealed value for `owner_ad` with whichever keyring key made it.
    pub fn open(&self, sealed: &str, owner_ad: &str) -> Result<SecretBox<Vec<u8>>, CryptoError> {
        let (kid, raw) = Self::parse(sealed)?;
        let key = self
            .keys()
            .find(|k| k.kid() == kid)
            .ok_or(CryptoError::UnknownKey(kid))?;
        let nonce = &raw[1 + KID_LEN..HEADER_LEN];
        let ct = &raw[HEADER_LEN..];
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
        Ok(SecretString::from(s))
    }

    /// Whether `sealed` was made with another key than the current one (false for a value that
    /// does not parse: re-sealing cannot fix it).
    pub fn needs_rotation(&self, sealed: &str) -> bool {
        Self::parse(sealed).is_ok_and(|(kid, _)| kid != self.current_kid())
    }

    /// Opens with whichever key made it and seals again under the current key (fresh nonce).
    pub fn reseal(&self, sealed: &str, owner_ad: &str) -> Result<String, CryptoError> {
        let pt = self.open(sealed, owner_ad)?;
        Ok(self.seal(pt.expose_secret(), owner_ad))
    }
}

#[cfg(test)]
mod tests {
    use aes_siv::aead::{Aead, Payload};
    use aes_siv::siv::Aes128Siv;
    use aes_siv::{Aes256SivAead, Nonce};

    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).expect("hex")
    }

    /// RFC 5297 appendix A.1: deterministic authenticated encryption, AES-SIV-CMAC-256.
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

    /// RFC 5297 appendix A.2: nonce-based authenticated encryption, AES-SIV-CMAC-256, headers
    /// AD1, AD2, nonce (the nonce is the last header, as in `seal`).
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

    /// The AES-SIV-512 primitive `seal` uses, on the A.1-shaped vector for 512-bit keys published
    /// with the aes-siv crate (from the Miscreant project).
    #[test]
    fn aes_siv_512_known_answer() {
        let key = h("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f06f6e6d6c6b6a69686766656463626160f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff000102030405060708090a0b0c0d0e0f");
        let ad = h("101112131415161718191a1b1c1d1e1f2021222324252627");
        let pt = h("112233445566778899aabbccddee");
        let expected = h("f125274c598065cfc26b0e71575029088b035217e380cac8919ee800c126");
        let mut siv = Aes256Siv::new_from_slice(&key).expect("key");
        assert_eq!(siv.encrypt([&ad], &pt).expect("encrypt"), expected);
    }

    /// `seal` is exactly the RFC 5297 AEAD mode: the crate's `Aes256SivAead` (headers = AD,
    /// nonce) opens its ciphertext, and the layout is version || kid || nonce || ciphertext.
    #[test]
    fn seal_layout_is_rfc5297_aead() {
        let key = MasterKey::generate();
        let aead = Aes256SivAead::new_from_slice(key.0.expose_secret()).expect("key");
        let ring = Keyring::new(key, vec![]);
        let nonce = [9u8; NONCE_LEN];
        let sealed = ring.seal_with_nonce(b"sk-layout", "ai_api_key|v1|global", nonce);
        let raw = STANDARD.decode(&sealed).expect("b64");
        assert_eq!(raw[0], VERSION);
        assert_eq!(&raw[1..5], &ring.current_kid().0);
        assert_eq!(&raw[5..21], &nonce);
        let pt = aead
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &raw[HEADER_LEN..],
                    aad: b"ai_api_key|v1|global",
                },
            )
            .expect("AEAD opens");
        assert_eq!(pt, b"sk-layout");
    }

    fn ring() -> Keyring {
        Keyring::new(MasterKey::generate(), vec![])
    }

    #[test]
    fn round_trip_and_random_nonce() {
        let k = ring();
        let sealed = k.seal(b"sk-secret", &api_key_ad("global"));
        assert!(!sealed.contains("sk-secret"));
        let opened = k
            .open_string(&sealed, &api_key_ad("global"))
            .expect("opens");
        assert_eq!(opened.expose_secret(), "sk-secret");
        let bytes = k.open(&sealed, &api_key_ad("global")).expect("opens");
        assert_eq!(bytes.expose_secret().as_slice(), b"sk-secret");
        let again = k.seal(b"sk-secret", &api_key_ad("global"));
        assert_ne!(sealed, again, "a fresh nonce per seal");
    }

    #[test]
    fn ciphertext_copied_to_another_owner_fails() {
        let k = ring();
        let sealed = k.seal(b"sk-a", &api_key_ad("account:a"));
        assert_eq!(
            k.open(&sealed, &api_key_ad("account:b")).err(),
            Some(CryptoError::Decrypt)
        );
        assert_eq!(
            k.open(&sealed, &api_key_ad("global")).err(),
            Some(CryptoError::Decrypt)
        );
    }

    #[test]
    fn tampering_fails() {
        let k = ring();
        let sealed = k.seal(b"sk-a", "x");
        let raw = STANDARD.decode(&sealed).expect("b64");
        // Every byte after the version and kid is covered: nonce, tag and ciphertext.
        for i in 1 + KID_LEN..raw.len() {
            let mut t = raw.clone();
            t[i] ^= 1;
            assert_eq!(
                k.open(&STANDARD.encode(&t), "x").err(),
                Some(CryptoError::Decrypt),
                "byte {i}"
            );
        }
    }

    #[test]
    fn malformed_values_fail() {
        let k = ring();
        assert_eq!(k.open("bm9wZQ==", "x").err(), Some(CryptoError::Malformed));
        assert_eq!(k.open("%%%", "x").err(), Some(CryptoError::Malformed));
        assert_eq!(k.open("", "x").err(), Some(CryptoError::Malformed));
        let mut raw = STANDARD.decode(k.seal(b"v", "x")).expect("b64");
        raw[0] = 2;
        assert_eq!(
            k.open(&STANDARD.encode(&raw), "x").err(),
            Some(CryptoError::Malformed),
            "unknown version"
        );
        assert!(!k.needs_rotation("%%%"));
    }

    #[test]
    fn unknown_kid_fails() {
        let sealed = ring().seal(b"sk", "x");
        let other = ring();
        assert!(matches!(
            other.open(&sealed, "x"),
            Err(CryptoError::UnknownKey(_))
        ));
    }

    #[test]
    fn rotation_with_old_keys() {
        let k1 = MasterKey::generate();
        let k1_copy = MasterKey::from_base64(&k1.to_base64()).expect("copy");
        let ring1 = Keyring::new(k1, vec![]);
        let kid1 = ring1.current_kid();
        let sealed = ring1.seal(b"sk-rot", "o");
        assert!(!ring1.needs_rotation(&sealed));

        let k2 = MasterKey::generate();
        let k2_copy = MasterKey::from_base64(&k2.to_base64()).expect("copy");
        let ring2 = Keyring::new(k2, vec![k1_copy]);
        let kid2 = ring2.current_kid();
        assert_eq!(ring2.kids(), vec![kid2, kid1]);
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
        let raw = STANDARD.decode(&resealed).expect("b64");
        assert_eq!(&raw[1..5], &kid2.0);
        assert_eq!(
            ring2.reseal(&sealed, "other").err(),
            Some(CryptoError::Decrypt)
        );

        let ring3 = Keyring::new(k2_copy, vec![]);
        assert_eq!(
            ring3
                .open_string(&resealed, "o")
                .expect("resealed opens")
                .expose_secret(),
            "sk-rot"
        );
        assert_eq!(
            ring3.open(&sealed, "o").err(),
            Some(CryptoError::UnknownKey(kid1))
        );
    }

    #[test]
    fn master_key_parsing() {
        let e = MasterKey::from_base64("bm90LWEta2V5").err();
        assert_eq!(e, Some(CryptoError::BadKeyLength(9)));
        assert_eq!(
            e.map(|e| e.to_string()).unwrap_or_default(),
            "master key must be base64 of 64 bytes (AES-SIV-512), got 9 bytes"
        );
        assert_eq!(
            MasterKey::from_base64("!!").err(),
            Some(CryptoError::BadKeyEncoding)
        );
        let k = MasterKey::generate();
        let again = MasterKey::from_base64(&format!(" {}\n", k.to_base64())).expect("parses");
        assert_eq!(k.kid(), again.kid());
        // `openssl rand -base64 64` wraps its output after 64 characters.
        let b64 = k.to_base64();
        let wrapped = format!("{}\n{}\n", &b64[..64], &b64[64..]);
        let again = MasterKey::from_base64(&wrapped).expect("wrapped parses");
        assert_eq!(k.kid(), again.kid());
        assert_ne!(k.kid(), MasterKey::generate().kid());
    }

    #[test]
    fn kid_is_prefix_of_sha256_and_displays_as_hex() {
        let k = MasterKey::from_base64(&STANDARD.encode([0u8; 64])).expect("key");
        let mut hsh = Sha256::new();
        hsh.update(b"wagate-kid-v1");
        hsh.update([0u8; 64]);
        let d = hsh.finalize();
        assert_eq!(k.kid().0, [d[0], d[1], d[2], d[3]]);
        let shown = k.kid().to_string();
        assert_eq!(shown.len(), 8);
        assert_eq!(shown, hex::encode(&d[..4]));
    }

    #[test]
    fn debug_shows_no_key_bytes() {
        let k = MasterKey::from_base64(&STANDARD.encode([0xabu8; 64])).expect("key");
        let b64 = k.to_base64();
        let dbg_key = format!("{k:?}");
        let ring = Keyring::new(k, vec![MasterKey::generate()]);
        let dbg = format!("{dbg_key} {ring:?} {ring:#?}");
        assert!(!dbg.contains(&b64[..12]), "{dbg}");
        assert!(!dbg.to_lowercase().contains("abab"), "{dbg}");
        assert!(!dbg.contains("171, 171"), "{dbg}");
    }

    #[test]
    fn errors_carry_no_secret() {
        let k = ring();
        let sealed = k.seal(b"sk-canary-123", &api_key_ad("account:a"));
        let errs = [
            k.open(&sealed, &api_key_ad("account:b")).err(),
            ring().open(&sealed, "x").err(),
            k.open("%%%", "x").err(),
        ];
        for e in errs.into_iter().flatten() {
            let s = format!("{e} {e:?}");
            assert!(!s.contains("sk-canary"), "{s}");
        }
    }

    #[test]
    fn api_key_ad_format() {
        assert_eq!(api_key_ad("global"), "ai_api_key|v1|global");
        assert_eq!(api_key_ad("account:acme"), "ai_api_key|v1|account:acme");
    }
}
