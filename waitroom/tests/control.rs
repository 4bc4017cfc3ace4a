//! The control room's data endpoint (`GET /w/{sale}/control/data`) and page over real HTTP
//! against the machine's real Redis: admins only, and the figures of a sale with buyers
//! waiting, admitted, and stock held, paying and sold through the real order scripts. Each test
//! runs its own waitroom server on a free port with its own key prefix ([`TestEnv`]).

use std::time::Duration;

use dropline_core::auth::keys::KeyRing;
use dropline_core::auth::tokens::{self, Role};
use dropline_core::ids::{OrderId, SaleId, UserId};
use dropline_core::orders::{Orders, ReserveOutcome, ReserveRequest};
use dropline_core::sale::{self, SaleConfig};
use dropline_testkit::assert_error;
use dropline_waitroom::queue::{AdmitParams, WaitQueue};
use fred::prelude::*;
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

mod common;

// One waitroom server and what a test needs around it (`common::Server`, with this file's
// calls below).
use common::Server as Room;

impl Room {
    async fn start() -> anyhow::Result<Self> {
        Self::launch(&[]).await
    }

    async fn sale(&self, tweak: impl FnOnce(&mut SaleConfig)) -> anyhow::Result<SaleId> {
        let id = SaleId::new_v7();
        let mut cfg = SaleConfig {
            per_user_limit: 2,
            ..common::open_sale()
        };
        tweak(&mut cfg);
        sale::arm(self.redis()?, id, &cfg).await?;
        Ok(id)
    }

    async fn get(
        &self,
        path: &str,
        bearer: Option<&str>,
    ) -> anyhow::Result<(StatusCode, reqwest::header::HeaderMap, String)> {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        Ok((status, headers, response.text().await?))
    }

    async fn data(&self, sale: &str, bearer: Option<&str>) -> anyhow::Result<(StatusCode, Value)> {
        let (status, _, text) = self.get(&format!("/w/{sale}/control/data"), bearer).await?;
        let body = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{status}: not JSON ({e}): {text}"))?;
        Ok((status, body))
    }

    async fn join(&self, sale: SaleId) -> anyhow::Result<UserId> {
        let user = UserId::new_v7();
        let response = self
            .http
            .post(format!("{}/w/{sale}/join", self.base))
            .bearer_auth(self.token(user)?)
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == StatusCode::OK,
            "join: {}",
            response.status()
        );
        Ok(user)
    }
}

#[tokio::test]
async fn control_data_is_for_administrators_only() -> anyhow::Result<()> {
    let room = Room::start().await?;
    let sale = room.sale(|_| {}).await?.to_string();
    let (status, body) = room.data(&sale, None).await?;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, body) = room.data(&sale, Some("not.a.token")).await?;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let buyer = room.token(UserId::new_v7())?;
    let (status, body) = room.data(&sale, Some(&buyer)).await?;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    // A token signed by another key is not an access token of this deployment.
    let stranger = KeyRing::new(
        Some(dropline_core::auth::keys::SigningKeyPair::generate()?),
        vec![],
    )?;
    let forged = tokens::issue_access(
        &stranger,
        UserId::new_v7(),
        Role::Admin,
        Duration::from_secs(60),
    )?
    .0;
    let (status, body) = room.data(&sale, Some(&forged)).await?;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");

    let admin = room.token_as(UserId::new_v7(), Role::Admin)?;
    let (status, body) = room.data(&sale, Some(&admin)).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["sale_id"], sale.as_str());
    // A sale id that is not a UUID, and a sale Redis does not know.
    let (status, body) = room.data("not-a-sale", Some(&admin)).await?;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = room.data(&Uuid::now_v7().to_string(), Some(&admin)).await?;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    room.stop().await
}

#[tokio::test]
async fn control_data_shows_the_line_admissions_stock_and_orders() -> anyhow::Result<()> {
    let room = Room::start().await?;
    let sale = room
        .sale(|c| {
            c.stock_total = 10;
            c.max_active = Some(5);
        })
        .await?;
    let mut buyers = Vec::new();
    for _ in 0..6 {
        buyers.push(room.join(sale).await?);
    }
    let params = AdmitParams::new(
        3,
        Duration::from_secs(room.config.waitroom.abandon_after_seconds),
        Duration::from_secs(room.config.waitroom.admission_window_seconds),
    );
    let admitted = WaitQueue::new(room.redis()?, sale)
        .admit(&params)
        .await?
        .ok_or_else(|| anyhow::anyhow!("sale not armed"))?
        .admitted;
    assert_eq!(admitted, buyers[..3].to_vec());

    // The first admitted buyer holds 2 units, the second is paying for 1, the third paid 1.
    let orders = Orders::new(room.redis()?, sale);
    let mut ids = Vec::new();
    for (buyer, quantity) in admitted.iter().zip([2, 1, 1]) {
        let order = OrderId::new_v7();
        let outcome = orders
            .reserve(&ReserveRequest {
                order,
                user: *buyer,
                quantity,
                idempotency_key: format!("k-{order}"),
            })
            .await?;
        assert!(matches!(outcome, ReserveOutcome::Created(_)), "{outcome:?}");
        ids.push(order);
    }
    let timeout = Duration::from_secs(30);
    assert!(orders.begin_payment(ids[1], timeout).await?.applied());
    assert!(orders.begin_payment(ids[2], timeout).await?.applied());
    assert!(orders.confirm(ids[2]).await?.applied());

    let admin = room.token_as(UserId::new_v7(), Role::Admin)?;
    let (status, body) = room.data(&sale.to_string(), Some(&admin)).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "open", "{body}");
    let queue = &body["queue"];
    assert_eq!(queue["length"], 3, "{body}");
    assert_eq!(queue["skipped"], 0, "{body}");
    assert_eq!(queue["admitted_total"], 3, "{body}");
    assert_eq!(queue["abandoned_total"], 0, "{body}");
    assert_eq!(queue["active"], 2, "the paid buyer's slot is free: {body}");
    assert_eq!(queue["max_active"], 5, "{body}");
    assert_eq!(queue["admit_per_second"], 100, "{body}");
    assert_eq!(
        queue["admit_rate"],
        Value::Null,
        "nothing measured yet: {body}"
    );
    let stock = &body["stock"];
    assert_eq!(stock["total"], 10, "{body}");
    assert_eq!(stock["available"], 6, "{body}");
    assert_eq!(stock["held"], 3, "{body}");
    assert_eq!(stock["sold"], 1, "{body}");
    let live = &body["orders"];
    assert_eq!(live["live"], 2, "{body}");
    assert_eq!(live["held"], 1, "{body}");
    assert_eq!(live["paying"], 1, "{body}");
    assert!(body["now_ms"].as_u64().is_some_and(|ms| ms > 0), "{body}");
    assert_eq!(body["closes_at"], Value::Null, "{body}");

    // The measured rate and a pause show up at the next read.
    let redis = room.redis()?;
    let keys = WaitQueue::new(redis, sale).keys().clone();
    let _: () = redis
        .pool()
        .hset(&keys.wr, ("admit_rate_milli", 2_500))
        .await?;
    let _: () = redis.pool().hset(&keys.cfg, ("paused", 1)).await?;
    let (_, body) = room.data(&sale.to_string(), Some(&admin)).await?;
    assert_eq!(body["queue"]["admit_rate"], 2.5, "{body}");
    assert_eq!(body["state"], "paused", "{body}");
    room.stop().await
}

#[tokio::test]
async fn the_control_page_is_served_without_outside_assets() -> anyhow::Result<()> {
    let room = Room::start().await?;
    let sale = SaleId::new_v7();
    let (status, headers, html) = room.get(&format!("/w/{sale}/control"), None).await?;
    assert_eq!(status, StatusCode::OK);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(header("content-type").starts_with("text/html"));
    assert!(header("content-security-policy").contains("script-src 'self';"));
    assert!(html.contains(&format!("\"sale_id\":\"{sale}\"")), "{html}");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    for asset in [
        "/w/assets/admin.js?v=",
        "/w/assets/control.js?v=",
        "/w/assets/control.css?v=",
    ] {
        let start = html
            .find(asset)
            .ok_or_else(|| anyhow::anyhow!("no {asset}"))?;
        let url: String = html[start..].chars().take_while(|c| *c != '"').collect();
        let (status, headers, body) = room.get(&url, None).await?;
        assert_eq!(status, StatusCode::OK, "{url}");
        assert!(headers.contains_key("etag"), "{url}");
        assert!(!body.is_empty());
    }
    let (status, _, text) = room.get("/w/nope/control", None).await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    room.stop().await
}

/// The operator's console (#24) at `/w/admin`: the page and its fingerprinted assets, no
/// outside asset, a CSP; and `/w/admin` beside the sales' `/w/{sale_id}` routes: the static
/// segment wins for the console, a sale's waiting page and control room still answer, and
/// `admin` is no sale (`/w/admin/control` is a 404, not a console).
#[tokio::test]
async fn the_console_is_served_at_w_admin_beside_the_sales_routes() -> anyhow::Result<()> {
    let room = Room::start().await?;
    let (status, headers, html) = room.get("/w/admin", None).await?;
    assert_eq!(status, StatusCode::OK, "{html}");
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(header("content-type").starts_with("text/html"));
    assert!(header("content-security-policy").contains("script-src 'self';"));
    assert!(html.contains("<title>Console · Dropline</title>"), "{html}");
    assert!(html.contains("\"api_base_url\""), "{html}");
    assert!(!html.contains("https://"), "{html}");
    // admin.js, the sign-in shared with the control room and the report, loads first.
    let (admin, own) = (
        html.find("/w/assets/admin.js?v="),
        html.find("/w/assets/console.js?v="),
    );
    assert!(
        admin.is_some() && admin < own,
        "admin.js before console.js: {html}"
    );
    for (asset, needle) in [
        ("/w/assets/admin.js?v=", "dropline.admin.auth"),
        ("/w/assets/console.js?v=", "/api/admin/sales/"),
        ("/w/assets/console.css?v=", "[hidden]"),
    ] {
        let start = html
            .find(asset)
            .ok_or_else(|| anyhow::anyhow!("no {asset}"))?;
        let url: String = html[start..].chars().take_while(|c| *c != '"').collect();
        let (status, headers, body) = room.get(&url, None).await?;
        assert_eq!(status, StatusCode::OK, "{url}");
        assert!(headers.contains_key("etag"), "{url}");
        assert!(body.contains(needle), "{url}");
    }
    // The sales' routes beside it.
    let sale = room.sale(|_| {}).await?;
    let (status, _, page) = room.get(&format!("/w/{sale}"), None).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("/w/assets/waiting.js"), "{page}");
    assert!(!page.contains("console.js"));
    let (status, _, page) = room.get(&format!("/w/{sale}/control"), None).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("control.js") && !page.contains("console.js"));
    let (status, _, text) = room.get("/w/admin/control", None).await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    let (status, _, text) = room.get("/w/admin/stats", None).await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    room.stop().await
}
