//! [`CachedResolver`]: resolved values kept in memory and kept fresh by a
//! background WatchSecrets stream.
//!
//! The stream is opened, and its first message awaited, before anything is
//! read, so every change after a read arrives on the stream (ADR 0009). An
//! event for a secret drops its cached value and every cached binding set
//! that uses it; a binding change drops the consumer's binding sets. The
//! next read fetches again. While the stream is down, entries expire `ttl`
//! after they were fetched or after the stream went down, whichever is
//! later, and the task reconnects with backoff from the last resume token,
//! so nothing that changed in between is missed. A token the server no
//! longer replays (OUT_OF_RANGE) drops the whole cache. Reads that raced a
//! change are answered but not cached (a generation counter tells).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::codec::Streaming;
use tonic::{Code, Status};

use coffer_proto::v1;
use coffer_proto::v1::secret_change_event::Type;

use crate::client::Client;
use crate::error::Error;
use crate::retry::RetryPolicy;
use crate::value::{ResolvedBindings, SecretValue};

/// The server sends a stream's first message at once; a stream that has not
/// within this long is treated as down.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a [`CachedResolver`] watches and how it copes with a lost stream.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// Watch only this consumer's bound secrets and bindings: what the
    /// resolver role may watch. The cache then serves only
    /// `resolve_bindings` for this consumer. `None` watches the whole tenant
    /// (needs a role that may read metadata).
    pub consumer: Option<v1::Consumer>,
    /// How long entries stay usable while the stream is down.
    pub ttl: Duration,
    /// Backoff between reconnect attempts (attempts are unbounded; only the
    /// backoff settings are used).
    pub reconnect: RetryPolicy,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            consumer: None,
            ttl: Duration::from_secs(60),
            reconnect: RetryPolicy {
                max_attempts: u32::MAX,
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(10),
            },
        }
    }
}

/// What a subscriber of [`CachedResolver::subscribe`] is told.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheEvent {
    /// A committed change (names and versions, never values); the cached
    /// entries it concerns were dropped, so the next read is fresh.
    Changed(Box<v1::SecretChangeEvent>),
    /// The whole cache was dropped (the resume token expired): reload everything.
    Reset,
    /// The stream was lost; entries now expire after the TTL.
    Disconnected,
    /// The stream is back and replays what was missed.
    Reconnected,
}

/// Resolved values served from memory, invalidated by WatchSecrets. Cheap to
/// clone; the background task stops when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct CachedResolver {
    shared: Arc<Shared>,
    _task: Arc<AbortOnDrop>,
}

#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug)]
struct Shared {
    client: Client,
    options: CacheOptions,
    state: Mutex<State>,
    events: broadcast::Sender<CacheEvent>,
}

/// Cached entries and the stream's health. Dropping an entry zeroizes it.
#[derive(Debug, Default)]
struct State {
    /// Bumped by every invalidation; a read started under another
    /// generation is not cached.
    generation: u64,
    /// When the stream went down; `None` while it is up.
    down_since: Option<Instant>,
    /// By secret name.
    secrets: HashMap<String, Entry<SecretValue>>,
    bindings: HashMap<BindingsKey, Entry<ResolvedBindings>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BindingsKey {
    kind: String,
    id: String,
    prefix: String,
}

#[derive(Debug)]
struct Entry<T> {
    value: T,
    fetched_at: Instant,
}

impl State {
    fn is_fresh<T>(&self, entry: &Entry<T>, ttl: Duration) -> bool {
        match self.down_since {
            None => true,
            Some(down) => entry.fetched_at.max(down).elapsed() < ttl,
        }
    }

    fn clear(&mut self) {
        self.generation += 1;
        self.secrets.clear();
        self.bindings.clear();
    }
}

impl CachedResolver {
    /// Opens the watch stream (retrying UNAVAILABLE under the client's
    /// policy), waits for its first message, and starts following it.
    pub async fn start(client: Client, options: CacheOptions) -> Result<CachedResolver, Error> {
        let (events, _) = broadcast::channel(256);
        let shared = Arc::new(Shared {
            client,
            options,
            state: Mutex::new(State::default()),
            events,
        });
        let (stream, token) = shared.client.retry(|| shared.open("")).await?;
        let task = tokio::spawn(follow(shared.clone(), stream, token));
        Ok(CachedResolver {
            shared,
            _task: Arc::new(AbortOnDrop(task)),
        })
    }

    /// Changes as they are applied. A receiver that falls more than 256
    /// events behind gets `Lagged` and should reload everything.
    pub fn subscribe(&self) -> broadcast::Receiver<CacheEvent> {
        self.shared.events.subscribe()
    }

    /// Whether the watch stream is up (entries never expire while it is).
    pub fn is_watching(&self) -> bool {
        self.shared.lock().down_since.is_none()
    }

    /// The current value of `key` (this tenant's key or a full secret name),
    /// from the cache when it is fresh, else from the server (then cached).
    pub async fn resolve(&self, key: &str) -> Result<SecretValue, Error> {
        let shared = &self.shared;
        if shared.options.consumer.is_some() {
            return Err(Error::OutOfScope(
                "this cache watches one consumer's bindings: use resolve_bindings".into(),
            ));
        }
        let name = shared.client.secret_name(key);
        if !name.starts_with(&format!("{}/secrets/", shared.client.parent())) {
            return Err(Error::OutOfScope(format!(
                "{name} is not a secret of tenant {}",
                shared.client.tenant()
            )));
        }
        let generation = {
            let state = shared.lock();
            match state.secrets.get(&name) {
                Some(entry) if state.is_fresh(entry, shared.options.ttl) => {
                    return Ok(entry.value.clone());
                }
                _ => state.generation,
            }
        };
        let value = shared.client.resolve(&name).await?;
        let mut state = shared.lock();
        if state.generation == generation {
            state.secrets.insert(
                name,
                Entry {
                    value: value.clone(),
                    fetched_at: Instant::now(),
                },
            );
        }
        Ok(value)
    }

    /// Every binding of `consumer` under `config_path_prefix`, resolved,
    /// from the cache when it is fresh, else from the server (then cached).
    pub async fn resolve_bindings(
        &self,
        consumer: &v1::Consumer,
        config_path_prefix: &str,
    ) -> Result<ResolvedBindings, Error> {
        let shared = &self.shared;
        if let Some(watched) = &shared.options.consumer
            && watched != consumer
        {
            return Err(Error::OutOfScope(format!(
                "this cache watches consumer {}/{}, not {}/{}",
                watched.kind, watched.id, consumer.kind, consumer.id
            )));
        }
        let key = BindingsKey {
            kind: consumer.kind.clone(),
            id: consumer.id.clone(),
            prefix: config_path_prefix.to_owned(),
        };
        let generation = {
            let state = shared.lock();
            match state.bindings.get(&key) {
                Some(entry) if state.is_fresh(entry, shared.options.ttl) => {
                    return Ok(entry.value.clone());
                }
                _ => state.generation,
            }
        };
        let value = shared
            .client
            .resolve_bindings(consumer, config_path_prefix)
            .await?;
        let mut state = shared.lock();
        if state.generation == generation {
            state.bindings.insert(
                key,
                Entry {
                    value: value.clone(),
                    fetched_at: Instant::now(),
                },
            );
        }
        Ok(value)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every
        // critical section is a few map operations.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens a stream from `token` (empty: from now) and returns it with the
    /// token of its first message.
    async fn open(
        &self,
        token: &str,
    ) -> Result<(Streaming<v1::WatchSecretsResponse>, String), Status> {
        let request = v1::WatchSecretsRequest {
            parent: self.client.parent(),
            secrets: Vec::new(),
            consumer: self.options.consumer.clone(),
            resume_token: token.to_owned(),
        };
        let mut stream = self
            .client
            .secrets()
            .watch_secrets(request)
            .await?
            .into_inner();
        let first = tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, stream.message())
            .await
            .map_err(|_| Status::unavailable("the watch stream sent no first message"))??
            .ok_or_else(|| Status::unavailable("the watch stream ended at once"))?;
        Ok((stream, first.resume_token))
    }

    fn apply(&self, events: &[v1::SecretChangeEvent]) {
        if events.is_empty() {
            return;
        }
        {
            let mut state = self.lock();
            state.generation += 1;
            for event in events {
                if !event.secret.is_empty() {
                    state.secrets.remove(&event.secret);
                    state
                        .bindings
                        .retain(|_, entry| !entry.value.uses(&event.secret));
                }
                if event.r#type == Type::BindingChanged as i32 {
                    match &event.consumer {
                        Some(consumer) => state
                            .bindings
                            .retain(|key, _| key.kind != consumer.kind || key.id != consumer.id),
                        None => state.bindings.clear(),
                    }
                }
            }
        }
        for event in events {
            let _ = self
                .events
                .send(CacheEvent::Changed(Box::new(event.clone())));
        }
    }

    fn set_down(&self) {
        let mut state = self.lock();
        if state.down_since.is_none() {
            state.down_since = Some(Instant::now());
            drop(state);
            let _ = self.events.send(CacheEvent::Disconnected);
        }
    }

    fn set_up(&self) {
        let mut state = self.lock();
        // Entries that expired while the stream was down stay expired.
        let ttl = self.options.ttl;
        if let Some(down) = state.down_since.take() {
            state
                .secrets
                .retain(|_, e| e.fetched_at.max(down).elapsed() < ttl);
            state
                .bindings
                .retain(|_, e| e.fetched_at.max(down).elapsed() < ttl);
        }
        drop(state);
        let _ = self.events.send(CacheEvent::Reconnected);
    }

    fn reset(&self) {
        self.lock().clear();
        let _ = self.events.send(CacheEvent::Reset);
    }
}

/// Whether the server refused to replay from a token: OUT_OF_RANGE (too
/// old) or INVALID_ARGUMENT (e.g. past the head after a restore).
fn token_refused(status: &Status) -> bool {
    matches!(status.code(), Code::OutOfRange | Code::InvalidArgument)
}

/// Follows `stream`, and reconnects from the last token whenever it is lost.
async fn follow(
    shared: Arc<Shared>,
    mut stream: Streaming<v1::WatchSecretsResponse>,
    mut token: String,
) {
    loop {
        loop {
            match stream.message().await {
                Ok(Some(message)) => {
                    shared.apply(&message.events);
                    if !message.resume_token.is_empty() {
                        token = message.resume_token;
                    }
                }
                Ok(None) => {
                    tracing::warn!("coffer watch stream ended, reconnecting");
                    break;
                }
                Err(status) => {
                    tracing::warn!(code = ?status.code(), message = status.message(), "coffer watch stream lost, reconnecting");
                    break;
                }
            }
        }
        shared.set_down();
        let mut failures = 0u32;
        stream = loop {
            match shared.open(&token).await {
                Ok((stream, first_token)) => {
                    // A stream without a token starts from now: whatever
                    // changed before it is unknown, so nothing cached survives.
                    if token.is_empty() {
                        shared.reset();
                    }
                    token = first_token;
                    break stream;
                }
                Err(status) if !token.is_empty() && token_refused(&status) => {
                    tracing::warn!(code = ?status.code(), message = status.message(), "coffer watch token refused, dropping the cache");
                    shared.reset();
                    token.clear();
                }
                Err(status) => {
                    tracing::debug!(code = ?status.code(), "coffer watch reconnect failed");
                    tokio::time::sleep(shared.options.reconnect.backoff(failures)).await;
                    failures = failures.saturating_add(1);
                }
            }
        };
        shared.set_up();
    }
}
