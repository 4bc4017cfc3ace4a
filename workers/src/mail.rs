//! The mail worker: consumes `<prefix>.mail` and sends each `mail.send` over SMTP.
//!
//! - `mail.send` (an [`Envelope<MailSend>`]): the e-mail is built with lettre (`From` =
//!   `smtp.from`, `To`, `Subject`, a UTF-8 plain-text body, and `Message-ID:
//!   <envelope-id@from-domain>` so a duplicate is recognisable at the receiving end) and sent
//!   through one pooled SMTP transport per worker.
//! - `order.confirmed` (an [`Envelope<OrderConfirmed>`], from the confirm worker): a short
//!   plain-text confirmation to the buyer (order id, product, quantity, amount with its
//!   currency), rendered here ([`render_confirmation`]) and sent through the same path, once
//!   per **order** (see below) with `Message-ID: <confirmed-<order-id>@from-domain>`.
//! - `order.refunded` (an [`Envelope<OrderRefunded>`], from the confirm worker): the buyer is
//!   told that the payment was given back in full and why ([`render_refund`]), once per order,
//!   `Message-ID: <refunded-<order-id>@from-domain>`.
//!
//! Deliveries are routed by the envelope's `type` (= its routing key, DESIGN §7), which the
//! message itself carries whatever path it took through the retry queue.
//!
//! Outcomes: a malformed message (bad JSON, unknown fields, unparsable address) is parked at
//! once; an SMTP connection failure, timeout or `4xx` reply is retried after
//! `amqp.retry_delay_ms`; a permanent `5xx` rejection is parked.
//!
//! Exactly once, as far as SMTP allows: the broker delivers at least once and a producer may
//! publish the same envelope twice, so the worker keeps two Redis keys per mail, named by its
//! id: the envelope id for `mail.send`, `order-confirmed:<order id>` for `order.confirmed`,
//! `order-refunded:<order id>` for `order.refunded`
//! (an order is confirmed once, however many confirmations are published):
//! - `<prefix>:mail:sent:<id>`, set (7 days) right after the server accepted the message;
//!   a delivery that finds it is acked without sending.
//! - `<prefix>:mail:sending:<id>`, a claim held while one delivery sends, so two copies
//!   handled at the same moment (prefetch > 1, or two workers) do not both send. It is a
//!   [`Lease`] naming its holder: short ([`CLAIM_TTL`]), renewed while the send runs, released
//!   only by its holder. The other copy waits for the holder to finish, then acks (sent) or
//!   takes the claim (the holder failed and let go, or died and its claim ran out: a killed
//!   worker delays a mail by at most [`CLAIM_TTL`]).

use std::sync::Arc;
use std::time::Duration;

use crate::consumer::{Message, Outcome, consume};
use crate::envelope::{self, Body};
use anyhow::Context;
use dropline_core::Config;
use dropline_core::clients::amqp::MAIL;
use dropline_core::clients::deps::Deps;
use dropline_core::clients::redis::Redis;
use dropline_core::config::{SmtpConfig, SmtpTls};
use dropline_core::lease::Lease;
use dropline_core::messages::{Envelope, MailSend, OrderConfirmed, OrderRefunded, kinds};
use fred::prelude::*;
use fred::types::Expiration;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::response::Response;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The mail worker's name in the park reason of a message it does not take.
const WORKER: &str = "mail";
/// Each SMTP command (connect, greeting, EHLO, MAIL, ...) fails after this long.
const SMTP_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// One whole send (connection and every command) is given up after this long.
const SEND_LIMIT: Duration = Duration::from_secs(30);
/// How long a sending claim lives unless its holder renews it (every third of this while the
/// send runs): how long a copy waits for a holder that died.
const CLAIM_TTL: Duration = Duration::from_secs(6);
/// How long a copy waits for a live holder: its send is bounded by [`SEND_LIMIT`], and a dead
/// holder's claim runs out within [`CLAIM_TTL`] after its last renewal.
const CLAIM_WAIT: Duration = Duration::from_secs(SEND_LIMIT.as_secs() + CLAIM_TTL.as_secs());
/// How long the "sent" marker is kept: far longer than any redelivery or retry path.
const SENT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a delivery keeps trying to write the sent marker after the server took the mail.
const MARK_PATIENCE: Duration = Duration::from_secs(30);
/// Pause between two tries of the sent marker.
const MARK_RETRY: Duration = Duration::from_millis(250);
/// How often a copy waiting for another copy's claim looks again.
const CLAIM_POLL: Duration = Duration::from_millis(100);

/// Consumes the mail queue until `shutdown` fires; returns after the deliveries in hand are
/// finished and the SMTP connections are closed.
pub async fn run(config: &Config, deps: &Deps, shutdown: CancellationToken) -> anyhow::Result<()> {
    let broker = deps.broker()?.clone();
    let mailer = Arc::new(Mailer::new(
        &config.smtp,
        deps.redis()?.clone(),
        shutdown.clone(),
    )?);
    tracing::info!(
        host = %config.smtp.host,
        port = config.smtp.port,
        tls = ?config.smtp.tls,
        "mail worker starting"
    );
    let handler = {
        let mailer = Arc::clone(&mailer);
        move |message: Message| {
            let mailer = Arc::clone(&mailer);
            async move { mailer.handle(message).await }
        }
    };
    let result = consume(broker, MAIL, handler, shutdown).await;
    mailer.transport.shutdown().await;
    tracing::info!("mail worker stopped");
    result
}

/// Builds the SMTP transport from `smtp.*`: `none` → plain, `starttls` → STARTTLS required,
/// `tls` → implicit TLS; always on the configured port, with credentials when both
/// `smtp.user` and `smtp.password` are set.
fn transport(config: &SmtpConfig) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    let builder = match config.tls {
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host),
        SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)
            .with_context(|| format!("smtp.host `{}`: STARTTLS setup", config.host))?,
        SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host)
            .with_context(|| format!("smtp.host `{}`: TLS setup", config.host))?,
    };
    let mut builder = builder
        .port(config.port)
        .timeout(Some(SMTP_COMMAND_TIMEOUT));
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    Ok(builder.build())
}

/// What one worker shares between its deliveries.
struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    redis: Redis,
    shutdown: CancellationToken,
}

/// A message that can never be sent as it is: park it.
struct Malformed(String);

impl Mailer {
    fn new(config: &SmtpConfig, redis: Redis, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let from: Mailbox = config.from.parse().map_err(|e| {
            anyhow::anyhow!(
                "config key `smtp.from`: `{}` is not a mailbox: {e}",
                config.from
            )
        })?;
        Ok(Self {
            transport: transport(config)?,
            from,
            redis,
            shutdown,
        })
    }

    #[tracing::instrument(skip_all, fields(message_id, routing_key = %message.routing_key, attempt = message.attempt))]
    async fn handle(&self, message: Message) -> Outcome {
        let outcome = self.dispatch(&message).await;
        match &outcome {
            Outcome::Ack => {}
            Outcome::Retry(reason) => {
                metrics::counter!("dropline_mail_failures_total", "kind" => "retry").increment(1);
                tracing::warn!(%reason, "mail not sent; will retry");
            }
            Outcome::Park(reason) => {
                metrics::counter!("dropline_mail_failures_total", "kind" => "park").increment(1);
                tracing::error!(%reason, "mail cannot be sent; parking it");
            }
        }
        outcome
    }

    /// Routes a delivery by its envelope `type`. The routing key alone is not enough: a
    /// message coming back from the retry queue carries the dead-letter routing key (the
    /// queue name), not its original one.
    async fn dispatch(&self, message: &Message) -> Outcome {
        let span = tracing::Span::current();
        let body = match Body::parse(&message.data) {
            Ok(body) => body,
            Err(outcome) => {
                if let Some(id) = &message.message_id {
                    span.record("message_id", id.as_str());
                }
                return outcome;
            }
        };
        match body.id() {
            Some(id) => span.record("message_id", id),
            None => span.record("message_id", message.message_id.as_deref().unwrap_or("")),
        };
        let kind = match body.kind() {
            Ok(kind) => kind,
            Err(outcome) => return outcome,
        };
        if MAIL.routing_keys.contains(&message.routing_key.as_str()) && message.routing_key != kind
        {
            return Outcome::Park(format!(
                "envelope type `{kind}` arrived with routing key `{}`",
                message.routing_key
            ));
        }
        match kind.as_str() {
            kinds::MAIL_SEND => self.mail_send(body).await,
            kinds::ORDER_CONFIRMED => self.order_confirmed(body).await,
            kinds::ORDER_REFUNDED => self.order_refunded(body).await,
            other => envelope::unhandled(WORKER, other),
        }
    }

    async fn mail_send(&self, body: Body) -> Outcome {
        let envelope: Envelope<MailSend> = match body.decode(WORKER, kinds::MAIL_SEND) {
            Ok(envelope) => envelope,
            Err(outcome) => return outcome,
        };
        let email = match self.build(&envelope) {
            Ok(email) => email,
            Err(Malformed(reason)) => return Outcome::Park(reason),
        };
        self.send_once(&envelope.id.to_string(), email).await
    }

    async fn order_confirmed(&self, body: Body) -> Outcome {
        let envelope: Envelope<OrderConfirmed> = match body.decode(WORKER, kinds::ORDER_CONFIRMED) {
            Ok(envelope) => envelope,
            Err(outcome) => return outcome,
        };
        let confirmed = &envelope.data;
        let order = confirmed.order.order_id;
        let email = match self.build_confirmation(confirmed) {
            Ok(email) => email,
            Err(Malformed(reason)) => return Outcome::Park(reason),
        };
        tracing::debug!(%order, "sending the order confirmation");
        self.send_once(&format!("order-confirmed:{order}"), email)
            .await
    }

    async fn order_refunded(&self, body: Body) -> Outcome {
        let envelope: Envelope<OrderRefunded> = match body.decode(WORKER, kinds::ORDER_REFUNDED) {
            Ok(envelope) => envelope,
            Err(outcome) => return outcome,
        };
        let refunded = &envelope.data;
        let order = refunded.order.order_id;
        let (subject, text) = render_refund(refunded);
        let email = match self.build_for_buyer(
            &format!("refunded-{order}"),
            &refunded.email,
            &refunded.name,
            subject,
            text,
        ) {
            Ok(email) => email,
            Err(Malformed(reason)) => return Outcome::Park(reason),
        };
        tracing::debug!(%order, "sending the refund notice");
        self.send_once(&format!("order-refunded:{order}"), email)
            .await
    }

    /// Sends `email` unless the mail named `id` was sent before (the exactly-once machinery of
    /// the module docs).
    async fn send_once(&self, id: &str, email: lettre::Message) -> Outcome {
        let sent_key = self.redis.key(&format!("mail:sent:{id}"));
        let claim = Lease::new(
            self.redis.clone(),
            self.redis.key(&format!("mail:sending:{id}")),
            Uuid::new_v4().to_string(),
            CLAIM_TTL,
        );

        match self.claim(&sent_key, &claim).await {
            Ok(Claim::Ours) => {}
            Ok(Claim::AlreadySent) => {
                tracing::info!("mail already sent for this envelope; duplicate acked");
                return Outcome::Ack;
            }
            Ok(Claim::GaveUp) => {
                return Outcome::Retry("another delivery of this envelope is still sending".into());
            }
            Err(error) => {
                // Without the marker we cannot tell a duplicate; sending blind could mail twice.
                return Outcome::Retry(format!("redis: {error:#}"));
            }
        }

        let Some(result) = self.send_holding(&claim, email).await else {
            // Our claim ran out or was taken: another copy may be sending now. Ours was
            // abandoned before the server's final reply could be read.
            return Outcome::Retry("lost the sending claim while sending".into());
        };
        match result {
            Ok(Ok(_response)) => {
                // The server has the message. Mark it sent at once; until this SET lands, a
                // crash (or Redis failing right now) leaves the envelope unmarked and a
                // redelivery would send it again. That window (one Redis round trip) is what
                // SMTP leaves us: the send and the marker cannot be one atomic step. (The same
                // holds when the server took the message but its `250` was lost to a dropped
                // connection or the timeout: that attempt is retried and mails again.) The
                // Message-ID, fixed per envelope, lets the receiving side drop such a duplicate.
                match self.mark_sent(&sent_key).await {
                    Ok(()) => {
                        // The claim is only released once the marker is in place.
                        self.release(&claim).await;
                    }
                    Err(error) => {
                        // Keep the claim (it runs out within CLAIM_TTL) so a copy arriving
                        // meanwhile still waits; acking is still right: retrying would mail a
                        // second time.
                        tracing::error!(
                            error = format!("{error:#}"),
                            "mail sent but the sent marker could not be written; a redelivered copy could be sent again"
                        );
                    }
                }
                metrics::counter!("dropline_mail_sent_total").increment(1);
                tracing::info!("mail sent");
                Outcome::Ack
            }
            Ok(Err(error)) => {
                self.release(&claim).await;
                if error.is_permanent() {
                    Outcome::Park(format!("SMTP server rejected the mail: {error}"))
                } else {
                    // 4xx, connection refused or dropped, timeout, garbled reply: may pass.
                    Outcome::Retry(format!("SMTP: {error}"))
                }
            }
            Err(_elapsed) => {
                self.release(&claim).await;
                Outcome::Retry(format!("SMTP send took longer than {SEND_LIMIT:?}"))
            }
        }
    }

    /// Builds the e-mail; every failure here is the producer's and parks the message.
    fn build(&self, envelope: &Envelope<MailSend>) -> Result<lettre::Message, Malformed> {
        let mail = &envelope.data;
        let to: Mailbox = ascii_domain(&mail.to)
            .parse()
            .map_err(|e| Malformed(format!("`to` is not a mailbox: {e}")))?;
        if mail.subject.contains(['\r', '\n']) {
            return Err(Malformed("`subject` contains a line break".into()));
        }
        self.compose(
            &envelope.id.to_string(),
            to,
            mail.subject.clone(),
            mail.text.clone(),
        )
    }

    /// Builds the confirmation of an order for its buyer.
    fn build_confirmation(&self, confirmed: &OrderConfirmed) -> Result<lettre::Message, Malformed> {
        let (subject, text) = render_confirmation(confirmed);
        self.build_for_buyer(
            &format!("confirmed-{}", confirmed.order.order_id),
            &confirmed.email,
            &confirmed.name,
            subject,
            text,
        )
    }

    /// An e-mail to a buyer (`Name <email>`), with `Message-ID: <local@from-domain>`.
    fn build_for_buyer(
        &self,
        local: &str,
        email: &str,
        name: &str,
        subject: String,
        text: String,
    ) -> Result<lettre::Message, Malformed> {
        let address = ascii_domain(email)
            .parse()
            .map_err(|e| Malformed(format!("`email` is not an address: {e}")))?;
        let name = one_line(name);
        let to = Mailbox::new((!name.is_empty()).then_some(name), address);
        self.compose(local, to, subject, text)
    }

    /// One plain-text UTF-8 e-mail from `smtp.from`, with `Message-ID: <local@from-domain>`.
    fn compose(
        &self,
        local: &str,
        to: Mailbox,
        subject: String,
        text: String,
    ) -> Result<lettre::Message, Malformed> {
        let message_id = format!("<{local}@{}>", self.from.email.domain());
        lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(message_id))
            .header(ContentType::TEXT_PLAIN)
            .body(text)
            .map_err(|e| Malformed(format!("cannot build the e-mail: {e}")))
    }

    /// Takes the sending claim for one envelope, unless it was sent already. When another
    /// delivery holds the claim, waits (up to [`CLAIM_WAIT`]) for it to finish or let go.
    async fn claim(&self, sent_key: &str, claim: &Lease) -> anyhow::Result<Claim> {
        let pool = self.redis.pool();
        let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
        loop {
            let sent: bool = pool.exists(sent_key).await.context("EXISTS sent marker")?;
            if sent {
                return Ok(Claim::AlreadySent);
            }
            if claim
                .try_acquire()
                .await
                .context("taking the sending claim")?
            {
                // The holder we may have waited for could have finished between our EXISTS and
                // taking the claim: look once more before sending.
                let sent: bool = pool.exists(sent_key).await.context("EXISTS sent marker")?;
                if sent {
                    self.release(claim).await;
                    return Ok(Claim::AlreadySent);
                }
                return Ok(Claim::Ours);
            }
            tracing::debug!("another delivery of this envelope is sending it; waiting");
            tokio::select! {
                () = self.shutdown.cancelled() => return Ok(Claim::GaveUp),
                () = tokio::time::sleep(CLAIM_POLL) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Claim::GaveUp);
            }
        }
    }

    /// Writes the sent marker, trying again while Redis is away (a stall, a failover) for up to
    /// [`MARK_PATIENCE`]: until it lands, a redelivered copy would mail a second time, so the
    /// delivery is worth holding for it. Gives up early only at shutdown.
    async fn mark_sent(&self, sent_key: &str) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + MARK_PATIENCE;
        loop {
            let marked: Result<Option<String>, _> = self
                .redis
                .pool()
                .set(
                    sent_key,
                    "1",
                    Some(Expiration::EX(SENT_TTL.as_secs() as i64)),
                    None,
                    false,
                )
                .await;
            let error = match marked {
                Ok(_) => return Ok(()),
                Err(error) => error,
            };
            if tokio::time::Instant::now() + MARK_RETRY >= deadline {
                return Err(anyhow::Error::new(error)
                    .context(format!("SET sent marker (tried for {MARK_PATIENCE:?})")));
            }
            tracing::warn!(%error, "could not write the sent marker yet; trying again");
            tokio::select! {
                () = self.shutdown.cancelled() => {
                    return Err(anyhow::Error::new(error).context("SET sent marker (shutting down)"));
                }
                () = tokio::time::sleep(MARK_RETRY) => {}
            }
        }
    }

    /// Sends `email` (bounded by [`SEND_LIMIT`]) while renewing `claim`; `None` when the claim
    /// was found in other hands (the send is dropped). A renewal that fails for want of Redis
    /// is only logged: the claim then runs out by itself, and a copy waiting for it cannot
    /// take it before Redis is back either.
    async fn send_holding(
        &self,
        claim: &Lease,
        email: lettre::Message,
    ) -> Option<Result<Result<Response, SmtpError>, tokio::time::error::Elapsed>> {
        let send = tokio::time::timeout(SEND_LIMIT, self.transport.send(email));
        tokio::pin!(send);
        let mut renew = tokio::time::interval(CLAIM_TTL / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.tick().await; // the first tick is now: the claim was just taken
        loop {
            tokio::select! {
                result = &mut send => return Some(result),
                _ = renew.tick() => match claim.try_acquire().await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!("the sending claim ran out while sending; giving the send up");
                        return None;
                    }
                    Err(error) => {
                        tracing::warn!(error = format!("{error:#}"), "could not renew the sending claim");
                    }
                },
            }
        }
    }

    async fn release(&self, claim: &Lease) {
        // Only ours is deleted: a claim that ran out and was taken by another copy stays.
        if let Err(error) = claim.release().await {
            tracing::warn!(
                error = format!("{error:#}"),
                "could not release the sending claim; it runs out by itself"
            );
        }
    }
}

enum Claim {
    /// This delivery may send.
    Ours,
    /// The envelope was sent before: ack without sending.
    AlreadySent,
    /// Another delivery kept the claim past its lifetime, or we are shutting down: retry later.
    GaveUp,
}

/// The subject and plain-text body of an order confirmation.
pub fn render_confirmation(confirmed: &OrderConfirmed) -> (String, String) {
    let order = &confirmed.order;
    let product = one_line(&confirmed.product);
    let subject = format!("[Dropline] Order confirmed: {product}");
    let greeting = match one_line(&confirmed.name) {
        name if name.is_empty() => "Hello,".to_owned(),
        name => format!("Hello {name},"),
    };
    let text = format!(
        "{greeting}\n\n\
         your order is paid and confirmed.\n\n\
         Order:    {}\n\
         Product:  {product}\n\
         Quantity: {}\n\
         Amount:   {}\n\n\
         Thank you for shopping with Dropline.\n",
        order.order_id,
        order.quantity,
        format_amount(order.amount, &order.currency),
    );
    (subject, text)
}

/// The subject and plain-text body of a refund notice.
pub fn render_refund(refunded: &OrderRefunded) -> (String, String) {
    let order = &refunded.order;
    let product = one_line(&refunded.product);
    let subject = format!("[Dropline] Order refunded: {product}");
    let greeting = match one_line(&refunded.name) {
        name if name.is_empty() => "Hello,".to_owned(),
        name => format!("Hello {name},"),
    };
    let why = match refunded.reason.as_str() {
        "would_oversell" => "the item sold out before your payment could be confirmed",
        _ => "your order ended before your payment could be confirmed",
    };
    let text = format!(
        "{greeting}\n\n\
         we are sorry: {why}, so we could not fulfil your order.\n\
         Your payment has been refunded in full; depending on your bank it can take a few\n\
         days to appear on your statement.\n\n\
         Order:    {}\n\
         Product:  {product}\n\
         Quantity: {}\n\
         Refunded: {}\n\n\
         Dropline\n",
        order.order_id,
        order.quantity,
        format_amount(order.amount, &order.currency),
    );
    (subject, text)
}

/// An amount in minor units as `12,500 KRW` or `1,234.50 USD` (ISO 4217 minor-unit digits:
/// 0 for the currencies listed, 3 for the dinar-like ones, 2 otherwise).
pub fn format_amount(minor: i64, currency: &str) -> String {
    let digits: u32 = match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    };
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    let scale = 10u64.pow(digits);
    let whole = (abs / scale).to_string();
    let mut grouped = String::with_capacity(whole.len() + whole.len() / 3);
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if digits == 0 {
        format!("{sign}{grouped} {currency}")
    } else {
        let fraction = abs % scale;
        format!(
            "{sign}{grouped}.{fraction:0width$} {currency}",
            width = digits as usize
        )
    }
}

/// `s` with line breaks (and other control characters) turned into spaces, for headers.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// An address with its domain in ASCII (Punycode), as every SMTP server takes it: accounts
/// store internationalised domains in Unicode (`core::auth::accounts::normalize_email`). A
/// domain that does not convert is left as it is (the parse that follows refuses it).
fn ascii_domain(address: &str) -> std::borrow::Cow<'_, str> {
    match address.rsplit_once('@') {
        Some((local, domain)) if !domain.is_ascii() => match idna::domain_to_ascii(domain) {
            Ok(ascii) => format!("{local}@{ascii}").into(),
            Err(_) => address.into(),
        },
        _ => address.into(),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn internationalised_domains_go_to_smtp_in_ascii() {
        assert_eq!(
            ascii_domain("anna@bücher.example"),
            "anna@xn--bcher-kva.example"
        );
        assert_eq!(ascii_domain("anna@example.com"), "anna@example.com");
        assert_eq!(ascii_domain("not an address"), "not an address");
    }
    use super::*;
    use dropline_core::ids::{OrderId, SaleId, UserId};
    use dropline_core::messages::OrderRef;

    #[test]
    fn amounts_use_the_currency_minor_units() {
        assert_eq!(format_amount(12_500, "KRW"), "12,500 KRW");
        assert_eq!(format_amount(123_456_789, "USD"), "1,234,567.89 USD");
        assert_eq!(format_amount(5, "EUR"), "0.05 EUR");
        assert_eq!(format_amount(1_000, "KWD"), "1.000 KWD");
        assert_eq!(format_amount(0, "KRW"), "0 KRW");
        assert_eq!(format_amount(-1_500, "KRW"), "-1,500 KRW");
    }

    #[test]
    fn confirmation_names_order_product_quantity_and_amount() {
        let order = OrderId::new_v7();
        let confirmed = OrderConfirmed {
            order: OrderRef {
                order_id: order,
                sale_id: SaleId::new_v7(),
                user_id: UserId::new_v7(),
                quantity: 2,
                amount: 25_000,
                currency: "KRW".into(),
                idempotency_key: "k".into(),
                created_ms: 0,
            },
            email: "buyer@example.com".into(),
            name: "김민준".into(),
            product: "한정판\n스니커즈".into(),
        };
        let (subject, text) = render_confirmation(&confirmed);
        assert_eq!(subject, "[Dropline] Order confirmed: 한정판 스니커즈");
        assert!(text.starts_with("Hello 김민준,"), "{text}");
        assert!(text.contains(&format!("Order:    {order}")), "{text}");
        assert!(text.contains("Quantity: 2"), "{text}");
        assert!(text.contains("Amount:   25,000 KRW"), "{text}");
    }

    #[test]
    fn refund_notice_says_why_and_how_much_came_back() {
        let order = OrderId::new_v7();
        let refunded = OrderRefunded {
            order: OrderRef {
                order_id: order,
                sale_id: SaleId::new_v7(),
                user_id: UserId::new_v7(),
                quantity: 1,
                amount: 123_450,
                currency: "USD".into(),
                idempotency_key: "k".into(),
                created_ms: 0,
            },
            email: "buyer@example.com".into(),
            name: "".into(),
            product: "Chair\r\nBcc: x@y.z".into(),
            reason: "would_oversell".into(),
        };
        let (subject, text) = render_refund(&refunded);
        assert!(
            subject.starts_with("[Dropline] Order refunded: Chair "),
            "{subject}"
        );
        assert!(
            !subject.contains(['\r', '\n']),
            "one header line: {subject:?}"
        );
        assert!(text.starts_with("Hello,"), "{text}");
        assert!(text.contains("sold out"), "{text}");
        assert!(text.contains(&format!("Order:    {order}")), "{text}");
        assert!(text.contains("Refunded: 1,234.50 USD"), "{text}");
        let ended = OrderRefunded {
            reason: "ended".into(),
            ..refunded
        };
        assert!(render_refund(&ended).1.contains("order ended"));
    }
}
