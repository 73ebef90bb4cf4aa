//! A leader cut off from the API server steps down before its Lease can expire, and never
//! writes in its successor's term: two writers against a real kube-apiserver, the leader's
//! connection through a loopback relay the test freezes. Start the control plane first:
//! `tests/cluster/up.sh DIR`, then `FISKIL_CLUSTER_DIR=DIR cargo test --test partition -- --ignored`.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{WatchEvent, WatchParams};
use kube::config::Kubeconfig;
use kube::Api;
use support::control_plane::{Cluster, SECRET};
use support::leader_election::Fleet;
use support::{eventually, eventually_async, Daemon, Fixture};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A loopback TCP relay to the API server that stops moving bytes while frozen.
struct Relay {
    addr: std::net::SocketAddr,
    frozen: Arc<AtomicBool>,
}

impl Relay {
    async fn start(upstream: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let gate = Arc::clone(&frozen);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let gate = Arc::clone(&gate);
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    wait_thawed(&gate).await;
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(pump(client_read, server_write, Arc::clone(&gate)));
                    pump(server_read, client_write, gate).await;
                });
            }
        });
        Relay { addr, frozen }
    }

    fn freeze(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::SeqCst);
    }
}

async fn wait_thawed(gate: &AtomicBool) {
    while gate.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    gate: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        wait_thawed(&gate).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Bytes read just before a freeze are held back until the thaw.
        wait_thawed(&gate).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Every version of the Secret as the API server ordered them: (writer, term) annotations.
fn watch_secret_writers(
    cluster: &Cluster,
    namespace: &str,
) -> Arc<Mutex<Vec<(String, i32, String)>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let secrets: Api<Secret> = Api::namespaced(cluster.admin.clone(), namespace);
    tokio::spawn(async move {
        let params = WatchParams::default()
            .fields(&format!("metadata.name={SECRET}"))
            .timeout(290);
        let stream = secrets.watch(&params, "0").await.unwrap();
        let mut stream = std::pin::pin!(stream);
        while let Some(Ok(event)) = stream.next().await {
            if let WatchEvent::Added(secret) | WatchEvent::Modified(secret) = event {
                let notes = secret.metadata.annotations.unwrap_or_default();
                let writer = notes
                    .get("fiskil-token-refresher/writer")
                    .cloned()
                    .unwrap_or_default();
                let term = notes
                    .get("fiskil-token-refresher/lease-term")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(-1);
                let version = secret.metadata.resource_version.unwrap_or_default();
                sink.lock().unwrap().push((writer, term, version));
            }
        }
    });
    seen
}

fn role(daemon: &mut Daemon) -> String {
    let (_, body) = daemon.get("/readyz");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    ready["role"].as_str().unwrap_or_default().to_owned()
}

// The relay and the watch run on the runtime's workers while the test thread waits on the
// daemons' logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: tests/cluster/up.sh DIR, then FISKIL_CLUSTER_DIR=DIR"]
async fn a_cut_off_leader_steps_down_and_never_writes_in_the_next_term() {
    let cluster = Cluster::connect().await;
    let fixture = Fixture::new("partition", 600);
    // A ServiceAccount holding only the documented Roles: the Lease, Events, the one Secret.
    let fleet = Fleet::create(&cluster, "partition", fixture.dir.path(), 1).await;
    fleet.grant(0).await;
    let namespace = fleet.targets[0].clone();
    let kubeconfig = fleet.kubeconfig.clone();
    let writers = watch_secret_writers(&cluster, &namespace);

    let mut config = Kubeconfig::read_from(&kubeconfig).unwrap();
    let server = config.clusters[0]
        .cluster
        .as_ref()
        .unwrap()
        .server
        .clone()
        .unwrap();
    let upstream = server.trim_start_matches("https://").to_owned();
    let relay = Relay::start(upstream).await;
    for cluster in &mut config.clusters {
        if let Some(c) = cluster.cluster.as_mut() {
            c.server = Some(format!("https://{}", relay.addr));
        }
    }
    let relayed = fixture.dir.path().join("relayed-kubeconfig");
    std::fs::write(&relayed, serde_json::to_vec(&config).unwrap()).unwrap();

    let args = fleet.writer_args(
        &fixture,
        &[
            "--leader-elect",
            "--lease-duration",
            "4s",
            "--request-timeout",
            "2s",
        ],
    );
    let mut a = Daemon::spawn(
        &args,
        &[
            ("KUBECONFIG", relayed.to_str().unwrap()),
            ("POD_NAME", "writer-a"),
        ],
    );
    // A new Lease is created once the writer has found it missing for the lease duration plus
    // the 2 s margin.
    eventually(
        "writer-a to create the Lease and lead",
        Duration::from_secs(30),
        || a.logs_contain("leadership acquired"),
    );
    let mut b = Daemon::spawn(
        &args,
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("POD_NAME", "writer-b"),
        ],
    );
    b.wait_log("following");
    eventually_async(
        "writer-a's token in the Secret",
        Duration::from_secs(15),
        || async {
            writers
                .lock()
                .unwrap()
                .iter()
                .any(|(w, _, _)| w == "writer-a")
        },
    )
    .await;
    assert_eq!(role(&mut b), "follower");
    assert_eq!(
        b.metric("fiskil_token_refresher_refresh_total{result=\"success\"}"),
        0.0
    );

    relay.freeze(true);
    let frozen_at = std::time::SystemTime::now();
    a.wait_log("leadership lost");
    eventually_async(
        "writer-b's token in the Secret",
        Duration::from_secs(30),
        || async {
            writers
                .lock()
                .unwrap()
                .iter()
                .any(|(w, _, _)| w == "writer-b")
        },
    )
    .await;
    assert_eq!(a.metric("fiskil_token_refresher_leader"), 0.0);
    relay.freeze(false);
    let after_freeze = |daemon: &Daemon, message: &str| {
        let line = daemon
            .json_logs()
            .into_iter()
            .rfind(|l| l["message"] == message)
            .unwrap();
        let at = humantime::parse_rfc3339(line["timestamp"].as_str().unwrap()).unwrap();
        at.duration_since(frozen_at).unwrap_or_default()
    };
    eprintln!(
        "measured: lease 4s; after the leader was cut off it stepped down in {:?} and the follower took over in {:?}",
        after_freeze(&a, "leadership lost"),
        after_freeze(&b, "leadership acquired")
    );
    eventually(
        "writer-a following writer-b again",
        Duration::from_secs(20),
        || {
            a.json_logs().iter().any(|l| {
                l["message"] == "following"
                    && l["holder"].as_str().is_some_and(|h| h.contains("writer-b"))
            })
        },
    );
    // One more write by the leader, ordered after anything the old leader could still send.
    let before = writers.lock().unwrap().len();
    b.signal("HUP");
    eventually_async("writer-b's next write", Duration::from_secs(15), || async {
        writers.lock().unwrap().len() > before
    })
    .await;

    let seen = writers.lock().unwrap().clone();
    let first_b = seen.iter().position(|(w, _, _)| w == "writer-b").unwrap();
    assert!(
        seen[..first_b].iter().all(|(w, _, _)| w == "writer-a"),
        "{seen:?}"
    );
    assert!(
        seen[first_b..].iter().all(|(w, _, _)| w == "writer-b"),
        "writer-a wrote after writer-b's term began: {seen:?}"
    );
    let terms: Vec<i32> = seen.iter().map(|(_, t, _)| *t).collect();
    assert!(terms.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert!(seen[first_b].1 > seen[0].1, "a new term: {seen:?}");

    let leases: Api<Lease> = Api::namespaced(cluster.admin.clone(), &fleet.home);
    let lease = leases.get(&fleet.lease).await.unwrap().spec.unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some("writer-b"));
    assert_eq!(lease.lease_transitions, Some(seen[first_b].1));
    assert_eq!(role(&mut a), "follower");
    fixture.assert_logs_clean(&a);
    fixture.assert_logs_clean(&b);
    a.signal("TERM");
    b.signal("TERM");
    assert!(a
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    assert!(b
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
}
