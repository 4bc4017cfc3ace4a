//! The Stripe objects Dropline reads (design/openapi.md): any bytes as a webhook event
//! (`dropline_api::webhooks::read_event`, run after the signature check) and as a
//! PaymentIntent with its refunds (the reconciliation's `Charge::from_stripe` and
//! `judge_orphan`). Never a panic; what is taken out of an event is what the event says and
//! only well-formed ids; an orphan is judged by its status alone.
#![no_main]

use dropline_audit::payments::{BreakKind, Charge, judge_orphan};
use dropline_core::ids::SaleId;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn stripe_id(id: &str) -> bool {
    (1..=255).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fuzz_target!(|data: &[u8]| {
    let parsed: Option<Value> = serde_json::from_slice(data).ok();
    match dropline_api::webhooks::read_event(data) {
        Ok(event) => {
            let value = parsed.as_ref().expect("an event read from bytes that are not JSON");
            assert_eq!(value["id"].as_str(), Some(event.id.as_str()));
            assert_eq!(value["type"].as_str(), Some(event.kind.as_str()));
            assert!(stripe_id(&event.id));
            if let Some(payment) = event.payment {
                let object = &value["data"]["object"];
                assert!(event.kind.starts_with("payment_intent."));
                assert_eq!(object["id"].as_str(), Some(payment.intent_id.as_str()));
                assert!(payment.intent_id.starts_with("pi_") && stripe_id(&payment.intent_id));
                let order = object["metadata"]["dropline_order_id"].as_str().unwrap_or_default();
                assert_eq!(
                    dropline_core::ids::OrderId::parse_str(order).ok(),
                    Some(payment.order_id)
                );
            }
        }
        Err(reason) => assert!(!reason.is_empty()),
    }

    // The same value as an intent, and its `refunds` member (if any) as its refunds.
    let Some(intent) = parsed else { return };
    let refunds: Vec<Value> = intent["refunds"].as_array().cloned().unwrap_or_default();
    let charge = Charge::from_stripe(Some(&intent), &refunds);
    let status = intent["status"].as_str();
    assert_eq!(charge.status.as_deref(), status);
    let sale = SaleId::from(uuid::Uuid::from_u128(1));
    match judge_orphan(sale, &intent, &refunds).map(|b| b.kind) {
        Some(BreakKind::UnbookedCharge) => {
            assert_eq!(status, Some("succeeded"));
            assert_eq!(charge.refunded, 0);
        }
        Some(BreakKind::DanglingIntent) => {
            let s = status.unwrap_or_default();
            assert!(s.starts_with("requires_") || s == "processing", "{s}");
        }
        Some(other) => panic!("an orphan judged {other:?}"),
        None => {}
    }
});
