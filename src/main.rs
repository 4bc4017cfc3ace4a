//! `dropline`: one binary, one sub-command per process role (DESIGN §2).
//!
//! Thin by design: parse the command line, load and validate the configuration, set up logs,
//! connect what the role needs, run it until SIGTERM / Ctrl-C. The components live in the
//! `dropline-*` crates.

// Request handling allocates many small short-lived objects; mimalloc serves them with far
// less contention than glibc malloc (profiled: malloc/free were the top user-space symbols).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use dropline_core::clients::deps::{Deps, Needs};
use dropline_core::config::Sources;
use dropline_core::{Config, telemetry};
use dropline_ops::demo;
use dropline_workers::Kind;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "dropline",
    version,
    about = "Dropline: a flash-sale platform with a virtual waiting room.",
    long_about = "Dropline: a flash-sale platform with a virtual waiting room.\n\n\
        Configuration: built-in defaults < dropline.toml (or --config FILE) < DROPLINE_* \
        environment variables (`__` nests: DROPLINE_REDIS__URL). `dropline config defaults` \
        prints every key with its meaning."
)]
struct Cli {
    /// Configuration file (default: ./dropline.toml if present; env DROPLINE_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the waiting-room edge: queue, admission, passes, the waiting page (needs Redis).
    Waitroom,
    /// Run the purchase API: accounts, catalog, sales admin, orders (needs MySQL, Redis, RabbitMQ).
    Api,
    /// Run RabbitMQ consumers and timers; scale by running more processes.
    Worker(WorkerArgs),
    /// Run every component in one process (development, demo, tests).
    All(AllArgs),
    /// Apply pending MySQL migrations, creating the database if missing, and exit.
    Migrate,
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Operate on one sale's state.
    #[command(subcommand)]
    Sale(SaleCommand),
    /// Payments that need an operator.
    #[command(subcommand)]
    Payments(PaymentsCommand),
    /// Tools for load tests.
    #[command(subcommand)]
    Loadtest(LoadtestCommand),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Args)]
struct WorkerArgs {
    /// Which worker: payment (calls the payment provider), confirm (records outcomes in MySQL),
    /// expiry (releases timed-out holds: keyspace events + sweeper), mail (sends e-mail), draw
    /// (the draw leader: freezes, reveals and ranks draw sales), or all.
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(Kind::NAMES))]
    kind: String,
    /// Where to serve /healthz, /readyz and /metrics (default: workers.metrics_listen).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<String>,
}

#[derive(Debug, Args)]
struct AllArgs {
    /// Create a demo product and sale (idempotent) and print the URLs to open.
    #[arg(long)]
    demo: bool,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a verified account at once (no e-mail) and print its id, e.g. the first admin.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        password: String,
        /// Display name (default: the part of the e-mail before `@`).
        #[arg(long)]
        name: Option<String>,
        /// Give the account the admin role.
        #[arg(long)]
        admin: bool,
    },
    /// List accounts whose stored e-mail addresses are one address in canonical form (NFC,
    /// lower case, IDNA domain): run before upgrading; exit 1 when there is any (read-only).
    Collisions,
}

#[derive(Debug, Subcommand)]
enum SaleCommand {
    /// Rebuild a sale's Redis state from MySQL after Redis was lost: paid stays paid, paying
    /// stays paying (settled at its deadline), stock that was only held comes back.
    Rearm {
        sale_id: String,
        /// Wipe the sale's live Redis state first (holds and line included) when it is still armed.
        #[arg(long)]
        force: bool,
    },
    /// Check the invariants of DESIGN §6 for a sale, Redis against MySQL (read-only): exit 0
    /// when none is broken, 1 on a breach, 2 for a bad or unknown sale id.
    Audit {
        sale_id: String,
        /// Print the report as one JSON object (a stable shape) instead of text.
        #[arg(long)]
        json: bool,
        /// Also assert the quiescent invariants: nothing held or paying, the outbox drained,
        /// avail + sold = stock, Redis and MySQL agree on every order. For after traffic stopped
        /// and every timer fired; without it, changes still in flight are reported as pending.
        #[arg(long)]
        settled: bool,
    },
    /// The post-sale report: arrivals, admissions and orders per second, time in line, ETA
    /// accuracy, the funnel and refusals (read from MySQL; exit 2 for a bad or unknown sale id).
    Report {
        sale_id: String,
        /// Print the JSON `GET /api/admin/sales/{id}/report` answers instead of a summary.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PaymentsCommand {
    /// Re-send a payment.completed the confirm worker parked (the sweeper does not): ask the
    /// provider, report its decision to the confirm worker, clear the order's parked mark.
    /// Exit 0 re-sent (or the order ended), 1 not done, 2 a bad or unknown order id.
    Resend { order_id: String },
    /// Hold Stripe's charges and refunds for a sale against the books (payment.provider =
    /// stripe): one JSON line per break (unbooked_charge, paid_and_refunded,
    /// paid_without_charge, amount_mismatch, ledger_mismatch, dangling_intent). Exit 0 no
    /// break, 1 any break, 2 it could not check.
    Reconcile { sale_id: String },
}

#[derive(Debug, Subcommand)]
enum LoadtestCommand {
    /// Create N verified accounts in bulk and write access tokens for k6 (only when allowed).
    Seed {
        /// How many buyers (1 to 1,000,000).
        #[arg(long)]
        users: u32,
        /// Write `user_id<TAB>email<TAB>access_token` lines here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The password every seeded buyer shares (to test logins too).
        #[arg(long, default_value = "loadtest-password")]
        password: String,
        /// How long the access tokens are valid.
        #[arg(long, default_value_t = 4 * 3600)]
        token_ttl_seconds: u64,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Load and validate the configuration, then print it (secrets hidden).
    Check,
    /// Print the built-in defaults file: every key with its meaning.
    Defaults,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Config(ConfigCommand::Defaults) = cli.command {
        print!("{}", dropline_core::config::DEFAULTS_TOML);
        return ExitCode::SUCCESS;
    }
    let config = match Config::load(&Sources::from_process(cli.config.clone())) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("dropline: {error}");
            return ExitCode::from(2);
        }
    };
    // Held to the end of main: dropping it writes out the log lines still queued.
    let _log_writer = telemetry::init_tracing(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("dropline: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(code) => code,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "fatal");
            eprintln!("dropline: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Waitroom => {
            // Keys and the page's settings first: a config error (exit 2), reported before any
            // connection.
            let secrets =
                match dropline_waitroom::Secrets::from_config(&config).and_then(|secrets| {
                    dropline_waitroom::page::routes(&config.waitroom, &config.payment)
                        .map(|_| secrets)
                }) {
                    Ok(secrets) => secrets,
                    Err(error) => {
                        eprintln!("dropline: {error:#}");
                        return Ok(ExitCode::from(2));
                    }
                };
            let deps = connect(
                &config,
                Needs {
                    redis: true,
                    ..Needs::default()
                },
            )
            .await?;
            dropline_core::alerts::install(&config.alerts, "waitroom");
            let server = dropline_waitroom::build(&config, &deps, secrets).await?;
            print_listening(&[(&server, "")]);
            let shutdown = dropline_core::shutdown::on_signal();
            let admitter = start_admitter(&config, &deps, &shutdown)?;
            server.run(shutdown.clone()).await?;
            // The leader hands the lease over at once instead of letting it expire.
            shutdown.cancel();
            let _ = admitter.await;
            deps.close().await;
        }
        Command::Api => {
            // Keys first: a missing key is a config error, reported before any connection.
            let secrets = match dropline_api::Secrets::from_config(&config) {
                Ok(secrets) => secrets,
                Err(error) => {
                    eprintln!("dropline: {error:#}");
                    return Ok(ExitCode::from(2));
                }
            };
            let deps = connect(&config, Needs::ALL).await?;
            dropline_core::alerts::install(&config.alerts, "api");
            let server = dropline_api::build(&config, &deps, secrets).await?;
            print_listening(&[(&server, "")]);
            let shutdown = dropline_core::shutdown::on_signal();
            let janitor = dropline_api::janitor::spawn(
                deps.mysql()?.clone(),
                Duration::from_secs(config.auth.purge_interval_seconds),
                shutdown.clone(),
            );
            server.run(shutdown.clone()).await?;
            shutdown.cancel();
            let _ = janitor.await;
            deps.close().await;
        }
        Command::Worker(args) => {
            let kind: Kind = args.kind.parse().map_err(anyhow::Error::msg)?;
            let addr = match &args.metrics_addr {
                Some(a) => dropline_core::config::parse_listen("--metrics-addr", a)?,
                None => config.workers_metrics_listen(),
            };
            let deps = connect(&config, kind.needs()).await?;
            dropline_core::alerts::install(&config.alerts, &format!("worker {}", args.kind));
            let server = dropline_workers::metrics_server(&config, &deps, addr).await?;
            print_listening(&[(&server, "")]);
            let shutdown = dropline_core::shutdown::on_signal();
            let (served, worked) = tokio::join!(
                server.run(shutdown.clone()),
                // When the worker stops on its own (error), stop the ops server too.
                async {
                    let result =
                        dropline_workers::run(kind, &config, &deps, shutdown.clone()).await;
                    shutdown.cancel();
                    result
                }
            );
            deps.close().await;
            served.and(worked)?;
        }
        Command::All(args) => run_all(&config, args).await?,
        Command::Migrate => {
            let pool = dropline_core::clients::mysql::connect(&config.mysql).await?;
            dropline_core::clients::mysql::migrate(&pool).await?;
            let applied: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                    .fetch_one(&pool)
                    .await
                    .context("counting applied migrations")?;
            println!("migrations up to date ({applied} applied)");
            pool.close().await;
        }
        Command::User(UserCommand::Create {
            email,
            password,
            name,
            admin,
        }) => {
            let user = dropline_ops::users::NewUser {
                email,
                password,
                name,
                admin,
            };
            return dropline_ops::users::create(&config, user).await;
        }
        Command::User(UserCommand::Collisions) => {
            return dropline_ops::users::collisions(&config).await;
        }
        Command::Sale(SaleCommand::Rearm { sale_id, force }) => {
            return dropline_ops::rearm::rearm_command(&config, &sale_id, force).await;
        }
        Command::Sale(SaleCommand::Audit {
            sale_id,
            json,
            settled,
        }) => return dropline_ops::audit::sale_audit(&config, &sale_id, json, settled).await,
        Command::Sale(SaleCommand::Report { sale_id, json }) => {
            return dropline_ops::report::sale_report(&config, &sale_id, json).await;
        }
        Command::Payments(PaymentsCommand::Resend { order_id }) => {
            return dropline_ops::payments::resend_command(&config, &order_id, resend_parked).await;
        }
        Command::Payments(PaymentsCommand::Reconcile { sale_id }) => {
            return dropline_ops::payments::reconcile_command(&config, &sale_id, stripe_reader)
                .await;
        }
        Command::Loadtest(LoadtestCommand::Seed {
            users,
            out,
            password,
            token_ttl_seconds,
        }) => {
            let options = dropline_ops::loadtest::SeedOptions {
                users,
                password,
                token_ttl: Duration::from_secs(token_ttl_seconds),
            };
            return dropline_ops::loadtest::seed_command(&config, options, out).await;
        }
        Command::Config(ConfigCommand::Check) => {
            println!("configuration is valid:\n{config:#?}");
        }
        Command::Config(ConfigCommand::Defaults) => {
            print!("{}", dropline_core::config::DEFAULTS_TOML);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `dropline payments resend`'s workers part: the configured provider, as the workers use.
fn resend_parked<'a>(
    config: &'a Config,
    deps: &'a Deps,
    sale: dropline_core::ids::SaleId,
    order: dropline_core::ids::OrderId,
) -> dropline_ops::payments::ResendFuture<'a> {
    Box::pin(async move {
        let provider = dropline_workers::make_provider(config, deps)?;
        dropline_workers::expiry::resend(config, deps, provider, sale, order).await
    })
}

/// `dropline payments reconcile`'s Stripe reader: the workers' Stripe client.
fn stripe_reader(
    config: &Config,
    mysql: &sqlx::MySqlPool,
) -> anyhow::Result<std::sync::Arc<dyn dropline_audit::payments::IntentSource>> {
    Ok(dropline_workers::stripe::Stripe::new(
        &config.payment.stripe,
        mysql,
    )?)
}

async fn connect(config: &Config, needs: Needs) -> anyhow::Result<Deps> {
    Deps::connect(config, needs)
        .await
        .context("connecting to dependencies")
}

fn print_listening(servers: &[(&dropline_core::http::Server, &str)]) {
    for (server, path) in servers {
        println!(
            "{} listening on http://{}{path}",
            server.name(),
            server.addr()
        );
    }
}

/// Runs this process's admitter candidate (one leader across all waitroom replicas; a no-op
/// task when `waitroom.run_admitter` is off).
fn start_admitter(
    config: &Config,
    deps: &Deps,
    shutdown: &CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    // Unique per process: host, pid and a random part (pids repeat across containers).
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".to_owned());
    let holder = format!(
        "{host}:{}:{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    );
    Ok(dropline_waitroom::admitter::spawn(
        deps.redis()?.clone(),
        config.waitroom.clone(),
        holder,
        std::time::Duration::from_secs(config.alerts.stall_after_seconds),
        shutdown.clone(),
    ))
}

/// In one process the waiting page is served by one origin and calls the api on another:
/// point the page at this api (unless configured) and let that origin in.
fn link_origins(config: &mut Config, waitroom: SocketAddr, api: SocketAddr) {
    if config.waitroom.api_base_url.is_empty() {
        config.waitroom.api_base_url = format!("http://{}", browser_host(api));
    }
    let mut origins = vec![format!("http://{}", browser_host(waitroom))];
    if waitroom.ip().is_loopback() {
        // The same page opened as localhost is another origin to a browser.
        origins.push(format!("http://localhost:{}", waitroom.port()));
    }
    for origin in origins {
        if !config.api.cors_allowed_origins.contains(&origin) {
            config.api.cors_allowed_origins.push(origin);
        }
    }
}

/// `host:port` as a browser writes it (an unspecified bind address means this machine).
fn browser_host(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// Every component in one process, sharing one set of connections.
async fn run_all(config: &Config, args: AllArgs) -> anyhow::Result<()> {
    let mut config = config.clone();
    let made = dropline_core::auth::keys::fill_dev_secrets(&mut config)?;
    if !made.is_empty() {
        tracing::warn!(
            keys = made.join(", "),
            "no key configured: using throw-away keys; tokens, passes and stored phone/address do not survive a restart"
        );
    }
    // Both listeners first, so each side can be told where the other is: the waiting page
    // calls this api, and the api lets that page's origin in (CORS).
    let waitroom_bound = dropline_core::http::bind(config.waitroom_listen())
        .await
        .context("waitroom listener")?;
    let api_bound = dropline_core::http::bind(config.api_listen())
        .await
        .context("api listener")?;
    link_origins(&mut config, waitroom_bound.addr, api_bound.addr);
    let config = &config;
    let api_secrets = dropline_api::Secrets::from_config(config)?;
    let waitroom_secrets = dropline_waitroom::Secrets::from_config(config)?;
    let deps = connect(config, Needs::ALL).await?;
    dropline_core::alerts::install(&config.alerts, "all");
    let waitroom = dropline_waitroom::build_on(waitroom_bound, config, &deps, waitroom_secrets)?;
    let api = dropline_api::build_on(api_bound, config, &deps, api_secrets)?;
    print_listening(&[(&waitroom, ""), (&api, "")]);
    if args.demo {
        let demo = demo::ensure(
            deps.mysql()?,
            deps.redis()?,
            &dropline_core::auth::password::Hasher::from_config(&config.auth)?,
        )
        .await?;
        demo::print_urls(&demo, waitroom.addr(), api.addr());
    }
    println!("ready: health at /readyz on both; Ctrl-C stops");
    let shutdown: CancellationToken = dropline_core::shutdown::on_signal();
    let janitor = dropline_api::janitor::spawn(
        deps.mysql()?.clone(),
        Duration::from_secs(config.auth.purge_interval_seconds),
        shutdown.clone(),
    );
    let admitter = start_admitter(config, &deps, &shutdown)?;
    let (a, b, workers) = tokio::join!(
        waitroom.run(shutdown.clone()),
        api.run(shutdown.clone()),
        dropline_workers::run(Kind::All, config, &deps, shutdown.clone()),
    );
    shutdown.cancel();
    let _ = tokio::join!(janitor, admitter);
    deps.close().await;
    a.and(b).and(workers)
}
