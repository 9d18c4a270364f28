//! Authentication primitives: admin JWTs (HS256 pinned; `exp`, `iss`, `aud`, `sub` required), the
//! admin password (argon2id PHC), account tokens (`wgt_` + 256 random bits, stored as SHA-256),
//! and the per-address limiter for failed admin logins.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// `aud` of every admin JWT.
pub const ADMIN_AUDIENCE: &str = "wagate-admin";
/// Shortest accepted JWT secret, in bytes.
pub const MIN_JWT_SECRET: usize = 32;
/// Clock skew tolerated on `exp`, in seconds.
const LEEWAY_SECS: u64 = 30;
/// Prefix of account tokens.
pub const ACCOUNT_TOKEN_PREFIX: &str = "wgt_";
/// Random bytes in an account token.
const ACCOUNT_TOKEN_BYTES: usize = 32;

/// Authentication failures. Messages carry no token, secret or password.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("the JWT secret must be at least {MIN_JWT_SECRET} bytes")]
    WeakSecret,
    #[error("invalid or expired token")]
    InvalidToken,
    #[error("cannot sign the token")]
    Signing,
    #[error("cannot hash the password")]
    Hashing,
}

/// Claims of an admin JWT; all are required.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AdminClaims {
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    pub aud: String,
}

/// Issues and verifies admin JWTs with one HS256 secret. `Debug` shows the issuer only.
pub struct JwtSigner {
    secret: SecretBox<Vec<u8>>,
    issuer: String,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSigner")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl JwtSigner {
    /// Refuses a secret shorter than [`MIN_JWT_SECRET`] bytes.
    pub fn new(secret: &[u8], issuer: &str) -> Result<Self, AuthError> {
        if secret.len() < MIN_JWT_SECRET {
            return Err(AuthError::WeakSecret);
        }
        Ok(Self {
            secret: SecretBox::new(Box::new(secret.to_vec())),
            issuer: issuer.to_string(),
        })
    }

    /// The `iss` of issued tokens, required on verified ones.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// An HS256 token for `sub`, valid for `ttl`, and its expiry time.
    pub fn issue(&self, sub: &str, ttl: Duration) -> Result<(String, DateTime<Utc>), AuthError> {
        let now = Utc::now();
        let exp = chrono::Duration::from_std(ttl)
            .ok()
            .and_then(|ttl| now.checked_add_signed(ttl))
            .ok_or(AuthError::Signing)?;
        let claims = AdminClaims {
            sub: sub.to_string(),
            exp: exp.timestamp(),
            iat: now.timestamp(),
            iss: self.issuer.clone(),
            aud: ADMIN_AUDIENCE.to_string(),
        };
        let token = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(self.secret.expose_secret()),
        )
        .map_err(|_| AuthError::Signing)?;
        Ok((token, exp))
    }

    /// Verifies the signature (HS256 only), `exp` (30 s leeway), `iss`, `aud` and a non-empty
    /// `sub`. Every failure, whatever its cause, is [`AuthError::InvalidToken`].
    pub fn verify(&self, token: &str) -> Result<AdminClaims, AuthError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.algorithms = vec![Algorithm::HS256];
        // `set_issuer` / `set_audience` alone would accept a token that lacks the claim.
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.set_issuer(&[self.issuer.as_str()]);
        v.set_audience(&[ADMIN_AUDIENCE]);
        v.leeway = LEEWAY_SECS;
        v.validate_exp = true;
        let data = decode::<AdminClaims>(
            token,
            &DecodingKey::from_secret(self.secret.expose_secret()),
            &v,
        )
        .map_err(|e| {
            tracing::debug!(reason = ?e.kind(), "admin JWT rejected");
            AuthError::InvalidToken
        })?;
        if data.claims.sub.is_empty() {
            return Err(AuthError::InvalidToken);
        }
        Ok(data.claims)
    }
}

/// Argon2id PHC string of `pw` (default parameters, random salt from the OS RNG).
pub fn hash_password(pw: &str) -> Result<String, AuthError> {
    Argon2::default()
        .hash_password(pw.as_bytes())
        .map(|h| h.to_string())
        .map_err(|_| AuthError::Hashing)
}

/// Whether `pw` matches the PHC string (false for a malformed hash).
pub fn verify_password(phc: &str, pw: &str) -> bool {
    match Argon2::default().verify_password(pw.as_bytes(), phc) {
        Ok(()) => true,
        Err(argon2::password_hash::Error::PasswordInvalid) => false,
        Err(e) => {
            tracing::warn!(error = %e, "stored admin password hash cannot be used");
            false
        }
    }
}

/// A new account token and its hash: (`wgt_` + base64url-no-pad of 32 random bytes, lowercase
/// hex SHA-256 of that token). Show the token once; store only the hash.
pub fn generate_account_token() -> (String, String) {
    let mut bytes = [0u8; ACCOUNT_TOKEN_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("{ACCOUNT_TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_account_token(&token);
    (token, hash)
}

/// Lowercase hex SHA-256 of the whole token string (a 256-bit random token needs no slow hash).
pub fn hash_account_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether a bearer credential is an account token (`wgt_…`) rather than a JWT.
pub fn looks_like_account_token(s: &str) -> bool {
    s.starts_with(ACCOUNT_TOKEN_PREFIX)
}

/// Compares in time independent of where the inputs differ (length is not hidden).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Failed-login limiter: after `max_failures` failures from one address within `window` (counted
/// from the first failure), that address is refused until the window ends. Memory is bounded:
/// past [`LIMITER_MAX_ENTRIES`] addresses, expired entries are swept, then the oldest dropped.
pub struct LoginLimiter {
    max_failures: u32,
    window: Duration,
    entries: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    first: Instant,
}

/// Addresses tracked before expired entries are swept.
pub const LIMITER_MAX_ENTRIES: usize = 10_000;

impl Default for LoginLimiter {
    /// 5 failures per 60 s.
    fn default() -> Self {
        Self::new(5, Duration::from_secs(60))
    }
}

impl std::fmt::Debug for LoginLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginLimiter")
            .field("max_failures", &self.max_failures)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl LoginLimiter {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures,
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, Failures>> {
        // The map stays consistent even if a holder panicked: every update is a single insert,
        // remove or field write.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err(retry_after)` while `ip` is locked out.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.check_at(ip, Instant::now())
    }

    /// Counts a failed login from `ip`.
    pub fn record_failure(&self, ip: IpAddr) {
        self.record_failure_at(ip, Instant::now());
    }

    /// A successful login clears the address's failures.
    pub fn record_success(&self, ip: IpAddr) {
        self.lock().remove(&ip);
    }

    fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut map = self.lock();
        let Some(f) = map.get(&ip).copied() else {
            return Ok(());
        };
        let elapsed = now.saturating_duration_since(f.first);
        if elapsed >= self.window {
            map.remove(&ip);
            return Ok(());
        }
        if f.count >= self.max_failures {
            Err(self.window - elapsed)
        } else {
            Ok(())
        }
    }

    fn record_failure_at(&self, ip: IpAddr, now: Instant) {
        let window = self.window;
        let mut map = self.lock();
        if map.len() >= LIMITER_MAX_ENTRIES && !map.contains_key(&ip) {
            map.retain(|_, f| now.saturating_duration_since(f.first) < window);
            if map.len() >= LIMITER_MAX_ENTRIES {
                if let Some(oldest) = map.iter().min_by_key(|(_, f)| f.first).map(|(k, _)| *k) {
                    map.remove(&oldest);
                }
            }
        }
        let f = map.entry(ip).or_insert(Failures {
            count: 0,
            first: now,
        });
        if now.saturating_duration_since(f.first) >= window {
            *f = Failures {
                count: 0,
                first: now,
            };
        }
        f.count = f.count.saturating_add(1);
        if f.count == self.max_failures {
            tracing::warn!(client = %ip, window_secs = window.as_secs(), "admin login locked after repeated failures");
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-unit";

    fn signer() -> JwtSigner {
        JwtSigner::new(SECRET, "wagate").expect("signer")
    }

    fn b64(v: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    /// A token signed by jsonwebtoken with arbitrary claims (e.g. one lacking `iss`).
    fn sign(claims: &serde_json::Value, alg: Algorithm, secret: &[u8]) -> String {
        encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).expect("encode")
    }

    fn claims() -> serde_json::Value {
        let now = Utc::now().timestamp();
        json!({"sub":"admin","iss":"wagate","aud":ADMIN_AUDIENCE,"iat":now,"exp":now+600})
    }

    fn without(field: &str) -> serde_json::Value {
        let mut c = claims();
        c.as_object_mut().expect("object").remove(field);
        c
    }

    fn with(field: &str, value: serde_json::Value) -> serde_json::Value {
        let mut c = claims();
        c[field] = value;
        c
    }

    fn rejected(token: &str) {
        assert_eq!(signer().verify(token), Err(AuthError::InvalidToken));
    }

    #[test]
    fn jwt_round_trip() {
        let before = Utc::now().timestamp();
        let (t, exp) = signer()
            .issue("alice", Duration::from_secs(60))
            .expect("issue");
        let c = signer().verify(&t).expect("verify");
        assert_eq!(c.sub, "alice");
        assert_eq!(c.iss, "wagate");
        assert_eq!(c.aud, ADMIN_AUDIENCE);
        assert_eq!(c.exp, exp.timestamp());
        assert!(c.iat >= before && c.exp - c.iat == 60);
        // The hand-built claims used by the negative tests are accepted as they are.
        assert!(signer()
            .verify(&sign(&claims(), Algorithm::HS256, SECRET))
            .is_ok());
    }

    #[test]
    fn jwt_alg_none_rejected() {
        let t = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(claims().to_string())
        );
        rejected(&t);
        let t = format!(
            "{}.{}.",
            b64(br#"{"alg":"None","typ":"JWT"}"#),
            b64(claims().to_string())
        );
        rejected(&t);
    }

    #[test]
    fn jwt_rs256_header_rejected() {
        // Algorithm confusion: an RS256 header over an HMAC signature made with the secret.
        let signing_input = format!(
            "{}.{}",
            b64(br#"{"alg":"RS256","typ":"JWT"}"#),
            b64(claims().to_string())
        );
        let sig = jsonwebtoken::crypto::sign(
            signing_input.as_bytes(),
            &EncodingKey::from_secret(SECRET),
            Algorithm::HS256,
        )
        .expect("hmac");
        rejected(&format!("{signing_input}.{sig}"));
        rejected(&format!("{signing_input}.{}", b64([0u8; 256])));
    }

    #[test]
    fn jwt_hs512_rejected() {
        rejected(&sign(&claims(), Algorithm::HS512, SECRET));
    }

    #[test]
    fn jwt_other_secret_rejected() {
        rejected(&sign(
            &claims(),
            Algorithm::HS256,
            b"another-secret-another-secret-another",
        ));
    }

    #[test]
    fn jwt_missing_iss_rejected() {
        rejected(&sign(&without("iss"), Algorithm::HS256, SECRET));
    }

    #[test]
    fn jwt_missing_exp_rejected() {
        rejected(&sign(&without("exp"), Algorithm::HS256, SECRET));
    }

    #[test]
    fn jwt_missing_sub_rejected() {
        rejected(&sign(&without("sub"), Algorithm::HS256, SECRET));
        rejected(&sign(&with("sub", json!("")), Algorithm::HS256, SECRET));
    }

    #[test]
    fn jwt_missing_aud_rejected() {
        rejected(&sign(&without("aud"), Algorithm::HS256, SECRET));
    }

    #[test]
    fn jwt_wrong_aud_rejected() {
        rejected(&sign(
            &with("aud", json!("other")),
            Algorithm::HS256,
            SECRET,
        ));
    }

    #[test]
    fn jwt_wrong_iss_rejected() {
        rejected(&sign(&with("iss", json!("evil")), Algorithm::HS256, SECRET));
        let other_issuer = JwtSigner::new(SECRET, "other").expect("signer");
        let (t, _) = other_issuer
            .issue("admin", Duration::from_secs(60))
            .expect("issue");
        rejected(&t);
    }

    #[test]
    fn jwt_expired_rejected() {
        let now = Utc::now().timestamp();
        rejected(&sign(
            &with("exp", json!(now - 3600)),
            Algorithm::HS256,
            SECRET,
        ));
        rejected(&sign(
            &with("exp", json!(now - 2 * LEEWAY_SECS as i64)),
            Algorithm::HS256,
            SECRET,
        ));
        // Inside the small leeway it still passes.
        let t = sign(&with("exp", json!(now - 5)), Algorithm::HS256, SECRET);
        assert!(signer().verify(&t).is_ok());
    }

    #[test]
    fn jwt_garbage_rejected() {
        for t in [
            "",
            ".",
            "..",
            "a.b.c",
            "wgt_abc",
            "eyJhbGciOiJIUzI1NiJ9..",
            "\u{0}\u{ff}",
        ] {
            rejected(t);
        }
    }

    #[test]
    fn jwt_short_secret_refused() {
        assert_eq!(
            JwtSigner::new(b"short", "wagate").err(),
            Some(AuthError::WeakSecret)
        );
        assert!(JwtSigner::new(&[1u8; 31], "wagate").is_err());
        assert!(JwtSigner::new(&[1u8; 32], "wagate").is_ok());
    }

    #[test]
    fn jwt_signer_debug_hides_secret() {
        let dbg = format!("{:?}", signer());
        assert!(!dbg.contains("0123456789abcdef"), "{dbg}");
    }

    #[test]
    fn password_round_trip() {
        let h = hash_password("correct horse battery").expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password(&h, "correct horse battery"));
        assert_ne!(
            h,
            hash_password("correct horse battery").expect("hash"),
            "salted"
        );
    }

    #[test]
    fn password_wrong_rejected() {
        let h = hash_password("correct horse battery").expect("hash");
        assert!(!verify_password(&h, "wrong"));
        assert!(!verify_password(&h, ""));
        assert!(!verify_password("not-a-hash", "x"));
        assert!(!verify_password("", ""));
    }

    #[test]
    fn account_tokens() {
        let (t, h) = generate_account_token();
        assert!(looks_like_account_token(&t));
        assert!(!looks_like_account_token("eyJhbGciOi"));
        let body = t.strip_prefix("wgt_").expect("prefix");
        assert_eq!(URL_SAFE_NO_PAD.decode(body).expect("base64url").len(), 32);
        assert_eq!(h.len(), 64);
        assert_eq!(hash_account_token(&t), h);
        assert_eq!(h, h.to_lowercase());
        assert_eq!(
            hash_account_token("wgt_x"),
            hex::encode(Sha256::digest(b"wgt_x"))
        );
        assert_ne!(generate_account_token().0, t);
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn login_limiter_locks_after_failures() {
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for i in 0..5 {
            assert!(l.check_at(a, t0).is_ok(), "failure {i}");
            l.record_failure_at(a, t0 + Duration::from_secs(i));
        }
        let retry = l
            .check_at(a, t0 + Duration::from_secs(10))
            .expect_err("locked");
        assert_eq!(retry, Duration::from_secs(50), "until the window ends");
        assert!(l.check_at(ip("192.0.2.2"), t0).is_ok(), "per address");
        assert!(l.check_at(a, t0 + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn login_limiter_window_resets_count() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let a = ip("2001:db8::1");
        l.record_failure_at(a, t0);
        l.record_failure_at(a, t0);
        // Failures from an elapsed window do not count.
        l.record_failure_at(a, t0 + Duration::from_secs(61));
        l.record_failure_at(a, t0 + Duration::from_secs(62));
        assert!(l.check_at(a, t0 + Duration::from_secs(63)).is_ok());
        l.record_failure_at(a, t0 + Duration::from_secs(63));
        assert!(l.check_at(a, t0 + Duration::from_secs(64)).is_err());
    }

    #[test]
    fn login_limiter_success_clears() {
        let l = LoginLimiter::new(2, Duration::from_secs(60));
        let a = ip("192.0.2.3");
        l.record_failure(a);
        l.record_success(a);
        l.record_failure(a);
        assert!(l.check(a).is_ok());
        l.record_failure(a);
        assert!(l.check(a).is_err());
    }

    #[test]
    fn login_limiter_is_bounded() {
        let l = LoginLimiter::new(5, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..LIMITER_MAX_ENTRIES as u32 {
            l.record_failure_at(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert_eq!(l.len(), LIMITER_MAX_ENTRIES);
        // All fresh: the oldest is dropped to make room.
        l.record_failure_at(ip("198.51.100.1"), t0 + Duration::from_secs(1));
        assert_eq!(l.len(), LIMITER_MAX_ENTRIES);
        // After the window the stale ones are swept.
        l.record_failure_at(ip("198.51.100.2"), t0 + Duration::from_millis(60_500));
        assert_eq!(l.len(), 2);
    }
}
