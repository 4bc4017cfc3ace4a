//! `dropline sale report <sale-id> [--json]`: the post-sale report
//! ([`dropline_audit::sale_report`], read from MySQL), as a summary for a terminal or as the
//! JSON `GET /api/admin/sales/{id}/report` answers.

use std::process::ExitCode;

use anyhow::Context;
use dropline_core::Config;
use dropline_core::clients::mysql;
use dropline_core::ids::SaleId;

/// `dropline sale report`: 0 printed, 2 a malformed or unknown sale id; an error (exit 1)
/// when MySQL cannot be read. Connects without migrating: the report only reads.
pub async fn sale_report(config: &Config, sale_id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let Ok(sale) = SaleId::parse_str(sale_id.trim()) else {
        eprintln!("dropline: `{sale_id}` is not a sale id (a UUID)");
        return Ok(ExitCode::from(2));
    };
    let mysql = mysql::connect_existing(&config.mysql)
        .await
        .context("connecting to MySQL")?;
    let built = dropline_audit::sale_report::build(&mysql, sale).await;
    mysql.close().await;
    let Some(report) = built.with_context(|| format!("building the report of sale {sale}"))? else {
        eprintln!("dropline: no sale {sale} in MySQL (check the id and mysql.url)");
        return Ok(ExitCode::from(2));
    };
    if json {
        println!(
            "{}",
            serde_json::to_string(&report).context("serialising the report")?
        );
    } else {
        print!("{}", report.render_text());
    }
    Ok(ExitCode::SUCCESS)
}
