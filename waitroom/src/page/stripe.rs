//! The page's Stripe step (design/payments.md "Buyer"): with `payment.provider = stripe` the
//! waiting page loads Stripe.js from `payment.stripe.js_url`, mounts a card Element with
//! `payment.stripe.publishable_key` in place of the simulated card picker, and hands the
//! buyer's 3-D Secure step to Stripe.js. [`StripePage::from_config`] checks both keys once, at
//! start; the page gets them in `config_json` as `payment` and the Content-Security-Policy
//! lets exactly Stripe.js's origins in ([`StripePage::csp`]). With the simulated provider
//! there is no `payment` in `config_json` and nothing is added to the policy.

use dropline_core::config::{PaymentConfig, ProviderKind, is_publishable_key};

/// The config keys named in the errors.
pub(crate) const JS_URL_KEY: &str = "payment.stripe.js_url";
pub(crate) const PUBLISHABLE_KEY_KEY: &str = "payment.stripe.publishable_key";

/// Stripe.js's own host: the policy then allows what Stripe documents for it.
const STRIPE_JS_HOST: &str = "js.stripe.com";

/// What the page needs of Stripe, as `config_json`'s `payment`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StripePage {
    /// Always `stripe`.
    provider: &'static str,
    publishable_key: String,
    js_url: String,
    #[serde(skip)]
    csp: StripeSources,
}

/// The sources the Content-Security-Policy adds for Stripe.js, each with a leading space.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StripeSources {
    pub(crate) script: String,
    pub(crate) connect: String,
    pub(crate) frame: String,
}

impl StripePage {
    /// `None` with the simulated provider; with Stripe the checked publishable key and
    /// Stripe.js URL, or an error naming the key.
    pub fn from_config(payment: &PaymentConfig) -> anyhow::Result<Option<Self>> {
        if payment.provider != ProviderKind::Stripe {
            return Ok(None);
        }
        let stripe = &payment.stripe;
        let publishable_key = stripe
            .publishable_key
            .as_deref()
            .map(str::trim)
            .unwrap_or_default();
        anyhow::ensure!(
            is_publishable_key(publishable_key),
            "payment.provider = stripe: the waiting page needs config key `{PUBLISHABLE_KEY_KEY}` \
             (pk_live_… or pk_test_…): set DROPLINE_PAYMENT__STRIPE__PUBLISHABLE_KEY"
        );
        let js_url = stripe.js_url.trim();
        let csp = sources(js_url)?;
        Ok(Some(Self {
            provider: "stripe",
            publishable_key: publishable_key.to_owned(),
            js_url: js_url.to_owned(),
            csp,
        }))
    }

    /// The policy's additions for Stripe.js.
    pub(crate) fn csp(&self) -> &StripeSources {
        &self.csp
    }
}

/// The policy's sources for Stripe.js at `js_url`: for `https://js.stripe.com` those of
/// Stripe's guide (scripts and frames from `js.stripe.com` and its subdomains, frames from
/// `hooks.stripe.com` for 3-D Secure, calls to `api.stripe.com`); for any other host (a mock
/// such as localstripe's) its origin for all three.
fn sources(js_url: &str) -> anyhow::Result<StripeSources> {
    let invalid = |why: &str| {
        anyhow::anyhow!(
            "config key `{JS_URL_KEY}`: expected an https:// URL (http:// only to a loopback \
             host), got `{js_url}` ({why})"
        )
    };
    let url = url::Url::parse(js_url).map_err(|e| invalid(&e.to_string()))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(invalid("no host")),
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => return Err(invalid("http:// to a host that is not loopback")),
        _ => return Err(invalid("scheme")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials in the URL"));
    }
    if url.fragment().is_some() {
        return Err(invalid("fragment"));
    }
    let origin = url.origin().ascii_serialization();
    if origin == format!("https://{STRIPE_JS_HOST}") {
        return Ok(StripeSources {
            script: " https://js.stripe.com https://*.js.stripe.com".to_owned(),
            connect: " https://api.stripe.com".to_owned(),
            frame: " https://js.stripe.com https://*.js.stripe.com https://hooks.stripe.com"
                .to_owned(),
        });
    }
    Ok(StripeSources {
        script: format!(" {origin}"),
        connect: format!(" {origin}"),
        frame: format!(" {origin}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_follow_stripe_js_or_the_mock() -> anyhow::Result<()> {
        let real = sources("https://js.stripe.com/v3/")?;
        assert_eq!(real.connect, " https://api.stripe.com");
        assert!(real.frame.contains("https://hooks.stripe.com"));
        assert!(real.script.starts_with(" https://js.stripe.com "));
        let mock = sources("http://127.0.0.1:8420/js.stripe.com/v3/")?;
        assert_eq!(mock.script, " http://127.0.0.1:8420");
        assert_eq!(mock.connect, " http://127.0.0.1:8420");
        assert_eq!(mock.frame, " http://127.0.0.1:8420");
        for bad in [
            "http://js.stripe.com/v3/",
            "javascript:alert(1)",
            "data:text/javascript,alert(1)",
            "https://u:p@js.stripe.com/v3/",
            "https://js.stripe.com/v3/#x",
            "//js.stripe.com/v3/",
            "not a url",
        ] {
            let error = sources(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.contains(JS_URL_KEY), "{bad}: {error:?}");
        }
        Ok(())
    }
}
