//! Admin authentication over HTTP (checklist items 1, 2 and 17). Concurrent login abuse is in
//! `login_abuse.rs`, logout in `logout.rs`, the per-caller API rate limit in `api_rate_limit.rs`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

use crate::both_stores;
use crate::helpers::{TestApp, ADMIN_PASSWORD, JWT_SECRET};

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn sign(claims: &Value, secret: &str) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode")
}

fn good_claims() -> Value {
    json!({"sub":"mallory","iss":"wagate","aud":"wagate-admin","iat":now(),"exp":now()+600,
        "jti":uuid::Uuid::now_v7()})
}

fn without(field: &str) -> Value {
    let mut c = good_claims();
    c.as_object_mut().expect("object").remove(field);
    c
}

async fn bad_admin_tokens_are_401(app: TestApp) {
    let probe = "/v1/ai/global";
    // The control: a well-formed token with the right secret works.
    assert_eq!(
        app.call("GET", probe, Some(&sign(&good_claims(), JWT_SECRET)), None)
            .await
            .status,
        200
    );

    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(good_claims().to_string())
    );
    let hs512 = encode(
        &Header::new(jsonwebtoken::Algorithm::HS512),
        &good_claims(),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("encode");
    let rs256_header = {
        let signed = sign(&good_claims(), JWT_SECRET);
        let mut parts: Vec<&str> = signed.split('.').collect();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        parts[0] = &header;
        parts.join(".")
    };
    let mut expired = good_claims();
    expired["exp"] = json!(now() - 3600);
    let mut wrong_aud = good_claims();
    wrong_aud["aud"] = json!("someone-else");
    let mut wrong_iss = good_claims();
    wrong_iss["iss"] = json!("evil");

    let cases: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("garbage", Some("not-a-jwt".into())),
        ("alg none", Some(alg_none)),
        ("HS512", Some(hs512)),
        ("RS256 header", Some(rs256_header)),
        (
            "other secret",
            Some(sign(
                &good_claims(),
                "another-secret-another-secret-0123456789",
            )),
        ),
        ("missing iss", Some(sign(&without("iss"), JWT_SECRET))),
        ("missing exp", Some(sign(&without("exp"), JWT_SECRET))),
        ("missing sub", Some(sign(&without("sub"), JWT_SECRET))),
        ("missing aud", Some(sign(&without("aud"), JWT_SECRET))),
        // Issued before sessions had an id: refused (ADR 0017).
        ("missing jti", Some(sign(&without("jti"), JWT_SECRET))),
        ("expired", Some(sign(&expired, JWT_SECRET))),
        ("wrong aud", Some(sign(&wrong_aud, JWT_SECRET))),
        ("wrong iss", Some(sign(&wrong_iss, JWT_SECRET))),
    ];
    for (name, token) in cases {
        let r = app.call("GET", probe, token.as_deref(), None).await;
        assert_eq!(r.status, 401, "{name}: {}", r.text);
        assert_eq!(r.json["error"]["code"], "unauthorized", "{name}");
    }
    // Basic auth is not bearer.
    let r = app
        .send(
            app.client
                .get(format!("{}{probe}", app.base))
                .basic_auth("admin", Some(ADMIN_PASSWORD)),
        )
        .await;
    assert_eq!(r.status, 401);
}
both_stores!(admin_jwt_rejections, bad_admin_tokens_are_401);

async fn login_issues_tokens_and_limits_failures(app: TestApp) {
    let ok = app
        .call(
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({"username":"admin","password":ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let token = ok.json["token"].as_str().expect("token").to_string();
    assert!(ok.json["expires_at"].as_str().is_some());
    assert_eq!(
        app.call("GET", "/v1/ai/global", Some(&token), None)
            .await
            .status,
        200
    );

    for i in 0..5 {
        let r = app
            .call(
                "POST",
                "/v1/auth/login",
                None,
                Some(json!({"username":"admin","password":format!("wrong{i}")})),
            )
            .await;
        assert_eq!(r.status, 401, "attempt {i}: {}", r.text);
        assert!(!r.text.contains("wrong"), "the password is never echoed");
    }
    // Locked out now, even with the right password.
    let r = app
        .call(
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({"username":"admin","password":ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(r.status, 429, "{}", r.text);
    let retry: u64 = r.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(retry >= 1);
}
both_stores!(login, login_issues_tokens_and_limits_failures);
