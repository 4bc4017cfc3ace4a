//! Configuration layering (defaults < file < env-form overrides) and the messages that name
//! the bad key. The process-environment layer itself is tested through the binary in
//! `tests/cli.rs`, where each run has its own environment.

use std::io::Write;

use dropline_core::Config;
use dropline_core::config::{ConfigError, LogFormat, ProviderKind, SmtpTls, Sources};

fn load(
    file: Option<&tempfile::NamedTempFile>,
    overrides: &[(&str, &str)],
) -> Result<Config, ConfigError> {
    Config::load(&Sources {
        file: file.map(|f| f.path().to_owned()),
        env: false,
        overrides: overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    })
}

fn toml_file(body: &str) -> anyhow::Result<tempfile::NamedTempFile> {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile()?;
    file.write_all(body.as_bytes())?;
    Ok(file)
}

#[test]
fn defaults_match_the_contract() -> anyhow::Result<()> {
    let c = load(None, &[])?;
    assert_eq!(c.waitroom.listen, "127.0.0.1:8080");
    assert_eq!(c.api.listen, "127.0.0.1:8081");
    assert_eq!(c.mysql.url, "mysql://root@127.0.0.1:3306/dropline");
    assert_eq!(c.redis.url, "redis://127.0.0.1:6379");
    assert_eq!(c.redis.key_prefix, "dl");
    assert_eq!(c.amqp.url, "amqp://guest:guest@127.0.0.1:5672/%2f");
    assert_eq!(c.amqp.prefix, "dropline");
    assert_eq!(
        (c.smtp.host.as_str(), c.smtp.port, c.smtp.tls),
        ("127.0.0.1", 2525, SmtpTls::None)
    );
    assert_eq!(c.smtp.from, "Dropline <no-reply@localhost>");
    assert_eq!(c.waitroom.abandon_after_seconds, 120);
    assert_eq!(c.waitroom.return_grace_seconds, 1800);
    assert_eq!(c.waitroom.outage_retry_after_seconds, 2);
    assert_eq!(c.waitroom.admission_window_seconds, 600);
    assert_eq!(c.payment.timeout_seconds, 30);
    assert_eq!(c.payment.sim_latency_ms, 50);
    assert_eq!(c.payment.sim_failure_rate, 0.0);
    assert_eq!(c.payment.provider, ProviderKind::Simulated);
    assert_eq!(c.payment.stripe.api_base, "https://api.stripe.com");
    assert_eq!(c.payment.stripe.api_version, "2024-06-20");
    assert_eq!(c.payment.stripe.timeout_ms, 15000);
    assert_eq!(c.payment.stripe.js_url, "https://js.stripe.com/v3/");
    assert_eq!(c.expiry.sweep_interval_seconds, 5);
    assert_eq!(c.http.body_limit_bytes, 64 * 1024);
    assert_eq!(c.log_format, None);
    Ok(())
}

#[test]
fn file_overrides_defaults_and_env_overrides_file() -> anyhow::Result<()> {
    let file = toml_file(
        "log_format = \"json\"\n[redis]\nkey_prefix = \"fromfile\"\n[payment]\nsim_latency_ms = 7\n",
    )?;
    let c = load(Some(&file), &[])?;
    assert_eq!(c.redis.key_prefix, "fromfile");
    assert_eq!(c.payment.sim_latency_ms, 7);
    assert_eq!(c.log_format, Some(LogFormat::Json));
    // Untouched keys keep their defaults.
    assert_eq!(c.redis.url, "redis://127.0.0.1:6379");

    let c = load(
        Some(&file),
        &[
            ("REDIS__KEY_PREFIX", "fromenv"),
            ("PAYMENT__SIM_FAILURE_RATE", "0.25"),
        ],
    )?;
    assert_eq!(c.redis.key_prefix, "fromenv");
    assert_eq!(
        c.payment.sim_latency_ms, 7,
        "file value survives where env is silent"
    );
    assert_eq!(c.payment.sim_failure_rate, 0.25);
    Ok(())
}

fn error_text(result: Result<Config, ConfigError>) -> String {
    match result {
        Ok(_) => panic!("expected a configuration error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn wrong_type_names_the_key() {
    let msg = error_text(load(None, &[("WAITROOM__ABANDON_AFTER_SECONDS", "soon")]));
    assert!(msg.contains("waitroom.abandon_after_seconds"), "{msg}");
}

/// door.md §6: the return grace spans at least abandon_after and stays inside the 18 h wrap
/// of a place's last-poll stamp.
#[test]
fn the_return_grace_is_between_abandon_after_and_twelve_hours() -> anyhow::Result<()> {
    for (abandon, grace) in [("120", "60"), ("120", "43201")] {
        let msg = error_text(load(
            None,
            &[
                ("WAITROOM__ABANDON_AFTER_SECONDS", abandon),
                ("WAITROOM__RETURN_GRACE_SECONDS", grace),
            ],
        ));
        assert!(msg.contains("waitroom.return_grace_seconds"), "{msg}");
    }
    let c = load(
        None,
        &[
            ("WAITROOM__ABANDON_AFTER_SECONDS", "2"),
            ("WAITROOM__RETURN_GRACE_SECONDS", "2"),
        ],
    )?;
    assert_eq!(c.waitroom.return_grace_seconds, 2);
    Ok(())
}

#[test]
fn unknown_key_is_refused_with_its_name() -> anyhow::Result<()> {
    let file = toml_file("[redis]\nkey_prefx = \"typo\"\n")?;
    let msg = error_text(load(Some(&file), &[]));
    assert!(msg.contains("key_prefx"), "{msg}");
    Ok(())
}

#[test]
fn missing_explicit_file_is_an_error_naming_it() {
    let msg = error_text(Config::load(&Sources {
        file: Some("/nonexistent/dropline.toml".into()),
        env: false,
        overrides: vec![],
    }));
    assert!(msg.contains("/nonexistent/dropline.toml"), "{msg}");
}

#[test]
fn invalid_values_name_key_and_expectation() {
    let cases: &[(&str, &str, &str)] = &[
        ("REDIS__URL", "http://localhost", "redis.url"),
        ("REDIS__URL", "redis+cluster://", "redis.url"),
        ("MYSQL__URL", "postgres://x/db", "mysql.url"),
        ("MYSQL__URL", "mysql://root@127.0.0.1:3306/", "mysql.url"),
        ("AMQP__URL", "nats://x", "amqp.url"),
        ("API__LISTEN", "localhost", "api.listen"),
        ("REDIS__KEY_PREFIX", "a{b}", "redis.key_prefix"),
        ("AMQP__PREFIX", "bad name", "amqp.prefix"),
        (
            "PAYMENT__SIM_FAILURE_RATE",
            "1.5",
            "payment.sim_failure_rate",
        ),
        (
            "EXPIRY__SWEEP_INTERVAL_SECONDS",
            "0",
            "expiry.sweep_interval_seconds",
        ),
        ("PAYMENT__PROVIDER", "paypal", "payment.provider"),
        (
            "PAYMENT__STRIPE__API_BASE",
            "http://api.stripe.com",
            "payment.stripe.api_base",
        ),
        (
            "PAYMENT__STRIPE__API_BASE",
            "ftp://127.0.0.1",
            "payment.stripe.api_base",
        ),
        (
            "PAYMENT__STRIPE__TIMEOUT_MS",
            "0",
            "payment.stripe.timeout_ms",
        ),
        (
            "PAYMENT__STRIPE__JS_URL",
            "http://js.stripe.com/v3/",
            "payment.stripe.js_url",
        ),
        (
            "PAYMENT__STRIPE__JS_URL",
            "javascript:alert(1)",
            "payment.stripe.js_url",
        ),
        (
            "PAYMENT__STRIPE__JS_URL",
            "https://u:p@js.example/v3/",
            "payment.stripe.js_url",
        ),
        (
            "PAYMENT__STRIPE__JS_URL",
            "https://js.example/v3/#x",
            "payment.stripe.js_url",
        ),
        (
            "PAYMENT__STRIPE__PUBLISHABLE_KEY",
            "pk_test_\"><script>",
            "payment.stripe.publishable_key",
        ),
        (
            "PAYMENT__STRIPE__PUBLISHABLE_KEY",
            "sk_test_1",
            "payment.stripe.publishable_key",
        ),
        ("SMTP__TLS", "maybe", "smtp.tls"),
        ("SMTP__USER", "alice", "smtp.user"),
        (
            "ALERTS__WEBHOOK_URL",
            "ftp://hooks.example",
            "alerts.webhook_url",
        ),
        ("ALERTS__WEBHOOK_URL", "https://", "alerts.webhook_url"),
        ("ALERTS__ERROR_RATE", "0", "alerts.error_rate"),
        ("ALERTS__ERROR_RATE", "1.5", "alerts.error_rate"),
        (
            "ALERTS__STALL_AFTER_SECONDS",
            "0",
            "alerts.stall_after_seconds",
        ),
    ];
    for (key, value, named) in cases {
        let msg = error_text(load(None, &[(key, value)]));
        assert!(
            msg.contains(named),
            "{key}={value}: message `{msg}` does not name {named}"
        );
    }
}

#[test]
fn listen_accepts_port_only_and_port_zero() -> anyhow::Result<()> {
    let c = load(
        None,
        &[("WAITROOM__LISTEN", ":0"), ("API__LISTEN", "127.0.0.1:0")],
    )?;
    assert_eq!(c.waitroom_listen().port(), 0);
    assert!(c.waitroom_listen().ip().is_unspecified());
    assert_eq!(c.api_listen().to_string(), "127.0.0.1:0");
    Ok(())
}

#[test]
fn cluster_url_is_accepted() -> anyhow::Result<()> {
    let c = load(
        None,
        &[(
            "REDIS__URL",
            "redis+cluster://:secret@10.0.0.1:7000,10.0.0.2:7001",
        )],
    )?;
    assert!(c.redis.url.starts_with("redis+cluster://"));
    // Secrets never reach Debug output.
    let shown = format!("{c:?}");
    assert!(!shown.contains("secret"), "{shown}");
    Ok(())
}

/// `redis.ca_file` / `amqp.ca_file` (issue #21 §3): a missing, empty or non-PEM file stops
/// the start with a message naming the key and the path; a good one is taken with TLS URLs.
#[test]
fn ca_files_are_checked_at_load_naming_key_and_path() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("no-such-ca.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n")?;
    for (url_key, url, ca_key, name) in [
        (
            "REDIS__URL",
            "rediss://127.0.0.1:6380",
            "REDIS__CA_FILE",
            "redis.ca_file",
        ),
        (
            "AMQP__URL",
            "amqps://u:p@127.0.0.1:5671/%2f",
            "AMQP__CA_FILE",
            "amqp.ca_file",
        ),
    ] {
        for path in [&missing, &garbage] {
            let shown = path.display().to_string();
            let msg = error_text(load(None, &[(url_key, url), (ca_key, &shown)]));
            assert!(msg.contains(&format!("config key `{name}`")), "{msg}");
            assert!(msg.contains(&shown), "{msg}");
        }
        // A CA file without a TLS URL is a mistake worth stopping for.
        let msg = error_text(load(None, &[(ca_key, &missing.display().to_string())]));
        assert!(msg.contains(&format!("config key `{name}`")), "{msg}");
    }
    let missing_msg = error_text(load(
        None,
        &[
            ("REDIS__URL", "rediss://127.0.0.1:6380"),
            ("REDIS__CA_FILE", &missing.display().to_string()),
        ],
    ));
    assert!(missing_msg.contains("cannot read CA file"), "{missing_msg}");

    // rediss:// and amqps:// load without a CA file (the platform's roots then).
    let c = load(
        None,
        &[
            ("REDIS__URL", "rediss://:pw@cache.example.com:6380/2"),
            ("AMQP__URL", "amqps://u:pw@mq.example.com:5671/%2f"),
        ],
    )?;
    assert_eq!(c.redis.ca_file, None);
    assert_eq!(c.amqp.ca_file, None);
    Ok(())
}

#[test]
fn debug_output_hides_passwords() -> anyhow::Result<()> {
    let c = load(
        None,
        &[
            ("AMQP__URL", "amqp://user:hunter2@mq:5672/%2f"),
            ("SMTP__USER", "mailer"),
            ("SMTP__PASSWORD", "hunter3"),
        ],
    )?;
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("hunter3"),
        "{shown}"
    );
    Ok(())
}

#[test]
fn stripe_secrets_come_from_one_form_and_are_required_where_used() -> anyhow::Result<()> {
    // Loopback http is allowed (localstripe); the secrets are only needed by the services
    // that use them, which ask for them at start.
    let c = load(
        None,
        &[
            ("PAYMENT__PROVIDER", "stripe"),
            ("PAYMENT__STRIPE__API_BASE", "http://127.0.0.1:8420"),
            (
                "PAYMENT__STRIPE__JS_URL",
                "http://127.0.0.1:8420/js.stripe.com/v3/",
            ),
            ("PAYMENT__STRIPE__PUBLISHABLE_KEY", "pk_test_1"),
        ],
    )?;
    assert_eq!(c.payment.provider, ProviderKind::Stripe);
    assert_eq!(
        c.payment.stripe.js_url,
        "http://127.0.0.1:8420/js.stripe.com/v3/"
    );
    let missing = format!(
        "{:#}",
        c.payment
            .stripe
            .secret_key()
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("none"))
    );
    assert!(missing.contains("payment.stripe.secret_key"), "{missing}");
    let missing = format!(
        "{:#}",
        c.payment
            .stripe
            .webhook_secret()
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("none"))
    );
    assert!(
        missing.contains("payment.stripe.webhook_secret"),
        "{missing}"
    );

    let mut file = tempfile::NamedTempFile::new()?;
    file.write_all(b"whsec_from_file\n")?;
    let path = file.path().display().to_string();
    let c = load(
        None,
        &[
            ("PAYMENT__PROVIDER", "stripe"),
            ("PAYMENT__STRIPE__SECRET_KEY", "sk_test_1"),
            ("PAYMENT__STRIPE__WEBHOOK_SECRET_FILE", &path),
        ],
    )?;
    assert_eq!(c.payment.stripe.secret_key()?, "sk_test_1");
    assert_eq!(c.payment.stripe.webhook_secret()?, "whsec_from_file");
    assert!(!format!("{:?}", c.payment).contains("sk_test_1"));

    let both = error_text(load(
        None,
        &[
            ("PAYMENT__STRIPE__SECRET_KEY", "sk_test_1"),
            ("PAYMENT__STRIPE__SECRET_KEY_FILE", &path),
        ],
    ));
    assert!(both.contains("payment.stripe.secret_key"), "{both}");
    Ok(())
}
