//! Write batching: many tasks each hand one item to a single writer task, which takes every
//! item queued at that moment (up to a maximum) into one call and answers each task with its
//! own result. A lone item goes at once, so batching costs no latency when idle; under load
//! one MySQL round trip and one commit serve hundreds of items.
//!
//! The confirm worker books paid orders this way (and looks up who to mail), and the payment
//! worker records payments.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

struct Job<I, O> {
    item: I,
    reply: oneshot::Sender<anyhow::Result<O>>,
}

/// The handle tasks submit items through. Cheap to clone; the writer ends once every clone
/// is dropped and the items queued are written.
pub struct Batcher<I, O> {
    jobs: mpsc::Sender<Job<I, O>>,
    name: &'static str,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
            name: self.name,
        }
    }
}

impl<I, O> std::fmt::Debug for Batcher<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").field("name", &self.name).finish()
    }
}

/// The writer task. Dropping it aborts the writer (the process "dies" with items in hand);
/// [`Writer::finish`] waits for it to end instead.
pub struct Writer(Option<JoinHandle<()>>);

impl Writer {
    /// Waits until every [`Batcher`] is dropped and the items queued are written.
    pub async fn finish(mut self) {
        if let Some(handle) = self.0.take()
            && let Err(error) = handle.await
        {
            tracing::error!(%error, "a batch writer task failed");
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(handle) = &self.0 {
            handle.abort();
        }
    }
}

/// Starts a writer that calls `write` with up to `max` items at a time. `write` answers one
/// result per item, in order (it decides what a failed batch means for each item, e.g. by
/// writing them again one by one). `name` labels errors and the
/// `dropline_batch_size{batch=name}` histogram.
pub fn start<I, O, F, Fut>(name: &'static str, max: usize, mut write: F) -> (Batcher<I, O>, Writer)
where
    I: Send + 'static,
    O: Send + 'static,
    F: FnMut(Vec<I>) -> Fut + Send + 'static,
    Fut: Future<Output = Vec<anyhow::Result<O>>> + Send,
{
    let max = max.max(1);
    let (jobs, mut queue) = mpsc::channel::<Job<I, O>>(max);
    let handle = tokio::spawn(async move {
        let mut batch: Vec<Job<I, O>> = Vec::with_capacity(max);
        while queue.recv_many(&mut batch, max).await > 0 {
            let (items, replies): (Vec<I>, Vec<_>) =
                batch.drain(..).map(|job| (job.item, job.reply)).unzip();
            metrics::histogram!("dropline_batch_size", "batch" => name).record(items.len() as f64);
            let results = write(items).await;
            if results.len() != replies.len() {
                // A bug in `write`: fail every caller rather than guess who got what.
                let reason = format!(
                    "{name}: the writer answered {} results for {} items",
                    results.len(),
                    replies.len()
                );
                tracing::error!(%reason);
                for reply in replies {
                    let _ = reply.send(Err(anyhow::anyhow!("{reason}")));
                }
                continue;
            }
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
    });
    (Batcher { jobs, name }, Writer(Some(handle)))
}

impl<I, O> Batcher<I, O> {
    /// Queues `item` and waits for its result.
    pub async fn submit(&self, item: I) -> anyhow::Result<O> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { item, reply })
            .await
            .map_err(|_| anyhow::anyhow!("the {} writer has stopped", self.name))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the {} writer dropped the item", self.name))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn concurrent_items_share_calls_and_each_gets_its_own_answer() -> anyhow::Result<()> {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&sizes);
        let (batcher, writer) = start("test", 8, move |items: Vec<u32>| {
            let seen = Arc::clone(&seen);
            async move {
                if let Ok(mut s) = seen.lock() {
                    s.push(items.len());
                }
                tokio::task::yield_now().await;
                items
                    .into_iter()
                    .map(|i| {
                        if i == 13 {
                            Err(anyhow::anyhow!("unlucky"))
                        } else {
                            Ok(i * 2)
                        }
                    })
                    .collect()
            }
        });
        let tasks: Vec<_> = (0..40u32)
            .map(|i| {
                let b = batcher.clone();
                tokio::spawn(async move { (i, b.submit(i).await.ok()) })
            })
            .collect();
        for task in tasks {
            let (i, answer) = task.await?;
            assert_eq!(answer, (i != 13).then_some(i * 2), "item {i}");
        }
        drop(batcher);
        writer.finish().await;
        let sizes = sizes.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(sizes.iter().sum::<usize>(), 40);
        assert!(sizes.iter().all(|&n| (1..=8).contains(&n)), "{sizes:?}");
        assert!(sizes.len() < 40, "some items shared a call: {sizes:?}");
        Ok(())
    }

    #[tokio::test]
    async fn a_wrong_number_of_answers_fails_every_caller() {
        let (batcher, _writer) = start("test", 4, |_items: Vec<u32>| async {
            Vec::<anyhow::Result<u32>>::new()
        });
        assert!(batcher.submit(1).await.is_err());
    }
}
