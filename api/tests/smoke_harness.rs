//! The harness itself: the api starts on a free port and answers /readyz.

mod common;

#[tokio::test]
async fn api_starts_and_is_ready() -> anyhow::Result<()> {
    let api = common::TestApi::start(&[]).await?;
    let ready = api.get("/readyz", None).await?;
    ready.expect(200, None);
    let unknown = api.get("/api/nope", None).await?;
    unknown.expect(404, Some("not_found"));
    api.stop().await
}
