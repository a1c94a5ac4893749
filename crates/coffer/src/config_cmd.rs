//! `coffer config check FILE` validates a config file as `coffer serve` would
//! read it (env overlay included) and the files it names, without starting a
//! server or touching the database; `coffer config example` prints a
//! commented config with every key and its default, generated from the key
//! list so it cannot fall behind.

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};

use coffer_server::{TlsFiles, load_policy_file};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::keys::{self, Shown};
use crate::config::{Config, Invalid};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ConfigCommand {
    /// Validate a config file, its COFFER_<SECTION>__<KEY> env overlay and the
    /// files it names (TLS, policy, keyring); starts nothing. Exit 1 on error.
    Check(CheckArgs),
    /// Print a commented config file with every key, its env var and default.
    Example,
}

#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// The config file.
    file: PathBuf,
    /// Named files that do not exist here (they are mounted at deploy time)
    /// are listed, not errors. Files that do exist are still checked.
    #[arg(long)]
    allow_missing_files: bool,
}

pub(crate) async fn run(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Check(args) => check(&args),
        ConfigCommand::Example => {
            print!("{}", example());
            Ok(())
        }
    }
}

fn check(args: &CheckArgs) -> anyhow::Result<()> {
    let config = Config::load(Some(args.file.as_path()))?;
    let mut files = FileCheck {
        allow_missing: args.allow_missing_files,
        problems: Vec::new(),
        notes: Vec::new(),
    };
    files.check(&config);
    for note in &files.notes {
        eprintln!("note: {note}");
    }
    if !files.problems.is_empty() {
        return Err(Invalid(files.problems).into());
    }
    println!("ok: {}", args.file.display());
    Ok(())
}

/// What a TLS file must hold.
#[derive(Debug, Clone, Copy)]
enum Pem {
    Certificates,
    PrivateKey,
}

/// Checks of the files a configuration names, collected rather than
/// stopping at the first.
#[derive(Debug)]
struct FileCheck {
    allow_missing: bool,
    problems: Vec<String>,
    notes: Vec<String>,
}

impl FileCheck {
    fn check(&mut self, config: &Config) {
        if let Some(tls) = &config.tls {
            let files = [
                ("tls.cert_file", &tls.cert_file, Pem::Certificates),
                ("tls.key_file", &tls.key_file, Pem::PrivateKey),
                ("tls.client_ca_file", &tls.client_ca_file, Pem::Certificates),
            ];
            let mut all_there = true;
            for (key, path, pem) in files {
                all_there &= self.readable(key, path) && self.pem(key, path, pem);
            }
            // Builds the server's TLS setup exactly as `coffer serve` does:
            // PEM parsing, the certificate/key pair and the client CA.
            if all_there
                && let Err(err) = coffer_server::ReloadableTls::load(TlsFiles {
                    cert_file: tls.cert_file.clone(),
                    key_file: tls.key_file.clone(),
                    client_ca_file: tls.client_ca_file.clone(),
                })
            {
                self.problems.push(format!("tls: {err}"));
            }
        }
        if let Some(authz) = &config.authz
            && self.readable("authz.policy_file", &authz.policy_file)
            && let Err(err) = load_policy_file(&authz.policy_file)
        {
            self.problems.push(format!("authz.policy_file: {err}"));
        }
        if let Some(path) = &config.keys.keyring_file {
            self.keyring_file(path);
        }
    }

    /// Whether `path` is a readable file; if not, records why (or, for a
    /// missing file with `--allow-missing-files`, a note).
    fn readable(&mut self, key: &str, path: &Path) -> bool {
        let shown = path.display();
        match File::open(path) {
            Ok(file) => match file.metadata() {
                Ok(meta) if meta.is_file() => true,
                Ok(_) => {
                    self.problems.push(format!("{key}: {shown} is not a file"));
                    false
                }
                Err(err) => {
                    self.problems
                        .push(format!("{key}: cannot read {shown}: {err}"));
                    false
                }
            },
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && self.allow_missing => {
                self.notes
                    .push(format!("{key}: {shown} does not exist here; not checked"));
                false
            }
            Err(err) => {
                self.problems
                    .push(format!("{key}: cannot read {shown}: {err}"));
                false
            }
        }
    }

    /// Whether the file holds what `key` needs, in PEM; checked one by one
    /// so that a bad file is found even while another is missing.
    fn pem(&mut self, key: &str, path: &Path, pem: Pem) -> bool {
        let shown = path.display();
        let found = match pem {
            Pem::Certificates => CertificateDer::pem_file_iter(path)
                .map(|certs| certs.take_while(Result::is_ok).count() > 0)
                .unwrap_or(false),
            // The key's bytes stay in the rustls type, which zeroizes them.
            Pem::PrivateKey => PrivateKeyDer::from_pem_file(path).is_ok(),
        };
        if !found {
            let what = match pem {
                Pem::Certificates => "no PEM certificate",
                Pem::PrivateKey => "no PEM private key",
            };
            self.problems.push(format!("{key}: {shown} holds {what}"));
        }
        found
    }

    /// The keyring is created on first start, so a missing file is fine; an
    /// existing one must be readable and private, or `coffer serve` refuses
    /// it. Its keys are not read.
    fn keyring_file(&mut self, path: &Path) {
        let key = "keys.keyring_file";
        if !path.exists() {
            self.notes.push(format!(
                "{key}: {} does not exist yet; coffer serve creates it (mode 0600)",
                path.display()
            ));
            return;
        }
        if !self.readable(key, path) {
            return;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                self.problems.push(format!(
                    "{key}: {} can be read by group or others; coffer refuses it (chmod 600)",
                    path.display()
                ));
            }
        }
    }
}

/// The commented example config. Sections that are absent by default are
/// commented out, as are keys without a default, so it parses as is and
/// means the defaults; `#` directly before a key or `[` marks a line to
/// uncomment, `# ` a comment.
pub(crate) fn example() -> String {
    let mut out = String::from(
        "# Coffer configuration: `coffer serve --config FILE`.\n\
         #\n\
         # Order: built-in defaults, then this file, then env vars. Every key can be\n\
         # set as COFFER_<SECTION>__<KEY> (COFFER_DATABASE__URL, COFFER_LOG__FORMAT,\n\
         # COFFER_PROVIDERS__AWS_SECRETS_MANAGER__ENABLED); the flags of `coffer serve`\n\
         # and their env vars (COFFER_LISTEN, COFFER_DATABASE_URL) override both.\n\
         # Unknown keys, in this file or in COFFER_*__* vars, are errors. Relative\n\
         # paths are relative to this file's directory. Check a file, its env overlay\n\
         # and the files it names with `coffer config check FILE`.\n\
         #\n\
         # Active lines show the defaults. `#key = value` lines are examples of keys\n\
         # that are unset by default; `#[section]` marks a section that is absent\n\
         # unless configured.\n",
    );
    for section in keys::SECTIONS {
        let off = if section.optional { "#" } else { "" };
        out.push('\n');
        for line in section.doc.lines() {
            let _ = writeln!(out, "# {line}");
        }
        let _ = writeln!(out, "{off}[{}]", section.name);
        for key in keys::keys_of(section.name) {
            for line in key.doc.lines() {
                let _ = writeln!(out, "# {line}");
            }
            let _ = writeln!(out, "# env {}", key.env_var());
            let (prefix, value) = match key.shown {
                Shown::Default(value) | Shown::Required(value) => (off, value),
                Shown::Unset(value) => ("#", value),
            };
            let _ = writeln!(out, "{prefix}{} = {value}", key.name);
        }
    }
    out
}
