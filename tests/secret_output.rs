//! The Secret output against a real kube-apiserver and etcd with RBAC on: the daemon runs as a
//! ServiceAccount holding only the documented Role. Start the control plane first:
//! `tests/cluster/up.sh DIR`, then `FISKIL_CLUSTER_DIR=DIR cargo test --test secret_output -- --ignored`.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use support::control_plane::{spawn_with_identity, Cluster, SECRET};
use support::{eventually, eventually_async, Fixture};

/// Tests share one control plane; the one that restarts the API server runs alone.
static CONTROL_PLANE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

#[tokio::test]
#[ignore = "needs a cluster: tests/cluster/up.sh DIR, then FISKIL_CLUSTER_DIR=DIR"]
async fn creates_and_updates_the_secret_and_keeps_other_keys() {
    let _shared = CONTROL_PLANE.read().await;
    let cluster = Cluster::connect().await;
    let fixture = Fixture::new("secret", 3);
    let (namespace, kubeconfig) = cluster
        .namespace_with_identity("secret-write", fixture.dir.path())
        .await;
    let mut daemon = spawn_with_identity(&fixture, &kubeconfig, &namespace, &[]);

    eventually_async(
        "the Secret with the first token",
        Duration::from_secs(15),
        || async {
            let first = fixture.stand_in.issued().first().cloned();
            first.is_some() && cluster.token_in_secret(&namespace).await == first
        },
    )
    .await;
    let secret = cluster.secret(&namespace).await.unwrap();
    assert!(
        secret
            .metadata
            .labels
            .clone()
            .unwrap_or_default()
            .is_empty(),
        "labels are left to whoever owns the Secret"
    );
    let expires_at =
        String::from_utf8(secret.data.as_ref().unwrap()["expires_at"].0.clone()).unwrap();
    assert!(expires_at.ends_with('Z'), "{expires_at}");
    let managers: Vec<_> = secret
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|f| f.manager)
        .collect();
    assert!(
        managers.contains(&"fiskil-token-refresher".to_owned()),
        "{managers:?}"
    );

    let secrets: Api<Secret> = Api::namespaced(cluster.admin.clone(), &namespace);
    let theirs = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": SECRET, "annotations": {"team.example/owner": "payments"}},
        "data": {"other": "dGhlaXJz"}
    });
    secrets
        .patch(
            SECRET,
            &PatchParams::apply("someone-else"),
            &Patch::Apply(&theirs),
        )
        .await
        .expect("another client adds a key");

    let before = fixture.stand_in.issued().len();
    eventually_async(
        "two more refreshes in the Secret",
        Duration::from_secs(15),
        || async {
            let issued = fixture.stand_in.issued();
            issued.len() >= before + 2
                && cluster.token_in_secret(&namespace).await == issued.last().cloned()
        },
    )
    .await;
    let secret = cluster.secret(&namespace).await.unwrap();
    let data = secret.data.unwrap();
    assert_eq!(
        data.get("other"),
        Some(&ByteString(b"theirs".to_vec())),
        "another client's key was removed"
    );
    let annotations: BTreeMap<String, String> = secret.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations.get("team.example/owner").map(String::as_str),
        Some("payments")
    );
    assert!(
        daemon.metric(&format!(
            "fiskil_token_refresher_output_write_total{{output=\"secret:{namespace}/{SECRET}\",result=\"success\"}}"
        )) >= 3.0
    );
    let (code, body) = daemon.get("/readyz");
    assert_eq!(code, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        ready["outputs"][format!("secret:{namespace}/{SECRET}")].is_string()
            && ready["outputs"]["file"].is_string()
            && ready["role"] == "single",
        "{body}"
    );
    fixture.assert_logs_clean(&daemon);
}

#[tokio::test]
#[ignore = "needs a cluster: tests/cluster/up.sh DIR, then FISKIL_CLUSTER_DIR=DIR"]
async fn a_missing_role_is_reported_and_never_blocks_the_file() {
    let _shared = CONTROL_PLANE.read().await;
    let cluster = Cluster::connect().await;
    let fixture = Fixture::new("forbidden", 3);
    let (namespace, kubeconfig) = cluster
        .namespace_with_identity("secret-forbidden", fixture.dir.path())
        .await;
    cluster.revoke(&namespace).await;
    let daemon = spawn_with_identity(&fixture, &kubeconfig, &namespace, &["--backoff-max", "2s"]);

    eventually("the actionable 403", Duration::from_secs(10), || {
        daemon.logs_contain("forbidden to apply Secret")
            && daemon.logs_contain("resourceNames [\\\"fiskil-token\\\"]")
    });
    let before = fixture.stand_in.issued().len();
    eventually(
        "the file refreshing regardless",
        Duration::from_secs(10),
        || {
            let issued = fixture.stand_in.issued();
            issued.len() >= before + 2 && fixture.read_token() == issued.last().cloned()
        },
    );
    assert!(cluster.secret(&namespace).await.is_none());

    cluster.grant(&namespace).await;
    let granted = Instant::now();
    eventually_async("the Secret catching up", Duration::from_secs(8), || async {
        cluster
            .token_in_secret(&namespace)
            .await
            .is_some_and(|t| fixture.stand_in.issued().contains(&t))
    })
    .await;
    eprintln!(
        "Secret caught up {:?} after the Role came back",
        granted.elapsed()
    );
    fixture.assert_logs_clean(&daemon);
}

#[tokio::test]
#[ignore = "needs a cluster: tests/cluster/up.sh DIR, then FISKIL_CLUSTER_DIR=DIR"]
async fn the_identity_can_touch_nothing_else() {
    let _shared = CONTROL_PLANE.read().await;
    let cluster = Cluster::connect().await;
    let work = support::TempDir::new("rbac");
    let (namespace, kubeconfig) = cluster
        .namespace_with_identity("secret-rbac", work.path())
        .await;
    let admin_secrets: Api<Secret> = Api::namespaced(cluster.admin.clone(), &namespace);
    let other = Secret {
        metadata: ObjectMeta {
            name: Some("someone-elses".into()),
            ..ObjectMeta::default()
        },
        ..Secret::default()
    };
    admin_secrets
        .create(&PostParams::default(), &other)
        .await
        .unwrap();

    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&kubeconfig).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = Client::try_from(config).unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let code = |result: Result<Secret, kube::Error>| match result {
        Err(kube::Error::Api(status)) => status.code,
        Ok(_) => 200,
        Err(other) => panic!("unexpected error {other}"),
    };
    let apply = |name: &str| serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": {"token": "eA=="}});
    let params = PatchParams::apply("fiskil-token-refresher").force();
    assert_eq!(
        code(
            secrets
                .patch(SECRET, &params, &Patch::Apply(&apply(SECRET)))
                .await
        ),
        200,
        "apply-create of its own Secret"
    );
    assert_eq!(
        code(
            secrets
                .patch(
                    "someone-elses",
                    &params,
                    &Patch::Apply(&apply("someone-elses"))
                )
                .await
        ),
        403
    );
    assert_eq!(
        code(
            secrets
                .patch("new-one", &params, &Patch::Apply(&apply("new-one")))
                .await
        ),
        403
    );
    assert_eq!(code(secrets.get("someone-elses").await), 403);
    assert_eq!(
        code(secrets.get(SECRET).await),
        403,
        "the Role grants more than patch"
    );
    assert_eq!(
        code(secrets.create(&PostParams::default(), &other).await),
        403
    );
    let listed = secrets.list(&Default::default()).await;
    assert!(
        matches!(listed, Err(kube::Error::Api(ref s)) if s.code == 403),
        "list allowed"
    );
    let elsewhere: Api<Secret> = Api::namespaced(client, "default");
    assert_eq!(
        code(
            elsewhere
                .patch(SECRET, &params, &Patch::Apply(&apply(SECRET)))
                .await
        ),
        403
    );
}

#[tokio::test]
#[ignore = "needs a cluster: tests/cluster/up.sh DIR, then FISKIL_CLUSTER_DIR=DIR"]
async fn the_file_keeps_refreshing_while_the_api_server_is_down() {
    let _alone = CONTROL_PLANE.write().await;
    let cluster = Cluster::connect().await;
    let fixture = Fixture::new("outage", 2);
    let (namespace, kubeconfig) = cluster
        .namespace_with_identity("secret-outage", fixture.dir.path())
        .await;
    let backoff_max = Duration::from_secs(3);
    let mut daemon = spawn_with_identity(
        &fixture,
        &kubeconfig,
        &namespace,
        &["--backoff-max", "3s", "--request-timeout", "2s"],
    );
    eventually_async(
        "the first token in the Secret",
        Duration::from_secs(15),
        || async { cluster.token_in_secret(&namespace).await.is_some() },
    )
    .await;

    let apiserver = cluster.stop_apiserver();
    let before = fixture.stand_in.issued().len();
    eventually(
        "three refreshes of the file during the outage",
        Duration::from_secs(10),
        || {
            let issued = fixture.stand_in.issued();
            issued.len() >= before + 3 && fixture.read_token() == issued.last().cloned()
        },
    );
    assert!(
        daemon.metric(&format!(
            "fiskil_token_refresher_output_write_total{{output=\"secret:{namespace}/{SECRET}\",result=\"error\"}}"
        )) >= 1.0
    );
    let restarted = Instant::now();
    let serving = cluster.start_apiserver(&apiserver).await;
    eventually_async(
        "the Secret holding a current token",
        backoff_max + Duration::from_secs(5),
        || async {
            let issued = fixture.stand_in.issued();
            let current = &issued[issued.len().saturating_sub(2)..];
            cluster
                .token_in_secret(&namespace)
                .await
                .is_some_and(|t| current.contains(&t))
        },
    )
    .await;
    eprintln!(
        "API server served again {serving:?} after restart; Secret current {:?} after that",
        restarted.elapsed() - serving
    );
    fixture.assert_logs_clean(&daemon);
}
