//! `--all` for the list commands: follow `next_page_token` and merge every
//! page into one response, refusing a server that repeats a token.

use coffer_proto::v1::{
    ListAuditEventsRequest, ListAuditEventsResponse, ListBindingsRequest, ListBindingsResponse,
    ListSecretVersionsRequest, ListSecretVersionsResponse, ListSecretsRequest, ListSecretsResponse,
    ListVaultsRequest, ListVaultsResponse, PreviewRemoteImportRequest, PreviewRemoteImportResponse,
};

/// A list request that carries a page token.
pub(crate) trait PageRequest: Clone {
    fn page_token_mut(&mut self) -> &mut String;
}

/// A list response: items plus the next page's token.
pub(crate) trait Page: Default {
    /// Moves `page`'s items onto this one; returns `page`'s next token.
    fn append(&mut self, page: Self) -> String;
    fn set_next_page_token(&mut self, token: String);
}

macro_rules! paged {
    ($request:ty, $response:ty, $items:ident) => {
        impl PageRequest for $request {
            fn page_token_mut(&mut self) -> &mut String {
                &mut self.page_token
            }
        }

        impl Page for $response {
            fn append(&mut self, page: Self) -> String {
                self.$items.extend(page.$items);
                page.next_page_token
            }

            fn set_next_page_token(&mut self, token: String) {
                self.next_page_token = token;
            }
        }
    };
}

paged!(ListSecretsRequest, ListSecretsResponse, secrets);
paged!(
    ListSecretVersionsRequest,
    ListSecretVersionsResponse,
    versions
);
paged!(ListBindingsRequest, ListBindingsResponse, bindings);
paged!(
    ListAuditEventsRequest,
    ListAuditEventsResponse,
    audit_events
);
paged!(ListVaultsRequest, ListVaultsResponse, vaults);
paged!(
    PreviewRemoteImportRequest,
    PreviewRemoteImportResponse,
    candidates
);

/// One page, or with `all` every page merged into one response.
pub(crate) async fn collect<Req: PageRequest, Resp: Page>(
    mut fetch: impl AsyncFnMut(Req) -> Result<tonic::Response<Resp>, tonic::Status>,
    mut req: Req,
    all: bool,
) -> anyhow::Result<Resp> {
    let mut merged = Resp::default();
    loop {
        let next = merged.append(fetch(req.clone()).await?.into_inner());
        if !all || next.is_empty() {
            merged.set_next_page_token(next);
            return Ok(merged);
        }
        if next == *req.page_token_mut() {
            anyhow::bail!("the server returned the same page token twice");
        }
        *req.page_token_mut() = next;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use coffer_proto::v1::Secret;

    use super::*;

    fn page(names: &[&str], next: &str) -> ListSecretsResponse {
        ListSecretsResponse {
            secrets: names
                .iter()
                .map(|n| Secret {
                    name: (*n).into(),
                    ..Secret::default()
                })
                .collect(),
            next_page_token: next.into(),
        }
    }

    #[tokio::test]
    async fn follows_tokens_only_with_all_and_stops_on_a_repeat() {
        let pages = |tokens: Vec<(&'static str, ListSecretsResponse)>| {
            async move |req: ListSecretsRequest| {
                let found = tokens.iter().find(|(token, _)| *token == req.page_token);
                Ok(tonic::Response::new(found.unwrap().1.clone()))
            }
        };
        let book = vec![("", page(&["a", "b"], "t1")), ("t1", page(&["c"], ""))];
        let all = collect(pages(book.clone()), ListSecretsRequest::default(), true)
            .await
            .unwrap();
        assert_eq!(all.secrets.len(), 3);
        assert!(all.next_page_token.is_empty());
        let first = collect(pages(book), ListSecretsRequest::default(), false)
            .await
            .unwrap();
        assert_eq!(
            (first.secrets.len(), first.next_page_token.as_str()),
            (2, "t1")
        );
        let stuck = vec![("", page(&["a"], "t1")), ("t1", page(&["b"], "t1"))];
        assert!(
            collect(pages(stuck), ListSecretsRequest::default(), true)
                .await
                .is_err()
        );
    }
}
