//! list_remote and health_check on moto: paging, the name-prefix query, the
//! guarded flag, and never a value read.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use coffer_providers::testing::MotoServer;
use coffer_providers::{ProviderErrorKind, VersionContext};

#[tokio::test]
async fn pages_through_250_seeded_secrets_without_reading_one() {
    let moto = MotoServer::start();
    let seeded = moto.seed_secrets("import/app-", 250).await;
    let provider = moto.connect("prod").await;
    for key in ["a", "b"] {
        provider
            .put_value(&VersionContext::new("acme", key, 1), b"managed")
            .await
            .unwrap();
    }

    moto.reset_recording();
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = provider
            .list_remote("", 40, token.as_deref())
            .await
            .unwrap();
        assert!(page.secrets.len() <= 40);
        pages += 1;
        seen.extend(page.secrets);
        match page.next_page_token {
            Some(next) => token = Some(next),
            None => break,
        }
        assert!(pages < 100, "paging does not end");
    }
    assert_eq!(seen.len(), 252);
    assert_eq!(pages, 7);
    let arns: BTreeSet<&str> = seen.iter().map(|s| s.external_ref.as_str()).collect();
    assert_eq!(arns.len(), 252, "no secret listed twice");
    assert!(seeded.iter().all(|arn| arns.contains(arn.as_str())));

    let guarded: Vec<&str> = seen
        .iter()
        .filter(|s| s.guarded)
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(guarded, ["coffer/prod/acme/a", "coffer/prod/acme/b"]);
    let seed = seen.iter().find(|s| s.name == "import/app-0007").unwrap();
    assert_eq!(seed.tag_count, 1);
    let created = seed.create_time.unwrap();
    let now_micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    assert!(
        (now_micros - created).abs() < 600_000_000,
        "create_time in micros: {created}"
    );
    assert!(seed.last_changed_time.is_some());

    let actions = moto.recorded_actions();
    assert_eq!(actions.len(), 7);
    assert!(actions.iter().all(|a| a == "ListSecrets"), "{actions:?}");
}

#[tokio::test]
async fn the_query_is_a_name_prefix() {
    let moto = MotoServer::start();
    moto.seed_secrets("prod/db/", 3).await;
    moto.seed_secrets("staging/db/", 2).await;
    let provider = moto.connect("prod").await;

    let page = provider.list_remote("prod/", 0, None).await.unwrap();
    let names: BTreeSet<&str> = page.secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["prod/db/0000", "prod/db/0001", "prod/db/0002"])
    );
    assert_eq!(page.next_page_token, None);
    assert!(
        provider
            .list_remote("nothing/", 10, None)
            .await
            .unwrap()
            .secrets
            .is_empty()
    );
    for bad in ["prod db", "!prod/"] {
        let err = provider.list_remote(bad, 10, None).await.unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::InvalidRequest, "{bad}");
    }
}

#[tokio::test]
async fn health_check_lists_one_secret() {
    let moto = MotoServer::start();
    let provider = moto.connect("prod").await;
    moto.reset_recording();
    let health = provider.health_check().await;
    assert!(health.ok, "{}", health.message);
    assert!(health.message.contains("us-east-1"), "{}", health.message);
    assert_eq!(moto.recorded_actions(), ["ListSecrets"]);
}
