//! `line-sim`: a million buyers in one sale's line, through the real waiting-room API
//! (issue #22 §1). Mints N buyers' access tokens (signed with the server's access key, as
//! `mint-tokens` does), joins every one with `POST /w/{id}/join` (a share before the opening,
//! the rest spread after it), then has each poll `GET /w/{id}/status` exactly when the last
//! answer's `retry_after_ms` says, until admitted; a share goes silent at a random poll
//! (abandons), a share leaves with `DELETE /w/{id}/join`. 429 and 503 are retried after their
//! `retry_after_ms` or `Retry-After`, never at once.
//!
//! Event-driven: a buyer at rest is a 20-byte record plus its ticket (76 bytes in one arena)
//! and one entry in a heap of due instants, all driven by a single task; only requests in
//! flight are tasks, at most `--connections` of them, over a hyper-util client whose pool
//! keeps that many keep-alive connections (hyper-util rather than reqwest: the same hyper
//! connection pool without reqwest's per-request layers, and the load generator's CPU is the
//! scarce thing on a 2-core machine; the pool has no cap of its own, so the in-flight limit is
//! the cap).
//!
//! Prints, and writes as JSON with `--out`: time to join N, status polls per second (a series),
//! status and join latency percentiles (HdrHistogram), admissions seen per second against the
//! sale's `--admit-per-second`, the ETA accuracy of design/door.md §3, counts of every answer
//! and error, and how late the tool itself was against the instants it was told (if that is
//! not small, the figures measure the tool). `bench/line-sim.sh` runs it against a private
//! deployment and adds Redis's side.

mod report;
mod timers;

// Shared with the minters; line-sim mints for its own user ids (`token_for`), so `buyer`
// goes unused here.
#[allow(dead_code, reason = "line-sim uses token_for, not buyer")]
#[path = "../mint.rs"]
mod mint;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use dropline_core::auth::keys::KeyRing;
use dropline_core::ids::UserId;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use report::Series;
use serde::Deserialize;
use timers::{Timers, arrival_ms, splitmix, unit};
use tokio::sync::mpsc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Simulated buyers in one sale's line, polling as told (issue #22 §1).
#[derive(Debug, Parser)]
#[command(name = "line-sim")]
struct Args {
    /// The waiting room's base URL (a replica, or nginx in front of several).
    #[arg(long)]
    waitroom: String,
    /// The sale's id.
    #[arg(long)]
    sale: String,
    /// The Ed25519 PEM key that signs access tokens (the server's `auth.signing_key_file`).
    #[arg(long)]
    signing_key: String,
    /// How many buyers.
    #[arg(long, default_value_t = 1_000_000)]
    buyers: u32,
    /// The share that joins at once, before the opening (if the sale has not opened yet).
    #[arg(long, default_value_t = 0.5)]
    pre_open: f64,
    /// The rest join spread evenly over this many seconds from the opening.
    #[arg(long, default_value_t = 10.0)]
    spread_seconds: f64,
    /// The share that goes silent after a random number (0 to 8) of polls.
    #[arg(long, default_value_t = 0.1)]
    abandon: f64,
    /// The share that leaves (`DELETE /w/{id}/join`) after a random number (0 to 8) of polls.
    #[arg(long, default_value_t = 0.05)]
    leave: f64,
    /// Requests in flight at most, and so keep-alive connections at most.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// The sale's `admit_per_second`, to compare the admissions seen against.
    #[arg(long)]
    admit_per_second: Option<f64>,
    /// Stop after this many seconds even if buyers still wait (0: until nobody waits).
    #[arg(long, default_value_t = 0)]
    max_seconds: u64,
    /// Seed of the buyers' fates (who abandons or leaves, and when).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write the figures here as JSON.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

/// What a buyer does next (or did last).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum Action {
    Join,
    Status,
    Leave,
}

/// Where a buyer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Has an action due in the timers or in flight.
    Active,
    Admitted,
    Left,
    /// Abandoned: stopped polling without a word.
    Silent,
    /// Sold out or closed.
    Ended,
    /// An answer the simulation cannot go on from (counted among the errors).
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Stay,
    Abandon,
    Leave,
}

/// One simulated buyer at rest: 20 bytes.
#[derive(Debug, Clone, Copy)]
struct Buyer {
    /// Its ticket: `arena[ticket_at..ticket_at + ticket_len]` (length 0 before the join).
    ticket_at: u32,
    /// The first `eta_seconds` it was shown (`u32::MAX`: none yet) and when (ms since start).
    eta_s: u32,
    eta_at_ms: u32,
    ticket_len: u8,
    next: Action,
    phase: Phase,
    fate: Fate,
    /// Polls before an abandoning buyer goes silent or a leaving one leaves.
    polls_left: u8,
}

/// A place's state as the waiting room names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Scheduled,
    Waiting,
    Admitted,
    SoldOut,
    Closed,
    Other,
}

#[derive(Debug, Deserialize)]
struct Answer<'a> {
    #[serde(borrow, default)]
    state: Option<Cow<'a, str>>,
    #[serde(default)]
    eta_seconds: Option<u64>,
    #[serde(default)]
    retry_after_ms: Option<u64>,
    #[serde(borrow, default)]
    ticket: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    opens_at: Option<Cow<'a, str>>,
}

/// An answer, read in the request's task.
#[derive(Debug, Default)]
struct Reply {
    code: u16,
    retry_after_header_s: Option<u64>,
    state: Option<State>,
    eta_s: Option<u64>,
    retry_after_ms: Option<u64>,
    ticket: Option<String>,
    opens_at_ms: Option<i64>,
    /// A 200 whose body did not parse.
    bad_body: bool,
}

/// A finished request, sent back to the driving task.
struct Done {
    idx: u32,
    action: Action,
    latency_us: u64,
    result: Result<Reply, String>,
}

/// What the request tasks share.
struct Shared {
    client: Client<HttpConnector, Empty<Bytes>>,
    join: Uri,
    status: Uri,
    ring: KeyRing,
}

/// The counters the report is made from.
struct Tally {
    codes: BTreeMap<(Action, u16), u64>,
    states: BTreeMap<&'static str, u64>,
    errors: u64,
    error_samples: Vec<String>,
    status_latency: Histogram<u64>,
    join_latency: Histogram<u64>,
    /// How late requests left against their due instant (µs): the tool's own lag.
    lateness: Histogram<u64>,
    polls: Series,
    joins: Series,
    admitted: Series,
    eta: Vec<(u32, u32)>,
    joined: u32,
    joined_before_opening: u32,
    /// The buyers who join at once (`--pre-open`): how many joined, the last one's answer.
    burst_joined: u32,
    burst_last_ms: u32,
    first_join_sent_ms: Option<u32>,
    last_join_ms: u32,
    rejoins: u64,
    retried_after_refusal: u64,
    admitted_total: u32,
    left: u32,
    silent: u32,
    ended: u32,
    failed: u32,
}

struct Sim {
    args: Args,
    start: Instant,
    start_epoch_ms: i64,
    /// This run's own user ids: buyer `idx` is `user_id(salt, idx)` (a rejoin keeps the user).
    salt: u64,
    buyers: Vec<Buyer>,
    arena: Vec<u8>,
    timers: Timers,
    pre_open: u32,
    opens_known: bool,
    in_flight: usize,
    t: Tally,
}

/// The wait after a failure with no instruction from the server.
const FALLBACK_RETRY_MS: u32 = 1000;

fn state_of(s: &str) -> State {
    match s {
        "scheduled" => State::Scheduled,
        "waiting" => State::Waiting,
        "admitted" => State::Admitted,
        "sold_out" => State::SoldOut,
        "closed" => State::Closed,
        _ => State::Other,
    }
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Scheduled => "scheduled",
        State::Waiting => "waiting",
        State::Admitted => "admitted",
        State::SoldOut => "sold_out",
        State::Closed => "closed",
        State::Other => "other",
    }
}

fn read_reply(code: u16, retry_after: Option<u64>, body: &[u8]) -> Reply {
    let mut r = Reply {
        code,
        retry_after_header_s: retry_after,
        ..Reply::default()
    };
    if body.is_empty() {
        return r;
    }
    match serde_json::from_slice::<Answer<'_>>(body) {
        Ok(a) => {
            r.state = a.state.as_deref().map(state_of);
            r.eta_s = a.eta_seconds;
            r.retry_after_ms = a.retry_after_ms;
            r.ticket = a.ticket.map(Cow::into_owned);
            r.opens_at_ms = a
                .opens_at
                .as_deref()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.timestamp_millis());
        }
        Err(_) => r.bad_body = code == 200,
    }
    r
}

async fn send(shared: &Shared, action: Action, bearer: String) -> Result<Reply, String> {
    let (method, uri) = match action {
        Action::Join => (Method::POST, shared.join.clone()),
        Action::Status => (Method::GET, shared.status.clone()),
        Action::Leave => (Method::DELETE, shared.join.clone()),
    };
    let auth = HeaderValue::from_str(&format!("Bearer {bearer}")).map_err(|e| e.to_string())?;
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(AUTHORIZATION, auth)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let res = shared
        .client
        .request(req)
        .await
        .map_err(|e| format!("{action:?}: {e}"))?;
    let code = res.status().as_u16();
    let retry_after = res
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{action:?} body: {e}"))?
        .to_bytes();
    Ok(read_reply(code, retry_after, &body))
}

impl Sim {
    fn now_ms(&self) -> u32 {
        u32::try_from(self.start.elapsed().as_millis()).unwrap_or(u32::MAX)
    }

    fn unfinished(&self) -> u32 {
        let t = &self.t;
        let over = t.admitted_total + t.left + t.silent + t.ended + t.failed;
        self.args.buyers.saturating_sub(over)
    }

    fn ticket(&self, b: &Buyer) -> &str {
        let at = b.ticket_at as usize;
        std::str::from_utf8(&self.arena[at..at + usize::from(b.ticket_len)]).unwrap_or("")
    }

    fn dispatch(
        &mut self,
        idx: u32,
        due: u32,
        now: u32,
        shared: &Arc<Shared>,
        tx: &mpsc::UnboundedSender<Done>,
    ) {
        let b = self.buyers[idx as usize];
        if b.phase != Phase::Active {
            return;
        }
        let _ = self
            .t
            .lateness
            .record(u64::from(now.saturating_sub(due)) * 1000);
        let action = b.next;
        let ticket = match action {
            Action::Join => {
                self.t.first_join_sent_ms.get_or_insert(now);
                None
            }
            _ => Some(self.ticket(&b).to_owned()),
        };
        let user = user_id(self.salt, idx);
        self.in_flight += 1;
        let shared = Arc::clone(shared);
        let tx = tx.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let bearer = match ticket {
                Some(t) => Ok(t),
                None => mint::token_for(&shared.ring, user)
                    .map_err(|e| format!("minting a token: {e:#}")),
            };
            let result = match bearer {
                Ok(bearer) => send(&shared, action, bearer).await,
                Err(e) => Err(e),
            };
            let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            let _ = tx.send(Done {
                idx,
                action,
                latency_us,
                result,
            });
        });
    }

    fn error(&mut self, msg: String) {
        self.t.errors += 1;
        if self.t.error_samples.len() < 10 {
            self.t.error_samples.push(msg);
        }
    }

    fn fail(&mut self, idx: u32, msg: String) {
        self.buyers[idx as usize].phase = Phase::Failed;
        self.t.failed += 1;
        self.error(msg);
    }

    fn retry(&mut self, idx: u32, now: u32, delay_ms: u32) {
        // A little jitter so that refused buyers do not come back in one wave.
        let jitter = (splitmix(u64::from(idx) ^ u64::from(now)) % 250) as u32;
        self.timers.schedule(
            idx,
            now.saturating_add(delay_ms.max(250)).saturating_add(jitter),
        );
    }

    /// The pre-opening buyers go now, the others spread after the opening.
    fn schedule_arrivals(&mut self, opens_epoch_ms: i64, now: u32) {
        self.opens_known = true;
        let opens =
            u32::try_from((opens_epoch_ms - self.start_epoch_ms).max(0)).unwrap_or(u32::MAX);
        let spread = (self.args.spread_seconds.max(0.0) * 1000.0) as u32;
        for i in 1..self.args.buyers {
            let at = arrival_ms(i, self.args.buyers, self.pre_open, now, opens, spread);
            self.timers.schedule(i, at);
        }
    }

    fn handle(&mut self, d: Done) {
        self.in_flight -= 1;
        let now = self.now_ms();
        let idx = d.idx;
        let reply = match d.result {
            Ok(r) => r,
            Err(e) => {
                *self.t.codes.entry((d.action, 0)).or_default() += 1;
                self.error(e);
                self.retry(idx, now, FALLBACK_RETRY_MS);
                return;
            }
        };
        *self.t.codes.entry((d.action, reply.code)).or_default() += 1;
        match d.action {
            Action::Status => {
                let _ = self.t.status_latency.record(d.latency_us.max(1));
                self.t.polls.bump(now);
            }
            Action::Join => {
                let _ = self.t.join_latency.record(d.latency_us.max(1));
            }
            Action::Leave => {}
        }
        if let Some(s) = reply.state {
            *self.t.states.entry(state_name(s)).or_default() += 1;
        }
        match (d.action, reply.code) {
            (_, 429 | 503) => {
                self.t.retried_after_refusal += 1;
                let delay = reply
                    .retry_after_ms
                    .or(reply.retry_after_header_s.map(|s| s.saturating_mul(1000)))
                    .map_or(FALLBACK_RETRY_MS, |ms| {
                        u32::try_from(ms).unwrap_or(u32::MAX)
                    });
                self.retry(idx, now, delay);
            }
            (_, 200) if reply.bad_body => {
                self.fail(idx, format!("{:?}: 200 with an unreadable body", d.action))
            }
            (Action::Join, 200) => self.joined(idx, now, &reply),
            (Action::Status, 200) => self.answered(idx, now, &reply),
            (Action::Status, 404) => {
                // The place is gone (skipped as abandoned, or the line was reset): join
                // again, as the waiting page does.
                self.t.rejoins += 1;
                self.buyers[idx as usize].next = Action::Join;
                self.timers.schedule(idx, now);
            }
            // 404: the place was already gone (skipped, or the line reset); gone all the same.
            (Action::Leave, 204 | 404) => {
                self.buyers[idx as usize].phase = Phase::Left;
                self.t.left += 1;
            }
            (action, code) => self.fail(idx, format!("{action:?}: unexpected {code}")),
        }
    }

    fn joined(&mut self, idx: u32, now: u32, reply: &Reply) {
        let Some(ticket) = reply.ticket.as_deref() else {
            return self.fail(idx, "join: 200 without a ticket".into());
        };
        let Ok(len) = u8::try_from(ticket.len()) else {
            return self.fail(idx, format!("join: a ticket of {} bytes", ticket.len()));
        };
        let Ok(at) = u32::try_from(self.arena.len()) else {
            return self.fail(idx, "join: the ticket arena is full".into());
        };
        self.arena.extend_from_slice(ticket.as_bytes());
        let b = &mut self.buyers[idx as usize];
        let first = b.ticket_len == 0;
        b.ticket_at = at;
        b.ticket_len = len;
        if first {
            self.t.joined += 1;
            self.t.joins.bump(now);
            self.t.last_join_ms = now;
            if reply.state == Some(State::Scheduled) {
                self.t.joined_before_opening += 1;
            }
            if idx < self.pre_open {
                self.t.burst_joined += 1;
                self.t.burst_last_ms = now;
            }
        }
        if !self.opens_known {
            match reply.opens_at_ms {
                Some(opens) => self.schedule_arrivals(opens, now),
                None => return self.fail(idx, "join: 200 without opens_at".into()),
            }
        }
        self.answered(idx, now, reply);
    }

    /// A join's or a poll's 200: note the ETA, then admitted, over, or the next poll.
    fn answered(&mut self, idx: u32, now: u32, reply: &Reply) {
        let b = &mut self.buyers[idx as usize];
        if let (Some(eta), u32::MAX) = (reply.eta_s, b.eta_s) {
            b.eta_s = u32::try_from(eta).unwrap_or(u32::MAX - 1);
            b.eta_at_ms = now;
        }
        match reply.state {
            Some(State::Admitted) => {
                b.phase = Phase::Admitted;
                if b.eta_s != u32::MAX {
                    self.t.eta.push((b.eta_s, now.saturating_sub(b.eta_at_ms)));
                }
                self.t.admitted_total += 1;
                self.t.admitted.bump(now);
            }
            Some(State::SoldOut | State::Closed) => {
                b.phase = Phase::Ended;
                self.t.ended += 1;
            }
            Some(State::Scheduled | State::Waiting) => {
                let wait = reply.retry_after_ms.map_or(FALLBACK_RETRY_MS, |ms| {
                    u32::try_from(ms).unwrap_or(u32::MAX)
                });
                let due = now.saturating_add(wait);
                match (b.fate, b.polls_left) {
                    (Fate::Abandon, 0) => {
                        b.phase = Phase::Silent;
                        self.t.silent += 1;
                    }
                    (Fate::Leave, 0) => {
                        b.next = Action::Leave;
                        self.timers.schedule(idx, due);
                    }
                    _ => {
                        b.polls_left = b.polls_left.saturating_sub(1);
                        b.next = Action::Status;
                        self.timers.schedule(idx, due);
                    }
                }
            }
            Some(State::Other) | None => self.fail(
                idx,
                format!("an answer without a known state ({})", reply.code),
            ),
        }
    }
}

fn new_buyer(idx: u32, seed: u64, abandon: f64, leave: f64) -> Buyer {
    let r = splitmix(seed.wrapping_mul(0x1_0000_0001) ^ u64::from(idx));
    let u = unit(r);
    let fate = if u < abandon {
        Fate::Abandon
    } else if u < abandon + leave {
        Fate::Leave
    } else {
        Fate::Stay
    };
    Buyer {
        ticket_at: 0,
        eta_s: u32::MAX,
        eta_at_ms: 0,
        ticket_len: 0,
        next: Action::Join,
        phase: Phase::Active,
        fate,
        polls_left: (splitmix(r) % 9) as u8,
    }
}

/// Buyer `idx`'s user id in the run salted `salt` (random-looking v4 ids, none stored).
fn user_id(salt: u64, idx: u32) -> UserId {
    let hi = splitmix(salt ^ u64::from(idx));
    let lo = splitmix(hi ^ salt.rotate_left(17));
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&hi.to_be_bytes());
    bytes[8..].copy_from_slice(&lo.to_be_bytes());
    UserId::from(uuid::Builder::from_random_bytes(bytes).into_uuid())
}

fn uri(base: &str, sale: &str, tail: &str) -> anyhow::Result<Uri> {
    let s = format!("{}/w/{sale}/{tail}", base.trim_end_matches('/'));
    s.parse().with_context(|| format!("{s} is not a URL"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.buyers > 0, "--buyers must be at least 1");
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    for (name, share) in [
        ("--pre-open", args.pre_open),
        ("--abandon", args.abandon),
        ("--leave", args.leave),
    ] {
        anyhow::ensure!(
            (0.0..=1.0).contains(&share),
            "{name} must be a share between 0 and 1"
        );
    }
    anyhow::ensure!(
        args.abandon + args.leave <= 1.0,
        "--abandon and --leave add up to more than 1"
    );
    dropline_core::ids::SaleId::parse_str(&args.sale).context("--sale must be a sale id")?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    let shared = Arc::new(Shared {
        client: Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(args.connections)
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector),
        join: uri(&args.waitroom, &args.sale, "join")?,
        status: uri(&args.waitroom, &args.sale, "status")?,
        ring: mint::ring(&args.signing_key)?,
    });
    let n = args.buyers;
    let buyers: Vec<Buyer> = (0..n)
        .map(|i| new_buyer(i, args.seed, args.abandon, args.leave))
        .collect();
    let pre_open = ((f64::from(n) * args.pre_open).round() as u32).clamp(1, n);
    let mut sim = Sim {
        start: Instant::now(),
        start_epoch_ms: chrono::Utc::now().timestamp_millis(),
        salt: splitmix(
            u64::try_from(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)).unwrap_or(0)
                ^ u64::from(std::process::id()),
        ),
        buyers,
        arena: Vec::with_capacity(n as usize * 76),
        timers: Timers::with_capacity(n as usize),
        pre_open,
        opens_known: false,
        in_flight: 0,
        t: Tally {
            codes: BTreeMap::new(),
            states: BTreeMap::new(),
            errors: 0,
            error_samples: Vec::new(),
            status_latency: report::latency_histogram()?,
            join_latency: report::latency_histogram()?,
            lateness: report::latency_histogram()?,
            polls: Series::default(),
            joins: Series::default(),
            admitted: Series::default(),
            eta: Vec::new(),
            joined: 0,
            joined_before_opening: 0,
            burst_joined: 0,
            burst_last_ms: 0,
            first_join_sent_ms: None,
            last_join_ms: 0,
            rejoins: 0,
            retried_after_refusal: 0,
            admitted_total: 0,
            left: 0,
            silent: 0,
            ended: 0,
            failed: 0,
        },
        args,
    };
    // Buyer 0 first: its answer names the opening, which the others' arrivals are set from.
    sim.timers.schedule(0, 0);
    eprintln!(
        "line-sim: {n} buyers ({pre_open} at once, the rest over {} s from the opening), {} connections",
        sim.args.spread_seconds, sim.args.connections
    );
    let (tx, mut rx) = mpsc::unbounded_channel::<Done>();
    let limit = (sim.args.max_seconds > 0).then(|| Duration::from_secs(sim.args.max_seconds));
    let mut progress = tokio::time::interval(Duration::from_secs(5));
    let mut stopped_early = false;
    loop {
        while let Ok(d) = rx.try_recv() {
            sim.handle(d);
        }
        if sim.unfinished() == 0 {
            break;
        }
        if limit.is_some_and(|l| sim.start.elapsed() >= l) {
            stopped_early = true;
            break;
        }
        let now = sim.now_ms();
        while sim.in_flight < sim.args.connections {
            let Some((due, idx)) = sim.timers.pop_due(now) else {
                break;
            };
            sim.dispatch(idx, due, now, &shared, &tx);
        }
        let wake = if sim.in_flight < sim.args.connections {
            sim.timers.next_due()
        } else {
            None
        };
        let sleep_to = sim.start + Duration::from_millis(u64::from(wake.unwrap_or(0)));
        tokio::select! {
            Some(d) = rx.recv() => sim.handle(d),
            () = tokio::time::sleep_until(sleep_to.into()), if wake.is_some() => {}
            _ = progress.tick() => {
                let t = &sim.t;
                let s = sim.now_ms() / 1000;
                let last = t.polls.0.get(s.saturating_sub(1) as usize).copied().unwrap_or(0);
                eprintln!(
                    "line-sim: {s:>4} s joined {} admitted {} left {} silent {} waiting {} | polls/s {last} in flight {} errors {}",
                    t.joined, t.admitted_total, t.left, t.silent, sim.unfinished(), sim.in_flight, t.errors
                );
            }
        }
    }
    let elapsed = sim.start.elapsed();
    print_report(&sim, elapsed, stopped_early)
}

fn print_report(sim: &Sim, elapsed: Duration, stopped_early: bool) -> anyhow::Result<()> {
    let t = &sim.t;
    let args = &sim.args;
    let join_s = t
        .first_join_sent_ms
        .filter(|_| t.joined == args.buyers)
        .map(|first| f64::from(t.last_join_ms.saturating_sub(first)) / 1000.0);
    // The buyers who joined at once: the join throughput, free of the arrival schedule.
    let burst = (t.burst_joined == sim.pre_open)
        .then(|| {
            t.first_join_sent_ms
                .map(|f| f64::from(t.burst_last_ms.saturating_sub(f)) / 1000.0)
        })
        .flatten();
    let eta = report::eta_accuracy(&t.eta);
    let adm = report::admission_rate(&t.admitted, args.admit_per_second);
    let status = report::latency(&t.status_latency);
    let join = report::latency(&t.join_latency);
    let late = report::latency(&t.lateness);
    let codes: BTreeMap<String, u64> = t
        .codes
        .iter()
        .map(|((a, c), n)| {
            (
                format!(
                    "{a:?} {}",
                    if *c == 0 {
                        "error".into()
                    } else {
                        c.to_string()
                    }
                ),
                *n,
            )
        })
        .collect();
    let json = serde_json::json!({
        "buyers": args.buyers,
        "connections": args.connections,
        "pre_open_share": args.pre_open,
        "abandon_share": args.abandon,
        "leave_share": args.leave,
        "elapsed_s": elapsed.as_secs_f64(),
        "stopped_at_max_seconds": stopped_early,
        "joined": t.joined,
        "joined_before_opening": t.joined_before_opening,
        "time_to_join_all_s": join_s,
        "joined_at_once": sim.pre_open,
        "time_to_join_those_at_once_s": burst,
        "joins_per_second": t.joins.0,
        "polls_total": t.polls.total(),
        "polls_per_second": t.polls.0,
        "polls_per_second_max": t.polls.0.iter().max().copied().unwrap_or(0),
        "status_latency": status,
        "join_latency": join,
        "tool_lateness_of_polls": late,
        "admitted": t.admitted_total,
        "admitted_per_second": t.admitted.0,
        "admission_rate": adm,
        "eta_accuracy": eta,
        "left": t.left,
        "silent": t.silent,
        "ended_sold_out_or_closed": t.ended,
        "failed": t.failed,
        "still_waiting": sim.unfinished(),
        "rejoins_after_404": t.rejoins,
        "retried_after_429_503": t.retried_after_refusal,
        "answers": codes,
        "states": t.states,
        "errors": t.errors,
        "error_samples": t.error_samples,
        // The record, its heap entry and its ticket(s) in the arena.
        "bytes_per_buyer_in_tool": std::mem::size_of::<Buyer>() + 8 + sim.arena.len() / args.buyers as usize,
    });
    if let Some(path) = &args.out {
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let fmt = |l: &report::Latency| {
        format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} requests)",
            l.p50_ms, l.p99_ms, l.max_ms, l.count
        )
    };
    println!(
        "line-sim: {} buyers, {:.1} s{}",
        args.buyers,
        elapsed.as_secs_f64(),
        if stopped_early {
            " (stopped at --max-seconds)"
        } else {
            ""
        }
    );
    println!(
        "  joined              {} ({} before the opening); all joined in {}",
        t.joined,
        t.joined_before_opening,
        join_s.map_or("-".into(), |s| format!("{s:.1} s"))
    );
    println!(
        "  joined at once      {} in {}",
        sim.pre_open,
        burst.map_or("-".into(), |s| format!(
            "{s:.1} s ({:.0} joins/s)",
            f64::from(sim.pre_open) / s.max(0.001)
        ))
    );
    println!("  join latency        {}", fmt(&join));
    println!(
        "  status polls        {} total, peak {} /s",
        t.polls.total(),
        t.polls.0.iter().max().copied().unwrap_or(0)
    );
    println!("  status latency      {}", fmt(&status));
    println!("  poll lateness       {}", fmt(&late));
    println!(
        "  admitted            {} (seen mean {:.1}/s, most in 10 s {}{})",
        t.admitted_total,
        adm.mean_seen_per_second,
        adm.max_seen_in_10s,
        adm.max_10s_over_rate
            .map_or(String::new(), |r| format!(", {r:.3} of R·10"))
    );
    println!(
        "  ETA (door.md §3)    {} measured, {:.1}% within 20% + 2 s, median |W-E| {:.1} s",
        eta.measured,
        eta.share_within * 100.0,
        eta.median_abs_error_s
    );
    println!(
        "  left {}, silent {}, sold out/closed {}, failed {}, still waiting {}, rejoins {}, retried after 429/503 {}",
        t.left,
        t.silent,
        t.ended,
        t.failed,
        sim.unfinished(),
        t.rejoins,
        t.retried_after_refusal
    );
    println!(
        "  answers             {}",
        codes
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  errors              {}{}",
        t.errors,
        t.error_samples
            .first()
            .map_or(String::new(), |e| format!(" (first: {e})"))
    );
    Ok(())
}
