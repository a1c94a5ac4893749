//! The server's config file and env overlay, as far as they are text:
//! `Merged::add_file` (TOML parsing, error positions, unknown keys and the
//! check of every value against its key's kind), `add_env` (the
//! `COFFER_<SECTION>__<KEY>` overlay) and `check_required`, from the coffer
//! binary's crates/coffer/src/config/{keys,sources}.rs. Those two files are
//! compiled into this target from their source (the binary crate has no
//! library to link; nothing is copied, so an edit there is fuzzed here on the
//! next build). The typed step after them (serde into `Config` and the
//! cross-key rules in config.rs and config/rules.rs) needs coffer-server,
//! tonic and tracing-subscriber and is not fuzzed here.
//!
//! Properties: nothing panics and merging is deterministic; every merged
//! value has its key's kind (what serde then reads); every key set has an
//! origin, and every problem names where it came from; the database URL
//! (the one `Kind::Secret` key, which may hold a password) never appears in
//! a problem or a parse error, from the file or from `COFFER_DATABASE__URL`,
//! whatever else the file and env hold.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[path = "../../crates/coffer/src/config"]
mod config {
    #![allow(dead_code)]

    pub(crate) mod keys;
    pub(crate) mod sources;

    use std::path::Path;

    use toml::Value;

    use self::keys::Kind;
    use self::sources::Merged;

    pub(crate) const PATH: &str = "/etc/coffer/coffer.toml";

    /// Merges like `Config::from_sources` up to its typed step; returns
    /// every message a user could see, and the merged table.
    pub(crate) fn merge(text: &str, env: &[(String, String)]) -> (Vec<String>, String) {
        let mut merged = Merged::default();
        if let Err(message) = merged.add_file(text, Path::new(PATH)) {
            assert!(message.starts_with(PATH), "{message}");
            return (vec![message], String::new());
        }
        merged.add_env(env);
        merged.check_required();
        check_kinds(&merged);
        for problem in &merged.problems {
            let named = problem.starts_with(&format!("{PATH}: "))
                || problem.starts_with("config: ")
                || problem.starts_with("env var COFFER_")
                || env
                    .iter()
                    .any(|(name, _)| problem.starts_with(&format!("{name}: ")));
            assert!(named, "a problem that names no source: {problem}");
        }
        (merged.problems.clone(), format!("{:?}", merged.table))
    }

    fn check_kinds(merged: &Merged) {
        for (path, origin) in &merged.origins {
            let key = keys::KEYS
                .iter()
                .find(|k| &k.path() == path)
                .unwrap_or_else(|| panic!("origin for unknown key {path}"));
            let section = key
                .section
                .split('.')
                .try_fold(&merged.table, |t, part| t.get(part)?.as_table())
                .unwrap_or_else(|| panic!("{path} set but its section is missing"));
            let value = section
                .get(key.name)
                .unwrap_or_else(|| panic!("{path} has an origin ({origin:?}) but no value"));
            let ok = match key.kind {
                Kind::Bool => value.is_bool(),
                Kind::Int { max } => value
                    .as_integer()
                    .is_some_and(|i| u64::try_from(i).is_ok_and(|n| n <= max)),
                Kind::Float => value.as_float().is_some_and(f64::is_finite),
                Kind::Str | Kind::Secret | Kind::Path => {
                    value.as_str().is_some_and(|s| !s.is_empty())
                }
                Kind::SocketAddr => value
                    .as_str()
                    .is_some_and(|s| s.parse::<std::net::SocketAddr>().is_ok()),
                Kind::Choice(choices) => {
                    matches!(value, Value::String(s) if choices.contains(&s.as_str()))
                }
            };
            assert!(ok, "{path} = {value:?} does not have kind {:?}", key.kind);
        }
    }
}

const PASSWORD: &str = "Fuzz-Secret-Password-91c3";

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    url_in_env: bool,
    env: Vec<(&'a str, &'a str)>,
    /// TOML text after the database section (last, so that a seed is a
    /// few bytes and then a plain TOML file).
    text: &'a str,
}

fuzz_target!(|input: Input<'_>| {
    if input.text.contains(PASSWORD)
        || input
            .env
            .iter()
            .any(|(k, v)| k.contains(PASSWORD) || v.contains(PASSWORD))
    {
        return;
    }
    let url = format!("postgres://coffer:{PASSWORD}@db.internal:5432/coffer");
    let mut env: Vec<(String, String)> = input
        .env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let text = if input.url_in_env {
        env.push(("COFFER_DATABASE__URL".to_owned(), url));
        input.text.to_owned()
    } else {
        format!("[database]\nurl = \"{url}\"\n{}", input.text)
    };
    let (problems, table) = config::merge(&text, &env);
    for problem in &problems {
        assert!(
            !problem.contains(PASSWORD),
            "the database password leaked: {problem}"
        );
    }
    assert_eq!(
        config::merge(&text, &env),
        (problems, table),
        "not deterministic"
    );
});
