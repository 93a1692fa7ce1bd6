//! watch and watch-fanout: how long a put takes to reach its watchers.
//!
//! Each watcher runs in its own task on its own connection and stream and
//! publishes the highest revision it has received with the instant it
//! received it. The writer puts, learns the put's revision from the
//! response header, and waits until every watcher has published that
//! revision; the operation ends at the latest of those instants (not when
//! the writer wakes up), so the latency is put-to-last-delivery.

use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, WatchOptions, WatchStream};
use tokio::sync::watch as slot;
use tokio::task::JoinHandle;

use super::runner::{self, Ctx, Done};

/// What one watcher has received so far.
#[derive(Clone, Debug)]
struct Seen {
    /// Highest mod_revision of a Put event received.
    revision: i64,
    /// When the response carrying it arrived.
    at: Instant,
    /// Why the stream stopped, once it has.
    ended: Option<String>,
}

/// The watchers of one writer. Dropping it stops their tasks.
pub(super) struct Fanout {
    seen: Vec<slot::Receiver<Seen>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Fanout {
    /// Opens `watchers` watches on the key prefix, the `i`th on a new
    /// connection to `endpoints[i mod len]`, and waits until the server has
    /// confirmed every one.
    pub(super) async fn start(
        endpoints: &[String],
        watchers: usize,
        ctx: &Ctx,
        timeout: Duration,
    ) -> Result<Fanout, String> {
        let clients = runner::connect_all(endpoints, watchers, timeout).await?;
        let prefix = ctx.keys.prefix().as_bytes().to_vec();
        let streams = futures::future::try_join_all(clients.into_iter().enumerate().map(
            |(w, mut client)| {
                let prefix = prefix.clone();
                async move {
                    let open = async {
                        let mut stream = client
                            .watch(prefix, Some(WatchOptions::new().with_prefix()))
                            .await?;
                        let first = stream.message().await?;
                        Ok::<_, etcd_client::Error>((stream, first))
                    };
                    match tokio::time::timeout(timeout, open).await {
                        Ok(Ok((stream, Some(r)))) if r.created() => Ok((client, stream)),
                        Ok(Ok((_, other))) => Err(format!(
                            "watcher {w}: expected the created response, got {other:?}"
                        )),
                        Ok(Err(e)) => Err(format!("watcher {w}: cannot watch: {e}")),
                        Err(_) => Err(format!("watcher {w}: watch not created within {timeout:?}")),
                    }
                }
            },
        ))
        .await?;
        let mut seen = Vec::with_capacity(watchers);
        let mut tasks = Vec::with_capacity(watchers);
        for (client, stream) in streams {
            let (tx, rx) = slot::channel(Seen {
                revision: 0,
                at: Instant::now(),
                ended: None,
            });
            seen.push(rx);
            tasks.push(tokio::spawn(receive(client, stream, tx)));
        }
        Ok(Fanout { seen, tasks })
    }

    /// Puts key `index mod keys` and waits until every watcher has its event.
    pub(super) async fn put_and_wait(
        &mut self,
        c: &mut Client,
        ctx: &Ctx,
        index: u64,
    ) -> Result<Done, String> {
        let resp = c
            .put(ctx.keys.key(index), ctx.value.clone(), None)
            .await
            .map_err(|e| format!("put: {e}"))?;
        let revision = resp
            .header()
            .ok_or("put response without a header")?
            .revision();
        let mut last: Option<Instant> = None;
        for (w, rx) in self.seen.iter_mut().enumerate() {
            let seen = rx
                .wait_for(|s| s.revision >= revision || s.ended.is_some())
                .await
                .map_err(|_| format!("watcher {w} stopped"))?
                .clone();
            if seen.revision < revision {
                let why = seen.ended.expect("wait_for returned on the end");
                return Err(format!("watcher {w} stopped: {why}"));
            }
            last = Some(last.map_or(seen.at, |l| l.max(seen.at)));
        }
        Ok(Done {
            at: last.expect("a fanout has at least one watcher"),
            conflict: false,
        })
    }
}

impl Drop for Fanout {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One watcher's loop: publishes each received Put revision until the
/// stream ends. Holds `_client` so its connection lives as long as the
/// stream.
async fn receive(_client: Client, mut stream: WatchStream, tx: slot::Sender<Seen>) {
    let ended = loop {
        match stream.message().await {
            Ok(Some(resp)) => {
                let at = Instant::now();
                if resp.canceled() {
                    break format!("watch canceled: {:?}", resp.cancel_reason());
                }
                let revision = resp
                    .events()
                    .iter()
                    .filter(|e| e.event_type() == EventType::Put)
                    .filter_map(|e| e.kv().map(|kv| kv.mod_revision()))
                    .max();
                if let Some(revision) = revision {
                    tx.send_modify(|s| {
                        if revision > s.revision {
                            s.revision = revision;
                            s.at = at;
                        }
                    });
                }
            }
            Ok(None) => break "the server closed the stream".to_owned(),
            Err(e) => break e.to_string(),
        }
    };
    tx.send_modify(|s| s.ended = Some(ended));
}
