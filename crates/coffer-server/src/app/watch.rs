//! WatchSecrets: a tenant's committed changes to secrets, versions and
//! bindings, read from its audit chain (docs/adr/0009). A [`ChangeStream`]
//! keeps a cursor (the last seq it has looked at), reads the successful
//! mutation events after it, turns them into [`ChangeEvent`]s, keeps those its
//! filter lets through and hands them out in seq order. It looks again every
//! poll interval, or at once when this process says a tenant changed
//! ([`Coffer::notify_changes`]); [`Coffer::close_watches`] ends every stream
//! at shutdown.
//!
//! Resume tokens are page tokens ([`coffer_core::page`]) bound to the tenant
//! and the filter, with a seq as cursor. They are not signed: a made-up token
//! can only replay changes its caller may watch anyway.

mod stream;

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use coffer_core::record::{UnixMicros, now_micros};
use coffer_core::{Error, ErrorCode, Reason, Result, SecretKey, SecretName, TenantId, page};
use coffer_store::AuditFilter;
use tokio::sync::watch;

use super::Coffer;
use super::bindings::{Consumer, validate_consumer};

pub use stream::ChangeStream;

/// The audit actions that are changes a watcher sees; everything else in the
/// chain (resolves, denials, vault changes) only moves the cursor.
const CHANGE_ACTIONS: &[&str] = &[
    "secret.create",
    "secret.link",
    "secret.import",
    "secret.rotate",
    "secret.promote",
    "secret.update",
    "secret.delete",
    "secret.undelete",
    "secret.purge",
    "version.disable",
    "version.enable",
    "version.destroy",
    "binding.create",
    "binding.delete",
    "binding.sync",
];

/// Change events read per query, and so at most per message.
const READ_BATCH: usize = 256;

/// Secrets one request may name.
const MAX_WATCHED_SECRETS: usize = 100;

/// Timing and replay limits of WatchSecrets.
#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    /// How often a stream looks for new events: the longest a change made on
    /// another replica waits before its watchers see it.
    pub poll_interval: Duration,
    /// A resume token whose next event is older than this is expired.
    pub max_replay_age: Duration,
    /// A resume token more events than this behind the chain's head (of any
    /// kind, resolves included: that is what a replay scans) is expired.
    pub max_replay_events: i64,
    /// A stream whose cursor moved past events it does not show sends an
    /// empty message with a fresh token after this long, so that a quiet
    /// watcher's token does not fall out of the replay window.
    pub checkpoint_interval: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            poll_interval: Duration::from_millis(200),
            max_replay_age: Duration::from_secs(7 * 24 * 3600),
            max_replay_events: 1_000_000,
            checkpoint_interval: Duration::from_secs(30),
        }
    }
}

/// What every stream of this process shares: the options and the shutdown
/// flag. Wake-ups come from the store's commit notices
/// (`Store::subscribe_commits`), which every committed mutation sends, and
/// on PostgreSQL every other replica's mutations too.
#[derive(Debug)]
pub(crate) struct WatchHub {
    options: WatchOptions,
    closed: watch::Sender<bool>,
}

impl WatchHub {
    pub(crate) fn new(options: WatchOptions) -> Self {
        WatchHub {
            options,
            closed: watch::channel(false).0,
        }
    }
}

/// A WatchSecrets request, as received.
#[derive(Debug, Clone)]
pub struct WatchRequest {
    pub tenant: TenantId,
    /// Secret resource names; empty means every secret.
    pub secrets: Vec<String>,
    pub consumer: Option<Consumer>,
    /// Empty starts from now.
    pub resume_token: String,
}

/// What kind of change an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Created,
    Rotated,
    VersionStaged,
    VersionDisabled,
    VersionEnabled,
    VersionDestroyed,
    SecretUpdated,
    SecretDisabled,
    SecretEnabled,
    SecretDeleted,
    SecretUndeleted,
    SecretPurged,
    BindingChanged,
}

/// One change, never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    pub kind: ChangeKind,
    /// None for binding changes.
    pub secret: Option<SecretName>,
    /// 0 when the change is not about one version.
    pub version: i64,
    /// The binding's resource name (created or deleted bindings).
    pub binding: String,
    /// The consumer whose bindings changed.
    pub consumer: Option<Consumer>,
    pub config_path: String,
    pub time: UnixMicros,
    /// Empty on consumer streams.
    pub principal: String,
    /// The seq of the audit event that records the change.
    pub seq: i64,
    pub resume_token: String,
}

/// One message of a stream: events in seq order (none in the first message
/// and in checkpoints) and the token that resumes after all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeBatch {
    pub events: Vec<ChangeEvent>,
    pub resume_token: String,
}

/// Which changes a stream shows.
#[derive(Debug, Clone)]
struct Filter {
    /// None: every secret.
    secrets: Option<BTreeSet<SecretKey>>,
    consumer: Option<Consumer>,
}

impl Filter {
    fn parse(req: &WatchRequest) -> Result<Filter> {
        if req.secrets.len() > MAX_WATCHED_SECRETS {
            return Err(Error::invalid_field(
                "secrets",
                format!("name at most {MAX_WATCHED_SECRETS} secrets, or none to watch all"),
            ));
        }
        let mut secrets = BTreeSet::new();
        for (i, raw) in req.secrets.iter().enumerate() {
            let field = format!("secrets[{i}]");
            let name = SecretName::parse(raw, &field)?;
            if name.tenant != req.tenant {
                return Err(Error::invalid_field(
                    field,
                    "must be a secret of the parent tenant",
                ));
            }
            secrets.insert(name.key);
        }
        if let Some((kind, id)) = &req.consumer {
            validate_consumer(kind, id, "consumer")?;
        }
        Ok(Filter {
            secrets: (!secrets.is_empty()).then_some(secrets),
            consumer: req.consumer.clone(),
        })
    }

    /// What a resume token is bound to: the tenant and this filter.
    fn scope(&self, tenant: &TenantId) -> String {
        let secrets = self
            .secrets
            .iter()
            .flatten()
            .map(SecretKey::as_str)
            .collect::<Vec<_>>()
            .join(",");
        let mut parts = vec!["watch", tenant.as_str(), &secrets];
        if let Some((kind, id)) = &self.consumer {
            parts.extend(["consumer", kind, id]);
        }
        page::query_scope(&parts)
    }

    fn names(&self, key: &SecretKey) -> bool {
        self.secrets.as_ref().is_none_or(|keys| keys.contains(key))
    }
}

impl Coffer {
    /// Opens a change stream at the head of the tenant's chain, or right
    /// after a resume token's event. The caller has been authorized.
    pub async fn watch(&self, req: WatchRequest) -> Result<ChangeStream> {
        let filter = Filter::parse(&req)?;
        ChangeStream::open(self.clone(), req.tenant, filter, &req.resume_token).await
    }

    /// Ends every open stream with UNAVAILABLE and refuses new ones, so that
    /// a graceful shutdown does not wait for watchers that never hang up.
    pub fn close_watches(&self) {
        self.inner.watch.closed.send_replace(true);
    }

    async fn head_seq(&self, tenant: &TenantId) -> Result<i64> {
        Ok(self.store().audit_head(tenant).await?.map_or(0, |h| h.seq))
    }

    /// Refuses a token the server will not replay from: one ahead of the
    /// chain (not ours), or one outside the replay window.
    async fn check_replayable(&self, tenant: &TenantId, seq: i64, head: i64) -> Result<()> {
        if seq > head {
            return Err(invalid_token());
        }
        let options = self.inner.watch.options;
        if head - seq > options.max_replay_events {
            return Err(token_expired());
        }
        let next = self
            .store()
            .list_audit_events(tenant, &AuditFilter::default(), Some(seq), 1)
            .await?;
        let max_age = i64::try_from(options.max_replay_age.as_micros()).unwrap_or(i64::MAX);
        match next.first() {
            Some(event) if event.event.time < now_micros().saturating_sub(max_age) => {
                Err(token_expired())
            }
            _ => Ok(()),
        }
    }

    async fn bound_secrets(
        &self,
        tenant: &TenantId,
        (kind, id): &Consumer,
    ) -> Result<HashSet<SecretKey>> {
        let bindings = self.store().consumer_bindings(tenant, kind, id, "").await?;
        Ok(bindings.into_iter().map(|b| b.secret_key).collect())
    }
}

fn decode_token(raw: &str, scope: &str) -> Result<Option<i64>> {
    let Some(cursor) = page::decode(raw, scope, "resume_token").map_err(|_| invalid_token())?
    else {
        return Ok(None);
    };
    match cursor.parse::<i64>() {
        Ok(seq) if seq >= 0 => Ok(Some(seq)),
        _ => Err(invalid_token()),
    }
}

fn invalid_token() -> Error {
    Error::invalid_field(
        "resume_token",
        "resume_token does not come from a stream of this tenant with these secrets and \
         consumer; watch without it",
    )
}

fn token_expired() -> Error {
    Error::new(
        ErrorCode::OutOfRange,
        Reason::WatchTokenExpired,
        "resume_token is older than the changes this server replays; read the secrets \
         again, then watch without a resume_token",
    )
}

fn shutting_down() -> Error {
    Error::new(
        ErrorCode::Unavailable,
        Reason::ShuttingDown,
        "the server is shutting down; reconnect with the last resume_token",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_tenant_and_filter() {
        let tenant = TenantId::parse("acme", "t").unwrap();
        let request = |secrets: &[&str], consumer: Option<(&str, &str)>| WatchRequest {
            tenant: tenant.clone(),
            secrets: secrets.iter().map(|s| (*s).to_owned()).collect(),
            consumer: consumer.map(|(k, i)| (k.to_owned(), i.to_owned())),
            resume_token: String::new(),
        };
        let all = Filter::parse(&request(&[], None)).unwrap().scope(&tenant);
        let one = Filter::parse(&request(&["tenants/acme/secrets/db"], None))
            .unwrap()
            .scope(&tenant);
        let agent = Filter::parse(&request(&[], Some(("agent", "a1"))))
            .unwrap()
            .scope(&tenant);
        let other = TenantId::parse("globex", "t").unwrap();
        let globex = Filter::parse(&request(&[], None)).unwrap().scope(&other);
        let scopes: HashSet<_> = [&all, &one, &agent, &globex].into_iter().collect();
        assert_eq!(scopes.len(), 4);

        let token = page::encode(&all, "42");
        assert_eq!(decode_token(&token, &all).unwrap(), Some(42));
        assert_eq!(decode_token("", &all).unwrap(), None);
        for scope in [&one, &agent, &globex] {
            let err = decode_token(&token, scope).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidArgument);
        }
        assert!(decode_token("forged", &all).is_err());
        assert!(decode_token(&page::encode(&all, "-1"), &all).is_err());
    }

    #[test]
    fn requests_name_secrets_of_their_tenant_only() {
        let tenant = TenantId::parse("acme", "t").unwrap();
        let mut req = WatchRequest {
            tenant,
            secrets: vec!["tenants/globex/secrets/db".into()],
            consumer: None,
            resume_token: String::new(),
        };
        let err = Filter::parse(&req).unwrap_err();
        assert_eq!(err.violations()[0].field, "secrets[0]");
        req.secrets = vec!["tenants/acme/secrets/db".into(); MAX_WATCHED_SECRETS + 1];
        assert!(Filter::parse(&req).is_err());
        req.secrets.clear();
        req.consumer = Some(("Agent".into(), "a1".into()));
        assert!(Filter::parse(&req).is_err());
    }
}
