//! `POST /api/webhooks/stripe` (design/payments.md "Webhook", "Done when" 4) against a real api
//! server, Redis and RabbitMQ: bodies signed here as Stripe signs them (HMAC-SHA-256 over
//! `t.body` with the whole `whsec_` secret), then tampered, aged, unsigned or repeated.

mod common;

use std::time::Duration;

use common::TestApi;
use dropline_core::clients::amqp::PAYMENTS;
use dropline_core::ids::{OrderId, SaleId};
use dropline_core::stripe::sign;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SECRET: &str = "whsec_test_dropline";

async fn stripe_api() -> anyhow::Result<TestApi> {
    TestApi::start(&[
        ("PAYMENT__PROVIDER", "stripe"),
        ("PAYMENT__STRIPE__WEBHOOK_SECRET", SECRET),
    ])
    .await
}

fn event(id: &str, kind: &str, order: OrderId, sale: SaleId) -> Vec<u8> {
    // Pretty-printed with a trailing newline, as localstripe sends it: the signature is over
    // these exact bytes.
    let body = json!({
        "id": id,
        "object": "event",
        "type": kind,
        "data": {"object": {
            "id": "pi_test_1",
            "object": "payment_intent",
            "status": "succeeded",
            "metadata": {"dropline_order_id": order.to_string(), "dropline_sale_id": sale.to_string()}
        }}
    });
    let mut text = serde_json::to_string_pretty(&body).unwrap_or_default();
    text.push('\n');
    text.into_bytes()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn post(
    api: &TestApi,
    signature: Option<&str>,
    body: &[u8],
) -> anyhow::Result<(StatusCode, Value)> {
    let mut request = api
        .http
        .post(format!("{}/api/webhooks/stripe", api.base))
        .header("Content-Type", "application/json; charset=utf-8")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("Stripe-Signature", signature);
    }
    let response = request.send().await?;
    let status = response.status();
    let bytes = response.bytes().await?;
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

/// The `payment.event`s waiting in the payments queue (taken).
async fn events(api: &TestApi) -> anyhow::Result<Vec<Value>> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let broker = api.deps.broker()?;
    let queue = broker.names().queue(PAYMENTS);
    let channel = broker.channel().await?;
    let mut out = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.as_str().into(), BasicGetOptions::default())
        .await?
    {
        out.push(serde_json::from_slice(&message.delivery.data)?);
        message.delivery.ack(BasicAckOptions::default()).await?;
    }
    Ok(out)
}

#[tokio::test]
async fn a_signed_event_is_queued_once_and_everything_else_refused() -> anyhow::Result<()> {
    let api = stripe_api().await?;
    let (order, sale) = (OrderId::new_v7(), SaleId::new_v7());
    let body = event("evt_1", "payment_intent.succeeded", order, sale);
    let t = now();
    let good = sign(SECRET, &t.to_string(), &body);
    let header = format!("t={t},v1={good}");

    // Twice: 200 both times, one message.
    for _ in 0..2 {
        let (status, reply) = post(&api, Some(&header), &body).await?;
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert_eq!(reply, json!({"received": true}));
    }
    let queued = events(&api).await?;
    assert_eq!(queued.len(), 1, "{queued:#?}");
    assert_eq!(queued[0]["type"], "payment.event");
    assert_eq!(
        queued[0]["data"],
        json!({"event_id": "evt_1", "intent_id": "pi_test_1",
               "order_id": order.to_string(), "sale_id": sale.to_string()})
    );

    // Tampered (one byte), too old, no v1, no header, another secret: 401 before parsing.
    let mut tampered = body.clone();
    if let Some(last) = tampered.iter().rposition(|b| *b == b'1') {
        tampered[last] = b'2';
    }
    let old = t - 301;
    let old_header = format!("t={old},v1={}", sign(SECRET, &old.to_string(), &body));
    let wrong = format!("t={t},v1={}", sign("whsec_other", &t.to_string(), &body));
    for (signature, sent) in [
        (Some(header.as_str()), tampered.as_slice()),
        (Some(old_header.as_str()), body.as_slice()),
        (Some(&*format!("t={t}")), body.as_slice()),
        (None, body.as_slice()),
        (Some(wrong.as_str()), body.as_slice()),
    ] {
        let (status, reply) = post(&api, signature, sent).await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{signature:?}: {reply}");
        assert_eq!(reply["error"]["code"], "unauthorized");
    }
    // Two v1, one valid: taken.
    let second = event("evt_2", "payment_intent.payment_failed", order, sale);
    let two = format!(
        "t={t},v1={},v1={}",
        "0".repeat(64),
        sign(SECRET, &t.to_string(), &second)
    );
    let (status, _) = post(&api, Some(&two), &second).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(events(&api).await?.len(), 1);

    // Signed but not JSON: 400. Another event type, or no metadata: 200, nothing queued.
    let junk = b"not json";
    let junk_header = format!("t={t},v1={}", sign(SECRET, &t.to_string(), junk));
    let (status, reply) = post(&api, Some(&junk_header), junk).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert_eq!(reply["error"]["code"], "bad_request");
    let other = serde_json::to_vec(
        &json!({"id": "evt_3", "type": "charge.refunded", "data": {"object": {}}}),
    )?;
    let other_header = format!("t={t},v1={}", sign(SECRET, &t.to_string(), &other));
    assert_eq!(
        post(&api, Some(&other_header), &other).await?.0,
        StatusCode::OK
    );
    let foreign = serde_json::to_vec(&json!({"id": "evt_4", "type": "payment_intent.succeeded",
        "data": {"object": {"id": "pi_x", "metadata": {}}}}))?;
    let foreign_header = format!("t={t},v1={}", sign(SECRET, &t.to_string(), &foreign));
    assert_eq!(
        post(&api, Some(&foreign_header), &foreign).await?.0,
        StatusCode::OK
    );
    assert!(events(&api).await?.is_empty());

    // Over 256 KiB: 413.
    let big = vec![b' '; 256 * 1024 + 1];
    let big_header = format!("t={t},v1={}", sign(SECRET, &t.to_string(), &big));
    assert_eq!(
        post(&api, Some(&big_header), &big).await?.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // 100 KiB (past the usual 64 KiB body limit, within Stripe's 256 KiB): taken.
    let mut padded = event("evt_5", "payment_intent.succeeded", order, sale);
    padded.extend(vec![b' '; 100 * 1024]);
    let padded_header = format!("t={t},v1={}", sign(SECRET, &t.to_string(), &padded));
    assert_eq!(
        post(&api, Some(&padded_header), &padded).await?.0,
        StatusCode::OK
    );
    assert_eq!(events(&api).await?.len(), 1);
    api.stop().await
}

#[tokio::test]
async fn the_simulated_provider_has_no_webhook() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let body = b"{}";
    let t = now();
    let header = format!("t={t},v1={}", sign(SECRET, &t.to_string(), body));
    let (status, reply) = post(&api, Some(&header), body).await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{reply}");
    assert_eq!(reply["error"]["code"], "not_found");
    api.stop().await
}
