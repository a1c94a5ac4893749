//! Where a secret value comes from on the command line: stdin, a file or an
//! environment variable. A value is never accepted as an argument, because
//! arguments end up in shell history and in `ps` output.

use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use coffer_core::validate::MAX_VALUE_BYTES;
use zeroize::Zeroizing;

/// The value source flags shared by `create` and `rotate`; exactly one is required.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "value_source", required = true, multiple = false)]
pub(crate) struct ValueSourceArgs {
    /// Read the value from standard input, as-is (a trailing newline is kept).
    #[arg(long)]
    value_stdin: bool,
    /// Read the value from this file, as-is.
    #[arg(long, value_name = "PATH")]
    value_file: Option<PathBuf>,
    /// Read the value from this environment variable.
    #[arg(long, value_name = "VAR")]
    value_env: Option<String>,
}

/// One resolved choice of [`ValueSourceArgs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ValueSource {
    Stdin,
    File(PathBuf),
    Env(String),
}

impl ValueSourceArgs {
    pub(crate) fn source(&self) -> anyhow::Result<ValueSource> {
        match (self.value_stdin, &self.value_file, &self.value_env) {
            (true, None, None) => Ok(ValueSource::Stdin),
            (false, Some(path), None) => Ok(ValueSource::File(path.clone())),
            (false, None, Some(var)) => Ok(ValueSource::Env(var.clone())),
            _ => bail!("give exactly one of --value-stdin, --value-file or --value-env"),
        }
    }
}

/// A secret value read from a source. Wiped on drop; `Debug` shows only the length.
pub(crate) struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    /// Moves the bytes out for a request message, leaving this value empty.
    pub(crate) fn take(mut self) -> Vec<u8> {
        std::mem::take(&mut *self.0)
    }

    #[cfg(test)]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue(<{} bytes redacted>)", self.0.len())
    }
}

impl ValueSource {
    /// Reads the value from the process's stdin or environment.
    pub(crate) fn read(&self) -> anyhow::Result<SecretValue> {
        self.read_with(std::io::stdin().lock(), |var| std::env::var_os(var))
    }

    /// Reads the value with stdin and the environment passed in, so tests need
    /// no global state. Empty and oversized values are rejected here, with a
    /// message that names the source and never the value.
    pub(crate) fn read_with(
        &self,
        stdin: impl Read,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> anyhow::Result<SecretValue> {
        let bytes = match self {
            ValueSource::Stdin => {
                read_bounded(stdin).context("cannot read the value from stdin")?
            }
            ValueSource::File(path) => {
                let file = std::fs::File::open(path)
                    .with_context(|| format!("cannot open value file {}", path.display()))?;
                read_bounded(file)
                    .with_context(|| format!("cannot read value file {}", path.display()))?
            }
            ValueSource::Env(var) => {
                let Some(raw) = env(var) else {
                    bail!("environment variable {var} is not set");
                };
                Zeroizing::new(os_string_bytes(raw))
            }
        };
        if bytes.is_empty() {
            bail!(
                "the value from {} is empty; a secret value needs at least one byte",
                self.describe()
            );
        }
        if bytes.len() > MAX_VALUE_BYTES {
            bail!(
                "the value from {} is larger than the {MAX_VALUE_BYTES}-byte limit",
                self.describe()
            );
        }
        Ok(SecretValue(bytes))
    }

    fn describe(&self) -> String {
        match self {
            ValueSource::Stdin => "stdin".to_owned(),
            ValueSource::File(path) => format!("file {}", path.display()),
            ValueSource::Env(var) => format!("environment variable {var}"),
        }
    }
}

/// Reads at most one byte more than the limit, so a huge input is refused
/// without being held in memory.
fn read_bounded(reader: impl Read) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(Vec::new());
    reader
        .take(MAX_VALUE_BYTES as u64 + 1)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(unix)]
fn os_string_bytes(raw: OsString) -> Vec<u8> {
    std::os::unix::ffi::OsStringExt::into_vec(raw)
}

#[cfg(not(unix))]
fn os_string_bytes(raw: OsString) -> Vec<u8> {
    raw.to_string_lossy().into_owned().into_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Write;

    use super::*;

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    #[test]
    fn env_source_reads_the_named_variable() {
        let env = |var: &str| (var == "API_TOKEN").then(|| OsString::from("s3cr3t"));
        let value = ValueSource::Env("API_TOKEN".into())
            .read_with(std::io::empty(), env)
            .unwrap();
        assert_eq!(value.as_bytes(), b"s3cr3t");
        let err = ValueSource::Env("MISSING".into())
            .read_with(std::io::empty(), env)
            .unwrap_err();
        assert_eq!(err.to_string(), "environment variable MISSING is not set");
    }

    #[test]
    fn file_source_reads_bytes_as_is() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"line\n\x00\xff").unwrap();
        let value = ValueSource::File(file.path().to_owned())
            .read_with(std::io::empty(), no_env)
            .unwrap();
        assert_eq!(value.as_bytes(), b"line\n\x00\xff");
        let missing = ValueSource::File("/nonexistent/coffer-value".into())
            .read_with(std::io::empty(), no_env)
            .unwrap_err();
        assert!(missing.to_string().contains("cannot open value file"));
    }

    #[test]
    fn stdin_source_reads_everything() {
        let value = ValueSource::Stdin
            .read_with(&b"from stdin\n"[..], no_env)
            .unwrap();
        assert_eq!(value.as_bytes(), b"from stdin\n");
    }

    #[test]
    fn empty_values_are_rejected() {
        let err = ValueSource::Stdin
            .read_with(std::io::empty(), no_env)
            .unwrap_err();
        assert!(err.to_string().contains("from stdin is empty"), "{err}");
        let env = |_: &str| Some(OsString::new());
        let err = ValueSource::Env("EMPTY".into())
            .read_with(std::io::empty(), env)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("environment variable EMPTY is empty")
        );
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = ValueSource::File(file.path().to_owned())
            .read_with(std::io::empty(), no_env)
            .unwrap_err();
        assert!(err.to_string().contains("is empty"));
    }

    #[test]
    fn oversized_values_are_rejected_without_echoing_them() {
        let big = vec![b'x'; MAX_VALUE_BYTES + 10];
        let err = ValueSource::Stdin.read_with(&big[..], no_env).unwrap_err();
        assert!(err.to_string().contains("limit"));
        assert!(!err.to_string().contains("xxxx"));
        let exact = vec![b'x'; MAX_VALUE_BYTES];
        assert_eq!(
            ValueSource::Stdin
                .read_with(&exact[..], no_env)
                .unwrap()
                .as_bytes()
                .len(),
            MAX_VALUE_BYTES
        );
    }

    #[test]
    fn debug_never_shows_the_value() {
        let value = ValueSource::Stdin
            .read_with(&b"hunter2"[..], no_env)
            .unwrap();
        let shown = format!("{value:?}");
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("7 bytes"));
    }
}
