//! `coffer dev certs`: a throwaway PKI for trying mTLS locally. One CA, a
//! server certificate for localhost/127.0.0.1/::1 and one client certificate
//! per principal (a URI SAN for ids like `spiffe://…`, else the subject CN).
//! The CA's private key is not written: to add a principal, run it again.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use coffer_core::authz::valid_principal_id;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Development helpers.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum DevCommand {
    /// Generate a CA, a localhost server certificate and client certificates.
    Certs(CertsArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct CertsArgs {
    /// Directory to write the PEM files to (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// A principal to issue a client certificate for (repeatable), e.g.
    /// `spiffe://corp/orchestrator` (URI SAN) or `alice` (CN).
    #[arg(long = "principal", required = true, value_name = "ID")]
    principals: Vec<String>,
    /// Days the certificates stay valid.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=825))]
    days: u32,
    /// Overwrite certificates already in the directory.
    #[arg(long)]
    force: bool,
}

pub(crate) async fn run(command: DevCommand) -> anyhow::Result<()> {
    match command {
        DevCommand::Certs(args) => certs(&args),
    }
}

/// A file-name-safe form of a principal: `spiffe://corp/orchestrator` →
/// `corp-orchestrator`.
pub(crate) fn slug(principal: &str) -> String {
    let without_scheme = principal
        .split_once("://")
        .map_or(principal, |(_, rest)| rest);
    let mut slug = String::new();
    for c in without_scheme.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.trim_matches('-').to_owned()
}

/// Whether a principal id goes into a URI SAN rather than the CN.
fn is_uri(principal: &str) -> bool {
    principal.contains("://")
}

fn certs(args: &CertsArgs) -> anyhow::Result<()> {
    let mut slugs = std::collections::BTreeMap::new();
    for principal in &args.principals {
        if !valid_principal_id(principal) {
            bail!("principal {principal:?} must be 1 to 512 printable characters");
        }
        let slug = slug(principal);
        if slug.is_empty() {
            bail!("principal {principal:?} has no letters or digits to name its files after");
        }
        if let Some(other) = slugs.insert(slug.clone(), principal) {
            bail!("principals {other:?} and {principal:?} would share the file name client-{slug}");
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    if !args.force && args.out.join("ca.pem").exists() {
        bail!(
            "{} already holds ca.pem; pass --force to replace every certificate there",
            args.out.display()
        );
    }

    let now = time::OffsetDateTime::now_utc();
    let until = now + time::Duration::days(i64::from(args.days));
    let valid = |params: &mut CertificateParams| {
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = until;
    };

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "coffer dev ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    valid(&mut ca_params);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, &ca_key);
    write_file(&args.out.join("ca.pem"), &ca_cert.pem(), false)?;

    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])?;
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    valid(&mut server);
    let server_cert = server.signed_by(&server_key, &issuer)?;
    write_file(&args.out.join("server.pem"), &server_cert.pem(), false)?;
    write_file(
        &args.out.join("server.key"),
        &server_key.serialize_pem(),
        true,
    )?;

    for (slug, principal) in &slugs {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        if is_uri(principal) {
            params.subject_alt_names =
                vec![SanType::URI(principal.as_str().try_into().with_context(
                    || format!("principal {principal:?} is not a valid uri"),
                )?)];
            params
                .distinguished_name
                .push(DnType::CommonName, slug.as_str());
        } else {
            params
                .distinguished_name
                .push(DnType::CommonName, principal.as_str());
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        valid(&mut params);
        let cert = params.signed_by(&key, &issuer)?;
        write_file(
            &args.out.join(format!("client-{slug}.pem")),
            &cert.pem(),
            false,
        )?;
        write_file(
            &args.out.join(format!("client-{slug}.key")),
            &key.serialize_pem(),
            true,
        )?;
    }

    let out = args.out.display();
    println!("wrote {out}/ca.pem, server.pem, server.key (localhost, 127.0.0.1, ::1)");
    for (slug, principal) in &slugs {
        println!("  {principal}: client-{slug}.pem, client-{slug}.key");
    }
    println!("valid for {} days; keys are mode 0600", args.days);
    Ok(())
}

/// Writes a file; keys are created with mode 0600 so they are never
/// readable by others, not even for a moment.
fn write_file(path: &Path, contents: &str, private: bool) -> anyhow::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    if private {
        // An existing file keeps its old mode on open; tighten it.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_file_safe() {
        assert_eq!(slug("spiffe://corp/orchestrator"), "corp-orchestrator");
        assert_eq!(slug("Alice Smith"), "alice-smith");
        assert_eq!(slug("spiffe://corp//a..b/"), "corp-a-b");
        assert_eq!(slug("://"), "");
    }
}
