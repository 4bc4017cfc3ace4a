//! Accounts end to end against real MySQL, Redis, RabbitMQ and SMTP: sign-up, the e-mailed
//! code (read out of the real SMTP conversation), verification, login, refresh rotation with
//! reuse detection, logout, profile with encrypted personal data, password change, rate
//! limits, and every error code each endpoint can answer, in the contract's shape.

mod common;

use std::time::Duration;

use common::{PASSWORD, TestApi, email, sign_up};
use dropline_core::auth::keys::{KeyRing, SigningKeyPair};
use dropline_core::auth::tokens::{self, AccessClaims, Role};
use dropline_core::ids::UserId;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

/// Signs up, verifies with the e-mailed code and logs in; returns the login body.
async fn verified_login(api: &TestApi, email: &str) -> anyhow::Result<Value> {
    sign_up(api, email).await?;
    let code = api.code_for(email, 1).await?;
    api.post(
        "/api/users/verify",
        None,
        json!({"email": email, "code": code}),
    )
    .await?
    .expect(200, None);
    let login = api
        .post(
            "/api/auth/login",
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await?;
    login.expect(200, None);
    Ok(login.body)
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn sign_up_verify_login_and_profile() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let email = email();
    let created = api
        .post(
            "/api/users",
            None,
            json!({"email": format!("  {}  ", email.to_uppercase()), "password": PASSWORD,
                   "name": "Kim Minji", "phone": "+82 10-1234-5678",
                   "address": "서울특별시 중구 세종대로 110"}),
        )
        .await?;
    created.expect(201, None);
    assert_eq!(created.body["email"], json!(email), "e-mail normalised");
    assert_eq!(created.body["verified"], json!(false));
    let id = Uuid::parse_str(&s(&created.body["id"]))?;

    // Personal data is encrypted at rest: no plaintext in the row, key id 1 in front.
    let (phone_enc, address_enc): (Vec<u8>, Vec<u8>) =
        sqlx::query_as("SELECT phone_enc, address_enc FROM users WHERE id = ?")
            .bind(id)
            .fetch_one(api.mysql())
            .await?;
    assert_eq!(phone_enc.first(), Some(&1));
    assert!(!phone_enc.windows(4).any(|w| w == b"1234"));
    assert!(
        !address_enc
            .windows("세종대로".len())
            .any(|w| w == "세종대로".as_bytes())
    );
    // The code is stored hashed, never in the clear.
    let code = api.code_for(&email, 1).await?;
    let stored: Vec<u8> = sqlx::query_scalar("SELECT code_hash FROM email_codes WHERE user_id = ?")
        .bind(id)
        .fetch_one(api.mysql())
        .await?;
    assert_eq!(stored.len(), 32);
    assert!(!stored.windows(6).any(|w| w == code.as_bytes()));

    // Not verified yet: the right password still cannot log in.
    api.post(
        "/api/auth/login",
        None,
        json!({"email": email, "password": PASSWORD}),
    )
    .await?
    .expect(403, Some("email_not_verified"));

    let wrong = if code == "000000" { "000001" } else { "000000" };
    api.post(
        "/api/users/verify",
        None,
        json!({"email": email, "code": wrong}),
    )
    .await?
    .expect(400, Some("invalid_code"));
    api.post(
        "/api/users/verify",
        None,
        json!({"email": email, "code": code}),
    )
    .await?
    .expect(200, None);
    // Verifying again is harmless.
    let again = api
        .post(
            "/api/users/verify",
            None,
            json!({"email": email, "code": code}),
        )
        .await?;
    again.expect(200, None);
    assert_eq!(again.body, json!({"verified": true}));

    let login = api
        .post(
            "/api/auth/login",
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await?;
    login.expect(200, None);
    assert_eq!(login.body["token_type"], json!("Bearer"));
    assert_eq!(login.body["expires_in"], json!(900));
    let access = s(&login.body["access_token"]);
    let refresh = s(&login.body["refresh_token"]);
    assert!(
        refresh.starts_with("drt_") && refresh.len() >= 4 + 43,
        "{refresh}"
    );
    let claims: AccessClaims = tokens::verify_access(&api.keys, &access)?;
    assert_eq!(claims.sub, UserId::from(id));
    assert_eq!(claims.role, Role::Buyer);
    assert!(claims.exp > claims.iat);

    let me = api.get("/api/me", Some(&access)).await?;
    me.expect(200, None);
    assert_eq!(me.body["id"], json!(id.to_string()));
    assert_eq!(me.body["email"], json!(email));
    assert_eq!(me.body["name"], json!("Kim Minji"));
    assert_eq!(me.body["phone"], json!("+82 10-1234-5678"));
    assert_eq!(me.body["address"], json!("서울특별시 중구 세종대로 110"));
    assert_eq!(me.body["verified"], json!(true));
    assert_eq!(me.body["role"], json!("buyer"));
    // Exactly one mail went out for this account.
    assert_eq!(api.mails_to(&email).await?, 1);
    api.stop().await
}

#[tokio::test]
async fn sign_up_refuses_bad_input_and_taken_addresses() -> anyhow::Result<()> {
    let api = TestApi::start(&[("LIMITS__SIGNUP_PER_IP_PER_MINUTE", "1000")]).await?;
    let email = email();
    let ok = json!({"email": email, "password": PASSWORD, "name": "Lee"});
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"email": "not-an-address", "password": PASSWORD, "name": "Lee"}),
            "e-mail",
        ),
        (
            json!({"email": email, "password": "short", "name": "Lee"}),
            "password",
        ),
        (
            json!({"email": email, "password": "x".repeat(129), "name": "Lee"}),
            "password",
        ),
        (
            json!({"email": email, "password": PASSWORD, "name": "  "}),
            "name",
        ),
        (
            json!({"email": email, "password": PASSWORD, "name": "Lee", "phone": "call me"}),
            "phone",
        ),
        (
            json!({"email": email, "password": PASSWORD, "name": "Lee", "address": ""}),
            "address",
        ),
        (
            json!({"email": email, "password": PASSWORD, "name": "Lee", "role": "admin"}),
            "role",
        ),
        (json!({"email": email, "password": PASSWORD}), "name"),
    ];
    for (body, names) in cases {
        let reply = api.post("/api/users", None, body.clone()).await?;
        reply.expect(400, Some("bad_request"));
        let message = s(&reply.body["error"]["message"]);
        assert!(message.contains(names), "{body} → {message}");
    }
    // Nothing was written by the refusals.
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(api.mysql())
        .await?;
    assert_eq!(users, 0);

    // 128 characters is the upper bound and is accepted.
    let long = json!({"email": email, "password": "가".repeat(128), "name": "Lee"});
    api.post("/api/users", None, long).await?.expect(201, None);
    api.post("/api/users", None, ok.clone())
        .await?
        .expect(409, Some("email_taken"));
    // Same address in another case is the same account.
    let upper = json!({"email": email.to_uppercase(), "password": PASSWORD, "name": "Lee"});
    api.post("/api/users", None, upper)
        .await?
        .expect(409, Some("email_taken"));

    // Transport-level errors keep the shape too.
    let wrong_type = api
        .http
        .post(format!("{}/api/users", api.base))
        .header("content-type", "text/plain")
        .body(ok.to_string())
        .send()
        .await?;
    assert_eq!(wrong_type.status().as_u16(), 415);
    let body: Value = wrong_type.json().await?;
    assert_eq!(body["error"]["code"], json!("unsupported_media_type"));
    let not_json = api
        .http
        .post(format!("{}/api/users", api.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await?;
    assert_eq!(not_json.status().as_u16(), 400);
    api.stop().await
}

#[tokio::test]
async fn verify_does_not_tell_who_has_a_verified_account() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let email = email();
    sign_up(&api, &email).await?;
    let code = api.code_for(&email, 1).await?;
    api.post(
        "/api/users/verify",
        None,
        json!({"email": email, "code": code}),
    )
    .await?
    .expect(200, None);
    let unknown = api
        .post(
            "/api/users/verify",
            None,
            json!({"email": "nobody-here@example.com", "code": "123456"}),
        )
        .await?;
    unknown.expect(400, Some("invalid_code"));
    // Any other code for the verified address: the unknown address's answer, to the letter.
    for guess in ["000000", "123456", "999999"] {
        if guess == code {
            continue;
        }
        let reply = api
            .post(
                "/api/users/verify",
                None,
                json!({"email": email, "code": guess}),
            )
            .await?;
        assert_eq!(reply.status, unknown.status);
        assert_eq!(reply.body, unknown.body);
    }
    // The code that verified it is still answered `verified` (a retried request).
    api.post(
        "/api/users/verify",
        None,
        json!({"email": email, "code": code}),
    )
    .await?
    .expect(200, None);
    api.stop().await
}

#[tokio::test]
async fn five_wrong_codes_burn_the_code_until_the_window_ends() -> anyhow::Result<()> {
    let api = TestApi::start(&[
        ("LIMITS__RESEND_INTERVAL_SECONDS", "1"),
        ("LIMITS__VERIFY_PER_EMAIL_PER_MINUTE", "100"),
    ])
    .await?;
    let email = email();
    let id = sign_up(&api, &email).await?;
    let code = api.code_for(&email, 1).await?;
    let wrong = if code == "999999" { "999998" } else { "999999" };
    for left in (0..5).rev() {
        let reply = api
            .post(
                "/api/users/verify",
                None,
                json!({"email": email, "code": wrong}),
            )
            .await?;
        reply.expect(400, Some("invalid_code"));
        let message = s(&reply.body["error"]["message"]);
        if left > 0 {
            assert!(message.contains(&format!("{left} tries left")), "{message}");
        } else {
            assert!(message.contains("burnt"), "{message}");
        }
    }
    // Burnt: even the right code no longer works.
    api.post(
        "/api/users/verify",
        None,
        json!({"email": email, "code": code}),
    )
    .await?
    .expect(400, Some("invalid_code"));

    // Malformed codes and unknown addresses get the same code, without leaking anything.
    for bad in ["12345", "1234567", "abcdef", ""] {
        api.post(
            "/api/users/verify",
            None,
            json!({"email": email, "code": bad}),
        )
        .await?
        .expect(400, Some("invalid_code"));
    }
    api.post(
        "/api/users/verify",
        None,
        json!({"email": "nobody@example.com", "code": "123456"}),
    )
    .await?
    .expect(400, Some("invalid_code"));

    // A resend never restores spent tries (#17 hole 2): within the code window it answers as
    // always but sends nothing, and the burnt account says when a new code can help.
    api.post("/api/users/verify/resend", None, json!({"email": email}))
        .await?
        .expect(202, None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        api.mails_to(&email).await?,
        1,
        "a resend restored spent tries"
    );
    let refused = api
        .post(
            "/api/users/verify",
            None,
            json!({"email": email, "code": code}),
        )
        .await?;
    refused.expect(400, Some("invalid_code"));
    let message = s(&refused.body["error"]["message"]);
    assert!(message.contains("minutes"), "{message}");

    // Once the window is over, a resend issues a new code with fresh tries.
    sqlx::query(
        "UPDATE email_codes SET window_started_at = window_started_at - INTERVAL 61 MINUTE \
         WHERE user_id = ?",
    )
    .bind(id)
    .execute(api.mysql())
    .await?;
    tokio::time::sleep(Duration::from_millis(1_100)).await; // the resend interval
    api.post("/api/users/verify/resend", None, json!({"email": email}))
        .await?
        .expect(202, None);
    let fresh = api.code_for(&email, 2).await?;
    api.post(
        "/api/users/verify",
        None,
        json!({"email": email, "code": fresh}),
    )
    .await?
    .expect(200, None);
    api.stop().await
}

/// Mails to `to` after a moment for the api to publish anything it would.
async fn settled_mails(api: &TestApi, to: &str) -> anyhow::Result<usize> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.mails_to(to).await
}

/// A fresh address at `domain` whose local part holds a `u` (for its look-alike `ü`).
fn address_at(domain: &str) -> String {
    format!("buyer-{}@{domain}", Uuid::new_v4().simple())
}

/// #17 hole 2: an accent makes another address (the column compares exactly), so a
/// look-alike neither signs in to the account it resembles nor is refused as taken.
#[tokio::test]
async fn a_look_alike_address_is_another_account() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let email = email();
    verified_login(&api, &email).await?;
    let look_alike = email.replacen('u', "ü", 1);
    assert_ne!(look_alike, email);
    api.post(
        "/api/auth/login",
        None,
        json!({"email": look_alike, "password": PASSWORD}),
    )
    .await?
    .expect(401, Some("invalid_credentials"));
    let accented_domain = email.replace("@example.com", "@exämple.com");
    api.post(
        "/api/auth/login",
        None,
        json!({"email": accented_domain, "password": PASSWORD}),
    )
    .await?
    .expect(401, Some("invalid_credentials"));
    // Its owner can sign up with it: another account, its code to the look-alike.
    let other = sign_up(&api, &look_alike).await?;
    assert_eq!(api.code_for(&look_alike, 1).await?.len(), 6);
    let me = api
        .get(
            "/api/me",
            Some(s(&verified_token(&api, &email).await?).as_str()),
        )
        .await?;
    assert_ne!(s(&me.body["id"]), other.to_string());
    api.stop().await
}

/// Logs in an account made by [`verified_login`]; returns its access token.
async fn verified_token(api: &TestApi, email: &str) -> anyhow::Result<Value> {
    let login = api
        .post(
            "/api/auth/login",
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await?;
    login.expect(200, None);
    Ok(login.body["access_token"].clone())
}

/// #17 hole 2: the spellings of one address (case, NFC, a Punycode domain) are one account,
/// stored in one canonical form, and the code goes to that stored form only.
#[tokio::test]
async fn spellings_of_one_address_are_one_account() -> anyhow::Result<()> {
    let api = TestApi::start(&[("LIMITS__RESEND_INTERVAL_SECONDS", "1")]).await?;
    let typed = address_at("xn--bcher-kva.example");
    let stored = typed.replace("xn--bcher-kva", "bücher");
    let reply = api
        .post(
            "/api/users",
            None,
            json!({"email": typed, "password": PASSWORD, "name": "Anna"}),
        )
        .await?;
    reply.expect(201, None);
    assert_eq!(s(&reply.body["email"]), stored);
    assert_eq!(api.code_for(&stored, 1).await?.len(), 6);
    for spelling in [
        stored.to_uppercase(),
        stored.replace('ü', "u\u{0308}"),
        typed.clone(),
    ] {
        api.post(
            "/api/users",
            None,
            json!({"email": spelling, "password": PASSWORD, "name": "Anna"}),
        )
        .await?
        .expect(409, Some("email_taken"));
    }
    // A resend typed in another spelling mails the stored address, never the typed text.
    api.post(
        "/api/users/verify/resend",
        None,
        json!({"email": typed.to_uppercase()}),
    )
    .await?
    .expect(202, None);
    api.code_for(&stored, 2).await?;
    assert_eq!(settled_mails(&api, &typed.to_uppercase()).await?, 0);
    api.stop().await
}

/// #17 hole 2: a resend for a look-alike of an unverified account's address mails nobody
/// (it was the account's code, mailed to the look-alike's owner).
#[tokio::test]
async fn a_code_never_goes_to_a_look_alike_address() -> anyhow::Result<()> {
    let api = TestApi::start(&[("LIMITS__RESEND_INTERVAL_SECONDS", "1")]).await?;
    let victim = email();
    sign_up(&api, &victim).await?;
    api.code_for(&victim, 1).await?;
    let look_alike = victim.replace("@example.com", "@exämple.com");
    api.post(
        "/api/users/verify/resend",
        None,
        json!({"email": look_alike}),
    )
    .await?
    .expect(202, None);
    assert_eq!(settled_mails(&api, &look_alike).await?, 0);
    assert_eq!(api.mails_to(&victim).await?, 1);
    api.stop().await
}

/// #17 hole 2: codes per account per hour are capped (auth.email_codes_per_hour), whatever
/// spelling the resends use.
#[tokio::test]
async fn codes_per_account_are_capped_per_hour() -> anyhow::Result<()> {
    let api = TestApi::start(&[
        ("LIMITS__RESEND_INTERVAL_SECONDS", "1"),
        ("AUTH__EMAIL_CODES_PER_HOUR", "3"),
    ])
    .await?;
    let email = email();
    sign_up(&api, &email).await?;
    api.code_for(&email, 1).await?;
    for spelling in [email.clone(), email.to_uppercase(), format!(" {email}")] {
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        api.post("/api/users/verify/resend", None, json!({"email": spelling}))
            .await?
            .expect(202, None);
    }
    assert_eq!(settled_mails(&api, &email).await?, 3);
    api.stop().await
}

/// #17 hole 2: guessing codes is limited per address (whatever the spelling) and per IP.
#[tokio::test]
async fn verify_is_rate_limited_per_address_and_per_ip() -> anyhow::Result<()> {
    let api = TestApi::start(&[
        ("LIMITS__VERIFY_PER_EMAIL_PER_MINUTE", "3"),
        ("LIMITS__VERIFY_PER_IP_PER_MINUTE", "1000"),
    ])
    .await?;
    let email = email();
    sign_up(&api, &email).await?;
    let code = api.code_for(&email, 1).await?;
    let wrong = if code == "000000" { "000001" } else { "000000" };
    for spelling in [email.clone(), email.to_uppercase(), format!("{email} ")] {
        api.post(
            "/api/users/verify",
            None,
            json!({"email": spelling, "code": wrong}),
        )
        .await?
        .expect(400, Some("invalid_code"));
    }
    let limited = api
        .post(
            "/api/users/verify",
            None,
            json!({"email": email, "code": code}),
        )
        .await?;
    limited.expect(429, Some("rate_limited"));
    assert!(limited.headers.get("retry-after").is_some());
    // Another address is not held back by this one.
    api.post(
        "/api/users/verify",
        None,
        json!({"email": "nobody-here@example.com", "code": "123456"}),
    )
    .await?
    .expect(400, Some("invalid_code"));
    api.stop().await?;

    let api = TestApi::start(&[
        ("LIMITS__VERIFY_PER_EMAIL_PER_MINUTE", "1000"),
        ("LIMITS__VERIFY_PER_IP_PER_MINUTE", "4"),
    ])
    .await?;
    for i in 0..4 {
        api.post(
            "/api/users/verify",
            None,
            json!({"email": format!("guess-{i}@example.com"), "code": "123456"}),
        )
        .await?
        .expect(400, Some("invalid_code"));
    }
    api.post(
        "/api/users/verify",
        None,
        json!({"email": "guess-5@example.com", "code": "123456"}),
    )
    .await?
    .expect(429, Some("rate_limited"));
    api.stop().await
}

/// #17 hole 11: an account never verified within auth.unverified_grace_seconds no longer
/// holds its address; a verified one always does, and so does a recent unverified one.
#[tokio::test]
async fn an_unverified_sign_up_is_taken_over_after_the_grace() -> anyhow::Result<()> {
    let api = TestApi::start(&[("AUTH__UNVERIFIED_GRACE_SECONDS", "1")]).await?;
    let email = email();
    let first = sign_up(&api, &email).await?;
    api.code_for(&email, 1).await?;
    let second_password = "another horse battery";
    let again = || {
        api.post(
            "/api/users",
            None,
            json!({"email": email, "password": second_password, "name": "Lee"}),
        )
    };
    again().await?.expect(409, Some("email_taken"));
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let taken = again().await?;
    taken.expect(201, None);
    let second = s(&taken.body["id"]);
    assert_ne!(second, first.to_string());
    // The first account is gone; the code for the new one went to the address.
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE id = ?")
        .bind(first)
        .fetch_one(api.mysql())
        .await?;
    assert_eq!(left, 0);
    let code = api.code_for(&email, 2).await?;
    api.post(
        "/api/users/verify",
        None,
        json!({"email": email, "code": code}),
    )
    .await?
    .expect(200, None);
    api.post(
        "/api/auth/login",
        None,
        json!({"email": email, "password": second_password}),
    )
    .await?
    .expect(200, None);
    // Verified: never taken over.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    again().await?.expect(409, Some("email_taken"));
    api.stop().await
}

#[tokio::test]
async fn expired_code_is_refused() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let email = email();
    let id = sign_up(&api, &email).await?;
    let code = api.code_for(&email, 1).await?;
    sqlx::query("UPDATE email_codes SET expires_at = ? WHERE user_id = ?")
        .bind(chrono::Utc::now() - chrono::Duration::seconds(1))
        .bind(id)
        .execute(api.mysql())
        .await?;
    let reply = api
        .post(
            "/api/users/verify",
            None,
            json!({"email": email, "code": code}),
        )
        .await?;
    reply.expect(400, Some("invalid_code"));
    assert!(s(&reply.body["error"]["message"]).contains("expired"));
    api.stop().await
}

#[tokio::test]
async fn resend_is_silent_about_accounts_and_rate_limited_per_address() -> anyhow::Result<()> {
    let api = TestApi::start(&[("LIMITS__RESEND_INTERVAL_SECONDS", "60")]).await?;
    let email = email();
    sign_up(&api, &email).await?;
    api.code_for(&email, 1).await?;

    let first = api
        .post("/api/users/verify/resend", None, json!({"email": email}))
        .await?;
    first.expect(202, None);
    let second = api
        .post("/api/users/verify/resend", None, json!({"email": email}))
        .await?;
    second.expect(429, Some("rate_limited"));
    let retry: u64 = second
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    // Another address is not held back by this one.
    let unknown = "nobody-here@example.com";
    api.post("/api/users/verify/resend", None, json!({"email": unknown}))
        .await?
        .expect(202, None);
    api.post(
        "/api/users/verify/resend",
        None,
        json!({"email": "not an address"}),
    )
    .await?
    .expect(400, Some("bad_request"));

    api.code_for(&email, 2).await?;
    // The new code replaced the old one: only the newest works.
    let first_code = api.code_for(&email, 1).await?;
    let second_code = api.code_for(&email, 2).await?;
    if first_code != second_code {
        api.post(
            "/api/users/verify",
            None,
            json!({"email": email, "code": first_code}),
        )
        .await?
        .expect(400, Some("invalid_code"));
    }
    api.post(
        "/api/users/verify",
        None,
        json!({"email": email, "code": second_code}),
    )
    .await?
    .expect(200, None);
    // A verified account gets no more codes, and nobody was mailed for the unknown address.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(api.mails_to(&email).await?, 2);
    assert_eq!(api.mails_to(unknown).await?, 0);
    api.stop().await
}

#[tokio::test]
async fn a_login_sent_as_a_json_array_is_refused() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let email = email();
    api.user(&email, Role::Buyer).await?;
    // serde's sequence form of the login struct: it used to sign in.
    for body in [json!([email, PASSWORD]), json!([[email, PASSWORD]])] {
        api.post("/api/auth/login", None, body)
            .await?
            .expect(400, Some("bad_request"));
    }
    api.post(
        "/api/users",
        None,
        json!([format!("x-{email}"), PASSWORD, "Kim"]),
    )
    .await?
    .expect(400, Some("bad_request"));
    api.post(
        "/api/auth/login",
        None,
        json!({"email": email, "password": PASSWORD}),
    )
    .await?
    .expect(200, None);
    api.stop().await
}

#[tokio::test]
async fn login_refuses_wrong_credentials_the_same_way() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let email = email();
    api.user(&email, Role::Buyer).await?;
    for body in [
        json!({"email": email, "password": "wrong password"}),
        json!({"email": "nobody@example.com", "password": PASSWORD}),
        json!({"email": "not an address", "password": PASSWORD}),
    ] {
        let reply = api.post("/api/auth/login", None, body).await?;
        reply.expect(401, Some("invalid_credentials"));
    }
    api.post("/api/auth/login", None, json!({"email": email}))
        .await?
        .expect(400, Some("bad_request"));
    api.post(
        "/api/auth/login",
        None,
        json!({"email": email, "password": PASSWORD}),
    )
    .await?
    .expect(200, None);
    api.stop().await
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let email = email();
    let login = verified_login(&api, &email).await?;
    let rt1 = s(&login["refresh_token"]);
    // A second session (another device) must survive the first one's revocation.
    let other = api
        .post(
            "/api/auth/login",
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await?;
    let other_rt = s(&other.body["refresh_token"]);

    let r2 = api
        .post("/api/auth/refresh", None, json!({"refresh_token": rt1}))
        .await?;
    r2.expect(200, None);
    let rt2 = s(&r2.body["refresh_token"]);
    assert_ne!(rt1, rt2);
    let access2 = s(&r2.body["access_token"]);
    api.get("/api/me", Some(&access2)).await?.expect(200, None);

    // rt1 is spent: presenting it again revokes the whole family, rt2 included.
    let reused = api
        .post("/api/auth/refresh", None, json!({"refresh_token": rt1}))
        .await?;
    reused.expect(401, Some("unauthorized"));
    assert!(s(&reused.body["error"]["message"]).contains("already used"));
    api.post("/api/auth/refresh", None, json!({"refresh_token": rt2}))
        .await?
        .expect(401, Some("unauthorized"));
    // The other device's family is untouched.
    api.post(
        "/api/auth/refresh",
        None,
        json!({"refresh_token": other_rt}),
    )
    .await?
    .expect(200, None);

    for bad in ["", "drt_nope", "garbage"] {
        api.post("/api/auth/refresh", None, json!({"refresh_token": bad}))
            .await?
            .expect(401, Some("unauthorized"));
    }
    api.post("/api/auth/refresh", None, json!({}))
        .await?
        .expect(400, Some("bad_request"));
    api.stop().await
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_let_exactly_one_through() -> anyhow::Result<()> {
    let api = TestApi::start(&[("LIMITS__LOGIN_PER_IP_PER_MINUTE", "1000")]).await?;
    let email = email();
    api.user(&email, Role::Buyer).await?;
    let login = api
        .post(
            "/api/auth/login",
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await?;
    let rt = s(&login.body["refresh_token"]);
    let attempts = (0..12).map(|_| {
        api.post(
            "/api/auth/refresh",
            None,
            json!({"refresh_token": rt.clone()}),
        )
    });
    let replies = futures_util::future::join_all(attempts).await;
    let mut ok = Vec::new();
    for reply in replies {
        let reply = reply?;
        match reply.status.as_u16() {
            200 => ok.push(s(&reply.body["refresh_token"])),
            401 => assert_eq!(reply.code(), Some("unauthorized")),
            other => anyhow::bail!("unexpected {other}: {}", reply.body),
        }
    }
    assert_eq!(ok.len(), 1, "exactly one refresh wins");
    // The losers presented a spent token: the family, winner's token included, is revoked.
    api.post(
        "/api/auth/refresh",
        None,
        json!({"refresh_token": ok[0].clone()}),
    )
    .await?
    .expect(401, Some("unauthorized"));
    api.stop().await
}

#[tokio::test]
async fn logout_revokes_and_is_idempotent() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let email = email();
    api.user(&email, Role::Buyer).await?;
    let login = api
        .post(
            "/api/auth/login",
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await?;
    let rt = s(&login.body["refresh_token"]);
    for _ in 0..2 {
        let out = api
            .post("/api/auth/logout", None, json!({"refresh_token": rt}))
            .await?;
        out.expect(204, None);
    }
    api.post("/api/auth/refresh", None, json!({"refresh_token": rt}))
        .await?
        .expect(401, Some("unauthorized"));
    api.post("/api/auth/logout", None, json!({"token": rt}))
        .await?
        .expect(400, Some("bad_request"));
    api.stop().await
}

#[tokio::test]
async fn password_change_checks_the_old_one_and_revokes_sessions() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let email = email();
    let (_, _) = api.user(&email, Role::Buyer).await?;
    let login = api
        .post(
            "/api/auth/login",
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await?;
    let access = s(&login.body["access_token"]);
    let rt = s(&login.body["refresh_token"]);
    let put = |token: Option<String>, body: Value| {
        let api = &api;
        async move {
            api.call(
                Method::PUT,
                "/api/me/password",
                token.as_deref(),
                Some(body),
            )
            .await
        }
    };
    put(
        None,
        json!({"current_password": PASSWORD, "new_password": "new password 1"}),
    )
    .await?
    .expect(401, Some("unauthorized"));
    put(
        Some(access.clone()),
        json!({"current_password": "wrong one!", "new_password": "new password 1"}),
    )
    .await?
    .expect(401, Some("invalid_credentials"));
    put(
        Some(access.clone()),
        json!({"current_password": PASSWORD, "new_password": "short"}),
    )
    .await?
    .expect(400, Some("bad_request"));
    put(
        Some(access.clone()),
        json!({"current_password": PASSWORD, "new_password": "new password 1"}),
    )
    .await?
    .expect(204, None);

    api.post("/api/auth/refresh", None, json!({"refresh_token": rt}))
        .await?
        .expect(401, Some("unauthorized"));
    api.post(
        "/api/auth/login",
        None,
        json!({"email": email, "password": PASSWORD}),
    )
    .await?
    .expect(401, Some("invalid_credentials"));
    api.post(
        "/api/auth/login",
        None,
        json!({"email": email, "password": "new password 1"}),
    )
    .await?
    .expect(200, None);
    api.stop().await
}

#[tokio::test]
async fn me_refuses_missing_tampered_expired_unsigned_and_foreign_tokens() -> anyhow::Result<()> {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let api = TestApi::start(&[]).await?;
    let (id, good) = api.user(&email(), Role::Buyer).await?;
    api.get("/api/me", Some(&good)).await?.expect(200, None);
    api.get("/api/me", None)
        .await?
        .expect(401, Some("unauthorized"));

    // Tampered payload: same header and signature, role raised to admin.
    let parts: Vec<&str> = good.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1])?)?;
    claims["role"] = json!("admin");
    let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?);
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    // alg: none, with the same claims and no signature.
    let header_none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let unsigned = format!("{header_none}.{forged_payload}.");
    // Expired: signed by the right key, an hour old.
    let mut old = AccessClaims::new(id, Role::Buyer, Duration::from_secs(60));
    old.iat -= 3600;
    old.exp -= 3600;
    let expired = tokens::sign(&api.keys, &old)?;
    // Signed by a key the server does not trust.
    let foreign_ring = KeyRing::new(Some(SigningKeyPair::generate()?), vec![])?;
    let (foreign, _) =
        tokens::issue_access(&foreign_ring, id, Role::Buyer, Duration::from_secs(60))?;
    for (what, token) in [
        ("tampered", tampered),
        ("alg none", unsigned),
        ("expired", expired),
        ("foreign key", foreign),
        ("garbage", "abc.def.ghi".to_owned()),
    ] {
        let reply = api.get("/api/me", Some(&token)).await?;
        assert_eq!(reply.status.as_u16(), 401, "{what}: {}", reply.body);
        assert_eq!(reply.code(), Some("unauthorized"), "{what}");
    }
    // A valid token for an account that no longer exists.
    let ghost = api.token(UserId::new_v7(), Role::Buyer)?;
    api.get("/api/me", Some(&ghost))
        .await?
        .expect(404, Some("not_found"));
    api.stop().await
}

#[tokio::test]
async fn the_login_limiter_keys_on_the_stored_form_not_the_raw_text() -> anyhow::Result<()> {
    let api = TestApi::start(&[
        ("LIMITS__LOGIN_PER_EMAIL_PER_MINUTE", "3"),
        ("LIMITS__LOGIN_PER_IP_PER_MINUTE", "1000"),
    ])
    .await?;
    // Malformed addresses, each a different (and large) text: one key for all of them, so a
    // client can neither grow the limiter by a key per try nor dodge the limit by varying them.
    for i in 0..3 {
        let junk = format!("{i}{}", "x".repeat(60_000));
        api.post(
            "/api/auth/login",
            None,
            json!({"email": junk, "password": "x"}),
        )
        .await?
        .expect(401, Some("invalid_credentials"));
    }
    api.post(
        "/api/auth/login",
        None,
        json!({"email": "yet another malformed one", "password": "x"}),
    )
    .await?
    .expect(429, Some("rate_limited"));
    // Spellings of one address share its key.
    let email = email();
    api.user(&email, Role::Buyer).await?;
    for spelling in [email.clone(), email.to_uppercase(), format!("  {email} ")] {
        api.post(
            "/api/auth/login",
            None,
            json!({"email": spelling, "password": "wrong password"}),
        )
        .await?
        .expect(401, Some("invalid_credentials"));
    }
    api.post(
        "/api/auth/login",
        None,
        json!({"email": email, "password": PASSWORD}),
    )
    .await?
    .expect(429, Some("rate_limited"));
    api.stop().await
}

#[tokio::test]
async fn login_and_sign_up_are_rate_limited() -> anyhow::Result<()> {
    let api = TestApi::start(&[
        ("LIMITS__LOGIN_PER_EMAIL_PER_MINUTE", "3"),
        ("LIMITS__LOGIN_PER_IP_PER_MINUTE", "6"),
        ("LIMITS__SIGNUP_PER_IP_PER_MINUTE", "2"),
    ])
    .await?;
    let email = email();
    api.user(&email, Role::Buyer).await?;
    let wrong = json!({"email": email, "password": "wrong password"});
    for _ in 0..3 {
        api.post("/api/auth/login", None, wrong.clone())
            .await?
            .expect(401, Some("invalid_credentials"));
    }
    // Per address: the fourth try is refused, even with the right password.
    let limited = api
        .post(
            "/api/auth/login",
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await?;
    limited.expect(429, Some("rate_limited"));
    assert!(limited.headers.contains_key("retry-after"));
    // Per IP: other addresses go through until the IP's budget (6, 4 spent) runs out.
    for i in 0..2 {
        api.post(
            "/api/auth/login",
            None,
            json!({"email": format!("other{i}@example.com"), "password": "x"}),
        )
        .await?
        .expect(401, Some("invalid_credentials"));
    }
    api.post(
        "/api/auth/login",
        None,
        json!({"email": "other9@example.com", "password": "x"}),
    )
    .await?
    .expect(429, Some("rate_limited"));

    for i in 0..2 {
        sign_up(&api, &format!("new{i}-{email}")).await.ok();
    }
    api.post(
        "/api/users",
        None,
        json!({"email": format!("third-{email}"), "password": PASSWORD, "name": "Park"}),
    )
    .await?
    .expect(429, Some("rate_limited"));
    api.stop().await
}

#[tokio::test]
async fn sign_up_with_the_broker_down_writes_nothing() -> anyhow::Result<()> {
    // The broker goes through a proxy the test can cut.
    let base = dropline_testkit::TestEnv::new()?;
    let target = dropline_testkit::url_target(&base.config.amqp.url)?;
    let proxy = dropline_testkit::FaultProxy::start(target).await?;
    let amqp = dropline_testkit::url_via(&base.config.amqp.url, proxy.addr())?;
    let api = TestApi::start(&[("AMQP__URL", amqp.as_str())]).await?;
    proxy.cut().await;
    let email = email();
    let reply = api
        .post(
            "/api/users",
            None,
            json!({"email": email, "password": PASSWORD, "name": "Choi"}),
        )
        .await?;
    reply.expect(503, Some("unavailable"));
    assert!(reply.headers.contains_key("retry-after"));
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(api.mysql())
        .await?;
    assert_eq!(users, 0, "a half-written sign-up was left behind");
    proxy.restore();
    // Once the broker is back the same sign-up succeeds.
    let ok = dropline_testkit::eventually(Duration::from_secs(20), || async {
        api.post(
            "/api/users",
            None,
            json!({"email": email, "password": PASSWORD, "name": "Choi"}),
        )
        .await
        .is_ok_and(|r| r.status.as_u16() == 201)
    })
    .await;
    assert!(ok, "sign-up did not recover after the broker came back");
    api.stop().await?;
    base.cleanup().await
}
