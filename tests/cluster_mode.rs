//! Cluster mode against a real kube-apiserver and etcd with RBAC on: the controller runs as a
//! ServiceAccount holding only the shipped ClusterRole and Lease Role, the CRDs come from the
//! Rust types, and the stand-ins count every token request. Start the control plane first:
//! `tests/cluster/up.sh DIR`, then `FISKIL_CLUSTER_DIR=DIR cargo test --test cluster_mode -- --ignored`.
//!
//! `FISKIL_CLUSTER_MODE_TOKENS` and `FISKIL_CLUSTER_MODE_NAMESPACES` set the fleet's size
//! (default 40 in 10; the README's figures: 200 in 50).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use fiskil_stand_in::StandIn;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use support::cluster_mode::{
    api, controller_identity, create, delete, install_definitions, namespace, ready,
    remove_identity, secret, spawn_controller,
};
use support::control_plane::{Cluster, SECRET};
use support::leader_election::{check_secret_versions, lease_terms, Sampler, Watch};
use support::{eventually, eventually_async, TempDir};

/// The tests share one control plane and each runs a controller that sees every FiskilToken:
/// one at a time.
static ONE_CONTROLLER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The token in a Secret, if any.
async fn token_in(secrets: &Api<Secret>, name: &str) -> Option<String> {
    let found = secrets.get_opt(name).await.ok().flatten()?;
    let bytes = found.data?.get("token")?.0.clone();
    Some(String::from_utf8(bytes).unwrap())
}

/// Times at which a stand-in saw token requests for `client_id` (FiskilTokens that earlier
/// runs left behind may send theirs to the same endpoint).
fn exchanges(stand_in: &StandIn, client_id: &str) -> Vec<Instant> {
    stand_in
        .seen()
        .iter()
        .filter(|s| s.path == fiskil_stand_in::TOKEN_PATH)
        .filter(|s| s.client_id.as_deref() == Some(client_id))
        .map(|s| s.at)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: tests/cluster/up.sh DIR, then FISKIL_CLUSTER_DIR=DIR"]
async fn fiskiltokens_in_many_namespaces_share_one_exchange_per_credential() {
    let _alone = ONE_CONTROLLER.lock().await;
    let tokens = setting("FISKIL_CLUSTER_MODE_TOKENS", 40);
    let namespaces = setting("FISKIL_CLUSTER_MODE_NAMESPACES", 10).max(2);
    let cluster = Cluster::connect().await;
    install_definitions(&cluster).await;
    let run = std::process::id();
    let work = TempDir::new("cluster-mode");
    // Two credentials, each with its own endpoint: a requests with the controller's
    // --token-url, b names its own tokenURL. 30 s tokens, refreshed at half their life.
    let lifetime = 30;
    let (client_a, client_b) = (format!("client-a-{run}"), format!("client-b-{run}"));
    let secret_a = format!("sekrit-a-{run:08x}");
    let secret_b = format!("sekrit-b-{run:08x}");
    let stand_in_a = StandIn::start(&client_a, &secret_a, lifetime);
    let stand_in_b = StandIn::start(&client_b, &secret_b, lifetime);
    let ca = work.path().join("ca.pem");
    std::fs::write(
        &ca,
        format!("{}\n{}", stand_in_a.ca_pem(), stand_in_b.ca_pem()),
    )
    .unwrap();

    let ops = format!("fiskil-ops-{run}");
    namespace(&cluster, &ops, json!({})).await;
    secret(
        &cluster,
        &ops,
        "cred-a",
        json!({"client_id": client_a, "client_secret": secret_a}),
    )
    .await;
    secret(
        &cluster,
        &ops,
        "cred-b",
        json!({"id": client_b, "secret": secret_b}),
    )
    .await;
    let label = format!("fiskil-test-{run}");
    let team = |i: usize| format!("team-{run}-{i}");
    let mut b_names = Vec::new();
    for i in 0..namespaces {
        if i % 2 == 0 {
            namespace(&cluster, &team(i), json!({ label.clone(): "a" })).await;
        } else {
            namespace(&cluster, &team(i), json!({})).await;
            b_names.push(team(i));
        }
    }
    let (cred_a, cred_b) = (format!("a-{run}"), format!("b-{run}"));
    create(
        &cluster,
        json!({
            "kind": "ClusterFiskilCredential",
            "metadata": {"name": cred_a},
            "spec": {
                "secretRef": {"namespace": ops, "name": "cred-a"},
                "allowedNamespaces": {"selector": {"matchLabels": {label.clone(): "a"}}},
            },
        }),
    )
    .await
    .expect("create ClusterFiskilCredential a");
    create(
        &cluster,
        json!({
            "kind": "ClusterFiskilCredential",
            "metadata": {"name": cred_b},
            "spec": {
                "secretRef": {"namespace": ops, "name": "cred-b", "clientIdKey": "id", "clientSecretKey": "secret"},
                "tokenURL": stand_in_b.url(),
                "allowedNamespaces": {"names": b_names},
            },
        }),
    )
    .await
    .expect("create ClusterFiskilCredential b");
    let kubeconfig = controller_identity(&cluster, &ops, work.path()).await;
    let mut controller = spawn_controller(
        &kubeconfig,
        &ops,
        "controller-0",
        &[
            "--token-url",
            &stand_in_a.url(),
            "--ca-file",
            ca.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--refresh-ratio",
            "0.5",
            "--refresh-jitter",
            "0",
            "--leader-elect",
            "--lease-name",
            "fiskil-token-refresher-controller",
        ],
    );

    // The leader is ready once it holds the Lease and has listed everything; FiskilTokens
    // created from then on are new to it.
    eventually(
        "the controller ready as the leader",
        Duration::from_secs(60),
        || {
            controller.metric("fiskil_token_refresher_leader") == 1.0
                && controller.get("/readyz").0 == 200
        },
    );
    let started = Instant::now();
    let mut targets = Vec::new();
    for j in 0..tokens {
        let ns = team(j % namespaces);
        let credential = if (j % namespaces) % 2 == 0 {
            &cred_a
        } else {
            &cred_b
        };
        let name = format!("t-{j}");
        create(
            &cluster,
            json!({
                "kind": "FiskilToken",
                "metadata": {"name": name, "namespace": ns},
                "spec": {
                    "credentialRef": {"kind": "ClusterFiskilCredential", "name": credential},
                    "secretName": format!("fiskil-token-{j}"),
                },
            }),
        )
        .await
        .expect("create FiskilToken");
        targets.push((ns, name, format!("fiskil-token-{j}"), credential == &cred_a));
    }

    // Every Secret holds the newest token its credential's endpoint issued (at least `issued`
    // of them), and says Ready.
    let converge = |issued: usize| {
        let cluster = &cluster;
        let targets = &targets;
        let (a, b) = (&stand_in_a, &stand_in_b);
        async move {
            for (ns, name, secret_name, uses_a) in targets {
                let all = if *uses_a { a.issued() } else { b.issued() };
                if all.len() < issued {
                    return Err(format!("{} tokens issued, waiting for {issued}", all.len()));
                }
                let newest = all.last();
                let secrets: Api<Secret> = Api::namespaced(cluster.admin.clone(), ns);
                if token_in(&secrets, secret_name).await.as_ref() != newest {
                    return Err(format!("{ns}/{secret_name} does not hold the newest token"));
                }
                let object = api(cluster, "FiskilToken", Some(ns)).get(name).await;
                let state = object.ok().as_ref().and_then(ready);
                if state != Some(("True".into(), "TokenValid".into())) {
                    return Err(format!("{ns}/{name} is {state:?}"));
                }
            }
            Ok(())
        }
    };
    eventually_async(
        "every target Secret with its credential's first token",
        Duration::from_secs(60),
        || converge(1),
    )
    .await;
    let converged = started.elapsed();
    println!("{tokens} new FiskilTokens in {namespaces} namespaces converged in {converged:?}");

    // The second token of each credential reaches every Secret too.
    eventually_async(
        "every target Secret with its credential's second token",
        Duration::from_secs(60),
        || converge(2),
    )
    .await;
    // One request per credential per refresh, however many FiskilTokens: consecutive requests
    // are the refresh delay (half of 30 s, counted from when the request was sent) apart, less
    // the first request's connection set-up at most.
    for (name, stand_in, client) in [("a", &stand_in_a, &client_a), ("b", &stand_in_b, &client_b)] {
        let seen = exchanges(stand_in, client);
        assert!(
            seen.len() >= 2,
            "credential {name}: {} requests",
            seen.len()
        );
        for pair in seen.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= Duration::from_secs(14),
                "credential {name}: two token requests {gap:?} apart; one per refresh was expected"
            );
        }
    }

    // A rotated credential Secret: the token comes with the new values (the old ones are
    // refused from now on), and every Secret of that credential gets it.
    let rotated = format!("sekrit-b2-{run:08x}");
    stand_in_b.accept(&client_b, &rotated);
    let before = stand_in_b.issued().len();
    Api::<Secret>::namespaced(cluster.admin.clone(), &ops)
        .patch(
            "cred-b",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"secret": rotated}})),
        )
        .await
        .expect("rotate the credential Secret");
    eventually_async(
        "every Secret of credential b with a token of the rotated credentials",
        Duration::from_secs(60),
        || async {
            let issued = stand_in_b.issued();
            if issued.len() <= before {
                return Err("no token for the rotated credentials yet".to_owned());
            }
            for (ns, name, secret_name, uses_a) in &targets {
                if *uses_a {
                    continue;
                }
                let secrets: Api<Secret> = Api::namespaced(cluster.admin.clone(), ns);
                let held = token_in(&secrets, secret_name).await;
                if held.is_none_or(|t| !issued[before..].contains(&t)) {
                    return Err(format!("{ns}/{secret_name} holds an older token"));
                }
                let object = api(&cluster, "FiskilToken", Some(ns)).get(name).await;
                let state = object.ok().as_ref().and_then(ready);
                if state != Some(("True".into(), "TokenValid".into())) {
                    return Err(format!("{ns}/{name} is {state:?}"));
                }
            }
            Ok(())
        },
    )
    .await;
    assert!(controller.logs_contain("the credentials changed"));

    // Status, ownership and what kubectl shows.
    for (ns, name, secret_name, _) in &targets {
        let object = api(&cluster, "FiskilToken", Some(ns))
            .get(name)
            .await
            .unwrap();
        let status = &object.data["status"];
        for field in ["expiresAt", "lastRefreshTime", "nextRefreshTime"] {
            let text = status[field].as_str().unwrap_or_default();
            assert!(
                humantime::parse_rfc3339(text).is_ok(),
                "{ns}/{name} status.{field} = {text:?}"
            );
        }
        assert_eq!(status["observedGeneration"], json!(1));
        let secrets: Api<Secret> = Api::namespaced(cluster.admin.clone(), ns);
        let written = secrets.get(secret_name).await.unwrap();
        let owners = written
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default();
        assert_eq!(owners.len(), 1, "{ns}/{secret_name} owners: {owners:?}");
        assert_eq!(owners[0].kind, "FiskilToken");
        assert_eq!(Some(owners[0].uid.clone()), object.uid());
        assert_eq!(owners[0].controller, Some(true));
    }
    let kubectl = support::pods::tool("kubectl.sh");
    let listed = std::process::Command::new(&kubectl)
        .args(["get", "fiskiltokens", "--all-namespaces", "--no-headers"])
        .env("KUBECONFIG", cluster.dir.join("kubeconfig"))
        .output()
        .expect("kubectl get fiskiltokens");
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let listed = String::from_utf8(listed.stdout).unwrap();
    let ours: Vec<_> = listed
        .lines()
        .filter(|line| line.starts_with(&format!("team-{run}-")))
        .collect();
    assert_eq!(ours.len(), tokens, "{listed}");
    for line in ours {
        // NAMESPACE NAME READY REASON EXPIRES AGE
        let columns: Vec<_> = line.split_whitespace().collect();
        assert_eq!(columns[2..4], ["True", "TokenValid"], "{line}");
        assert!(
            humantime::parse_rfc3339(columns[4]).is_ok(),
            "Expires reads as a time: {line}"
        );
    }

    // `kubectl explain` reads the descriptions of the structural schema.
    let explained = std::process::Command::new(&kubectl)
        .args(["explain", "fiskiltoken.spec.credentialRef"])
        .env("KUBECONFIG", cluster.dir.join("kubeconfig"))
        .output()
        .expect("kubectl explain");
    let explained = String::from_utf8_lossy(&explained.stdout);
    assert!(
        explained.contains("The credentials the token is requested with")
            && explained
                .contains("FiskilCredential (in this namespace) or ClusterFiskilCredential"),
        "{explained}"
    );

    // Metrics per credential, never per FiskilToken.
    let users = controller.metric(&format!(
        "fiskil_token_refresher_credential_fiskiltokens{{credential=\"ClusterFiskilCredential/{cred_a}\"}}"
    ));
    assert_eq!(users as usize, targets.iter().filter(|t| t.3).count());
    let (_, metrics) = controller.get("/metrics");
    assert!(!metrics.contains("t-0\""), "no series per FiskilToken");
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for family in metrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = match family.split_once(' ') {
            Some((name, "counter")) => format!("{name}_total"),
            Some((name, _)) => name.to_owned(),
            None => family.to_owned(),
        };
        assert!(
            readme.contains(&format!("`{name}")),
            "README does not document {name}"
        );
    }
    let (code, body) = controller.get("/readyz");
    assert_eq!(code, 200, "{body}");
    let memory = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", controller.pid()))
        .unwrap_or_default();
    let kib = |field: &str| {
        memory
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .map(|v| v.trim().trim_end_matches(" kB").to_owned())
            .unwrap_or_default()
    };
    println!(
        "controller with {tokens} FiskilTokens: RSS {} KiB, anonymous {} KiB",
        kib("Rss:"),
        kib("Anonymous:")
    );

    // Nothing secret in the logs.
    let logs = controller.logs().join("\n");
    for secret in [&secret_a, &secret_b, &rotated] {
        assert!(!logs.contains(secret.as_str()), "a client secret leaked");
    }
    for token in stand_in_a.issued().iter().chain(stand_in_b.issued().iter()) {
        assert!(!logs.contains(token.as_str()), "a token leaked");
    }
    println!(
        "requests: a {}, b {}; converged in {converged:?}",
        exchanges(&stand_in_a, &client_a).len(),
        exchanges(&stand_in_b, &client_b).len()
    );

    controller.signal("TERM");
    let exit = controller.wait_exit(Duration::from_secs(20));
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}");
    for (ns, name, _, _) in &targets {
        delete(&cluster, "FiskilToken", Some(ns), name).await;
    }
    delete(&cluster, "ClusterFiskilCredential", None, &cred_a).await;
    delete(&cluster, "ClusterFiskilCredential", None, &cred_b).await;
    remove_identity(&cluster, &ops).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: tests/cluster/up.sh DIR, then FISKIL_CLUSTER_DIR=DIR"]
async fn a_fiskiltoken_reaches_nothing_outside_what_its_namespace_may_use() {
    let _alone = ONE_CONTROLLER.lock().await;
    let cluster = Cluster::connect().await;
    install_definitions(&cluster).await;
    let run = std::process::id();
    let work = TempDir::new("cluster-tenancy");
    let client_secret = format!("sekrit-tenancy-{run:08x}");
    let client_id = format!("client-t-{run}");
    let stand_in = StandIn::start(&client_id, &client_secret, 600);
    let ca = work.path().join("ca.pem");
    std::fs::write(&ca, stand_in.ca_pem()).unwrap();
    let (ops, allowed, other) = (
        format!("tenancy-ops-{run}"),
        format!("tenancy-allowed-{run}"),
        format!("tenancy-other-{run}"),
    );
    for ns in [&ops, &allowed, &other] {
        namespace(&cluster, ns, json!({})).await;
    }
    let values = json!({"client_id": client_id, "client_secret": client_secret});
    secret(&cluster, &ops, "cred", values.clone()).await;
    secret(&cluster, &allowed, "cred", values).await;
    let shared = format!("tenancy-{run}");
    create(
        &cluster,
        json!({
            "kind": "ClusterFiskilCredential",
            "metadata": {"name": shared},
            "spec": {
                "secretRef": {"namespace": ops, "name": "cred"},
                "allowedNamespaces": {"names": [allowed]},
            },
        }),
    )
    .await
    .unwrap();
    create(
        &cluster,
        json!({
            "kind": "FiskilCredential",
            "metadata": {"name": "own", "namespace": allowed},
            "spec": {"secretRef": {"name": "cred"}},
        }),
    )
    .await
    .unwrap();
    // A Secret that exists already and belongs to someone else.
    secret(&cluster, &allowed, "taken", json!({"token": "theirs"})).await;

    let token = |ns: &str, name: &str, kind: &str, credential: &str, secret_name: &str| {
        json!({
            "kind": "FiskilToken",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "credentialRef": {"kind": kind, "name": credential},
                "secretName": secret_name,
            },
        })
    };
    // What the schema refuses outright: a namespace in secretName, an unknown credential kind,
    // a ratio out of bounds, a jitter above the ratio.
    let mut refused = token(&other, "bad", "ClusterFiskilCredential", &shared, "x");
    for (field, value) in [
        ("secretName", json!(format!("{allowed}/stolen"))),
        ("credentialRef", json!({"kind": "Secret", "name": "cred"})),
        ("refreshRatio", json!(1.5)),
        ("refreshJitter", json!(0.9)),
    ] {
        let mut attempt = refused.clone();
        attempt["spec"][field] = value.clone();
        let outcome = create(&cluster, attempt).await;
        assert!(
            matches!(&outcome, Err(kube::Error::Api(e)) if e.code == 422),
            "spec.{field} = {value} was not refused: {outcome:?}"
        );
    }
    // A namespace field where none exists is pruned: the reference stays in the token's own
    // namespace.
    refused["spec"]["credentialRef"] =
        json!({"kind": "FiskilCredential", "name": "own", "namespace": allowed});
    refused["metadata"]["name"] = json!("borrowed");
    refused["spec"]["secretName"] = json!("borrowed");
    let pruned = create(&cluster, refused).await.expect("created, pruned");
    assert!(pruned.data["spec"]["credentialRef"]
        .get("namespace")
        .is_none());
    for object in [
        token(
            &other,
            "not-allowed",
            "ClusterFiskilCredential",
            &shared,
            "not-allowed",
        ),
        token(&allowed, "taken", "FiskilCredential", "own", "taken"),
        token(&allowed, "fine", "FiskilCredential", "own", "fine"),
        token(
            &allowed,
            "shared",
            "ClusterFiskilCredential",
            &shared,
            "shared",
        ),
    ] {
        create(&cluster, object).await.expect("create FiskilToken");
    }

    let kubeconfig = controller_identity(&cluster, &ops, work.path()).await;
    let mut controller = spawn_controller(
        &kubeconfig,
        &ops,
        "controller-0",
        &[
            "--token-url",
            &stand_in.url(),
            "--ca-file",
            ca.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let state = |ns: String, name: &'static str| {
        let cluster = &cluster;
        async move {
            api(cluster, "FiskilToken", Some(&ns))
                .get(name)
                .await
                .ok()
                .as_ref()
                .and_then(ready)
        }
    };
    for (ns, name, expected) in [
        (&allowed, "fine", ("True", "TokenValid")),
        (&allowed, "shared", ("True", "TokenValid")),
        (&allowed, "taken", ("False", "SecretNotOwned")),
        (&other, "not-allowed", ("False", "NamespaceNotAllowed")),
        (&other, "borrowed", ("False", "CredentialNotFound")),
    ] {
        let expected = (expected.0.to_owned(), expected.1.to_owned());
        eventually_async(
            &format!("{ns}/{name} {expected:?}"),
            Duration::from_secs(30),
            || async { state(ns.clone(), name).await == Some(expected.clone()) },
        )
        .await;
    }
    // Nothing was written in the namespace that may use nothing, and the foreign Secret is as
    // it was.
    let other_secrets: Api<Secret> = Api::namespaced(cluster.admin.clone(), &other);
    let written: Vec<_> = other_secrets
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| s.name_any())
        .collect();
    assert!(written.is_empty(), "Secrets in {other}: {written:?}");
    let allowed_secrets: Api<Secret> = Api::namespaced(cluster.admin.clone(), &allowed);
    assert_eq!(
        token_in(&allowed_secrets, "taken").await.as_deref(),
        Some("theirs")
    );
    // Two credentials in use, one request each: the refused tokens caused none.
    assert_eq!(exchanges(&stand_in, &client_id).len(), 2);
    // The refusal is an Event on the FiskilToken.
    let events: Api<Event> = Api::namespaced(cluster.admin.clone(), &other);
    eventually_async(
        "a NamespaceNotAllowed Event on the FiskilToken",
        Duration::from_secs(30),
        || async {
            events
                .list(&ListParams::default())
                .await
                .ok()
                .is_some_and(|list| {
                    list.items.iter().any(|e| {
                        e.reason.as_deref() == Some("NamespaceNotAllowed")
                            && e.regarding.as_ref().and_then(|r| r.name.as_deref())
                                == Some("not-allowed")
                    })
                })
        },
    )
    .await;
    let reasons: BTreeMap<String, f64> = ["TokenValid", "SecretNotOwned", "NamespaceNotAllowed"]
        .into_iter()
        .map(|reason| {
            let sample = format!("fiskil_token_refresher_fiskiltokens{{reason=\"{reason}\"}}");
            (reason.to_owned(), controller.metric(&sample))
        })
        .collect();
    assert!(reasons.values().all(|count| *count >= 1.0), "{reasons:?}");

    controller.signal("TERM");
    assert!(controller
        .wait_exit(Duration::from_secs(20))
        .is_some_and(|s| s.success()));
    for (ns, name) in [
        (&other, "not-allowed"),
        (&other, "borrowed"),
        (&allowed, "taken"),
        (&allowed, "fine"),
        (&allowed, "shared"),
    ] {
        delete(&cluster, "FiskilToken", Some(ns), name).await;
    }
    delete(&cluster, "FiskilCredential", Some(&allowed), "own").await;
    delete(&cluster, "ClusterFiskilCredential", None, &shared).await;
    remove_identity(&cluster, &ops).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: tests/cluster/up.sh DIR, then FISKIL_CLUSTER_DIR=DIR"]
async fn killed_controllers_hand_over_without_two_writers_or_an_expired_secret() {
    let _alone = ONE_CONTROLLER.lock().await;
    let kills = setting("FISKIL_CLUSTER_MODE_KILLS", 10);
    let cluster = Cluster::connect().await;
    install_definitions(&cluster).await;
    let run = std::process::id();
    let work = TempDir::new("cluster-kills");
    let client_id = format!("client-k-{run}");
    let client_secret = format!("sekrit-kills-{run:08x}");
    let stand_in = StandIn::start(&client_id, &client_secret, 300);
    let ca = work.path().join("ca.pem");
    std::fs::write(&ca, stand_in.ca_pem()).unwrap();
    let ops = format!("kills-ops-{run}");
    namespace(&cluster, &ops, json!({})).await;
    secret(
        &cluster,
        &ops,
        "cred",
        json!({"client_id": client_id, "client_secret": client_secret}),
    )
    .await;
    let targets: Vec<String> = (0..3).map(|i| format!("kills-{run}-{i}")).collect();
    for ns in &targets {
        namespace(&cluster, ns, json!({})).await;
    }
    let credential = format!("kills-{run}");
    create(
        &cluster,
        json!({
            "kind": "ClusterFiskilCredential",
            "metadata": {"name": credential},
            "spec": {
                "secretRef": {"namespace": ops, "name": "cred"},
                "allowedNamespaces": {"names": targets},
            },
        }),
    )
    .await
    .unwrap();
    for ns in &targets {
        create(
            &cluster,
            json!({
                "kind": "FiskilToken",
                "metadata": {"name": "t", "namespace": ns},
                "spec": {
                    "credentialRef": {"kind": "ClusterFiskilCredential", "name": credential},
                    "secretName": SECRET,
                },
            }),
        )
        .await
        .unwrap();
    }
    let lease_name = "fiskil-token-refresher-controller";
    let mut secrets = Vec::new();
    for ns in &targets {
        let path = format!("/api/v1/namespaces/{ns}/secrets");
        secrets.push(Watch::start(&cluster, &path, SECRET).await);
    }
    let lease_path = format!("/apis/coordination.k8s.io/v1/namespaces/{ops}/leases");
    let lease = Watch::start(&cluster, &lease_path, lease_name).await;
    let kubeconfig = controller_identity(&cluster, &ops, work.path()).await;
    let mut generation = 0;
    let mut spawn = || {
        generation += 1;
        let identity = format!("controller-{generation}");
        let daemon = spawn_controller(
            &kubeconfig,
            &ops,
            &identity,
            &[
                "--token-url",
                &stand_in.url(),
                "--ca-file",
                ca.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--leader-elect",
                "--lease-name",
                lease_name,
                "--lease-duration",
                "3s",
            ],
        );
        (identity, daemon)
    };
    let mut controllers = vec![spawn(), spawn()];
    let mut retired = Vec::new();
    lease.wait(Duration::from_secs(60), 0, "a Lease holder", |e| {
        e.holder().is_some()
    });
    let sampler = Sampler::start(&cluster, &targets, Duration::from_millis(200));
    // A follower takes over a lease duration (3 s) plus the 2 s margin after the last renewal
    // it saw, trying every retry period; 3 s more for a busy machine.
    let bound = Duration::from_secs(3 + 2 + 3);
    let mut takeovers = Vec::new();
    for _ in 0..kills {
        let holder = eventually_async("a Lease holder", Duration::from_secs(30), || async {
            lease.events().last().and_then(|e| e.holder())
        })
        .await;
        // Every target written in this term before the next kill.
        eventually_async("every target written", Duration::from_secs(30), || async {
            let mut all = true;
            for ns in &targets {
                let secrets: Api<Secret> = Api::namespaced(cluster.admin.clone(), ns);
                all &= token_in(&secrets, SECRET).await.as_ref() == stand_in.issued().last();
            }
            all
        })
        .await;
        // Kill at a random point of the renew cycle.
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..1000))).await;
        let Some(at) = controllers.iter().position(|(id, _)| *id == holder) else {
            panic!("the Lease holder {holder} is none of the running controllers");
        };
        let seen = lease.len();
        let killed = Instant::now();
        controllers[at].1.signal("KILL");
        let next = lease.wait(bound * 3, seen, "a new Lease holder", |e| {
            e.holder().is_some_and(|h| h != holder)
        });
        takeovers.push(next.at - killed);
        retired.push(controllers.remove(at));
        controllers.push(spawn());
    }
    let end = SystemTime::now();
    let terms = lease_terms(&lease.events());
    let issued = stand_in.issued();
    let mut versions = 0;
    for (ns, watch) in targets.iter().zip(&secrets) {
        versions += check_secret_versions(ns, &watch.events(), &issued, Some(&terms), end);
    }
    let samples = sampler.check(&issued);
    takeovers.sort();
    let worst = takeovers.last().copied().unwrap_or_default();
    println!(
        "{kills} SIGKILLs: {} terms, {versions} Secret versions over {} targets, {samples} samples, {} token requests; takeover median {:?}, max {worst:?}",
        terms.len(),
        targets.len(),
        issued.len(),
        takeovers.get(takeovers.len() / 2).copied().unwrap_or_default()
    );
    assert!(
        terms.len() > kills,
        "{} terms for {kills} kills",
        terms.len()
    );
    assert!(worst <= bound, "a takeover took {worst:?}, over {bound:?}");
    for (_, daemon) in &mut controllers {
        daemon.signal("TERM");
        daemon.wait_exit(Duration::from_secs(20));
    }
    for (_, daemon) in retired.iter().chain(controllers.iter()) {
        let logs = daemon.logs().join("\n");
        assert!(!logs.contains(&client_secret), "a client secret leaked");
    }
    for ns in &targets {
        delete(&cluster, "FiskilToken", Some(ns), "t").await;
    }
    delete(&cluster, "ClusterFiskilCredential", None, &credential).await;
    remove_identity(&cluster, &ops).await;
}
