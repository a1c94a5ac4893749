//! Who is calling. An interceptor puts the caller's [`Principal`] into the
//! request extensions; handlers take it from there and answer UNAUTHENTICATED
//! when it is missing. There is no fallback to open access.
//!
//! Under mTLS the principal is the verified client certificate's URI SAN (a
//! SPIFFE id) or, when it has none, its subject CN. The TLS layer has already
//! checked the chain against the client CA; this module only reads identity.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
    Mtls(PrincipalCache),
}

impl Authenticator {
    /// Mutual TLS with an empty principal cache.
    pub fn mtls() -> Self {
        Authenticator::Mtls(PrincipalCache::default())
    }
}

impl Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let principal = match self {
            Authenticator::DevAdmin => Principal::dev_admin(),
            Authenticator::Mtls(cache) => {
                let certs = request.peer_certs().ok_or_else(unauthenticated)?;
                let leaf = certs.first().ok_or_else(unauthenticated)?;
                cache.principal(leaf).map_err(|why| {
                    tracing::info!(why, "client certificate carries no usable identity");
                    unauthenticated()
                })?
            }
        };
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

/// Certificates whose principal is remembered at most; past that the cache
/// starts over.
const REMEMBERED_CERTIFICATES: usize = 1024;

/// The principal of each client certificate seen lately, by its DER bytes.
/// Every call on a connection carries the same certificate, and parsing it
/// again per call took about 4 % of the server's CPU under load. The
/// principal is a function of the bytes alone (the TLS handshake already
/// verified the chain), so a remembered answer is the answer.
#[derive(Debug, Clone, Default)]
pub struct PrincipalCache(Arc<Mutex<KnownCertificates>>);

/// A certificate's DER bytes and what they name (or why they name nobody).
type KnownCertificates = HashMap<Box<[u8]>, Result<Principal, &'static str>>;

impl PrincipalCache {
    fn principal(&self, cert: &CertificateDer<'_>) -> Result<Principal, &'static str> {
        let der = cert.as_ref();
        if let Some(known) = self.lock().get(der) {
            return known.clone();
        }
        let answer = principal_from_cert(cert);
        let mut known = self.lock();
        if known.len() >= REMEMBERED_CERTIFICATES {
            known.clear();
        }
        known.insert(der.into(), answer.clone());
        answer
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KnownCertificates> {
        // A panic while holding the lock cannot leave the map half-written
        // in a way that matters: it only holds finished answers.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn len(cache: &PrincipalCache) -> usize {
        cache.lock().len()
    }

    /// Bytes that are no certificate get the same refusal from the cache as
    /// from the parser, and the cache never holds more than its bound.
    #[test]
    fn the_principal_cache_answers_as_the_parser_and_stays_bounded() {
        let cache = PrincipalCache::default();
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        let parsed = principal_from_cert(&garbage);
        assert!(parsed.is_err());
        assert_eq!(cache.principal(&garbage), parsed);
        assert_eq!(cache.principal(&garbage), parsed, "remembered");
        assert_eq!(len(&cache), 1);
        for n in 0..(REMEMBERED_CERTIFICATES as u32 + 10) {
            let other = CertificateDer::from(n.to_be_bytes().to_vec());
            assert!(cache.principal(&other).is_err());
            assert!(len(&cache) <= REMEMBERED_CERTIFICATES);
        }
    }
}
