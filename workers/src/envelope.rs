//! Reading a delivery as an [`Envelope`] and checking its `type`: the one decoder every
//! consumer uses, and the one place that words the park reasons of a malformed message.
//!
//! - [`decode`]: the body straight into `Envelope<T>` of one type (the payment and confirm
//!   workers). Bad JSON, an unknown field or an impossible value parks it as
//!   `malformed <type>: <serde's error>`; another `type` parks it as
//!   ``the <worker> worker does not handle `<type>` ``.
//! - [`Body`]: for a worker that takes several types (the mail worker) and routes on the
//!   envelope's `type` first: the body as plain JSON (`malformed message: not JSON: …`), its
//!   `type` (``malformed message: no envelope `type` ``), then [`Body::decode`] with the same
//!   checks as [`decode`].
//!
//! Every malformed message is parked at once ([`Outcome::Park`], the reason in its
//! `x-dropline-park-reason` header); what logs and counts it is what logs and counts any park:
//! the consumer loop, and for mail the mail worker's handler too. Nothing here logs or counts.

use std::fmt::Display;

use dropline_core::messages::Envelope;
use serde::de::DeserializeOwned;

use crate::consumer::Outcome;

/// `data` as an envelope of type `kind`, for the `worker` named in the park reason of a
/// message of another type.
pub fn decode<T: DeserializeOwned>(
    worker: &str,
    kind: &str,
    data: &[u8],
) -> Result<Envelope<T>, Outcome> {
    check(worker, kind, serde_json::from_slice(data))
}

/// The park of a message of type `kind` that cannot be handled as it is: it failed to decode,
/// or its content is impossible (`reason`).
pub fn malformed(kind: &str, reason: impl Display) -> Outcome {
    Outcome::Park(format!("malformed {kind}: {reason}"))
}

/// The park of a message whose type `kind` the `worker` does not take.
pub fn unhandled(worker: &str, kind: &str) -> Outcome {
    Outcome::Park(format!("the {worker} worker does not handle `{kind}`"))
}

/// A body read as JSON but not yet as a typed envelope, for a worker that routes on its
/// `type`.
#[derive(Debug)]
pub struct Body(serde_json::Value);

impl Body {
    pub fn parse(data: &[u8]) -> Result<Self, Outcome> {
        serde_json::from_slice(data)
            .map(Self)
            .map_err(|error| Outcome::Park(format!("malformed message: not JSON: {error}")))
    }

    /// The envelope's `id`, when it has one as a string (unchecked).
    pub fn id(&self) -> Option<&str> {
        self.0.get("id").and_then(|v| v.as_str())
    }

    /// The envelope's `type`.
    pub fn kind(&self) -> Result<String, Outcome> {
        self.0
            .get("type")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| Outcome::Park("malformed message: no envelope `type`".into()))
    }

    /// The body as an envelope of type `kind`, checked as [`decode`] does.
    pub fn decode<T: DeserializeOwned>(
        self,
        worker: &str,
        kind: &str,
    ) -> Result<Envelope<T>, Outcome> {
        check(worker, kind, serde_json::from_value(self.0))
    }
}

fn check<T>(
    worker: &str,
    kind: &str,
    parsed: serde_json::Result<Envelope<T>>,
) -> Result<Envelope<T>, Outcome> {
    let envelope = parsed.map_err(|error| malformed(kind, error))?;
    if envelope.kind != kind {
        return Err(unhandled(worker, &envelope.kind));
    }
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dropline_core::messages::{MailSend, kinds};

    fn mail() -> MailSend {
        MailSend {
            to: "a@b.c".into(),
            subject: "s".into(),
            text: "t".into(),
        }
    }

    fn park_reason<T: std::fmt::Debug>(result: Result<T, Outcome>) -> String {
        match result {
            Err(Outcome::Park(reason)) => reason,
            other => format!("not parked: {other:?}"),
        }
    }

    #[test]
    fn a_well_formed_envelope_of_the_type_decodes() -> anyhow::Result<()> {
        let sent = Envelope::new(kinds::MAIL_SEND, mail());
        let json = sent.to_json()?;
        let got: Result<Envelope<MailSend>, _> = decode("mail", kinds::MAIL_SEND, &json);
        assert_eq!(got, Ok(sent.clone()));
        let body = Body::parse(&json).map_err(|o| anyhow::anyhow!("{o:?}"))?;
        assert_eq!(body.id(), Some(sent.id.to_string().as_str()));
        assert_eq!(body.kind(), Ok(kinds::MAIL_SEND.to_owned()));
        assert_eq!(body.decode("mail", kinds::MAIL_SEND), Ok(sent));
        Ok(())
    }

    #[test]
    fn malformed_envelopes_are_parked_with_their_reason() -> anyhow::Result<()> {
        // Not JSON, straight to a type: serde's error with its position.
        let reason = park_reason(decode::<MailSend>("mail", kinds::MAIL_SEND, b"{nope"));
        assert!(
            reason.starts_with("malformed mail.send: key must be a string at line 1"),
            "{reason}"
        );
        // An unknown field in the data.
        let mut json = serde_json::to_value(Envelope::new(kinds::MAIL_SEND, mail()))?;
        json["data"]["cc"] = "x@y.z".into();
        let bytes = serde_json::to_vec(&json)?;
        let reason = park_reason(decode::<MailSend>("mail", kinds::MAIL_SEND, &bytes));
        assert!(
            reason.starts_with("malformed mail.send: unknown field `cc`"),
            "{reason}"
        );
        // Through a body: the same error without a position (serde reads a value, not text).
        let reason = park_reason(
            Body::parse(&bytes).and_then(|body| body.decode::<MailSend>("mail", kinds::MAIL_SEND)),
        );
        assert!(
            reason.starts_with("malformed mail.send: unknown field `cc`")
                && !reason.contains("line"),
            "{reason}"
        );
        // Another type.
        let other = Envelope::new(kinds::ORDER_CONFIRMED, mail()).to_json()?;
        assert_eq!(
            park_reason(decode::<MailSend>("payment", kinds::MAIL_SEND, &other)),
            "the payment worker does not handle `order.confirmed`"
        );
        // A body that is not JSON, or has no type.
        let reason = park_reason(Body::parse(b"\xff"));
        assert!(
            reason.starts_with("malformed message: not JSON: "),
            "{reason}"
        );
        let body = Body::parse(br#"{"id": 1}"#).map_err(|o| anyhow::anyhow!("{o:?}"))?;
        assert_eq!(body.id(), None);
        assert_eq!(
            park_reason(body.kind()),
            "malformed message: no envelope `type`"
        );
        Ok(())
    }

    #[test]
    fn reasons_name_the_type_and_the_worker() {
        assert_eq!(
            malformed(kinds::PAYMENT_REQUESTED, "negative amount -1"),
            Outcome::Park("malformed payment.requested: negative amount -1".into())
        );
        assert_eq!(
            unhandled("confirm", "mail.send"),
            Outcome::Park("the confirm worker does not handle `mail.send`".into())
        );
    }
}
