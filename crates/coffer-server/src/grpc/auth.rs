//! Who is calling. An interceptor puts the caller's [`Principal`] into the
//! request extensions; handlers take it from there and answer UNAUTHENTICATED
//! when it is missing. There is no fallback to open access.

use coffer_core::Principal;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// How the server learns the caller's identity.
#[derive(Debug, Clone)]
pub enum Authenticator {
    /// `coffer serve --dev`: plaintext on loopback; every caller is the
    /// implicit admin principal.
    DevAdmin,
}

impl Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        match self {
            Authenticator::DevAdmin => {
                request.extensions_mut().insert(Principal::dev_admin());
            }
        }
        Ok(request)
    }
}

/// The principal of a request, or UNAUTHENTICATED.
pub fn principal<T>(request: &Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| {
            Status::unauthenticated("no verified client identity; present a client certificate")
        })
}
