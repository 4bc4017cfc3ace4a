//! The buyer's view of an order's payment (design/payments.md "Buyer"): the `payment` of
//! `GET /api/orders/{id}`, read from the `payments` row (the recorded outcome) and the Stripe
//! claim row (`payment_intents`: the intent's last status and the buyer's next step).
//!
//! - no row, order held, expired or cancelled → `null`; paying → `processing`;
//! - the Stripe intent waits for the buyer → `requires_action` with `next_action`;
//! - a payments row → its status (`approved`, `declined` with the reason, `refunded`);
//! - failed without a payments row (no outcome by the deadline) → `declined`, `timeout`.

use dropline_core::config::ProviderKind;
use dropline_core::http::error::ApiError;
use dropline_core::ids::OrderId;
use dropline_core::orders::OrderState;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::fail;
use crate::orders::OrderView;
use crate::state::AppState;

/// An order with its payment, as `GET /api/orders/{id}` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct OrderDetail {
    #[serde(flatten)]
    pub order: OrderView,
    /// The payment; null before the buyer pays (and for an order that ended unpaid).
    pub payment: Option<PaymentView>,
}

/// What the buyer sees of a payment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct PaymentView {
    /// `simulated` or `stripe`.
    pub provider: String,
    #[schema(value_type = PaymentStatus)]
    pub status: String,
    /// Why it was declined (`card_declined`, `timeout`, …); null otherwise.
    pub reason: Option<String>,
    /// While `requires_action`: what the page does next (Stripe.js with the client secret,
    /// or a redirect to the bank's page); null otherwise.
    #[schema(value_type = Option<NextAction>)]
    pub next_action: Option<serde_json::Value>,
}

/// A payment's state for the buyer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum PaymentStatus {
    Processing,
    RequiresAction,
    Approved,
    Declined,
    Refunded,
}

/// The buyer's next step of a 3-D Secure payment.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(dead_code)]
enum NextAction {
    /// Hand `client_secret` to Stripe.js (`stripe.handleNextAction`).
    StripeJs { client_secret: String },
    /// Send the buyer to `url`.
    Redirect { url: String },
}

/// The `payment` of an order in `status`.
pub async fn payment_of(
    state: &AppState,
    order: OrderId,
    status: OrderState,
) -> Result<Option<PaymentView>, ApiError> {
    let payment: Option<(String, String)> =
        sqlx::query_as("SELECT status, provider_ref FROM payments WHERE order_id = ?")
            .bind(order)
            .fetch_optional(&state.mysql)
            .await
            .map_err(|e| fail::db("reading the payment", e))?;
    let claim: Option<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT intent_status, next_action FROM payment_intents WHERE order_id = ?")
            .bind(order)
            .fetch_optional(&state.mysql)
            .await
            .map_err(|e| fail::db("reading the payment claim", e))?;
    let provider = match (&claim, state.config.payment.provider) {
        (Some(_), _) | (None, ProviderKind::Stripe) => "stripe",
        (None, ProviderKind::Simulated) => "simulated",
    };
    let view = |status: &str, reason: Option<String>, next_action| PaymentView {
        provider: provider.to_owned(),
        status: status.to_owned(),
        reason,
        next_action,
    };
    Ok(Some(match (payment, status) {
        (Some((status, _)), _) if status == "approved" => view("approved", None, None),
        (Some((status, _)), _) if status == "refunded" => view("refunded", None, None),
        (Some((_, reason)), _) => view("declined", Some(reason), None),
        (None, OrderState::Paid) => view("approved", None, None),
        (None, OrderState::Failed) => view("declined", Some("timeout".to_owned()), None),
        (None, OrderState::Paying) => match claim {
            Some((Some(intent), next)) if intent == "requires_action" => {
                let next = next.and_then(|n| serde_json::from_str(&n).ok());
                view("requires_action", None, next)
            }
            _ => view("processing", None, None),
        },
        (None, _) => return Ok(None),
    }))
}
