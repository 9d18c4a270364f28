//! Authentication primitives: admin JWTs (HS256 pinned, `exp`/`iss`/`aud`/`sub` required), the
//! admin password (argon2id), account tokens (`wgt_` + 256 random bits, stored as SHA-256), and
//! the per-address limiter for failed logins.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Argon2, PasswordHash};
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
/// Shortest accepted JWT secret.
pub const MIN_JWT_SECRET: usize = 32;
/// Clock skew tolerated on `exp`.
const LEEWAY_SECS: u64 = 30;

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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AdminClaims {
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    pub aud: String,
}

/// Issues and verifies admin JWTs with one HS256 secret.
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
    pub fn new(secret: &[u8], issuer: &str) -> Result<Self, AuthError> {
        if secret.len() < MIN_JWT_SECRET {
            return Err(AuthError::WeakSecret);
        }
        Ok(Self {
            secret: SecretBox::new(Box::new(secret.to_vec())),
            issuer: issuer.to_string(),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// A token for `sub`, valid for `ttl`.
    pub fn issue(&self, sub: &str, ttl: Duration) -> Result<(String, DateTime<Utc>), AuthError> {
        let now = Utc::now();
        let ttl = chrono::Duration::from_std(ttl).map_err(|_| AuthError::Signing)?;
        let exp = now + ttl;
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

    /// Verifies signature (HS256 only), `exp`, `iss`, `aud` and the presence of `sub`.
    pub fn verify(&self, token: &str) -> Result<AdminClaims, AuthError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.algorithms = vec![Algorithm::HS256];
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
        .map_err(|_| AuthError::InvalidToken)?;
        if data.claims.sub.is_empty() {
            return Err(AuthError::InvalidToken);
        }
        Ok(data.claims)
    }
}

/// Argon2id PHC string of `pw` (default parameters, random salt).
pub fn hash_password(pw: &str) -> Result<String, AuthError> {
    Argon2::default()
        .hash_password(pw.as_bytes())
        .map(|h| h.to_string())
        .map_err(|_| AuthError::Hashing)
}

/// Whether `pw` matches the PHC string (false for a malformed hash).
pub fn verify_password(phc: &str, pw: &str) -> bool {
    PasswordHash::new(phc)
        .is_ok_and(|h| Argon2::default().verify_password(pw.as_bytes(), &h).is_ok())
}

/// A new account token and its hash: `wgt_` + base64url(32 random bytes).
pub fn generate_account_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("wgt_{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_account_token(&token);
    (token, hash)
}

/// Lowercase hex SHA-256 of the whole token (a 256-bit random token needs no slow hash).
pub fn hash_account_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub fn looks_like_account_token(s: &str) -> bool {
    s.starts_with("wgt_")
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Failed-login limiter: after `max_failures` failures from one address within `window` (counted
/// from the first), that address is refused until the window ends.
pub struct LoginLimiter {
    max_failures: u32,
    window: Duration,
    entries: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// Entries kept before expired ones are swept.
const LIMITER_SWEEP_AT: usize = 10_000;

impl LoginLimiter {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures,
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (u32, Instant)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err(retry_after)` while `ip` is locked out.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let mut map = self.lock();
        match map.get(&ip) {
            Some(&(n, since)) if now.duration_since(since) < self.window => {
                if n >= self.max_failures {
                    Err(self.window - now.duration_since(since))
                } else {
                    Ok(())
                }
            }
            Some(_) => {
                map.remove(&ip);
                Ok(())
            }
            None => Ok(()),
        }
    }

    pub fn record_failure(&self, ip: IpAddr) {
        let now = Instant::now();
        let window = self.window;
        let mut map = self.lock();
        if map.len() >= LIMITER_SWEEP_AT {
            map.retain(|_, (_, since)| now.duration_since(*since) < window);
        }
        let entry = map.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= window {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    pub fn record_success(&self, ip: IpAddr) {
        self.lock().remove(&ip);
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

    fn sign(claims: serde_json::Value, alg: Algorithm, secret: &[u8]) -> String {
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .expect("encode")
    }

    fn claims() -> serde_json::Value {
        let now = Utc::now().timestamp();
        json!({"sub":"a","iss":"wagate","aud":ADMIN_AUDIENCE,"iat":now,"exp":now+600})
    }

    fn without(f: &str) -> serde_json::Value {
        let mut c = claims();
        c.as_object_mut().expect("obj").remove(f);
        c
    }

    #[test]
    fn jwt_round_trip() {
        let (t, exp) = signer()
            .issue("alice", Duration::from_secs(60))
            .expect("issue");
        let c = signer().verify(&t).expect("verify");
        assert_eq!(
            (c.sub.as_str(), c.iss.as_str(), c.aud.as_str()),
            ("alice", "wagate", ADMIN_AUDIENCE)
        );
        assert_eq!(c.exp, exp.timestamp());
    }

    #[test]
    fn jwt_alg_none_rejected() {
        let t = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims().to_string())
        );
        assert_eq!(signer().verify(&t), Err(AuthError::InvalidToken));
    }

    #[test]
    fn jwt_rs256_header_rejected() {
        let good = sign(claims(), Algorithm::HS256, SECRET);
        let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
        parts[0] = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        assert_eq!(
            signer().verify(&parts.join(".")),
            Err(AuthError::InvalidToken)
        );
        let hs512 = sign(claims(), Algorithm::HS512, SECRET);
        assert_eq!(signer().verify(&hs512), Err(AuthError::InvalidToken));
    }

    #[test]
    fn jwt_other_secret_rejected() {
        let t = sign(
            claims(),
            Algorithm::HS256,
            b"another-secret-another-secret-another",
        );
        assert_eq!(signer().verify(&t), Err(AuthError::InvalidToken));
    }

    #[test]
    fn jwt_missing_claims_rejected() {
        for f in ["iss", "exp", "sub", "aud"] {
            let t = sign(without(f), Algorithm::HS256, SECRET);
            assert_eq!(
                signer().verify(&t),
                Err(AuthError::InvalidToken),
                "missing {f}"
            );
        }
    }

    #[test]
    fn jwt_wrong_aud_iss_or_expired_rejected() {
        let now = Utc::now().timestamp();
        let mut c = claims();
        c["aud"] = json!("other");
        assert!(signer().verify(&sign(c, Algorithm::HS256, SECRET)).is_err());
        let mut c = claims();
        c["iss"] = json!("evil");
        assert!(signer().verify(&sign(c, Algorithm::HS256, SECRET)).is_err());
        let mut c = claims();
        c["exp"] = json!(now - 3600);
        assert!(signer().verify(&sign(c, Algorithm::HS256, SECRET)).is_err());
        let mut c = claims();
        c["sub"] = json!("");
        assert!(signer().verify(&sign(c, Algorithm::HS256, SECRET)).is_err());
    }

    #[test]
    fn jwt_short_secret_refused() {
        assert_eq!(
            JwtSigner::new(b"short", "wagate").err(),
            Some(AuthError::WeakSecret)
        );
    }

    #[test]
    fn password_round_trip() {
        let h = hash_password("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "wrong"));
        assert!(!verify_password("not-a-hash", "x"));
    }

    #[test]
    fn account_tokens() {
        let (t, h) = generate_account_token();
        assert!(looks_like_account_token(&t));
        assert_eq!(t.len(), 4 + 43);
        assert_eq!(hash_account_token(&t), h);
        assert_ne!(generate_account_token().0, t);
    }

    #[test]
    fn login_limiter_locks_after_failures() {
        let l = LoginLimiter::new(3, Duration::from_millis(300));
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let other: IpAddr = "127.0.0.2".parse().expect("ip");
        for _ in 0..3 {
            assert!(l.check(ip).is_ok());
            l.record_failure(ip);
        }
        assert!(l.check(ip).is_err());
        assert!(l.check(other).is_ok(), "per address");
        std::thread::sleep(Duration::from_millis(350));
        assert!(l.check(ip).is_ok(), "window over");
        l.record_failure(ip);
        l.record_success(ip);
        assert!(l.check(ip).is_ok());
    }
}
