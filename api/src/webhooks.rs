//! `POST /api/webhooks/stripe` (design/payments.md "Webhook"): Stripe tells the shop that a
//! PaymentIntent succeeded or failed (after 3-D Secure, or a payment that was processing).
//!
//! The signature (`Stripe-Signature`) is checked over the raw body before anything is parsed
//! ([`dropline_core::stripe::verify`]); then a `payment_intent.succeeded` or
//! `payment_intent.payment_failed` event carrying our metadata becomes a `payment.event`
//! message for the payment worker, which reads the intent back from Stripe itself: the api
//! holds no secret key and trusts nothing in the body but the ids. An event seen before
//! (`<prefix>:whk:<event id>`, kept 7 days) and any other event are answered 200 and dropped.
//! No provider but Stripe: 404.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use dropline_core::http::Json;
use dropline_core::http::error::{ApiError, ErrorCode};
use dropline_core::ids::{OrderId, SaleId};
use dropline_core::messages::{Envelope, PaymentEvent, kinds};
use fred::interfaces::KeysInterface;
use fred::types::{Expiration, SetOptions};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::docs::Error;
use crate::fail;
use crate::state::AppState;

/// The largest event body taken.
pub const MAX_BODY: usize = 256 * 1024;
/// How long an event id is remembered (Stripe retries for 3 days).
const SEEN_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stripe))
}

/// The answer to Stripe.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Received {
    /// Always true.
    pub received: bool,
}

/// Stripe's webhook.
///
/// Only when `payment.provider = stripe`. Signed by Stripe with the endpoint's secret
/// (`payment.stripe.webhook_secret`); no access token.
#[utoipa::path(post, path = "/api/webhooks/stripe", tag = "webhooks",
    params(("Stripe-Signature" = String, Header, description = "Stripe's signature: `t=<unix seconds>,v1=<hex HMAC-SHA-256>`; checked over the raw body (±300 s)")),
    request_body(content = serde_json::Value, content_type = "application/json", description = "A Stripe event, at most 256 KiB"),
    responses(
        (status = 200, description = "`{\"received\": true}`: taken, or not one Dropline acts on, or a repeat", body = Received),
        (status = 400, description = "`bad_request`: the body is not a Stripe event (JSON with `id` and `type`)", body = Error),
        (status = 401, description = "`unauthorized`: the signature is missing, wrong or older than 300 s", body = Error),
        (status = 404, description = "`not_found`: the payment provider is not Stripe", body = Error),
        (status = 413, description = "`payload_too_large`: more than 256 KiB", body = Error),
        (status = 503, description = "`unavailable`: the event could not be queued; Stripe sends it again", body = Error),
    ))]
#[tracing::instrument(skip_all, fields(event = tracing::field::Empty, kind = tracing::field::Empty))]
async fn stripe(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Received>, ApiError> {
    let Some(secret) = state.stripe_webhook.as_deref() else {
        return Err(ApiError::not_found());
    };
    if body.len() > MAX_BODY {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            "a Stripe event is at most 256 KiB",
        ));
    }
    let signature = headers
        .get("stripe-signature")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let now = chrono::Utc::now().timestamp();
    if let Err(error) = dropline_core::stripe::verify(signature, &body, secret, now) {
        metrics::counter!("dropline_stripe_webhooks_total", "outcome" => "refused").increment(1);
        tracing::warn!(%error, "Stripe webhook refused");
        return Err(ApiError::new(ErrorCode::Unauthorized, error.to_string()));
    }
    let event = read_event(&body).map_err(ApiError::bad_request)?;
    let span = tracing::Span::current();
    span.record("event", event.id.as_str());
    span.record("kind", event.kind.as_str());
    let received = Json(Received { received: true });
    let Some(ours) = event.payment else {
        if event.kind.starts_with("payment_intent.") {
            tracing::info!("a PaymentIntent event without Dropline's metadata: ignored");
        }
        metrics::counter!("dropline_stripe_webhooks_total", "outcome" => "ignored").increment(1);
        return Ok(received);
    };
    let (id, intent_id, order_id, sale_id) = (
        event.id.as_str(),
        ours.intent_id.as_str(),
        ours.order_id,
        ours.sale_id,
    );
    let seen_key = state.redis.key(&format!("whk:{id}"));
    let first: Option<String> = state
        .redis
        .pool()
        .set(
            &seen_key,
            "1",
            Some(Expiration::EX(SEEN_FOR.as_secs() as i64)),
            Some(SetOptions::NX),
            false,
        )
        .await
        .map_err(|e| fail::redis("remembering the Stripe event", e))?;
    if first.is_none() {
        metrics::counter!("dropline_stripe_webhooks_total", "outcome" => "repeat").increment(1);
        tracing::info!("a Stripe event seen before: nothing done");
        return Ok(received);
    }
    let message = Envelope::new(
        kinds::PAYMENT_EVENT,
        PaymentEvent {
            event_id: id.to_owned(),
            intent_id: intent_id.to_owned(),
            order_id,
            sale_id,
        },
    );
    let payload = message.to_json().map_err(ApiError::internal)?;
    if let Err(e) = state
        .broker
        .publish(kinds::PAYMENT_EVENT, &message.id.to_string(), &payload)
        .await
    {
        // Forget it, so Stripe's retry is taken.
        let _: Result<i64, _> = state.redis.pool().del(&seen_key).await;
        return Err(fail::broker("queueing the Stripe event", e));
    }
    metrics::counter!("dropline_stripe_webhooks_total", "outcome" => "queued").increment(1);
    tracing::info!(order = %order_id, intent = intent_id, "Stripe event queued for the payment worker");
    Ok(received)
}

/// A Stripe event as the webhook reads it (after its signature was checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeEvent {
    /// `evt_…`
    pub id: String,
    /// `payment_intent.succeeded`, …
    pub kind: String,
    /// What the payment worker is told, for a PaymentIntent success or failure carrying our
    /// metadata; `None` for any other event.
    pub payment: Option<IntentEvent>,
}

/// The ids of a PaymentIntent event for Dropline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentEvent {
    pub intent_id: String,
    pub order_id: OrderId,
    pub sale_id: SaleId,
}

/// Reads an event body: JSON with a string `id` and `type`, else the reason it is refused
/// (400). Only ids are taken from it; the intent itself is read back from Stripe. Pure (the
/// `stripe_objects` fuzz target runs it on any bytes).
pub fn read_event(body: &[u8]) -> Result<StripeEvent, String> {
    let event: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let (Some(id), Some(kind)) = (event["id"].as_str(), event["type"].as_str()) else {
        return Err("a Stripe event has a string `id` and `type`".to_owned());
    };
    if !is_stripe_id(id) {
        return Err("a Stripe event's `id` is 1 to 255 letters, digits and `_`".to_owned());
    }
    let ours = matches!(
        kind,
        "payment_intent.succeeded" | "payment_intent.payment_failed"
    );
    let intent = &event["data"]["object"];
    let metadata = &intent["metadata"];
    let payment = match (
        intent["id"].as_str(),
        metadata["dropline_order_id"]
            .as_str()
            .and_then(|o| OrderId::parse_str(o).ok()),
        metadata["dropline_sale_id"]
            .as_str()
            .and_then(|s| SaleId::parse_str(s).ok()),
    ) {
        (Some(intent_id), Some(order_id), Some(sale_id))
            if ours && intent_id.starts_with("pi_") && is_stripe_id(intent_id) =>
        {
            Some(IntentEvent {
                intent_id: intent_id.to_owned(),
                order_id,
                sale_id,
            })
        }
        _ => None,
    };
    Ok(StripeEvent {
        id: id.to_owned(),
        kind: kind.to_owned(),
        payment,
    })
}

/// Stripe's object ids (`evt_…`, `pi_…`): letters, digits and `_`, at most 255. The intent id
/// goes into a URL path of the worker's request to Stripe, the event id into a Redis key.
fn is_stripe_id(id: &str) -> bool {
    (1..=255).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(value: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&value).unwrap_or_default()
    }

    #[test]
    fn only_our_intent_events_carry_a_payment() {
        let (order, sale) = (OrderId::new_v7(), SaleId::new_v7());
        let event = |kind: &str, intent: &str| {
            body(
                json!({"id": "evt_1", "type": kind, "data": {"object": {"id": intent,
                "metadata": {"dropline_order_id": order.to_string(),
                             "dropline_sale_id": sale.to_string()}}}}),
            )
        };
        let read = read_event(&event("payment_intent.succeeded", "pi_1"));
        assert_eq!(
            read.map(|e| e.payment),
            Ok(Some(IntentEvent {
                intent_id: "pi_1".into(),
                order_id: order,
                sale_id: sale
            }))
        );
        for (kind, intent) in [
            ("charge.refunded", "pi_1"),
            ("payment_intent.succeeded", "ch_1"),
            ("payment_intent.succeeded", "pi_../../v1/refunds"),
        ] {
            let read = read_event(&event(kind, intent));
            assert_eq!(read.map(|e| e.payment), Ok(None), "{kind} {intent}");
        }
    }

    #[test]
    fn bodies_that_are_not_events_are_refused() {
        for bad in [
            b"[]".to_vec(),
            b"not json".to_vec(),
            body(json!({"id": 1, "type": "x"})),
            body(json!({"id": "evt 1", "type": "x"})),
            body(json!({"id": "e".repeat(256), "type": "x"})),
        ] {
            assert!(
                read_event(&bad).is_err(),
                "{}",
                String::from_utf8_lossy(&bad)
            );
        }
    }
}
