//! What the SDK's end-to-end tests share: a TCP forwarder that stands
//! between the client and a real server, so a test can take "the server"
//! away and bring it back on the same address (another server on the same
//! database behind it), and small helpers for secrets and events.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use coffer_client::CacheEvent;
pub use coffer_client::proto as v1;
use coffer_tests::TestServer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::task::JoinSet;

pub const TENANT: &str = "acme";
pub const PARENT: &str = "tenants/acme";

pub fn name(key: &str) -> String {
    format!("{PARENT}/secrets/{key}")
}

/// Forwards every connection on a fixed local address to a target server.
#[derive(Debug)]
pub struct Proxy {
    pub addr: SocketAddr,
    tasks: JoinSet<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut proxy = Proxy {
            addr,
            tasks: JoinSet::new(),
        };
        proxy.serve(listener, target);
        proxy
    }

    /// Closes the listener and every forwarded connection: to a client the
    /// server is gone (connections reset, new ones refused).
    pub async fn down(&mut self) {
        self.tasks.shutdown().await;
    }

    /// Listens again on the same address, forwarding to `target`.
    pub async fn up(&mut self, target: SocketAddr) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener, target);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn serve(&mut self, listener: TcpListener, target: SocketAddr) {
        // Connections are tasks of the accept task's own set, so aborting
        // the accept task drops them all.
        self.tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
    }
}

pub async fn create(server: &TestServer, key: &str, value: &[u8]) {
    server
        .secrets()
        .create_secret(v1::CreateSecretRequest {
            parent: PARENT.into(),
            secret_id: key.into(),
            source: Some(v1::create_secret_request::Source::Value(value.to_vec())),
            ..Default::default()
        })
        .await
        .unwrap();
}

pub async fn rotate(server: &TestServer, key: &str, value: &[u8]) -> i64 {
    server
        .secrets()
        .rotate_secret(v1::RotateSecretRequest {
            name: name(key),
            source: Some(v1::rotate_secret_request::Source::Value(value.to_vec())),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .version
}

/// Waits at most `within` for an event `wanted` accepts, skipping others.
pub async fn wait_for(
    events: &mut broadcast::Receiver<CacheEvent>,
    within: Duration,
    wanted: impl Fn(&CacheEvent) -> bool,
) -> CacheEvent {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no matching cache event within {within:?}"))
            .unwrap();
        if wanted(&event) {
            return event;
        }
    }
}

/// Whether `event` is a rotation of `key` to `version`.
pub fn rotated(event: &CacheEvent, key: &str, version: i64) -> bool {
    matches!(event, CacheEvent::Changed(change)
        if change.secret == name(key)
            && change.version == version
            && change.r#type == v1::secret_change_event::Type::Rotated as i32)
}
