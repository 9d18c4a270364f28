//! Authentication primitives: admin JWTs (HS256 pinned; `exp`, `iss`, `aud`, `sub` and a UUID
//! `jti` required), the admin password (argon2id PHC), account tokens (`wgt_` + 256 random bits,
//! stored as SHA-256), the admin-login guard (per-address attempts and bounded argon2 work) and
//! the per-caller API rate limit.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::PasswordHasher;
use argon2::{Argon2, Block, PasswordHash};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::nanos::Nanos;
use governor::state::keyed::{DefaultKeyedStateStore, ShrinkableKeyedStateStore};
use governor::state::{InMemoryState, StateStore};
use governor::{Quota, RateLimiter};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use uuid::Uuid;

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

/// Claims of an admin JWT; all are required. `jti` (a UUID v7) names the session, so a logout can
/// revoke it (docs/adr/0017-token-revocation.md); a token without one is refused.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AdminClaims {
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    pub aud: String,
    pub jti: Uuid,
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
            jti: Uuid::now_v7(),
        };
        let token = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(self.secret.expose_secret()),
        )
        .map_err(|_| AuthError::Signing)?;
        Ok((token, exp))
    }

    /// Verifies the signature (HS256 only), `exp` (30 s leeway), `iss`, `aud`, a non-empty `sub`
    /// and a UUID `jti`. Every failure, whatever its cause, is [`AuthError::InvalidToken`]. Whether
    /// the session was revoked is the caller's second check (`service::auth::verify_admin_token`).
    pub fn verify(&self, token: &str) -> Result<AdminClaims, AuthError> {
        let data = decode::<AdminClaims>(
            token,
            &DecodingKey::from_secret(self.secret.expose_secret()),
            &self.validation(),
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

impl JwtSigner {
    /// The checks every admin JWT passes: HS256 only, `exp` (with a small leeway), `iss` and
    /// `aud` present and equal to ours. The claims struct refuses a token without them too; this
    /// holds on its own (a test decodes into a struct that requires nothing).
    fn validation(&self) -> Validation {
        let mut v = Validation::new(Algorithm::HS256);
        v.algorithms = vec![Algorithm::HS256];
        // `set_issuer` / `set_audience` alone would accept a token that lacks the claim.
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.set_issuer(&[self.issuer.as_str()]);
        v.set_audience(&[ADMIN_AUDIENCE]);
        v.leeway = LEEWAY_SECS;
        v.validate_exp = true;
        v
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
    verify_password_in(phc, pw, &mut Vec::new())
}

/// Whether `pw` matches the PHC string, computed in `memory` (grown to the hash's memory cost and
/// kept by the caller for the next check; false for a malformed hash): argon2's own PHC check
/// (parameters, salt and version from the string, constant-time comparison of the output) with
/// caller-provided working memory instead of a fresh multi-MiB allocation: the login guard reuses
/// one buffer per verification slot, so a burst of logins does not leave a freed buffer behind in
/// the allocator of every blocking thread it touched.
pub fn verify_password_in(phc: &str, pw: &str, memory: &mut Vec<Block>) -> bool {
    fn unusable(e: impl std::fmt::Display) -> bool {
        tracing::warn!(error = %e, "stored admin password hash cannot be used");
        false
    }
    let hash = match PasswordHash::new(phc) {
        Ok(h) => h,
        Err(e) => return unusable(e),
    };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return unusable("no salt or no hash");
    };
    let algorithm = match argon2::Algorithm::try_from(hash.algorithm.as_str()) {
        Ok(a) => a,
        Err(e) => return unusable(e),
    };
    let version = match hash.version.map(argon2::Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(e) => return unusable(e),
    };
    let params = match argon2::Params::try_from(&hash) {
        Ok(p) => p,
        Err(e) => return unusable(e),
    };
    let blocks = params.block_count();
    let argon = Argon2::new(algorithm, version, params);
    memory.resize(blocks, Block::default());
    let mut out = vec![0u8; expected.len()];
    match argon.hash_password_into_with_memory(
        pw.as_bytes(),
        salt.as_ref(),
        &mut out,
        &mut memory[..blocks],
    ) {
        Ok(()) => constant_time_eq(&out, expected.as_bytes()),
        Err(e) => unusable(e),
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

/// Login attempts per client address per [`LOGIN_WINDOW`] (checklist item 17).
pub const LOGIN_ATTEMPTS: u32 = 5;
/// The window of [`LOGIN_ATTEMPTS`]: 5 attempts at once, then one more every 12 s.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Argon2 checks running at once across the process (each holds ~19 MiB while it runs).
pub const MAX_CONCURRENT_VERIFICATIONS: usize = 4;
/// How long a login waits for a free verification slot before it is refused (429).
pub const VERIFICATION_QUEUE_WAIT: Duration = Duration::from_secs(2);
/// Client addresses the login limiter tracks; past that, the ones back to a full budget are
/// swept, and if all are recent the limiter starts over (the verification slots still bound the
/// process-wide guessing rate).
pub const LIMITER_MAX_ENTRIES: usize = 100_000;

/// The per-address state of the login limiter: governor's DashMap store behind an `Arc`, so a
/// successful login can clear its address (governor has no per-key reset).
#[derive(Clone, Default)]
struct AddressStore(Arc<DashMap<IpAddr, InMemoryState>>);

impl StateStore for AddressStore {
    type Key = IpAddr;

    fn measure_and_replace<T, F, E>(&self, key: &IpAddr, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        StateStore::measure_and_replace(self.0.as_ref(), key, f)
    }
}

impl ShrinkableKeyedStateStore<IpAddr> for AddressStore {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(self.0.as_ref(), drop_below);
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a login was not checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefused {
    /// The address spent its attempts; retry after this long.
    TooManyAttempts(Duration),
    /// Every verification slot stayed busy for [`VERIFICATION_QUEUE_WAIT`].
    Busy(Duration),
    /// The verification task panicked or was cancelled.
    Internal,
}

/// The admin-login guard: each attempt is reserved from its client address's budget (governor
/// GCRA, [`LOGIN_ATTEMPTS`] per [`LOGIN_WINDOW`]) *before* the password is checked, so parallel
/// attempts cannot all pass a check made before any failure was recorded; then the argon2 check
/// runs on the blocking pool under one of [`MAX_CONCURRENT_VERIFICATIONS`] permits (waiting at
/// most [`VERIFICATION_QUEUE_WAIT`]), which bounds the memory and CPU that logins can take. A
/// successful login gives its address a full budget again. IPv6 clients are keyed by their /64.
pub struct LoginLimiter {
    limiter: RateLimiter<IpAddr, AddressStore, DefaultClock>,
    addresses: AddressStore,
    verifications: Arc<Semaphore>,
    /// Argon2 working memory, one buffer per slot at most, reused while checks overlap (a burst
    /// allocates about one per slot, not one per blocking thread it touches) and freed when the
    /// last running check ends.
    memory: Arc<Mutex<MemoryPool>>,
    slots: usize,
    queue_wait: Duration,
}

/// The login checks' working memory: the free buffers, and how many checks are running or
/// waiting for a permit (counted under the same lock, so the last check of a burst always sees
/// that it is the last).
#[derive(Default)]
struct MemoryPool {
    free: Vec<Vec<Block>>,
    wanted: usize,
}

/// One check counted in [`MemoryPool::wanted`] until dropped (also when its caller went away
/// while it waited); the last one frees the buffers.
struct Wanted(Arc<Mutex<MemoryPool>>);

impl Wanted {
    fn new(pool: &Arc<Mutex<MemoryPool>>) -> Self {
        pool.lock().unwrap_or_else(|p| p.into_inner()).wanted += 1;
        Self(pool.clone())
    }
}

impl Drop for Wanted {
    fn drop(&mut self) {
        let mut pool = self.0.lock().unwrap_or_else(|p| p.into_inner());
        pool.wanted -= 1;
        if pool.wanted == 0 {
            pool.free.clear();
        }
    }
}

impl Default for LoginLimiter {
    /// [`LOGIN_ATTEMPTS`] per [`LOGIN_WINDOW`].
    fn default() -> Self {
        Self::new(LOGIN_ATTEMPTS, LOGIN_WINDOW)
    }
}

impl std::fmt::Debug for LoginLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginLimiter")
            .field("addresses", &self.addresses.0.len())
            .field(
                "free_verifications",
                &self.verifications.available_permits(),
            )
            .finish_non_exhaustive()
    }
}

/// The limiter key of a client address: IPv4 (also IPv4-mapped IPv6) as is, IPv6 by its /64
/// (one customer's allocation; otherwise each of its 2^64 addresses would get a budget).
pub fn login_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(
                u128::from(v6) & 0xffff_ffff_ffff_ffff_0000_0000_0000_0000,
            )),
        },
    }
}

impl LoginLimiter {
    /// `attempts` per `window` per address (at least 1 each), with the default verification slots.
    pub fn new(attempts: u32, window: Duration) -> Self {
        Self::with_slots(
            attempts,
            window,
            MAX_CONCURRENT_VERIFICATIONS,
            VERIFICATION_QUEUE_WAIT,
        )
    }

    pub fn with_slots(attempts: u32, window: Duration, slots: usize, queue_wait: Duration) -> Self {
        let attempts = NonZeroU32::new(attempts).unwrap_or(NonZeroU32::MIN);
        let period = (window / attempts.get()).max(Duration::from_millis(1));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(attempts);
        let addresses = AddressStore::default();
        Self {
            limiter: RateLimiter::new(quota, addresses.clone(), DefaultClock::default()),
            addresses,
            verifications: Arc::new(Semaphore::new(slots.max(1))),
            memory: Arc::default(),
            slots: slots.max(1),
            queue_wait,
        }
    }

    /// Spends one attempt of `ip`'s budget; `Err(retry_after)` when it is spent.
    pub fn reserve(&self, ip: IpAddr) -> Result<(), Duration> {
        let key = login_key(ip);
        let map = &self.addresses.0;
        if map.len() >= LIMITER_MAX_ENTRIES && !map.contains_key(&key) {
            self.limiter.retain_recent();
            if map.len() >= LIMITER_MAX_ENTRIES {
                tracing::warn!(
                    addresses = map.len(),
                    "login limiter full of recent addresses; starting over"
                );
                map.clear();
            }
        }
        self.limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// Gives `ip` its full budget again (after a successful login).
    pub fn forget(&self, ip: IpAddr) {
        self.addresses.0.remove(&login_key(ip));
    }

    /// Reserves an attempt of `ip`, then runs `check` (the argon2 comparison, given a reusable
    /// working-memory buffer for [`verify_password_in`]) on the blocking pool under a verification
    /// permit, released when `check` returns even if the caller went away. A passed check clears
    /// the address's budget. `Ok(passed)` or why nothing was checked.
    pub async fn attempt<F>(&self, ip: IpAddr, check: F) -> Result<bool, LoginRefused>
    where
        F: FnOnce(&mut Vec<Block>) -> bool + Send + 'static,
    {
        self.reserve(ip).map_err(LoginRefused::TooManyAttempts)?;
        let wanted = Wanted::new(&self.memory);
        let permit =
            tokio::time::timeout(self.queue_wait, self.verifications.clone().acquire_owned())
                .await
                .map_err(|_| LoginRefused::Busy(Duration::from_secs(1)))?
                .map_err(|_| LoginRefused::Internal)?;
        let (pool, slots) = (self.memory.clone(), self.slots);
        let passed = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let take = || pool.lock().unwrap_or_else(|p| p.into_inner()).free.pop();
            let mut memory = take().unwrap_or_default();
            let passed = check(&mut memory);
            // Keep the buffer for the next check while others run or wait; the last one lets
            // all of them go (dropping `wanted`).
            let mut free = pool.lock().unwrap_or_else(|p| p.into_inner());
            if free.wanted > 1 && free.free.len() < slots {
                free.free.push(memory);
            }
            drop(free);
            drop(wanted);
            passed
        })
        .await
        .map_err(|_| LoginRefused::Internal)?;
        if passed {
            self.forget(ip);
        }
        Ok(passed)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.addresses.0.len()
    }
}

/// Per-caller API rate limit (`WAGATE_API_RATE_LIMIT_PER_SECOND` / `_BURST`): one governor GCRA
/// budget per key (`admin:<sub>` for admin JWTs, `token:<id>` for account tokens). `None` limit:
/// every request passes.
pub struct ApiRateLimiter {
    limiter: Option<RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>>,
}

/// Keys the API limiter keeps before it sweeps the ones back to a full budget.
const API_LIMITER_SWEEP_AT: usize = 10_000;

impl std::fmt::Debug for ApiRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiRateLimiter")
            .field("enabled", &self.limiter.is_some())
            .finish_non_exhaustive()
    }
}

impl ApiRateLimiter {
    /// `per_second` requests a second sustained, `burst` at once; `None` disables the limit.
    pub fn new(limit: Option<(NonZeroU32, NonZeroU32)>) -> Self {
        Self {
            limiter: limit.map(|(per_second, burst)| {
                RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst))
            }),
        }
    }

    /// Spends one request of `key`'s budget; `Err(retry_after)` when it is spent.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if limiter.len() >= API_LIMITER_SWEEP_AT {
            limiter.retain_recent();
        }
        limiter
            .check_key(&key.to_string())
            .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }
}

/// Whole seconds for a `Retry-After` header: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0))
        .max(1)
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::PasswordVerifier;
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
        json!({"sub":"admin","iss":"wagate","aud":ADMIN_AUDIENCE,"iat":now,"exp":now+600,
            "jti":Uuid::now_v7()})
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
        assert_eq!(c.jti.get_version_num(), 7, "a UUID v7 names the session");
        let (t2, _) = signer()
            .issue("alice", Duration::from_secs(60))
            .expect("issue");
        assert_ne!(signer().verify(&t2).expect("verify").jti, c.jti);
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
    fn validation_itself_requires_every_spec_claim() {
        // Decoded into a map that requires nothing: only the validation can refuse.
        let signer = signer();
        let decode_lenient = |claims: &serde_json::Value| {
            decode::<std::collections::HashMap<String, serde_json::Value>>(
                &sign(claims, Algorithm::HS256, SECRET),
                &DecodingKey::from_secret(SECRET),
                &signer.validation(),
            )
        };
        assert!(decode_lenient(&claims()).is_ok());
        for field in ["exp", "iss", "aud", "sub"] {
            let err = decode_lenient(&without(field)).expect_err(field);
            assert!(
                matches!(
                    err.kind(),
                    jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(c) if c == field
                ),
                "{field}: {:?}",
                err.kind()
            );
        }
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
    fn jwt_missing_or_malformed_jti_rejected() {
        rejected(&sign(&without("jti"), Algorithm::HS256, SECRET));
        rejected(&sign(
            &with("jti", json!("not-a-uuid")),
            Algorithm::HS256,
            SECRET,
        ));
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
    fn password_check_in_reused_memory() {
        let h = hash_password("correct horse battery").expect("hash");
        let mut memory = Vec::new();
        assert!(verify_password_in(&h, "correct horse battery", &mut memory));
        let blocks = memory.len();
        assert_eq!(
            blocks,
            19 * 1024,
            "the default memory cost, 19 MiB of 1 KiB blocks"
        );
        assert!(!verify_password_in(&h, "wrong", &mut memory));
        assert!(!verify_password_in(&h, "", &mut memory));
        assert_eq!(memory.len(), blocks, "reused, not grown");
        assert!(verify_password_in(&h, "correct horse battery", &mut memory));
        assert!(!verify_password_in("not-a-hash", "x", &mut memory));
        assert!(!verify_password_in("", "", &mut memory));
        // The same verdicts as argon2's own PHC verification.
        for pw in ["correct horse battery", "wrong"] {
            assert_eq!(
                Argon2::default()
                    .verify_password(pw.as_bytes(), h.as_str())
                    .is_ok(),
                verify_password_in(&h, pw, &mut memory),
                "{pw}"
            );
        }
        // A hash with other parameters (as an older release may have stored).
        let small = argon2::Params::new(1024, 1, 1, None).expect("params");
        let h2 = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, small)
            .hash_password(b"pw")
            .expect("hash")
            .to_string();
        assert!(verify_password_in(&h2, "pw", &mut memory));
        assert!(!verify_password_in(&h2, "px", &mut memory));
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
    fn login_limiter_reserves_before_the_check() {
        let l = LoginLimiter::default();
        let a = ip("192.0.2.1");
        for i in 0..LOGIN_ATTEMPTS {
            assert!(l.reserve(a).is_ok(), "attempt {i}");
        }
        let retry = l.reserve(a).expect_err("spent");
        assert!(
            retry > Duration::from_secs(10) && retry <= Duration::from_secs(12),
            "one attempt comes back every 12 s: {retry:?}"
        );
        assert!(l.reserve(ip("192.0.2.2")).is_ok(), "per address");
        l.forget(a);
        assert!(l.reserve(a).is_ok(), "a success clears the address");
    }

    #[test]
    fn login_key_groups_ipv6_by_64() {
        assert_eq!(login_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(login_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(login_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        let l = LoginLimiter::new(2, Duration::from_secs(60));
        assert!(l.reserve(ip("2001:db8::1")).is_ok());
        assert!(l.reserve(ip("2001:db8::2")).is_ok());
        assert!(l.reserve(ip("2001:db8::3")).is_err(), "same /64");
        assert!(l.reserve(ip("2001:db8:0:1::1")).is_ok(), "another /64");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn login_limiter_bounds_parallel_checks() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let l = Arc::new(LoginLimiter::with_slots(
            5,
            Duration::from_secs(60),
            2,
            Duration::from_secs(5),
        ));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = vec![];
        for i in 0..40u32 {
            let (l, running, peak) = (l.clone(), running.clone(), peak.clone());
            // 40 parallel attempts from one address, and 8 from 8 others.
            let addr = if i < 32 {
                ip("198.51.100.1")
            } else {
                IpAddr::from([198, 51, 100, 10 + i as u8])
            };
            tasks.push(tokio::spawn(async move {
                l.attempt(addr, move |_| {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                    false
                })
                .await
            }));
        }
        let mut checked = 0;
        let mut limited = 0;
        for t in tasks {
            match t.await.expect("task") {
                Ok(false) => checked += 1,
                Err(LoginRefused::TooManyAttempts(_)) => limited += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(checked, 5 + 8, "5 from the busy address, 1 from each other");
        assert_eq!(limited, 27);
        assert!(peak.load(Ordering::SeqCst) <= 2, "at most 2 checks at once");
    }

    #[tokio::test]
    async fn login_limiter_refuses_when_every_slot_stays_busy() {
        let l = Arc::new(LoginLimiter::with_slots(
            5,
            Duration::from_secs(60),
            1,
            Duration::from_millis(50),
        ));
        let slow = {
            let l = l.clone();
            tokio::spawn(async move {
                l.attempt(ip("192.0.2.1"), |_| {
                    std::thread::sleep(Duration::from_millis(500));
                    false
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = l.attempt(ip("192.0.2.2"), |_| false).await;
        assert_eq!(r, Err(LoginRefused::Busy(Duration::from_secs(1))));
        assert_eq!(slow.await.expect("task"), Ok(false));
        // A success clears its address.
        for _ in 0..4 {
            let _ = l.reserve(ip("192.0.2.3"));
        }
        assert_eq!(l.attempt(ip("192.0.2.3"), |_| true).await, Ok(true));
        for i in 0..LOGIN_ATTEMPTS {
            assert!(l.reserve(ip("192.0.2.3")).is_ok(), "attempt {i}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn login_limiter_reuses_working_memory_during_a_burst() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let l = Arc::new(LoginLimiter::with_slots(
            5,
            Duration::from_secs(60),
            2,
            Duration::from_secs(5),
        ));
        let fresh = Arc::new(AtomicUsize::new(0));
        let mut tasks = vec![];
        for i in 0..12u8 {
            let (l, fresh) = (l.clone(), fresh.clone());
            tasks.push(tokio::spawn(async move {
                l.attempt(IpAddr::from([198, 51, 100, i]), move |memory| {
                    if memory.is_empty() {
                        fresh.fetch_add(1, Ordering::SeqCst);
                        memory.resize(1024, Block::default());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    false
                })
                .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.expect("task"), Ok(false));
        }
        assert!(
            fresh.load(Ordering::SeqCst) <= 3,
            "12 overlapping checks on 2 slots allocated {} buffers",
            fresh.load(Ordering::SeqCst)
        );
        assert!(
            l.memory.lock().expect("pool").free.is_empty(),
            "freed after the burst"
        );
    }

    #[test]
    fn login_limiter_is_bounded() {
        let l = LoginLimiter::new(5, Duration::from_secs(60));
        for i in 0..LIMITER_MAX_ENTRIES as u32 {
            let _ = l.reserve(IpAddr::from(i.to_be_bytes()));
        }
        assert_eq!(l.len(), LIMITER_MAX_ENTRIES);
        // All recent: the limiter starts over rather than grow.
        let _ = l.reserve(ip("198.51.100.1"));
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn api_rate_limiter_per_key() {
        let one = NonZeroU32::MIN;
        let l = ApiRateLimiter::new(Some((one, NonZeroU32::new(3).expect("3"))));
        for i in 0..3 {
            assert!(l.check("admin:a").is_ok(), "request {i}");
        }
        let wait = l.check("admin:a").expect_err("spent");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert_eq!(retry_after_secs(wait), 1);
        assert!(l.check("token:t1").is_ok(), "another key");
        let off = ApiRateLimiter::new(None);
        assert!((0..1000).all(|_| off.check("admin:a").is_ok()));
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(12)), 12);
    }
}
