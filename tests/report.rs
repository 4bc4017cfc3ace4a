//! The post-sale report (#24) end to end: a small sale run through the real waiting room, api
//! and workers, with known numbers of joins, leaves, admissions, orders and payments (one
//! declined); the report's counts must match exactly, its time-in-line percentiles the waits
//! this test measured (within 10 %), and it must survive Redis losing the sale's keys once
//! copied (MySQL is the record). A second test rate-limits one client and finds the refusals
//! counted.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{SecondsFormat, Utc};
use dropline_core::auth::tokens::{self, Role};
use dropline_core::clients::deps::{Deps, Needs};
use dropline_core::ids::{SaleId, UserId};
use dropline_testkit::TestEnv;
use dropline_workers::Kind;
use fred::prelude::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Rig {
    env: TestEnv,
    deps: Deps,
    waitroom: String,
    api: String,
    http: reqwest::Client,
    access: dropline_core::auth::keys::KeyRing,
    admin: String,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Rig {
    async fn start(extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let mut overrides = vec![
            ("WAITROOM__JOIN_PER_IP_PER_MINUTE", "1000000"),
            ("WAITROOM__STATUS_PER_IP_PER_MINUTE", "1000000"),
            ("WAITROOM__STATUS_PER_USER_PER_MINUTE", "1000000"),
            ("PAYMENT__SIM_LATENCY_MS", "5"),
            ("EXPIRY__SWEEP_INTERVAL_SECONDS", "1"),
            ("MYSQL__MAX_CONNECTIONS", "20"),
            ("REDIS__POOL_SIZE", "4"),
        ];
        overrides.extend_from_slice(extra);
        let env = TestEnv::with_overrides(&overrides)?;
        let mut config = env.config.clone();
        dropline_core::auth::keys::fill_dev_secrets(&mut config)?;
        let access =
            dropline_core::auth::keys::access_ring(&config.auth)?.context("no access ring")?;
        let deps = Deps::connect(&config, Needs::ALL).await?;
        let waitroom = dropline_waitroom::build(
            &config,
            &deps,
            dropline_waitroom::Secrets::from_config(&config)?,
        )
        .await?;
        let api = dropline_api::build(&config, &deps, dropline_api::Secrets::from_config(&config)?)
            .await?;
        let (waitroom_base, api_base) = (
            format!("http://{}", waitroom.addr()),
            format!("http://{}", api.addr()),
        );
        let stop = CancellationToken::new();
        let admitter = dropline_waitroom::admitter::spawn(
            deps.redis()?.clone(),
            config.waitroom.clone(),
            format!("report-test:{}", UserId::new_v7()),
            Duration::from_secs(config.alerts.stall_after_seconds),
            stop.clone(),
        );
        let tasks = vec![
            tokio::spawn(async move {
                admitter.await?;
                Ok(())
            }),
            tokio::spawn(waitroom.run(stop.clone())),
            tokio::spawn(api.run(stop.clone())),
            tokio::spawn({
                let (config, deps, stop) = (config.clone(), deps.clone(), stop.clone());
                async move { dropline_workers::run(Kind::All, &config, &deps, stop).await }
            }),
        ];
        let admin_id = UserId::new_v7();
        let mut rig = Self {
            env,
            deps,
            waitroom: waitroom_base,
            api: api_base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            admin: String::new(),
            access,
            stop,
            tasks,
        };
        rig.users(&[admin_id], "admin").await?;
        rig.admin =
            tokens::issue_access(&rig.access, admin_id, Role::Admin, Duration::from_secs(900))?.0;
        Ok(rig)
    }

    fn mysql(&self) -> anyhow::Result<&sqlx::MySqlPool> {
        self.deps.mysql()
    }

    fn redis(&self) -> anyhow::Result<&dropline_core::clients::redis::Redis> {
        self.deps.redis()
    }

    async fn users(&self, ids: &[UserId], role: &str) -> anyhow::Result<()> {
        let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new(
            "INSERT INTO users (id, email, password_hash, name, role, email_verified_at, created_at, updated_at) ",
        );
        q.push_values(ids, |mut b, id| {
            b.push_bind(*id)
                .push_bind(format!("{}@report.example", id.as_uuid().simple()))
                .push_bind("not-a-hash")
                .push_bind("Buyer")
                .push_bind(role)
                .push_bind(Utc::now())
                .push_bind(Utc::now())
                .push_bind(Utc::now());
        });
        q.build().execute(self.mysql()?).await?;
        Ok(())
    }

    fn token(&self, user: UserId) -> anyhow::Result<String> {
        Ok(tokens::issue_access(&self.access, user, Role::Buyer, Duration::from_secs(900))?.0)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: String,
        bearer: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self.http.request(method, url).bearer_auth(bearer);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    async fn sale(&self, stock: i64, rate: i64) -> anyhow::Result<SaleId> {
        let (status, product) = self
            .call(
                reqwest::Method::POST,
                format!("{}/api/admin/products", self.api),
                &self.admin,
                &[],
                Some(json!({"name": "Report chair", "price": 1_000})),
            )
            .await?;
        anyhow::ensure!(status == StatusCode::CREATED, "product: {status} {product}");
        let opens = (Utc::now() - chrono::Duration::seconds(1))
            .to_rfc3339_opts(SecondsFormat::Millis, true);
        let (status, sale) = self
            .call(
                reqwest::Method::POST,
                format!("{}/api/admin/sales", self.api),
                &self.admin,
                &[],
                Some(
                    json!({"product_id": product["id"], "stock": stock, "per_user_limit": 1,
                       "opens_at": opens, "admit_per_second": rate}),
                ),
            )
            .await?;
        anyhow::ensure!(status == StatusCode::CREATED, "sale: {status} {sale}");
        Ok(SaleId::parse_str(sale["id"].as_str().context("sale id")?)?)
    }

    async fn report(&self, sale: SaleId) -> anyhow::Result<Value> {
        // The copy the expiry worker makes every few seconds, made now.
        dropline_audit::sale_report::copy(self.redis()?, self.mysql()?, sale)
            .await?
            .context("the sale is in MySQL")?;
        // Past the api's one-second cache.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (status, report) = self
            .call(
                reqwest::Method::GET,
                format!("{}/api/admin/sales/{sale}/report", self.api),
                &self.admin,
                &[],
                None,
            )
            .await?;
        anyhow::ensure!(status == StatusCode::OK, "report: {status} {report}");
        Ok(report)
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(15), task).await???;
        }
        self.deps.close().await;
        self.env.cleanup().await
    }
}

/// The ⌈q·n⌉-th smallest (the report's rank rule).
fn rank(sorted: &[f64], q: f64) -> f64 {
    let k = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[k - 1]
}

fn close(reported: f64, measured: f64) -> bool {
    // 10 %, and the 50 ms this test polls at.
    (reported - measured).abs() <= 0.1 * measured + 0.05
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_report_counts_a_small_sale_exactly_and_outlives_redis() -> anyhow::Result<()> {
    let rig = Rig::start(&[("WAITROOM__ADMISSION_WINDOW_SECONDS", "4")]).await?;
    let sale = rig.sale(10, 1).await?;
    let buyers: Vec<UserId> = (0..10).map(|_| UserId::new_v7()).collect();
    rig.users(&buyers, "buyer").await?;

    // Ten join, one after another; the last two leave at once.
    let mut waiting = Vec::new();
    for (i, user) in buyers.iter().enumerate() {
        let token = rig.token(*user)?;
        let (status, joined) = rig
            .call(
                reqwest::Method::POST,
                format!("{}/w/{sale}/join", rig.waitroom),
                &token,
                &[],
                Some(json!({})),
            )
            .await?;
        let answered = Instant::now();
        anyhow::ensure!(status == StatusCode::OK, "join: {status} {joined}");
        let ticket = joined["ticket"].as_str().context("ticket")?.to_owned();
        if i >= 8 {
            let (status, _) = rig
                .call(
                    reqwest::Method::DELETE,
                    format!("{}/w/{sale}/join", rig.waitroom),
                    &ticket,
                    &[],
                    None,
                )
                .await?;
            anyhow::ensure!(status == StatusCode::NO_CONTENT, "leave: {status}");
        } else {
            waiting.push((*user, token, ticket, answered, joined["state"].clone()));
        }
    }

    // The eight poll every 50 ms until admitted (the wait measured as door.md §3 does); the
    // first five order at once, four pay and one is declined; three never order.
    let mut polls = Vec::new();
    for (i, (_, token, ticket, answered, state)) in waiting.into_iter().enumerate() {
        let http = rig.http.clone();
        let url = format!("{}/w/{sale}/status", rig.waitroom);
        let api = rig.api.clone();
        polls.push(tokio::spawn(async move {
            let mut last = state;
            let deadline = Instant::now() + Duration::from_secs(40);
            let (waited, pass) = loop {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "never admitted (last state {last})"
                );
                let response = http.get(&url).bearer_auth(&ticket).send().await?;
                let body: Value = response.json().await?;
                if body["state"] == "admitted" {
                    let waited = answered.elapsed().as_secs_f64();
                    break (waited, body["pass"].as_str().context("pass")?.to_owned());
                }
                last = body["state"].clone();
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            if i >= 5 {
                return Ok::<_, anyhow::Error>((waited, None));
            }
            let response = http
                .post(format!("{api}/api/orders"))
                .bearer_auth(&token)
                .header("Dropline-Pass", &pass)
                .header("Idempotency-Key", "report")
                .json(&json!({"sale_id": sale.to_string(), "quantity": 1}))
                .send()
                .await?;
            let status = response.status();
            let order: Value = response.json().await?;
            anyhow::ensure!(status == StatusCode::CREATED, "order: {status} {order}");
            let id = order["id"].as_str().context("order id")?.to_owned();
            let card = if i == 0 { "tok_fail" } else { "tok_ok" };
            let response = http
                .post(format!("{api}/api/orders/{id}/pay"))
                .bearer_auth(&token)
                .json(&json!({"card_token": card}))
                .send()
                .await?;
            anyhow::ensure!(
                response.status() == StatusCode::ACCEPTED,
                "pay: {}",
                response.status()
            );
            let want = if i == 0 { "failed" } else { "paid" };
            Ok((waited, Some((id, token, want))))
        }));
    }
    let mut waits = Vec::new();
    let mut orders = Vec::new();
    for poll in polls {
        let (waited, order) = poll.await??;
        waits.push(waited);
        orders.extend(order);
    }
    waits.sort_by(f64::total_cmp);
    for (id, token, want) in &orders {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, order) = rig
                .call(
                    reqwest::Method::GET,
                    format!("{}/api/orders/{id}", rig.api),
                    token,
                    &[],
                    None,
                )
                .await?;
            if order["status"] == *want {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "order {id}: {order} never {want}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Every pass expires (window 4 s) and MySQL has every arrow.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let report = rig.report(sale).await?;
    let funnel = &report["funnel"];
    let expect = json!({
        "joined": 10, "admitted": 8, "ordered": 5, "paid": 4, "left_line": 2, "abandoned": 0,
        "pass_expired_unused": 3, "hold_expired": 0, "cancelled": 0, "payment_failed": 1,
        "refunded": 0,
    });
    assert_eq!(funnel, &expect, "{report:#}");
    let series = report["series"].as_array().context("series")?;
    let sum = |field: &str| series.iter().filter_map(|s| s[field].as_u64()).sum::<u64>();
    assert_eq!(sum("arrivals"), 10, "{report:#}");
    assert_eq!(sum("admissions"), 8, "{report:#}");
    assert_eq!(sum("orders"), 5, "{report:#}");
    assert_eq!(report["arrivals_before_open"], 0);
    assert!(report["sold_out_at"].is_null(), "{report:#}");

    let line = &report["time_in_line"];
    assert_eq!(line["count"], 8, "{report:#}");
    for (q, field) in [(0.5, "p50"), (0.9, "p90"), (0.99, "p99")] {
        let reported = line[field].as_f64().context("percentile")?;
        let measured = rank(&waits, q);
        assert!(
            close(reported, measured),
            "{field}: reported {reported} s, measured {measured} s (waits {waits:?})"
        );
    }
    let eta = &report["eta_accuracy"];
    assert_eq!(eta["count"], 8, "{report:#}");
    assert!(eta["share_within"].as_f64().is_some(), "{report:#}");
    assert!(
        eta["median_abs_error_seconds"].as_f64().is_some(),
        "{report:#}"
    );

    // Redis loses the sale's report keys (and the room's totals): MySQL keeps the record, and
    // a copy after the loss changes nothing.
    let redis = rig.redis()?;
    for name in ["rep", "rps", "wt", "wr"] {
        let _: i64 = redis.pool().del(redis.sale_key(sale, name)).await?;
    }
    let after = rig.report(sale).await?;
    assert_eq!(after["funnel"], report["funnel"]);
    assert_eq!(after["series"], report["series"]);
    assert_eq!(after["time_in_line"], report["time_in_line"]);
    assert_eq!(after["eta_accuracy"], report["eta_accuracy"]);

    // An unknown sale is 404; a buyer is not an administrator.
    let (status, _) = rig
        .call(
            reqwest::Method::GET,
            format!("{}/api/admin/sales/{}/report", rig.api, SaleId::new_v7()),
            &rig.admin,
            &[],
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let buyer = rig.token(buyers[0])?;
    let (status, _) = rig
        .call(
            reqwest::Method::GET,
            format!("{}/api/admin/sales/{sale}/report", rig.api),
            &buyer,
            &[],
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    rig.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_joins_are_counted_by_reason() -> anyhow::Result<()> {
    let rig = Rig::start(&[("WAITROOM__JOIN_PER_USER_PER_MINUTE", "3")]).await?;
    let sale = rig.sale(10, 100).await?;
    let user = UserId::new_v7();
    rig.users(&[user], "buyer").await?;
    let token = rig.token(user)?;
    let mut limited = 0;
    for _ in 0..10 {
        let (status, _) = rig
            .call(
                reqwest::Method::POST,
                format!("{}/w/{sale}/join", rig.waitroom),
                &token,
                &[],
                Some(json!({})),
            )
            .await?;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
        }
    }
    assert!(limited >= 5, "only {limited} joins were rate limited");
    // The waiting room flushes its counts once a second.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let report = rig.report(sale).await?;
    assert_eq!(
        report["refusals"],
        json!({"rate_limited": limited, "queue_full": 0, "pow": 0, "access_code": 0}),
        "{report:#}"
    );
    assert_eq!(report["funnel"]["joined"], 1);

    // The report's page: HTML under a CSP with no inline script, and its fingerprinted script.
    let page = rig
        .http
        .get(format!("{}/w/{sale}/report", rig.waitroom))
        .send()
        .await?;
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await?;
    assert!(
        html.contains(&format!("/api/admin/sales/{sale}/report")),
        "{html}"
    );
    let scripts: Vec<&str> = html
        .split("src=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    // The shared sign-in (admin.js) first, then the report's own script.
    assert!(
        scripts.len() == 2
            && scripts[0].starts_with("/w/assets/admin.js?v=")
            && scripts[1].starts_with("/w/assets/report.js?v="),
        "{scripts:?}"
    );
    let script = scripts[1];
    let js = rig
        .http
        .get(format!("{}{script}", rig.waitroom))
        .send()
        .await?;
    assert_eq!(js.status(), StatusCode::OK);
    assert!(js.text().await?.contains("createElementNS"));
    rig.stop().await
}
