//! Every config key: its section, type, default and meaning. This one list
//! drives the env overlay (`COFFER_<SECTION>__<KEY>` names map through it),
//! the typed check of file and env values, and `coffer config example`. A
//! unit test holds it equal to the serde structs in `config.rs`.

/// What a key's value must be, in TOML or as an env var's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bool,
    /// A non-negative integer; `max` is the field type's bound (the valid
    /// range is checked later, with the other rules).
    Int {
        max: u64,
    },
    Float,
    Str,
    /// A string that may hold a credential: no message ever repeats it.
    Secret,
    /// A file path; relative paths in a file resolve against its directory.
    Path,
    SocketAddr,
    /// One of a fixed set of strings.
    Choice(&'static [&'static str]),
}

/// A key's value when nothing sets it, as the example file shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shown {
    /// The default, a TOML literal: an active line in the example.
    Default(&'static str),
    /// Unset by default; the literal is a sample, commented out.
    Unset(&'static str),
    /// Needed whenever its section is present; the literal is a sample.
    Required(&'static str),
}

#[derive(Debug)]
pub(crate) struct Section {
    /// Dotted, as in the TOML header: `providers.aws_secrets_manager`.
    pub(crate) name: &'static str,
    pub(crate) doc: &'static str,
    /// Absent unless configured: commented out in the example.
    pub(crate) optional: bool,
}

#[derive(Debug)]
pub(crate) struct Key {
    pub(crate) section: &'static str,
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) shown: Shown,
    pub(crate) doc: &'static str,
}

impl Key {
    /// `server.listen`.
    pub(crate) fn path(&self) -> String {
        format!("{}.{}", self.section, self.name)
    }

    /// `COFFER_SERVER__LISTEN`.
    pub(crate) fn env_var(&self) -> String {
        let mut name = String::from("COFFER_");
        for part in self.section.split('.').chain([self.name]) {
            name.push_str(&part.to_ascii_uppercase());
            name.push_str("__");
        }
        name.truncate(name.len() - 2);
        name
    }
}

/// The prefix of every overlay env var; the CLI's own flags use single
/// underscores (`COFFER_DATABASE_URL`) and are not part of the overlay.
pub(crate) const ENV_PREFIX: &str = "COFFER_";

/// Whether an env var belongs to the overlay (and so must name a key).
pub(crate) fn is_overlay_var(name: &str) -> bool {
    name.starts_with(ENV_PREFIX) && name.contains("__")
}

const U32: Kind = Kind::Int {
    max: u32::MAX as u64,
};
// TOML integers are i64; u64 and usize fields accept what TOML can write.
const U64: Kind = Kind::Int {
    max: i64::MAX as u64,
};

pub(crate) const SECTIONS: &[Section] = &[
    Section {
        name: "server",
        doc: "The gRPC server.",
        optional: false,
    },
    Section {
        name: "tls",
        doc: "Mutual TLS: every caller presents a certificate from client_ca_file. Required\nby `coffer serve` without --dev; comes with [authz]. SIGHUP reloads the files.",
        optional: true,
    },
    Section {
        name: "authz",
        doc: "The role policy (principal -> tenants -> roles); see docs/SECURITY.md.",
        optional: true,
    },
    Section {
        name: "database",
        doc: "Where metadata, versions and the audit trail live.",
        optional: false,
    },
    Section {
        name: "keys",
        doc: "The keyring of key-encryption keys: a file, or an env var holding its JSON\n(set keyring_file or keyring_env, not both).",
        optional: false,
    },
    Section {
        name: "log",
        doc: "Logs on stderr; values and secrets from this file are never logged.",
        optional: false,
    },
    Section {
        name: "telemetry",
        doc: "OpenTelemetry trace export over OTLP/gRPC.",
        optional: false,
    },
    Section {
        name: "metrics",
        doc: "Prometheus metrics over plain HTTP.",
        optional: false,
    },
    Section {
        name: "cache",
        doc: "The resolve path's caches. The value cache holds decrypted values of\nimmutable versions (zeroized on eviction); the metadata cache holds the records\na resolve checks, dropped on every write (across replicas on PostgreSQL).",
        optional: false,
    },
    Section {
        name: "audit",
        doc: "The group-commit writer of resolve audit events: each resolve waits until\nits event's batch is committed.",
        optional: false,
    },
    Section {
        name: "limits",
        doc: "Per-principal and per-role request rates (token buckets; off unless set) and\nthe bound on concurrent provider calls per vault; see docs/SECURITY.md\n\"Rate limits\".",
        optional: false,
    },
    Section {
        name: "providers.aws_secrets_manager",
        doc: "AWS Secrets Manager. Credentials never go here: the server uses the AWS\ndefault credential chain. Region and endpoint are per vault.",
        optional: false,
    },
];

pub(crate) const KEYS: &[Key] = &[
    Key {
        section: "server",
        name: "listen",
        kind: Kind::SocketAddr,
        shown: Shown::Unset("\"127.0.0.1:50051\""),
        doc: "Address of the gRPC API; --listen (COFFER_LISTEN) overrides it.\nUnset: 127.0.0.1:50051.",
    },
    Key {
        section: "server",
        name: "health_listen",
        kind: Kind::SocketAddr,
        shown: Shown::Unset("\"0.0.0.0:8081\""),
        doc: "A plaintext listener serving only grpc.health.v1, for probes that cannot\npresent a client certificate (Kubernetes gRPC probes, the image's HEALTHCHECK).\nUnset: none.",
    },
    Key {
        section: "server",
        name: "max_request_bytes",
        kind: U64,
        shown: Shown::Default("1048576"),
        doc: "Largest request message accepted, in bytes (1024 to 268435456).",
    },
    Key {
        section: "server",
        name: "max_response_bytes",
        kind: U64,
        shown: Shown::Default("16777216"),
        doc: "Largest response message sent, in bytes (1024 to 268435456); a batch of\n100 values of 64 KiB needs about 7 MiB.",
    },
    Key {
        section: "server",
        name: "request_timeout_secs",
        kind: U64,
        shown: Shown::Default("30"),
        doc: "Server-side bound on every call, in seconds (1 to 3600).",
    },
    Key {
        section: "server",
        name: "shutdown_grace_secs",
        kind: U64,
        shown: Shown::Default("20"),
        doc: "After SIGTERM, how long in-flight calls may finish before the server stops\nanyway, in seconds (0 to 3600). Keep it below the orchestrator's kill timeout.",
    },
    Key {
        section: "tls",
        name: "cert_file",
        kind: Kind::Path,
        shown: Shown::Required("\"certs/server.pem\""),
        doc: "The server certificate chain, PEM, leaf first.",
    },
    Key {
        section: "tls",
        name: "key_file",
        kind: Kind::Path,
        shown: Shown::Required("\"certs/server.key\""),
        doc: "The server certificate's private key, PEM.",
    },
    Key {
        section: "tls",
        name: "client_ca_file",
        kind: Kind::Path,
        shown: Shown::Required("\"certs/ca.pem\""),
        doc: "The CA certificates that client certificates must chain to, PEM.",
    },
    Key {
        section: "authz",
        name: "policy_file",
        kind: Kind::Path,
        shown: Shown::Required("\"policy.toml\""),
        doc: "The policy file ([[grant]] principal, tenants, roles).",
    },
    Key {
        section: "database",
        name: "url",
        kind: Kind::Secret,
        shown: Shown::Unset("\"postgres://coffer@db.internal:5432/coffer\""),
        doc: "sqlite://PATH or postgres://USER[:PASSWORD]@HOST[:PORT]/DB. A URL with a\npassword belongs in COFFER_DATABASE__URL, not in this file; --database-url\n(COFFER_DATABASE_URL) overrides it. Unset: SQLite in the data directory.",
    },
    Key {
        section: "database",
        name: "pool_size",
        kind: U32,
        shown: Shown::Default("10"),
        doc: "Connections in the pool (1 to 1000); on SQLite, the read pool.",
    },
    Key {
        section: "database",
        name: "auto_migrate",
        kind: Kind::Bool,
        shown: Shown::Default("true"),
        doc: "Apply pending migrations at start (`coffer migrate up` does it by hand).",
    },
    Key {
        section: "database",
        name: "statement_timeout_ms",
        kind: U64,
        shown: Shown::Default("5000"),
        doc: "PostgreSQL: the longest one statement may run, lock waits included, in\nmilliseconds; the call then answers UNAVAILABLE. 0: no limit. Migrations run\nwithout it. SQLite has no statement timeout: its 5 s busy timeout bounds\nthe lock waits, and the write connection's queue the rest.",
    },
    Key {
        section: "keys",
        name: "keyring_file",
        kind: Kind::Path,
        shown: Shown::Unset("\"/var/lib/coffer/master.key\""),
        doc: "The keyring file, created with mode 0600 on first start and refused if\ngroup or others can read it; --keyring (COFFER_KEYRING_FILE) overrides it.\nUnset: master.key in the data directory.",
    },
    Key {
        section: "keys",
        name: "keyring_env",
        kind: Kind::Str,
        shown: Shown::Unset("\"COFFER_KEYRING\""),
        doc: "The NAME of an env var holding the keyring JSON; when that var is set it\nis used instead of any file. Unset: COFFER_KEYRING.",
    },
    Key {
        section: "log",
        name: "level",
        kind: Kind::Str,
        shown: Shown::Default("\"info\""),
        doc: "A tracing filter directive, e.g. \"info,coffer_store=debug\".",
    },
    Key {
        section: "log",
        name: "format",
        kind: Kind::Choice(&["json", "pretty"]),
        shown: Shown::Default("\"pretty\""),
        doc: "\"json\" (one object per line, for collectors) or \"pretty\" (for people).",
    },
    Key {
        section: "telemetry",
        name: "otlp_endpoint",
        kind: Kind::Str,
        shown: Shown::Unset("\"http://otel-collector:4317\""),
        doc: "The OTLP/gRPC collector, an http:// or https:// URL. Unset: no trace export.",
    },
    Key {
        section: "telemetry",
        name: "service_name",
        kind: Kind::Str,
        shown: Shown::Default("\"coffer\""),
        doc: "The service.name resource attribute of exported spans.",
    },
    Key {
        section: "telemetry",
        name: "sample_ratio",
        kind: Kind::Float,
        shown: Shown::Default("1.0"),
        doc: "Fraction of traces sampled, 0.0 to 1.0 (child spans follow their parent).",
    },
    Key {
        section: "metrics",
        name: "listen",
        kind: Kind::SocketAddr,
        shown: Shown::Unset("\"0.0.0.0:9090\""),
        doc: "Serve Prometheus text at http://ADDRESS/metrics. Unset: no metrics listener.",
    },
    Key {
        section: "cache",
        name: "values_enabled",
        kind: Kind::Bool,
        shown: Shown::Default("true"),
        doc: "Cache decrypted values of versions that cannot change remotely.",
    },
    Key {
        section: "cache",
        name: "values_max_bytes",
        kind: U64,
        shown: Shown::Default("67108864"),
        doc: "Bound on the value cache, in bytes (65536 to 17179869184); least recently\nused values go first.",
    },
    Key {
        section: "cache",
        name: "metadata_enabled",
        kind: Kind::Bool,
        shown: Shown::Default("true"),
        doc: "Cache the secret, version, binding and vault records a resolve checks.",
    },
    Key {
        section: "cache",
        name: "metadata_ttl_ms",
        kind: U64,
        shown: Shown::Default("60000"),
        doc: "How long a metadata record may be served without a write dropping it, in\nmilliseconds (1 to 3600000): the bound for writers that send no notice (raw SQL).\nOther replicas' and processes' writes drop records within a second.",
    },
    Key {
        section: "cache",
        name: "metadata_max_bytes",
        kind: U64,
        shown: Shown::Default("33554432"),
        doc: "Bound on the metadata cache, in bytes of estimated heap (65536 to\n17179869184); a full cache starts over.",
    },
    Key {
        section: "audit",
        name: "max_batch",
        kind: U64,
        shown: Shown::Default("512"),
        doc: "Events per group-commit transaction at most (1 to 10000).",
    },
    Key {
        section: "audit",
        name: "max_delay_us",
        kind: U64,
        shown: Shown::Default("0"),
        doc: "How long a batch's first event waits for company, in microseconds\n(0 to 1000000). 0 commits as soon as the writer is free; events arriving during\na commit form the next batch, so batches grow with load anyway.",
    },
    Key {
        section: "audit",
        name: "queue",
        kind: U64,
        shown: Shown::Default("8192"),
        doc: "Events queued before resolves wait for room (1 to 1000000).",
    },
    Key {
        section: "limits",
        name: "requests_per_second",
        kind: Kind::Float,
        shown: Shown::Unset("50.0"),
        doc: "Calls per second each principal may make, sustained (0.001 to 1000000);\nhealth checks never count. Unset: no default limit.",
    },
    Key {
        section: "limits",
        name: "burst",
        kind: U32,
        shown: Shown::Unset("100"),
        doc: "Calls a principal may make at once after a pause (1 to 1000000). Unset: the\nrate rounded up. Needs requests_per_second.",
    },
    Key {
        section: "limits",
        name: "principal_overrides_file",
        kind: Kind::Path,
        shown: Shown::Unset("\"limits.toml\""),
        doc: "A TOML file of per-principal and per-role rates, read at start:\n[[principal]] id, requests_per_second, burst (optional), and\n[[role]] name (admin, editor, viewer or resolver), requests_per_second,\nburst (optional). A principal's own entry wins; else the most generous rate\nof the roles it holds in any tenant (the policy in force, SIGHUP included);\nelse the default.",
    },
    Key {
        section: "limits",
        name: "provider_concurrency_per_vault",
        kind: U32,
        shown: Shown::Default("64"),
        doc: "Provider calls under way at once per vault, the built-in store counting as\none (1 to 100000).",
    },
    Key {
        section: "limits",
        name: "provider_queue_timeout_ms",
        kind: U64,
        shown: Shown::Default("100"),
        doc: "How long a provider call waits for its turn before failing with\nPROVIDER_BUSY, in milliseconds (0 to 60000).",
    },
    Key {
        section: "providers.aws_secrets_manager",
        name: "enabled",
        kind: Kind::Bool,
        shown: Shown::Default("true"),
        doc: "false: ListProviders says configured = false and no AWS vault works.",
    },
    Key {
        section: "providers.aws_secrets_manager",
        name: "connect_timeout_ms",
        kind: U64,
        shown: Shown::Default("3000"),
        doc: "Connect timeout per attempt, in milliseconds (1 to 60000).",
    },
    Key {
        section: "providers.aws_secrets_manager",
        name: "operation_timeout_ms",
        kind: U64,
        shown: Shown::Default("10000"),
        doc: "Bound on a whole call, retries included, in milliseconds (1 to 300000).",
    },
    Key {
        section: "providers.aws_secrets_manager",
        name: "max_attempts",
        kind: U32,
        shown: Shown::Default("3"),
        doc: "Attempts per call, the first included (1 to 10; standard retries with backoff).",
    },
];

pub(crate) fn section(name: &str) -> Option<&'static Section> {
    SECTIONS.iter().find(|s| s.name == name)
}

pub(crate) fn key(section: &str, name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.section == section && k.name == name)
}

pub(crate) fn keys_of(section: &str) -> impl Iterator<Item = &'static Key> + '_ {
    KEYS.iter().filter(move |k| k.section == section)
}

/// The key an overlay env var names, if any.
pub(crate) fn key_for_env(var: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.env_var() == var)
}
