//! The Stripe provider (design/payments.md): PaymentIntents through Stripe's REST API.
//!
//! A double charge is made impossible by the **claim row** (`payment_intents`, one per order)
//! rather than by Stripe's `Idempotency-Key` alone (sent too, `dropline:<order>:<step>`, but
//! forgotten after 24 h and not kept by every test double):
//!
//! 1. `INSERT IGNORE` the claim (`creating`, the first card token); `voided` → declined.
//! 2. Without a recorded `intent_id`: create the PaymentIntent with exactly `amount`,
//!    `currency`, `payment_method`, `payment_method_types[0]=card`,
//!    `capture_method=automatic` and our metadata, then record its id `WHERE state =
//!    'creating'`. When another worker recorded one first, this one's intent is an orphan:
//!    it is cancelled and the recorded one followed; when the sweeper voided the claim, the
//!    orphan is cancelled and the payment declined. Only a recorded intent is ever confirmed.
//! 3. `GET` the intent; `requires_confirmation` → `POST …/confirm`; after a 4xx, `GET` again.
//!    `succeeded` → approved (reference = the intent id); `requires_payment_method` → cancel,
//!    declined with `last_payment_error.code`; `requires_action`/`processing` → pending (the
//!    buyer's next action stored in the claim); `canceled` → declined. Anything else is an
//!    error and the message is retried.
//!
//! Amounts go as minor units, unchanged, in lower-case currency: only currencies whose Stripe
//! exponent is ISO 4217's are charged ([`STRIPE_CURRENCIES`]). An amount of 0 is approved
//! (`free`) without an intent.
//!
//! Transport failures, 5xx, 429, 401 and 403 are retried here with backoff (a few times), then
//! returned as errors, so the delivery is retried: a bad key or an outage never declines a
//! buyer's payment.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use dropline_audit::payments::IntentSource;
use dropline_core::config::{STRIPE_CURRENCIES, StripeConfig};
use dropline_core::ids::{OrderId, SaleId};
use futures_util::future::BoxFuture;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::MySqlPool;

use crate::provider::{ChargeRequest, Decision, PaymentProvider, Settlement};

/// Tries of one request before its failure is returned (transient failures only).
const ATTEMPTS: u32 = 3;
/// The first wait between tries; doubled each time.
const BACKOFF: Duration = Duration::from_millis(200);
/// `payment_intents.reason` is VARCHAR(128).
const MAX_REASON: usize = 128;

/// The reason of a payment the sweeper voided before it was charged.
pub const VOIDED: &str = "voided: no outcome within the payment timeout";

/// The Stripe provider. Cheap to clone.
#[derive(Clone)]
pub struct Stripe {
    http: reqwest::Client,
    base: String,
    key: Arc<str>,
    version: String,
    return_url: Option<String>,
    mysql: MySqlPool,
}

impl fmt::Debug for Stripe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stripe")
            .field("base", &self.base)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// A Stripe answer that is not a transient failure.
#[derive(Debug)]
enum Reply {
    /// 2xx with its JSON body.
    Ok(Value),
    /// A 4xx Stripe gave a reason for (not 401, 403 or 429, which are retried).
    Refused { status: StatusCode, body: Value },
}

/// The claim row of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub state: String,
    pub payment_method: Option<String>,
    pub intent_id: Option<String>,
    pub reason: Option<String>,
    pub refund_id: Option<String>,
}

/// One of Stripe's idempotency keys: `dropline:<order>:<step>`.
fn idempotency_key(order: OrderId, step: &str) -> String {
    format!("dropline:{}:{step}", order)
}

/// The `error.code` of a Stripe error body (or its `type`).
fn error_code(body: &Value) -> String {
    let error = &body["error"];
    error["code"]
        .as_str()
        .or_else(|| error["type"].as_str())
        .unwrap_or("invalid_request")
        .to_owned()
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The buyer's next step of an intent in `requires_action`, as GET /api/orders/{id} shows it:
/// `{"type":"redirect","url"}` for a redirect, else `{"type":"stripe_js","client_secret"}`
/// (the page hands the secret to Stripe.js).
pub fn buyer_next_action(intent: &Value) -> Option<Value> {
    let action = intent.get("next_action").filter(|a| !a.is_null())?;
    if let Some(url) = action["redirect_to_url"]["url"].as_str() {
        return Some(serde_json::json!({ "type": "redirect", "url": url }));
    }
    let secret = intent["client_secret"].as_str()?;
    Some(serde_json::json!({ "type": "stripe_js", "client_secret": secret }))
}

impl Stripe {
    /// The provider for `config`; reads the secret key (an error naming the key when unset).
    pub fn new(config: &StripeConfig, mysql: &MySqlPool) -> anyhow::Result<Arc<Self>> {
        let key = config.secret_key()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .connect_timeout(Duration::from_millis(config.timeout_ms.min(5_000)))
            .build()
            .context("building the Stripe HTTP client")?;
        Ok(Arc::new(Self {
            http,
            base: config.api_base.trim_end_matches('/').to_owned(),
            key: Arc::from(key),
            version: config.api_version.clone(),
            return_url: config.return_url.clone().filter(|u| !u.is_empty()),
            mysql: mysql.clone(),
        }))
    }

    /// One request, with the transient failures retried (see the module docs).
    async fn send(
        &self,
        method: Method,
        path: &str,
        form: &[(&str, String)],
        idempotency: Option<String>,
    ) -> anyhow::Result<Reply> {
        let url = format!("{}{path}", self.base);
        let mut wait = BACKOFF;
        let mut attempt = 1;
        loop {
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&*self.key)
                .header("Stripe-Version", &self.version);
            if let Some(key) = &idempotency {
                request = request.header("Idempotency-Key", key);
            }
            if method == Method::POST {
                request = request.form(form);
            } else if !form.is_empty() {
                request = request.query(form);
            }
            let failure = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await;
                    match text {
                        Ok(text) if status.is_success() => {
                            return serde_json::from_str(&text).map(Reply::Ok).with_context(|| {
                                format!("Stripe {method} {path}: unreadable answer")
                            });
                        }
                        Ok(text)
                            if status.is_client_error()
                                && !matches!(
                                    status,
                                    StatusCode::UNAUTHORIZED
                                        | StatusCode::FORBIDDEN
                                        | StatusCode::TOO_MANY_REQUESTS
                                ) =>
                        {
                            let body = serde_json::from_str(&text).unwrap_or(Value::Null);
                            tracing::info!(%method, path, %status, code = error_code(&body), "Stripe refused");
                            return Ok(Reply::Refused { status, body });
                        }
                        Ok(text) => format!("{status}: {}", truncate(&text, 300)),
                        Err(e) => format!("{status}, body unread: {e}"),
                    }
                }
                Err(e) => format!("{e}"),
            };
            if attempt >= ATTEMPTS {
                anyhow::bail!("Stripe {method} {path}: {failure} (after {attempt} tries)");
            }
            tracing::warn!(%method, path, attempt, failure, "Stripe request failed; retrying");
            tokio::time::sleep(wait).await;
            wait *= 2;
            attempt += 1;
        }
    }

    /// `GET /v1/payment_intents/{id}`.
    pub async fn get_intent(&self, id: &str) -> anyhow::Result<Value> {
        self.find_intent(id)
            .await?
            .with_context(|| format!("Stripe: reading intent {id}: 404, no such intent"))
    }

    /// `GET /v1/payment_intents/{id}`; `None` when Stripe does not know it (404).
    pub async fn find_intent(&self, id: &str) -> anyhow::Result<Option<Value>> {
        match self
            .send(Method::GET, &format!("/v1/payment_intents/{id}"), &[], None)
            .await?
        {
            Reply::Ok(intent) => Ok(Some(intent)),
            Reply::Refused { status, .. } if status == StatusCode::NOT_FOUND => Ok(None),
            Reply::Refused { status, body } => {
                anyhow::bail!(
                    "Stripe: reading intent {id}: {status} {}",
                    error_code(&body)
                )
            }
        }
    }

    /// One page of `GET /v1/payment_intents?limit=100` (newest first at Stripe) after
    /// `starting_after`: the intents and `has_more`.
    pub async fn list_intents(
        &self,
        starting_after: Option<&str>,
    ) -> anyhow::Result<(Vec<Value>, bool)> {
        let mut query = vec![("limit", "100".to_owned())];
        if let Some(after) = starting_after {
            query.push(("starting_after", after.to_owned()));
        }
        match self
            .send(Method::GET, "/v1/payment_intents", &query, None)
            .await?
        {
            Reply::Ok(list) => Ok((
                list["data"].as_array().cloned().unwrap_or_default(),
                list["has_more"].as_bool().unwrap_or(false),
            )),
            Reply::Refused { status, body } => {
                anyhow::bail!("Stripe: listing intents: {status} {}", error_code(&body))
            }
        }
    }

    /// `POST /v1/payment_intents/{id}/cancel` (no fields); `None` when Stripe refused.
    async fn cancel_intent(&self, order: OrderId, id: &str) -> anyhow::Result<Option<Value>> {
        let reply = self
            .send(
                Method::POST,
                &format!("/v1/payment_intents/{id}/cancel"),
                &[],
                Some(idempotency_key(order, "cancel")),
            )
            .await?;
        Ok(match reply {
            Reply::Ok(intent) => Some(intent),
            Reply::Refused { .. } => None,
        })
    }

    /// The refunds of an intent (`GET /v1/refunds?payment_intent=`), their ids.
    pub async fn refunds_of(&self, intent: &str) -> anyhow::Result<Vec<Value>> {
        match self
            .send(
                Method::GET,
                "/v1/refunds",
                &[("payment_intent", intent.to_owned())],
                None,
            )
            .await?
        {
            Reply::Ok(list) => Ok(list["data"].as_array().cloned().unwrap_or_default()),
            Reply::Refused { status, body } => anyhow::bail!(
                "Stripe: listing the refunds of {intent}: {status} {}",
                error_code(&body)
            ),
        }
    }

    pub async fn claim(&self, order: OrderId) -> anyhow::Result<Option<Claim>> {
        type Row = (
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let row: Option<Row> = sqlx::query_as(
            "SELECT state, payment_method, intent_id, reason, refund_id \
             FROM payment_intents WHERE order_id = ?",
        )
        .bind(order)
        .fetch_optional(&self.mysql)
        .await
        .with_context(|| format!("reading the payment claim of order {order}"))?;
        Ok(row.map(
            |(state, payment_method, intent_id, reason, refund_id)| Claim {
                state,
                payment_method,
                intent_id,
                reason,
                refund_id,
            },
        ))
    }

    async fn insert_claim(
        &self,
        order: OrderId,
        sale: Option<SaleId>,
        state: &str,
        payment_method: Option<&str>,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT IGNORE INTO payment_intents \
             (order_id, sale_id, state, payment_method, created_at, updated_at) \
             VALUES (?, ?, ?, ?, UTC_TIMESTAMP(3), UTC_TIMESTAMP(3))",
        )
        .bind(order)
        .bind(sale)
        .bind(state)
        .bind(payment_method)
        .execute(&self.mysql)
        .await
        .with_context(|| format!("claiming the payment of order {order}"))?;
        Ok(())
    }

    /// Notes what the last look at the intent found (status, reason, the buyer's next step).
    async fn note(
        &self,
        order: OrderId,
        status: &str,
        reason: Option<&str>,
        next_action: Option<&Value>,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE payment_intents SET intent_status = ?, reason = COALESCE(?, reason), \
             next_action = ?, updated_at = UTC_TIMESTAMP(3) WHERE order_id = ?",
        )
        .bind(status)
        .bind(reason.map(|r| truncate(r, MAX_REASON)))
        .bind(next_action.map(Value::to_string))
        .bind(order)
        .execute(&self.mysql)
        .await
        .with_context(|| format!("noting the intent of order {order}"))?;
        Ok(())
    }

    /// Voids a claim not yet holding an intent (or makes a voided one); `true` when the
    /// claim is voided now, `false` when it holds an intent.
    async fn void_claim(&self, order: OrderId) -> anyhow::Result<bool> {
        self.insert_claim(order, None, "voided", None).await?;
        sqlx::query(
            "UPDATE payment_intents SET state = 'voided', reason = COALESCE(reason, ?), \
             updated_at = UTC_TIMESTAMP(3) WHERE order_id = ? AND state = 'creating'",
        )
        .bind(VOIDED)
        .bind(order)
        .execute(&self.mysql)
        .await
        .with_context(|| format!("voiding the payment claim of order {order}"))?;
        let claim = self
            .claim(order)
            .await?
            .with_context(|| format!("the payment claim of order {order} vanished"))?;
        Ok(claim.state == "voided")
    }

    /// Creates the order's intent (step 2); `Err(reason)` inside when Stripe refused it.
    async fn create_intent(
        &self,
        request: &ChargeRequest,
        payment_method: &str,
    ) -> anyhow::Result<Result<String, String>> {
        let form = [
            ("amount", request.amount.to_string()),
            ("currency", request.currency.to_ascii_lowercase()),
            ("payment_method", payment_method.to_owned()),
            ("payment_method_types[0]", "card".to_owned()),
            ("capture_method", "automatic".to_owned()),
            ("metadata[dropline_order_id]", request.order.to_string()),
            ("metadata[dropline_sale_id]", request.sale.to_string()),
        ];
        let reply = self
            .send(
                Method::POST,
                "/v1/payment_intents",
                &form,
                Some(idempotency_key(request.order, "create")),
            )
            .await?;
        match reply {
            Reply::Ok(intent) => intent["id"]
                .as_str()
                .map(|id| Ok(id.to_owned()))
                .context("Stripe created an intent without an id"),
            Reply::Refused { body, .. } => Ok(Err(error_code(&body))),
        }
    }

    /// Records `intent` as the order's (step 2): the intent to follow, or `None` when the
    /// claim was voided meanwhile (then `intent` was cancelled).
    async fn record_intent(&self, order: OrderId, intent: &str) -> anyhow::Result<Option<String>> {
        let done = sqlx::query(
            "UPDATE payment_intents SET intent_id = ?, state = 'created', \
             updated_at = UTC_TIMESTAMP(3) WHERE order_id = ? AND state = 'creating'",
        )
        .bind(intent)
        .bind(order)
        .execute(&self.mysql)
        .await
        .with_context(|| format!("recording the intent of order {order}"))?;
        if done.rows_affected() == 1 {
            return Ok(Some(intent.to_owned()));
        }
        let claim = self
            .claim(order)
            .await?
            .with_context(|| format!("the payment claim of order {order} vanished"))?;
        match claim.intent_id {
            Some(recorded) if recorded == intent => Ok(Some(recorded)),
            recorded => {
                // An orphan: never confirmed; cancelled so that it cannot be by mistake.
                metrics::counter!("dropline_stripe_orphans_cancelled_total").increment(1);
                tracing::warn!(%order, orphan = intent, recorded = ?recorded, "another intent was recorded first (or the claim voided): cancelling this one");
                if self.cancel_intent(order, intent).await?.is_none() {
                    tracing::warn!(%order, orphan = intent, "Stripe refused to cancel the orphan intent; it was never confirmed");
                }
                Ok(recorded)
            }
        }
    }

    /// Step 3 for the recorded `intent`: confirm when it waits for it, then decide.
    async fn drive(&self, order: OrderId, intent: &str) -> anyhow::Result<Decision> {
        let mut current = self.get_intent(intent).await?;
        check_metadata(order, &current)?;
        if current["status"].as_str() == Some("requires_confirmation") {
            let mut form = Vec::new();
            if let Some(url) = &self.return_url {
                form.push(("return_url", url.clone()));
            }
            let reply = self
                .send(
                    Method::POST,
                    &format!("/v1/payment_intents/{intent}/confirm"),
                    &form,
                    Some(idempotency_key(order, "confirm")),
                )
                .await?;
            current = match reply {
                Reply::Ok(confirmed) => confirmed,
                Reply::Refused { .. } => self.get_intent(intent).await?,
            };
        }
        self.decide(order, intent, &current).await
    }

    /// What the intent's status means for the order (step 3).
    async fn decide(
        &self,
        order: OrderId,
        intent: &str,
        current: &Value,
    ) -> anyhow::Result<Decision> {
        let status = current["status"].as_str().unwrap_or_default();
        match status {
            "succeeded" => {
                self.note(order, status, None, None).await?;
                Ok(Decision::Approved {
                    reference: intent.to_owned(),
                })
            }
            "requires_payment_method" => {
                let reason = current["last_payment_error"]["code"]
                    .as_str()
                    .unwrap_or("payment_failed")
                    .to_owned();
                let canceled = self.cancel_intent(order, intent).await?;
                let status = canceled
                    .as_ref()
                    .and_then(|c| c["status"].as_str())
                    .unwrap_or(status);
                self.note(order, status, Some(&reason), None).await?;
                Ok(Decision::Declined { reason })
            }
            "requires_action" | "processing" => {
                let next = buyer_next_action(current);
                self.note(order, status, None, next.as_ref()).await?;
                Ok(Decision::Pending {
                    status: status.to_owned(),
                })
            }
            "canceled" => {
                let reason = self
                    .claim(order)
                    .await?
                    .and_then(|c| c.reason)
                    .unwrap_or_else(|| "canceled".to_owned());
                self.note(order, status, Some(&reason), None).await?;
                Ok(Decision::Declined { reason })
            }
            other => anyhow::bail!("intent {intent} of order {order} is `{other}`: not decided"),
        }
    }

    async fn charge_inner(&self, request: &ChargeRequest) -> anyhow::Result<Decision> {
        let order = request.order;
        if request.amount == 0 {
            return Ok(Decision::Approved {
                reference: "free".to_owned(),
            });
        }
        if !STRIPE_CURRENCIES.contains(&request.currency.as_str()) {
            return Ok(Decision::Declined {
                reason: "unsupported_currency".to_owned(),
            });
        }
        self.insert_claim(
            order,
            Some(request.sale),
            "creating",
            Some(&request.card_token),
        )
        .await?;
        let claim = self
            .claim(order)
            .await?
            .with_context(|| format!("the payment claim of order {order} vanished"))?;
        if claim.state == "voided" {
            return Ok(Decision::Declined {
                reason: claim.reason.unwrap_or_else(|| VOIDED.to_owned()),
            });
        }
        let intent = match claim.intent_id {
            Some(intent) => intent,
            None => {
                // The first token stands: a second pay with another card follows the first.
                let method = claim
                    .payment_method
                    .unwrap_or_else(|| request.card_token.clone());
                let created = match self.create_intent(request, &method).await? {
                    Ok(created) => created,
                    Err(reason) => {
                        self.note(order, "refused", Some(&reason), None).await?;
                        return Ok(Decision::Declined { reason });
                    }
                };
                match self.record_intent(order, &created).await? {
                    Some(intent) => intent,
                    None => {
                        return Ok(Decision::Declined {
                            reason: VOIDED.to_owned(),
                        });
                    }
                }
            }
        };
        self.drive(order, &intent).await
    }

    async fn settle_inner(&self, order: OrderId) -> anyhow::Result<Settlement> {
        let claim = match self.claim(order).await? {
            Some(claim) if claim.state == "created" => claim,
            _ => {
                if self.void_claim(order).await? {
                    return Ok(Settlement::Voided);
                }
                self.claim(order)
                    .await?
                    .with_context(|| format!("the payment claim of order {order} vanished"))?
            }
        };
        let Some(intent) = claim.intent_id else {
            anyhow::bail!("the claim of order {order} is created without an intent");
        };
        let mut current = self.get_intent(&intent).await?;
        for _ in 0..2 {
            match current["status"].as_str().unwrap_or_default() {
                "succeeded" => {
                    return Ok(Settlement::Decided(
                        self.decide(order, &intent, &current).await?,
                    ));
                }
                "processing" => {
                    self.note(order, "processing", None, None).await?;
                    return Ok(Settlement::Pending);
                }
                "canceled" => {
                    let reason = claim.reason.clone().unwrap_or_else(|| VOIDED.to_owned());
                    self.note(order, "canceled", Some(&reason), None).await?;
                    return Ok(Settlement::Voided);
                }
                status if status.starts_with("requires_") => {
                    match self.cancel_intent(order, &intent).await? {
                        Some(canceled) => current = canceled,
                        None => current = self.get_intent(&intent).await?,
                    }
                }
                other => anyhow::bail!("intent {intent} of order {order} is `{other}`"),
            }
        }
        anyhow::bail!("intent {intent} of order {order} could not be settled; next sweep")
    }

    async fn refund_inner(&self, order: OrderId) -> anyhow::Result<Decision> {
        let claim = match self.claim(order).await? {
            Some(claim) if claim.state == "created" => claim,
            _ if self.void_claim(order).await? => {
                return Ok(Decision::Declined {
                    reason: VOIDED.to_owned(),
                });
            }
            _ => self
                .claim(order)
                .await?
                .with_context(|| format!("the payment claim of order {order} vanished"))?,
        };
        let Some(intent) = claim.intent_id else {
            anyhow::bail!("the claim of order {order} is created without an intent");
        };
        let current = self.get_intent(&intent).await?;
        match current["status"].as_str().unwrap_or_default() {
            "succeeded" => {}
            "processing" => anyhow::bail!("intent {intent} is processing: refund it later"),
            "canceled" => {
                return Ok(Decision::Declined {
                    reason: "canceled".to_owned(),
                });
            }
            _ => {
                // Not charged: cancel so that it never is.
                if self.cancel_intent(order, &intent).await?.is_none() {
                    anyhow::bail!("Stripe refused to cancel intent {intent} of order {order}");
                }
                self.note(order, "canceled", Some("canceled"), None).await?;
                return Ok(Decision::Declined {
                    reason: "canceled".to_owned(),
                });
            }
        }
        let refund = match self.refunds_of(&intent).await?.first() {
            Some(refund) => refund["id"].as_str().map(str::to_owned),
            None => None,
        };
        let refund = match refund {
            Some(id) => id,
            None => match self
                .send(
                    Method::POST,
                    "/v1/refunds",
                    &[("payment_intent", intent.clone())],
                    Some(idempotency_key(order, "refund")),
                )
                .await?
            {
                Reply::Ok(refund) => refund["id"]
                    .as_str()
                    .map(str::to_owned)
                    .context("Stripe made a refund without an id")?,
                Reply::Refused { status, body } => anyhow::bail!(
                    "Stripe refused to refund intent {intent}: {status} {}",
                    error_code(&body)
                ),
            },
        };
        sqlx::query(
            "UPDATE payment_intents SET refund_id = ?, updated_at = UTC_TIMESTAMP(3) \
             WHERE order_id = ?",
        )
        .bind(&refund)
        .bind(order)
        .execute(&self.mysql)
        .await
        .with_context(|| format!("recording refund {refund} of order {order}"))?;
        tracing::info!(%order, intent, refund, "charge refunded at Stripe");
        Ok(Decision::Refunded { reference: intent })
    }
}

/// An intent whose metadata names another order is not ours to follow.
fn check_metadata(order: OrderId, intent: &Value) -> anyhow::Result<()> {
    let named = intent["metadata"]["dropline_order_id"].as_str();
    anyhow::ensure!(
        named == Some(order.to_string().as_str()),
        "intent {} names order {named:?}, not {order}",
        intent["id"]
    );
    Ok(())
}

/// `dropline payments reconcile` reads Stripe through the provider's client.
impl IntentSource for Stripe {
    fn intent<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<Option<Value>>> {
        Box::pin(self.find_intent(id))
    }

    fn refunds<'a>(&'a self, intent: &'a str) -> BoxFuture<'a, anyhow::Result<Vec<Value>>> {
        Box::pin(self.refunds_of(intent))
    }

    fn page<'a>(
        &'a self,
        starting_after: Option<&'a str>,
    ) -> BoxFuture<'a, anyhow::Result<(Vec<Value>, bool)>> {
        Box::pin(self.list_intents(starting_after))
    }
}

impl PaymentProvider for Stripe {
    fn charge(&self, request: ChargeRequest) -> BoxFuture<'_, anyhow::Result<Decision>> {
        Box::pin(async move {
            self.charge_inner(&request)
                .await
                .with_context(|| format!("Stripe: charging order {}", request.order))
        })
    }

    fn settle(&self, order: OrderId) -> BoxFuture<'_, anyhow::Result<Settlement>> {
        Box::pin(async move {
            self.settle_inner(order)
                .await
                .with_context(|| format!("Stripe: settling order {order}"))
        })
    }

    fn refund(&self, order: OrderId) -> BoxFuture<'_, anyhow::Result<Decision>> {
        Box::pin(async move {
            self.refund_inner(order)
                .await
                .with_context(|| format!("Stripe: refunding order {order}"))
        })
    }

    fn follow(
        &self,
        order: OrderId,
        intent: String,
    ) -> BoxFuture<'_, anyhow::Result<Option<Decision>>> {
        Box::pin(async move {
            let claim = self.claim(order).await?;
            match claim {
                Some(claim)
                    if claim.state == "created" && claim.intent_id.as_deref() == Some(&intent) =>
                {
                    self.drive(order, &intent)
                        .await
                        .map(Some)
                        .with_context(|| format!("Stripe: following order {order}"))
                }
                other => {
                    tracing::info!(%order, intent, claim = ?other, "an event for an intent that is not the order's recorded one: ignored");
                    Ok(None)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_action_for_the_buyer() {
        let sdk = serde_json::json!({
            "client_secret": "pi_1_secret_2",
            "next_action": {"type": "use_stripe_sdk", "use_stripe_sdk": {"type": "three_d_secure_redirect"}}
        });
        assert_eq!(
            buyer_next_action(&sdk),
            Some(serde_json::json!({"type": "stripe_js", "client_secret": "pi_1_secret_2"}))
        );
        // Recorded from Stripe's documentation of a redirect (localstripe has none).
        let redirect = serde_json::json!({
            "client_secret": "pi_1_secret_2",
            "next_action": {"type": "redirect_to_url", "redirect_to_url": {
                "return_url": "https://shop.example/orders",
                "url": "https://hooks.stripe.com/redirect/authenticate/src_1?client_secret=src_client_secret_1"
            }}
        });
        assert_eq!(
            buyer_next_action(&redirect),
            Some(
                serde_json::json!({"type": "redirect", "url": "https://hooks.stripe.com/redirect/authenticate/src_1?client_secret=src_client_secret_1"})
            )
        );
        assert_eq!(
            buyer_next_action(&serde_json::json!({"next_action": null})),
            None
        );
    }

    #[test]
    fn error_codes() {
        let declined =
            serde_json::json!({"error": {"code": "card_declined", "type": "card_error"}});
        assert_eq!(error_code(&declined), "card_declined");
        assert_eq!(
            error_code(&serde_json::json!({"error": {"type": "invalid_request_error"}})),
            "invalid_request_error"
        );
        assert_eq!(error_code(&Value::Null), "invalid_request");
    }

    #[test]
    fn idempotency_keys_name_the_order_and_step() {
        let order = OrderId::new_v7();
        assert_eq!(
            idempotency_key(order, "create"),
            format!("dropline:{}:create", order)
        );
    }
}
