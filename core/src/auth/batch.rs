//! Ed25519 signatures of concurrent requests checked together (issue #22 §3).
//!
//! A token's Ed25519 check is the largest single cost of a join (about half the waitroom's CPU
//! a join) and a fifth of an order's. ed25519-dalek's batch verification checks n signatures
//! with one multi-scalar multiplication: measured on the bench machine, 31 µs for one alone,
//! 17–18 µs a signature in batches of 16 to 64. So a verifier thread takes whatever requests
//! queued while it worked, up to [`MAX_BATCH`], and checks them as one batch; a lone request
//! is checked alone, as before, and waits only for the batch in flight.
//!
//! A batch says yes only if every signature in it is valid. When it says no, the thread checks
//! each signature of that batch alone, so every request gets its own answer and a forged
//! token never fails an honest one. A flood of forged tokens would make every batch fail and
//! cost a batch on top of the single checks, so after a failed batch the thread checks one by
//! one for [`SINGLE_AFTER_FAILURE`] before it tries a batch again: under such a flood a
//! signature costs what it cost before batching, plus one failed batch a second.
//!
//! What a yes of the batch equation means: ed25519-dalek's batch check is the same
//! verification equation with random weights; for a signature whose `R` carries a small-order
//! component it can answer differently from the single check (`R` is compared as a point in
//! the single check). Making such a variant needs a valid signature of the very same message
//! under our key, so a batch never accepts claims our key did not sign.
//!
//! The queue is bounded ([`QUEUE`]): when it is full, or the thread could not be started, a
//! request checks its signature on its own thread, as every request did before.

use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use tokio::sync::oneshot;

/// The most signatures checked as one batch: the gain per signature levels off past 16 (17 µs
/// at 16 and 32, 18 µs at 64 on the bench machine), and a bigger batch only makes its first
/// request wait longer.
pub const MAX_BATCH: usize = 32;

/// Requests waiting for the verifier at most (a few milliseconds of its work); past that a
/// request checks its own signature rather than wait.
pub const QUEUE: usize = 256;

/// After a batch with a bad signature, how long signatures are checked one by one.
pub const SINGLE_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// One signature to check, and where its answer goes.
struct Job {
    key: VerifyingKey,
    message: Vec<u8>,
    signature: Signature,
    reply: oneshot::Sender<bool>,
}

static QUEUE_TX: OnceLock<Option<SyncSender<Job>>> = OnceLock::new();

fn queue() -> Option<&'static SyncSender<Job>> {
    QUEUE_TX
        .get_or_init(|| {
            let (tx, rx) = sync_channel(QUEUE);
            match std::thread::Builder::new()
                .name("dl-sigcheck".into())
                .spawn(move || run(&rx))
            {
                Ok(_) => Some(tx),
                Err(error) => {
                    tracing::warn!(%error, "could not start the signature verifier thread: each request checks its own");
                    None
                }
            }
        })
        .as_ref()
}

/// Whether `signature` is `key`'s over `message` (ed25519-dalek's `verify`, the check
/// jsonwebtoken makes), answered by the verifier thread together with other requests'.
pub async fn check(key: &VerifyingKey, message: &[u8], signature: &Signature) -> bool {
    let Some(tx) = queue() else {
        return alone(key, message, signature);
    };
    let (reply, answer) = oneshot::channel();
    let job = Job {
        key: *key,
        message: message.to_vec(),
        signature: *signature,
        reply,
    };
    match tx.try_send(job) {
        Ok(()) => match answer.await {
            Ok(valid) => valid,
            // The thread is gone (it only stops with the process): check here.
            Err(_) => alone(key, message, signature),
        },
        Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
            metrics::counter!("dropline_signature_checks_inline_total").increment(1);
            alone(&job.key, &job.message, &job.signature)
        }
    }
}

/// The single check (ed25519-dalek's `verify`), as every request made before batching: on the
/// caller's thread when the verifier cannot take the job, and for each job of a failed batch.
fn alone(key: &VerifyingKey, message: &[u8], signature: &Signature) -> bool {
    key.verify(message, signature).is_ok()
}

/// The verifier thread: takes what is queued (waiting for the first), checks it, answers.
fn run(rx: &Receiver<Job>) {
    let mut policy = Policy::default();
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = rx.recv() {
        jobs.push(first);
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let verdicts = settle(&jobs, &mut policy, Instant::now());
        for (job, valid) in jobs.drain(..).zip(verdicts) {
            // A request that gave up (its client went away) dropped its receiver: nothing to do.
            let _ = job.reply.send(valid);
        }
    }
}

/// When to try a batch.
#[derive(Debug, Default)]
struct Policy {
    /// Until then, one by one (a batch failed less than [`SINGLE_AFTER_FAILURE`] before).
    single_until: Option<Instant>,
}

/// Each job's verdict, in order: as one batch when the policy allows and there is more than
/// one, else (and after a failed batch) one by one.
fn settle(jobs: &[Job], policy: &mut Policy, now: Instant) -> Vec<bool> {
    let batch = jobs.len() > 1 && policy.single_until.is_none_or(|until| now >= until);
    if batch {
        let messages: Vec<&[u8]> = jobs.iter().map(|j| j.message.as_slice()).collect();
        let signatures: Vec<Signature> = jobs.iter().map(|j| j.signature).collect();
        let keys: Vec<VerifyingKey> = jobs.iter().map(|j| j.key).collect();
        metrics::histogram!("dropline_signature_batch_size").record(jobs.len() as f64);
        if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
            metrics::counter!("dropline_signature_batches_total", "outcome" => "valid")
                .increment(1);
            policy.single_until = None;
            return vec![true; jobs.len()];
        }
        metrics::counter!("dropline_signature_batches_total", "outcome" => "failed").increment(1);
        policy.single_until = Some(now + SINGLE_AFTER_FAILURE);
    }
    jobs.iter()
        .map(|j| alone(&j.key, &j.message, &j.signature))
        .collect()
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    /// `n` jobs signed by `signer`; those whose index is in `forged` carry a bent signature.
    fn jobs(signer: &SigningKey, n: usize, forged: &[usize]) -> Vec<Job> {
        (0..n)
            .map(|i| {
                let message = format!("header.payload-{i}").into_bytes();
                let mut bytes = signer.sign(&message).to_bytes();
                if forged.contains(&i) {
                    bytes[40] ^= 1;
                }
                Job {
                    key: signer.verifying_key(),
                    message,
                    signature: Signature::from_bytes(&bytes),
                    reply: oneshot::channel().0,
                }
            })
            .collect()
    }

    #[test]
    fn a_batch_of_valid_signatures_is_all_valid() {
        let mut policy = Policy::default();
        let batch = jobs(&key(1), MAX_BATCH, &[]);
        assert_eq!(
            settle(&batch, &mut policy, Instant::now()),
            vec![true; MAX_BATCH]
        );
        assert!(policy.single_until.is_none());
    }

    #[test]
    fn a_forged_signature_fails_only_itself_and_turns_the_next_second_to_single_checks() {
        let mut policy = Policy::default();
        let now = Instant::now();
        let batch = jobs(&key(2), 20, &[3, 17]);
        let got = settle(&batch, &mut policy, now);
        let want: Vec<bool> = (0..20).map(|i| i != 3 && i != 17).collect();
        assert_eq!(got, want);
        assert_eq!(policy.single_until, Some(now + SINGLE_AFTER_FAILURE));
        // Within the second: one by one (the answers are the same, the batch is not tried).
        let later = jobs(&key(2), 8, &[0]);
        let got = settle(&later, &mut policy, now + SINGLE_AFTER_FAILURE / 2);
        assert_eq!(got, vec![false, true, true, true, true, true, true, true]);
        assert_eq!(policy.single_until, Some(now + SINGLE_AFTER_FAILURE));
        // After it, a clean batch again, which clears the mark.
        let clean = jobs(&key(2), 8, &[]);
        assert_eq!(
            settle(&clean, &mut policy, now + SINGLE_AFTER_FAILURE),
            vec![true; 8]
        );
        assert!(policy.single_until.is_none());
    }

    #[test]
    fn signatures_under_different_keys_and_other_messages_are_told_apart() {
        let mut policy = Policy::default();
        let mut batch = jobs(&key(3), 4, &[]);
        batch.extend(jobs(&key(4), 4, &[]));
        // A valid signature presented for another message, and one under another key.
        batch[1].message = b"header.payload-other".to_vec();
        batch[6].key = key(3).verifying_key();
        let got = settle(&batch, &mut policy, Instant::now());
        assert_eq!(got, vec![true, false, true, true, true, true, false, true]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_checks_through_the_thread_each_get_their_own_answer() -> anyhow::Result<()>
    {
        let signer = key(5);
        let public = signer.verifying_key();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..400usize {
            let message = format!("header.payload-{i}").into_bytes();
            let mut bytes = signer.sign(&message).to_bytes();
            let forged = i % 7 == 3;
            if forged {
                bytes[9] ^= 0x80;
            }
            let signature = Signature::from_bytes(&bytes);
            tasks.spawn(async move { (i, forged, check(&public, &message, &signature).await) });
        }
        let mut seen = 0;
        while let Some(done) = tasks.join_next().await {
            let (i, forged, valid) = done?;
            assert_eq!(valid, !forged, "request {i}");
            seen += 1;
        }
        assert_eq!(seen, 400);
        Ok(())
    }
}
