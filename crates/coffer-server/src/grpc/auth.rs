//! Who is calling. An interceptor puts the caller's [`Principal`] into the
//! request extensions; handlers take it from there and answer UNAUTHENTICATED
//! when it is missing. There is no fallback to open access.
//!
//! Under mTLS the principal is the verified client certificate's URI SAN (a
//! SPIFFE id) or, when it has none, its subject CN. The TLS layer has already
//! checked the chain against the client CA; this module only reads identity.

use coffer_core::Principal;
use coffer_core::authz::valid_principal_id;
use rustls_pki_types::CertificateDer;
use tonic::service::Interceptor;
use tonic::{Request, Status};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// How the server learns the caller's identity.
#[derive(Debug, Clone)]
pub enum Authenticator {
    /// `coffer serve --dev`: plaintext on loopback; every caller is the
    /// implicit admin principal.
    DevAdmin,
    /// Mutual TLS: the principal comes from the client certificate the TLS
    /// handshake verified. A call without one is refused.
    Mtls,
}

impl Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let principal = match self {
            Authenticator::DevAdmin => Principal::dev_admin(),
            Authenticator::Mtls => {
                let certs = request.peer_certs().ok_or_else(unauthenticated)?;
                let leaf = certs.first().ok_or_else(unauthenticated)?;
                principal_from_cert(leaf).map_err(|why| {
                    tracing::info!(why, "client certificate carries no usable identity");
                    unauthenticated()
                })?
            }
        };
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

fn unauthenticated() -> Status {
    Status::unauthenticated("no verified client identity; present a client certificate")
}

/// The principal named by a certificate: its URI SAN, else its subject CN.
/// More than one URI SAN is ambiguous (an X.509-SVID has exactly one) and
/// is refused.
pub fn principal_from_cert(cert: &CertificateDer<'_>) -> Result<Principal, &'static str> {
    let (_, cert) =
        X509Certificate::from_der(cert.as_ref()).map_err(|_| "certificate does not parse")?;
    let san = cert
        .subject_alternative_name()
        .map_err(|_| "subject alternative names do not parse")?;
    let uris: Vec<&str> = san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let id = match uris.as_slice() {
        [uri] => (*uri).to_owned(),
        [] => {
            let mut names = cert.subject().iter_common_name();
            let cn = names.next().ok_or("certificate has no uri san and no cn")?;
            if names.next().is_some() {
                return Err("certificate has more than one cn");
            }
            cn.as_str()
                .map_err(|_| "certificate cn is not a string")?
                .to_owned()
        }
        _ => return Err("certificate has more than one uri san"),
    };
    if !valid_principal_id(&id) {
        return Err("certificate identity is empty, too long or not printable");
    }
    Ok(Principal::new(id))
}

/// The principal of a request, or UNAUTHENTICATED.
pub fn principal<T>(request: &Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(unauthenticated)
}
