//! The `dropline` binary as an operator meets it: sub-commands, configuration from the
//! environment, exit codes, and `dropline all` serving until SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use dropline_testkit::TestEnv;

fn dropline() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dropline"));
    // Each run sees only the variables a test gives it.
    for (key, _) in std::env::vars() {
        if key.starts_with("DROPLINE_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("DROPLINE_LOG_FORMAT", "json");
    cmd
}

/// The variables that point the binary at a test's isolated database, prefix and ports.
fn isolated(cmd: &mut Command, env: &TestEnv) {
    let c = &env.config;
    cmd.env("DROPLINE_MYSQL__URL", &c.mysql.url)
        .env("DROPLINE_REDIS__URL", &c.redis.url)
        .env("DROPLINE_REDIS__KEY_PREFIX", &c.redis.key_prefix)
        .env("DROPLINE_AMQP__URL", &c.amqp.url)
        .env("DROPLINE_AMQP__PREFIX", &c.amqp.prefix)
        .env("DROPLINE_WAITROOM__LISTEN", "127.0.0.1:0")
        .env("DROPLINE_API__LISTEN", "127.0.0.1:0")
        .env("DROPLINE_HTTP__SHUTDOWN_GRACE_SECONDS", "5");
}

/// A spawned `dropline` that is killed if the test ends first: a failed assertion unwinds
/// past the test's own SIGTERM and would leave it running.
struct Reaped(std::process::Child);

impl std::ops::Deref for Reaped {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn output(cmd: &mut Command) -> anyhow::Result<(i32, String, String)> {
    let out = cmd.output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn help_lists_every_command() -> anyhow::Result<()> {
    let (code, stdout, _) = output(dropline().arg("--help"))?;
    assert_eq!(code, 0);
    for cmd in [
        "waitroom", "api", "worker", "all", "migrate", "user", "sale", "payments", "loadtest",
        "config",
    ] {
        assert!(stdout.contains(cmd), "--help lacks {cmd}:\n{stdout}");
    }
    let (code, stdout, _) = output(dropline().args(["worker", "--help"]))?;
    assert_eq!(code, 0);
    for kind in [
        "payment",
        "confirm",
        "expiry",
        "mail",
        "all",
        "--metrics-addr",
    ] {
        assert!(
            stdout.contains(kind),
            "worker --help lacks {kind}:\n{stdout}"
        );
    }
    Ok(())
}

#[test]
fn environment_overrides_file_which_overrides_defaults() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("dropline.toml");
    std::fs::write(
        &file,
        "[redis]\nkey_prefix = \"fromfile\"\n[payment]\nsim_latency_ms = 9\n",
    )?;

    let (code, stdout, stderr) = output(
        dropline()
            .arg("--config")
            .arg(&file)
            .args(["config", "check"]),
    )?;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("key_prefix: \"fromfile\""), "{stdout}");
    assert!(stdout.contains("sim_latency_ms: 9"), "{stdout}");

    let (code, stdout, stderr) = output(
        dropline()
            .arg("--config")
            .arg(&file)
            .args(["config", "check"])
            .env("DROPLINE_REDIS__KEY_PREFIX", "fromenv")
            .env("DROPLINE_LOG_FORMAT", "human"),
    )?;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("key_prefix: \"fromenv\""), "{stdout}");
    assert!(stdout.contains("sim_latency_ms: 9"), "{stdout}");
    assert!(stdout.contains("Human"), "{stdout}");

    // dropline.toml in the working directory is read without --config.
    let (code, stdout, _) = output(dropline().current_dir(dir.path()).args(["config", "check"]))?;
    assert_eq!(code, 0);
    assert!(stdout.contains("key_prefix: \"fromfile\""), "{stdout}");
    Ok(())
}

#[test]
fn bad_configuration_fails_fast_naming_the_key() -> anyhow::Result<()> {
    let cases = [
        (
            "DROPLINE_WAITROOM__ABANDON_AFTER_SECONDS",
            "later",
            "waitroom.abandon_after_seconds",
        ),
        ("DROPLINE_REDIS__URL", "memcached://x", "redis.url"),
        ("DROPLINE_API__LISTEN", "nowhere", "api.listen"),
        ("DROPLINE_REDIS__KEY_PREFX", "typo", "key_prefx"),
    ];
    for (key, value, named) in cases {
        let (code, _, stderr) = output(dropline().args(["config", "check"]).env(key, value))?;
        assert_eq!(code, 2, "{key}={value} should fail with exit 2");
        assert!(
            stderr.contains(named),
            "{key}={value}: `{stderr}` does not name {named}"
        );
    }
    let (code, _, stderr) =
        output(dropline().args(["--config", "/nonexistent.toml", "config", "check"]))?;
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent.toml"), "{stderr}");
    Ok(())
}

#[test]
fn sale_audit_refuses_a_malformed_id_before_connecting() -> anyhow::Result<()> {
    // Every dependency on a closed port: the id is checked before any connection.
    let (code, stdout, stderr) = output(
        dropline()
            .args(["sale", "audit", "--json", "not-a-uuid"])
            .env("DROPLINE_MYSQL__URL", "mysql://root@127.0.0.1:1/none")
            .env("DROPLINE_REDIS__URL", "redis://127.0.0.1:1"),
    )?;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not a sale id"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    Ok(())
}

#[test]
fn payments_resend_refuses_a_malformed_id_before_connecting() -> anyhow::Result<()> {
    // Every dependency on a closed port: the id is checked before any connection.
    let (code, stdout, stderr) = output(
        dropline()
            .args(["payments", "resend", "not-a-uuid"])
            .env("DROPLINE_MYSQL__URL", "mysql://root@127.0.0.1:1/none")
            .env("DROPLINE_REDIS__URL", "redis://127.0.0.1:1")
            .env("DROPLINE_AMQP__URL", "amqp://guest:guest@127.0.0.1:1/%2f"),
    )?;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not an order id"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    Ok(())
}

/// A product and an open sale of `stock` in MySQL, armed in Redis (as the admin api does).
async fn armed_sale(env: &TestEnv, stock: i32) -> anyhow::Result<dropline_core::ids::SaleId> {
    let pool = dropline_core::clients::mysql::connect(&env.config.mysql).await?;
    dropline_core::clients::mysql::migrate(&pool).await?;
    let redis = dropline_core::clients::redis::Redis::connect(&env.config.redis).await?;
    let (product, sale) = (
        dropline_core::ids::ProductId::new_v7(),
        dropline_core::ids::SaleId::new_v7(),
    );
    sqlx::query(
        "INSERT INTO products (id, name, price, currency, created_at) \
         VALUES (?, 'Lamp', 1000, 'KRW', UTC_TIMESTAMP(3))",
    )
    .bind(product)
    .execute(&pool)
    .await?;
    sqlx::query(
        "INSERT INTO sales (id, product_id, stock_total, opens_at, per_user_limit, hold_seconds, \
           admit_per_second, created_at, updated_at) \
         VALUES (?, ?, ?, UTC_TIMESTAMP(3), 1, 600, 100, UTC_TIMESTAMP(3), UTC_TIMESTAMP(3))",
    )
    .bind(sale)
    .bind(product)
    .bind(stock)
    .execute(&pool)
    .await?;
    let config = dropline_core::sale::SaleConfig::load(&pool, sale)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the sale just inserted"))?;
    anyhow::ensure!(dropline_core::sale::arm(&redis, sale, &config).await?);
    redis.quit().await;
    pool.close().await;
    Ok(sale)
}

#[test]
fn sale_audit_exits_0_when_sound_1_on_a_breach_and_2_for_an_unknown_sale() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let rt = tokio::runtime::Runtime::new()?;
    let sale = rt.block_on(armed_sale(&env, 5))?;
    let run = |args: &[&str]| {
        let mut cmd = dropline();
        isolated(&mut cmd, &env);
        output(cmd.args(["sale", "audit"]).args(args))
    };
    let id = sale.to_string();

    // Sound: exit 0, the human report and the JSON.
    let (code, stdout, stderr) = run(&[&id])?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains(&format!("sale {id}: OK")), "{stdout}");
    assert!(stdout.contains("breaches: none"), "{stdout}");
    let (code, stdout, stderr) = run(&["--json", "--settled", &id])?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout)?;
    assert_eq!(json["sale_id"], id);
    assert_eq!(json["ok"], true);
    assert_eq!(json["settled"], true);
    assert_eq!(json["redis"]["avail"], 5);
    assert_eq!(json["mysql"]["stock_total"], 5);
    for state in ["held", "paying", "paid", "expired", "cancelled", "failed"] {
        assert_eq!(json["redis"]["orders"][state]["orders"], 0, "{state}");
        assert_eq!(json["mysql"]["orders"][state]["units"], 0, "{state}");
    }
    assert_eq!(json["breaches"], serde_json::json!([]));

    // MySQL's sold count no longer the sum of the paid rows: exit 1, with the code.
    rt.block_on(async {
        let pool = dropline_core::clients::mysql::connect(&env.config.mysql).await?;
        sqlx::query("UPDATE sales SET sold = 1 WHERE id = ?")
            .bind(sale)
            .execute(&pool)
            .await?;
        pool.close().await;
        Ok::<_, anyhow::Error>(())
    })?;
    let (code, stdout, stderr) = run(&["--json", &id])?;
    assert_eq!(code, 1, "{stdout}{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout)?;
    assert_eq!(json["ok"], false);
    assert_eq!(json["breaches"][0]["code"], "sold_mismatch");
    assert_eq!(json["breach_counts"]["sold_mismatch"], 1);
    let (code, stdout, _) = run(&[&id])?;
    assert_eq!(code, 1);
    assert!(
        stdout.contains("sold_mismatch: sales.sold is 1"),
        "{stdout}"
    );

    // A sale nobody made: exit 2, said clearly, nothing on stdout.
    let other = uuid::Uuid::now_v7().to_string();
    let (code, stdout, stderr) = run(&[&other])?;
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains(&format!("no sale {other}")), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    rt.block_on(env.cleanup())
}

/// A paid order of `sale` in MySQL whose charge is a real PaymentIntent at `stripe` (made and
/// confirmed there as the payment worker does), with its payments row and claim row.
async fn paid_at_stripe(
    env: &TestEnv,
    stripe: &dropline_testkit::localstripe::LocalStripe,
    sale: dropline_core::ids::SaleId,
) -> anyhow::Result<String> {
    let order = dropline_core::ids::OrderId::new_v7();
    let pi = stripe
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "1000".to_owned()),
                ("currency", "krw".to_owned()),
                ("payment_method", "pm_card_visa".to_owned()),
                ("payment_method_types[0]", "card".to_owned()),
                ("capture_method", "automatic".to_owned()),
                ("metadata[dropline_order_id]", order.to_string()),
                ("metadata[dropline_sale_id]", sale.to_string()),
            ],
        )
        .await?;
    let intent = pi["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("an intent without an id: {pi}"))?
        .to_owned();
    let confirmed = stripe
        .post(&format!("/v1/payment_intents/{intent}/confirm"), &[])
        .await?;
    anyhow::ensure!(confirmed["status"] == "succeeded", "{confirmed}");
    let pool = dropline_core::clients::mysql::connect(&env.config.mysql).await?;
    sqlx::query(
        "INSERT INTO orders (id, sale_id, user_id, quantity, amount, currency, status, \
           deadline_at, idempotency_key, created_at, updated_at) \
         VALUES (?, ?, ?, 1, 1000, 'KRW', 'paid', UTC_TIMESTAMP(3), 'k1', UTC_TIMESTAMP(3), \
           UTC_TIMESTAMP(3))",
    )
    .bind(order)
    .bind(sale)
    .bind(dropline_core::ids::UserId::new_v7())
    .execute(&pool)
    .await?;
    sqlx::query(
        "INSERT INTO payments (id, order_id, sale_id, amount, currency, status, provider_ref, \
           created_at, updated_at) \
         VALUES (?, ?, ?, 1000, 'KRW', 'approved', ?, UTC_TIMESTAMP(3), UTC_TIMESTAMP(3))",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(order)
    .bind(sale)
    .bind(&intent)
    .execute(&pool)
    .await?;
    sqlx::query(
        "INSERT INTO payment_intents (order_id, sale_id, state, payment_method, intent_id, \
           intent_status, created_at, updated_at) \
         VALUES (?, ?, 'created', 'pm_card_visa', ?, 'succeeded', UTC_TIMESTAMP(3), \
           UTC_TIMESTAMP(3))",
    )
    .bind(order)
    .bind(sale)
    .bind(&intent)
    .execute(&pool)
    .await?;
    pool.close().await;
    Ok(intent)
}

/// design/payments.md: `dropline payments reconcile <sale>` prints a JSON line per break and
/// exits 0 when Stripe and the books agree, 1 on a break (a paid order refunded at Stripe), 2
/// when it cannot check.
#[test]
fn payments_reconcile_exits_0_when_the_books_agree_1_on_a_break_2_when_it_cannot_check()
-> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let rt = tokio::runtime::Runtime::new()?;
    let stripe = rt.block_on(dropline_testkit::localstripe::LocalStripe::shared())?;
    let sale = rt.block_on(armed_sale(&env, 5))?;
    let intent = rt.block_on(paid_at_stripe(&env, stripe, sale))?;
    let run = |provider: &str, sale: &str| {
        let mut cmd = dropline();
        isolated(&mut cmd, &env);
        output(
            cmd.env("DROPLINE_PAYMENT__PROVIDER", provider)
                .env("DROPLINE_PAYMENT__STRIPE__API_BASE", stripe.base())
                .env(
                    "DROPLINE_PAYMENT__STRIPE__SECRET_KEY",
                    dropline_testkit::localstripe::SECRET_KEY,
                )
                .env("DROPLINE_PAYMENT__STRIPE__WEBHOOK_SECRET", "whsec_test")
                .args(["payments", "reconcile", sale]),
        )
    };
    let id = sale.to_string();

    let (code, stdout, stderr) = run("stripe", &id)?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.is_empty(), "no break: {stdout}");
    assert!(
        stderr.contains(
            "1 orders, 1 PaymentIntents read from Stripe, 0 in flight (not judged), 0 breaks"
        ),
        "{stderr}"
    );

    rt.block_on(stripe.post("/v1/refunds", &[("payment_intent", intent.clone())]))?;
    let (code, stdout, stderr) = run("stripe", &id)?;
    assert_eq!(code, 1, "{stdout}{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 1, "{stdout}");
    assert_eq!(lines[0]["break"], "paid_and_refunded");
    assert_eq!(lines[0]["sale_id"], id);
    assert_eq!(lines[0]["intent_id"], intent);
    assert_eq!(lines[0]["refunded"], 1000);

    // Cannot check: exit 2, said on stderr, nothing on stdout.
    for (provider, sale, said) in [
        ("stripe", "not-a-uuid", "not a sale id"),
        ("simulated", id.as_str(), "payment.provider is not `stripe`"),
        ("stripe", &uuid::Uuid::now_v7().to_string(), "no sale"),
    ] {
        let (code, stdout, stderr) = run(provider, sale)?;
        assert_eq!(code, 2, "{provider} {sale}: {stdout}{stderr}");
        assert!(stderr.contains(said), "{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
    }
    rt.block_on(env.cleanup())
}

#[test]
fn sale_rearm_refuses_a_malformed_id_before_connecting() -> anyhow::Result<()> {
    let (code, _, stderr) = output(
        dropline()
            .args(["sale", "rearm", "not-a-uuid"])
            .env("DROPLINE_MYSQL__URL", "mysql://root@127.0.0.1:1/none")
            .env("DROPLINE_REDIS__URL", "redis://127.0.0.1:1"),
    )?;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not a sale id"), "{stderr}");
    Ok(())
}

#[test]
fn migrate_creates_the_database_and_is_idempotent() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    for _ in 0..2 {
        let mut cmd = dropline();
        isolated(&mut cmd, &env);
        let (code, stdout, stderr) = output(cmd.arg("migrate"))?;
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("migrations up to date"), "{stdout}");
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(env.cleanup())
}

/// #17 hole 2: addresses stored before the canonical form are rewritten by the step after the
/// migrations; two accounts that would become one are left alone and named (by the step's log
/// and by `dropline user collisions`), and no service is stopped by them.
#[test]
fn stored_addresses_become_canonical_and_collisions_are_named() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let run = |args: &[&str]| {
        let mut cmd = dropline();
        isolated(&mut cmd, &env);
        output(cmd.args(args))
    };
    let (code, _, stderr) = run(&["migrate"])?;
    assert_eq!(code, 0, "{stderr}");
    let rt = tokio::runtime::Runtime::new()?;
    let mysql = rt.block_on(sqlx::MySqlPool::connect(&env.config.mysql.url))?;
    let insert = |email: &'static str| {
        let mysql = mysql.clone();
        async move {
            let id = uuid::Uuid::now_v7();
            sqlx::query(
                "INSERT INTO users (id, email, password_hash, name, role, email_verified_at, \
                 created_at, updated_at) VALUES (?, ?, 'x', 'n', 'buyer', UTC_TIMESTAMP(3), \
                 UTC_TIMESTAMP(3), UTC_TIMESTAMP(3))",
            )
            .bind(id)
            .bind(email)
            .execute(&mysql)
            .await?;
            anyhow::Ok(id)
        }
    };
    let email_of = |id: uuid::Uuid| {
        let mysql = mysql.clone();
        async move {
            let email: String = sqlx::query_scalar("SELECT email FROM users WHERE id = ?")
                .bind(id)
                .fetch_one(&mysql)
                .await?;
            anyhow::Ok(email)
        }
    };
    let step_done = || {
        let mysql = mysql.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM data_steps")
                .fetch_one(&mysql)
                .await?;
            anyhow::Ok(n == 1)
        }
    };
    // As an older version stored them: trimmed and lower-cased only.
    let (punycode, decomposed, b1, b2, invalid) = rt.block_on(async {
        let punycode = insert("anna@xn--bcher-kva.example").await?;
        let decomposed = insert("du\u{0308}@example.com").await?;
        let b1 = insert("bo@xn--bcher-kva.example").await?;
        let b2 = insert("bo@bücher.example").await?;
        let invalid = insert("cy@xn--zz.example").await?;
        sqlx::query("DELETE FROM data_steps")
            .execute(&mysql)
            .await?;
        anyhow::Ok((punycode, decomposed, b1, b2, invalid))
    })?;

    let (code, stdout, stderr) = run(&["user", "collisions"])?;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("bo@bücher.example"), "{stdout}");
    for id in [b1, b2, invalid] {
        assert!(
            stdout.contains(&id.to_string()),
            "{id} not listed:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("2 stored address(es) to be rewritten"),
        "{stdout}"
    );

    let (code, _, stderr) = run(&["migrate"])?;
    assert_eq!(code, 0, "a collision stopped the migration: {stderr}");
    assert!(
        stderr.contains(&b1.to_string()),
        "collision not named: {stderr}"
    );
    rt.block_on(async {
        assert_eq!(email_of(punycode).await?, "anna@bücher.example");
        assert_eq!(email_of(decomposed).await?, "dü@example.com");
        assert_eq!(email_of(b1).await?, "bo@xn--bcher-kva.example");
        assert_eq!(email_of(b2).await?, "bo@bücher.example");
        assert!(!step_done().await?, "step recorded with a collision left");
        // The operator resolves it; the next start completes the step.
        sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(b2)
            .execute(&mysql)
            .await?;
        anyhow::Ok(())
    })?;
    let (code, _, stderr) = run(&["migrate"])?;
    assert_eq!(code, 0, "{stderr}");
    rt.block_on(async {
        assert_eq!(email_of(b1).await?, "bo@bücher.example");
        assert!(step_done().await?);
        anyhow::Ok(())
    })?;
    let (code, stdout, _) = run(&["user", "collisions"])?;
    assert_eq!(code, 0, "{stdout}");
    rt.block_on(mysql.close());
    rt.block_on(env.cleanup())
}

#[test]
fn all_serves_both_services_until_sigterm() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let mut cmd = dropline();
    isolated(&mut cmd, &env);
    let mut child = Reaped(
        cmd.args(["all", "--demo"])
            .env("DROPLINE_LOG_FILTER", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?,
    );
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    // The logs (written by their own thread): read to the end, so that the pipe never fills.
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let logs = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
        text
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut urls = Vec::new();
    let mut demo = false;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        if let Some(url) = line.split("listening on ").nth(1) {
            urls.push(url.trim().to_owned());
        }
        demo |= line.contains("waiting page:");
        if line.starts_with("ready:") {
            break;
        }
    }
    let result = (|| -> anyhow::Result<()> {
        assert_eq!(urls.len(), 2, "both services print their address: {urls:?}");
        assert!(demo, "--demo prints the waiting page URL");
        let rt = tokio::runtime::Runtime::new()?;
        rt.block_on(async {
            for url in &urls {
                let r = reqwest::get(format!("{url}/readyz")).await?;
                assert_eq!(r.status(), 200, "{url}/readyz");
                let metrics = reqwest::get(format!("{url}/metrics")).await?.text().await?;
                assert!(
                    metrics.contains("dropline_log_lines_dropped_total 0"),
                    "{url}/metrics counts dropped log lines"
                );
            }
            Ok::<_, anyhow::Error>(())
        })
    })();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    assert!(kill.success());
    let status = child.wait()?;
    result?;
    assert!(status.success(), "exit after SIGTERM: {status:?}");
    // Lines logged while shutting down are written out before the process ends.
    let logs = logs
        .join()
        .map_err(|_| anyhow::anyhow!("the stderr reader panicked"))?;
    assert!(
        logs.contains("shutdown requested"),
        "the shutdown is in the logs: {logs}"
    );
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(env.cleanup())
}

#[test]
fn user_create_makes_a_verified_account_and_refuses_bad_input() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let run = |args: &[&str]| {
        let mut cmd = dropline();
        isolated(&mut cmd, &env);
        // Cheap hashing keeps the test fast; the cost itself is configuration.
        cmd.env("DROPLINE_AUTH__ARGON2_MEMORY_KIB", "1024")
            .env("DROPLINE_AUTH__ARGON2_ITERATIONS", "1");
        output(cmd.args(args))
    };
    let (code, stdout, stderr) = run(&[
        "user",
        "create",
        "--email",
        "Admin@Example.com",
        "--password",
        "correct-horse",
        "--admin",
    ])?;
    assert_eq!(code, 0, "{stderr}");
    let id: uuid::Uuid = stdout.trim().parse()?;

    let (code, _, stderr) = run(&[
        "user",
        "create",
        "--email",
        "admin@example.com",
        "--password",
        "another-pass",
    ])?;
    assert_eq!(code, 2);
    assert!(stderr.contains("already registered"), "{stderr}");
    let (code, _, stderr) = run(&[
        "user",
        "create",
        "--email",
        "x@example.com",
        "--password",
        "short",
    ])?;
    assert_eq!(code, 2);
    assert!(stderr.contains("8 to 128"), "{stderr}");
    let (code, _, stderr) = run(&[
        "user",
        "create",
        "--email",
        "not-an-email",
        "--password",
        "long-enough",
    ])?;
    assert_eq!(code, 2);
    assert!(stderr.contains("not an e-mail address"), "{stderr}");

    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let pool = dropline_core::clients::mysql::connect(&env.config.mysql).await?;
        let (email, role, verified, hash): (
            String,
            String,
            Option<chrono::DateTime<chrono::Utc>>,
            String,
        ) = sqlx::query_as(
            "SELECT email, role, email_verified_at, password_hash FROM users WHERE id = ?",
        )
        .bind(id)
        .fetch_one(&pool)
        .await?;
        assert_eq!(email, "admin@example.com");
        assert_eq!(role, "admin");
        assert!(verified.is_some(), "created verified");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        pool.close().await;
        env.cleanup().await
    })
}

#[test]
fn loadtest_seed_is_refused_unless_allowed_before_connecting() -> anyhow::Result<()> {
    let unreachable = |cmd: &mut Command| {
        cmd.env("DROPLINE_MYSQL__URL", "mysql://root@127.0.0.1:1/none")
            .args(["loadtest", "seed", "--users", "5"]);
    };
    let mut cmd = dropline();
    unreachable(&mut cmd);
    let (code, _, stderr) = output(&mut cmd)?;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("loadtest.allow"), "{stderr}");
    assert!(stderr.contains("nothing was changed"), "{stderr}");

    // Allowed, but no key to sign the tokens with: refused too, still before connecting.
    let mut cmd = dropline();
    unreachable(&mut cmd);
    cmd.env("DROPLINE_LOADTEST__ALLOW", "true");
    let (code, _, stderr) = output(&mut cmd)?;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("auth.signing_key_file"), "{stderr}");

    for bad in [
        vec!["--users", "0"],
        vec!["--users", "5", "--password", "short"],
    ] {
        let mut cmd = dropline();
        cmd.env("DROPLINE_MYSQL__URL", "mysql://root@127.0.0.1:1/none")
            .env("DROPLINE_LOADTEST__ALLOW", "true")
            .args(["loadtest", "seed"])
            .args(&bad);
        let (code, _, stderr) = output(&mut cmd)?;
        assert_eq!(code, 2, "{bad:?}: {stderr}");
    }
    Ok(())
}

#[test]
fn loadtest_seed_makes_verified_buyers_whose_tokens_the_api_accepts() -> anyhow::Result<()> {
    use dropline_core::auth::keys::{KeyRing, SigningKeyPair};
    use dropline_core::auth::tokens::{Role, verify_access};
    let env = TestEnv::new()?;
    let dir = tempfile::tempdir()?;
    let key_path = dir.path().join("access.pem");
    let pem = SigningKeyPair::generate()?.to_pem()?;
    std::fs::write(&key_path, &pem)?;
    let ring = KeyRing::new(Some(SigningKeyPair::from_pem(&pem)?), Vec::new())?;
    let seed = |users: &str, out: &std::path::Path| {
        let mut cmd = dropline();
        isolated(&mut cmd, &env);
        cmd.env("DROPLINE_AUTH__ARGON2_MEMORY_KIB", "1024")
            .env("DROPLINE_AUTH__ARGON2_ITERATIONS", "1")
            .env("DROPLINE_AUTH__SIGNING_KEY_FILE", &key_path)
            .env("DROPLINE_LOADTEST__ALLOW", "true")
            .args(["loadtest", "seed", "--users", users, "--out"])
            .arg(out);
        output(&mut cmd)
    };
    // 1,500: more than one INSERT statement.
    let first = dir.path().join("first.tsv");
    let (code, _, stderr) = seed("1500", &first)?;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("seeded 1500"), "{stderr}");
    // Seeding again adds buyers; nothing collides with the first run.
    let second = dir.path().join("second.tsv");
    let (code, _, stderr) = seed("3", &second)?;
    assert_eq!(code, 0, "{stderr}");

    let mut lines = Vec::new();
    for file in [&first, &second] {
        for line in std::fs::read_to_string(file)?.lines() {
            let [id, email, token] = line.split('\t').collect::<Vec<_>>()[..] else {
                anyhow::bail!("malformed line {line:?}");
            };
            let id: dropline_core::ids::UserId = id.parse()?;
            let claims = verify_access(&ring, token)?;
            assert_eq!(claims.sub, id, "the token names its buyer");
            assert_eq!(claims.role, Role::Buyer);
            lines.push((id, email.to_owned()));
        }
    }
    assert_eq!(lines.len(), 1503);
    let ids: std::collections::HashSet<_> = lines.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), 1503, "distinct buyers");

    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let pool = dropline_core::clients::mysql::connect(&env.config.mysql).await?;
        let (count, verified): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COUNT(email_verified_at) FROM users \
             WHERE role = 'buyer' AND email LIKE 'load-%@loadtest.invalid'",
        )
        .fetch_one(&pool)
        .await?;
        assert_eq!((count, verified), (1503, 1503));
        // The shared password logs any of them in.
        let (id, email) = &lines[1234];
        let (stored_email, hash): (String, String) =
            sqlx::query_as("SELECT email, password_hash FROM users WHERE id = ?")
                .bind(id)
                .fetch_one(&pool)
                .await?;
        assert_eq!(&stored_email, email);
        let hasher = dropline_core::auth::password::Hasher::new(1024, 1, 1)?;
        assert!(hasher.verify("loadtest-password", &hash)?);
        pool.close().await;
        env.cleanup().await
    })
}

#[test]
fn api_needs_its_keys_and_starts_with_configured_ones() -> anyhow::Result<()> {
    use dropline_core::auth::keys::SigningKeyPair;
    // Nothing reachable: the key check must come before any connection attempt.
    let unreachable = |cmd: &mut Command| {
        cmd.env("DROPLINE_MYSQL__URL", "mysql://root@127.0.0.1:1/none")
            .env("DROPLINE_REDIS__URL", "redis://127.0.0.1:1")
            .env("DROPLINE_AMQP__URL", "amqp://guest:guest@127.0.0.1:1/%2f");
    };
    let mut cmd = dropline();
    unreachable(&mut cmd);
    let (code, _, stderr) = output(cmd.arg("api"))?;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("auth.signing_key_file"), "{stderr}");

    let dir = tempfile::tempdir()?;
    let key_path = dir.path().join("access.pem");
    std::fs::write(&key_path, SigningKeyPair::generate()?.to_pem()?)?;
    let mut cmd = dropline();
    unreachable(&mut cmd);
    cmd.env("DROPLINE_AUTH__SIGNING_KEY_FILE", &key_path);
    let (code, _, stderr) = output(cmd.arg("api"))?;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("passes.verify_key_files"), "{stderr}");

    let pass_pub = dir.path().join("pass.pub.pem");
    std::fs::write(&pass_pub, SigningKeyPair::generate()?.public()?.to_pem()?)?;
    let mut cmd = dropline();
    unreachable(&mut cmd);
    cmd.env("DROPLINE_AUTH__SIGNING_KEY_FILE", &key_path).env(
        "DROPLINE_PASSES__VERIFY_KEY_FILES",
        format!("[\"{}\"]", pass_pub.display()),
    );
    let (code, _, stderr) = output(cmd.arg("api"))?;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("pii.key_file"), "{stderr}");

    // A malformed PII key is a configuration error naming the key.
    let (code, _, stderr) = output(
        dropline()
            .args(["config", "check"])
            .env("DROPLINE_PII__KEY", "c2hvcnQ="),
    )?;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("pii.key"), "{stderr}");

    // With both keys the api starts and is ready.
    let env = TestEnv::new()?;
    let mut cmd = dropline();
    isolated(&mut cmd, &env);
    let mut child = Reaped(
        cmd.arg("api")
            .env("DROPLINE_AUTH__SIGNING_KEY_FILE", &key_path)
            .env(
                "DROPLINE_PASSES__VERIFY_KEY_FILES",
                format!("[\"{}\"]", pass_pub.display()),
            )
            .env(
                "DROPLINE_PII__KEY",
                dropline_core::config::pii_key::random_key_base64(),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("listening on "));
    let result = (|| -> anyhow::Result<()> {
        let url = line
            .as_deref()
            .and_then(|l| l.split("listening on ").nth(1))
            .ok_or_else(|| anyhow::anyhow!("the api did not print its address"))?
            .trim()
            .to_owned();
        let rt = tokio::runtime::Runtime::new()?;
        rt.block_on(async {
            let r = reqwest::get(format!("{url}/readyz")).await?;
            assert_eq!(r.status(), 200);
            Ok(())
        })
    })();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    let status = child.wait()?;
    result?;
    assert!(status.success(), "{status:?}");
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(env.cleanup())
}

#[test]
fn waitroom_needs_its_keys() -> anyhow::Result<()> {
    use dropline_core::auth::keys::SigningKeyPair;
    // Nothing reachable: the key check must come before any connection attempt.
    let unreachable = |cmd: &mut Command| {
        cmd.env("DROPLINE_REDIS__URL", "redis://127.0.0.1:1");
    };
    let mut cmd = dropline();
    unreachable(&mut cmd);
    let (code, _, stderr) = output(cmd.arg("waitroom"))?;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("auth.verify_key_files"), "{stderr}");

    let dir = tempfile::tempdir()?;
    let access_pub = dir.path().join("access.pub.pem");
    std::fs::write(&access_pub, SigningKeyPair::generate()?.public()?.to_pem()?)?;
    let mut cmd = dropline();
    unreachable(&mut cmd);
    cmd.env(
        "DROPLINE_AUTH__VERIFY_KEY_FILES",
        format!("[\"{}\"]", access_pub.display()),
    );
    let (code, _, stderr) = output(cmd.arg("waitroom"))?;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("passes.signing_key_file"), "{stderr}");

    // A page setting that cannot work is a configuration error too, before any connection.
    let pass_key = dir.path().join("pass.pem");
    std::fs::write(&pass_key, SigningKeyPair::generate()?.to_pem()?)?;
    for (key, value) in [
        ("DROPLINE_WAITROOM__API_BASE_URL", "ftp://example.com"),
        (
            "DROPLINE_WAITROOM__PAGE_TEMPLATE_FILE",
            "/nonexistent/waiting.html",
        ),
        // Stripe without a publishable key: the page could not take a card.
        ("DROPLINE_PAYMENT__PROVIDER", "stripe"),
    ] {
        let mut cmd = dropline();
        unreachable(&mut cmd);
        cmd.env(
            "DROPLINE_AUTH__VERIFY_KEY_FILES",
            format!("[\"{}\"]", access_pub.display()),
        )
        .env("DROPLINE_PASSES__SIGNING_KEY_FILE", &pass_key)
        .env(key, value);
        let (code, _, stderr) = output(cmd.arg("waitroom"))?;
        assert_eq!(code, 2, "{key}: {stderr}");
        let named = key
            .trim_start_matches("DROPLINE_")
            .replace("__", ".")
            .to_ascii_lowercase();
        assert!(stderr.contains(&named), "{key}: {stderr}");
        if value == "stripe" {
            assert!(
                stderr.contains("payment.stripe.publishable_key"),
                "{key}: {stderr}"
            );
        }
    }

    // With both keys the key check passes and it goes on to connect (and fails: no Redis).
    let mut cmd = dropline();
    unreachable(&mut cmd);
    cmd.env(
        "DROPLINE_AUTH__VERIFY_KEY_FILES",
        format!("[\"{}\"]", access_pub.display()),
    )
    .env("DROPLINE_PASSES__SIGNING_KEY_FILE", &pass_key)
    .env("DROPLINE_REDIS__CONNECT_TIMEOUT_SECONDS", "1");
    let (code, _, stderr) = output(cmd.arg("waitroom"))?;
    assert_ne!(code, 0, "{stderr}");
    assert!(!stderr.contains("verify_key_files"), "{stderr}");
    assert!(!stderr.contains("signing_key_file"), "{stderr}");
    Ok(())
}
