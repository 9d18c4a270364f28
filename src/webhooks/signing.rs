//! Standard Webhooks signing: secrets are `whsec_` + base64 of 32 random bytes; a request is
//! signed with `v1,` + base64(HMAC-SHA256(secret bytes, "{id}.{timestamp}.{body}")).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// The prefix of every signing secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// The associated data a webhook's sealed secret is bound to.
pub fn secret_ad(webhook_id: &str) -> String {
    format!("webhook_secret|v1|webhook:{webhook_id}")
}

/// A new signing secret (256 random bits).
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// The `webhook-signature` header value for a message.
///
/// Fails only when `secret` is not a `whsec_` secret of base64 bytes.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, String> {
    let raw = secret
        .strip_prefix(SECRET_PREFIX)
        .and_then(|b64| STANDARD.decode(b64).ok())
        .ok_or_else(|| "the webhook secret is malformed".to_string())?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&raw)
        .map_err(|_| "the webhook secret is malformed".to_string())?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference implementations.
    #[test]
    fn known_answer() {
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_are_random_and_long() {
        let a = new_secret();
        assert!(a.starts_with(SECRET_PREFIX));
        assert_eq!(
            STANDARD.decode(&a[SECRET_PREFIX.len()..]).unwrap().len(),
            32
        );
        assert_ne!(a, new_secret());
    }

    #[test]
    fn malformed_secret_is_an_error() {
        assert!(sign("nope", "id", 1, b"").is_err());
    }
}
