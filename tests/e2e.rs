//! The chart's promises about pods, on a real node: the kubelet, containerd and CNI of
//! `FISKIL_CLUSTER_NODE=1 tests/cluster/up.sh DIR` run the image built from the static binary,
//! installed with the real helm, against the token stand-in on the host's address on the pod
//! network. Run with `FISKIL_CLUSTER_DIR=DIR cargo test --test e2e -- --ignored --nocapture`
//! (the measured delays are printed as `measured:` lines).

mod support;

use std::time::{Duration, Instant, SystemTime};

use fiskil_stand_in::{Behaviour, StandIn};
use serde_json::Value;
use support::eventually_every;
use support::pods::{
    chart_version, container_status, running, seconds_between, time_of, Namespace, Node, BUSYBOX,
    NODE_PROBE_EVERY,
};

const TOKEN_FILE: &str = "/var/run/fiskil/token";
const EXAMPLE: &str = "app.kubernetes.io/component=example";
const WRITER: &str = "app.kubernetes.io/component=secret-writer";
const CONTROLLER: &str = "app.kubernetes.io/component=controller";
const CREDENTIALS: &str = "fiskil-api";
const CA: &str = "stand-in-ca";
const POD_START: Duration = Duration::from_secs(180);

/// Chart flags shared by every install: the released image by digest, the stand-in and its CA,
/// the credentials Secret.
fn chart_flags(node: &Node, stand_in: &StandIn) -> Vec<String> {
    let url = stand_in
        .url()
        .replace("localhost", &node.host_ip.to_string());
    vec![
        format!("--set=image.repository={}", node.release.repository()),
        format!("--set=image.digest={}", node.release.digest()),
        "--set=image.pullPolicy=IfNotPresent".into(),
        format!("--set=tokenUrl={url}"),
        format!("--set=ca.configMap={CA}"),
        format!("--set=credentials.existingSecret={CREDENTIALS}"),
    ]
}

/// Installs the chart's example workload (sidecar + placeholder app) and returns its pod once
/// `ready(pod)` holds.
fn install_example(
    node: &Node,
    ns: &Namespace,
    stand_in: &StandIn,
    client: (&str, &str),
    ready: impl Fn(&Value) -> bool,
) -> Value {
    ns.credentials(CREDENTIALS, client.0, client.1);
    ns.ca_config_map(CA, stand_in.ca_pem());
    let mut flags = chart_flags(node, stand_in);
    flags.extend([
        "--set=standalone.enabled=false".into(),
        "--set=example.enabled=true".into(),
        format!("--set=example.app.image={BUSYBOX}"),
        "--set=example.app.pullPolicy=Never".into(),
    ]);
    ns.helm_install("e2e", &flags);
    ns.wait_pod(EXAMPLE, POD_START, "the example pod", ready)
}

fn name(pod: &Value) -> String {
    pod["metadata"]["name"]
        .as_str()
        .expect("pod name")
        .to_owned()
}

/// The token file as the app container (UID 10001) reads it.
fn app_token(ns: &Namespace, pod: &str) -> Option<String> {
    ns.try_kubectl(&["exec", pod, "-c", "app", "--", "cat", TOKEN_FILE])
        .ok()
        .map(|t| t.trim().to_owned())
}

/// The app in `pod` reads a token the stand-in issued, then two more as they are refreshed.
fn assert_app_reads_refreshed_tokens(ns: &Namespace, pod: &str, stand_in: &StandIn) {
    let first = app_token(ns, pod).expect("the app reads the token");
    assert!(
        stand_in.issued().contains(&first),
        "the app read a token the stand-in never issued"
    );
    let mut seen = vec![first];
    eventually_every(
        "two refreshed tokens in the app",
        Duration::from_secs(60),
        NODE_PROBE_EVERY,
        || {
            if let Some(token) = app_token(ns, pod) {
                if !seen.contains(&token) {
                    assert!(
                        stand_in.issued().contains(&token),
                        "the app read a token the stand-in never issued"
                    );
                    seen.push(token);
                }
            }
            seen.len() >= 3
        },
    );
}

/// Fails if the refresher's log shows a token or the client secret.
/// Asserts the refresher's container (`token-refresher`, or `controller` in cluster mode) logged,
/// and logged neither the client secret nor a token.
fn assert_log_clean(
    ns: &Namespace,
    pod: &str,
    container: &str,
    stand_in: &StandIn,
    client_secret: &str,
) {
    let log = ns.kubectl(&["logs", pod, "-c", container]);
    assert!(!log.is_empty(), "the refresher logged nothing");
    assert!(
        !log.contains(client_secret),
        "the refresher's log shows the client secret"
    );
    for token in stand_in.issued() {
        assert!(!log.contains(&token), "the refresher's log shows a token");
    }
}

/// Log lines of a container with the runtime's timestamps (`kubectl logs --timestamps`).
fn timestamped(log: &str) -> Vec<(SystemTime, String)> {
    log.lines()
        .filter_map(|l| {
            let (at, rest) = l.split_once(' ')?;
            Some((humantime::parse_rfc3339_weak(at).ok()?, rest.to_owned()))
        })
        .collect()
}

/// The first log line of a container, with its time, once there is one.
fn first_log_line(ns: &Namespace, pod: &str, container: &str) -> (SystemTime, String) {
    eventually_every(
        &format!("a log line from {container}"),
        Duration::from_secs(30),
        NODE_PROBE_EVERY,
        || {
            ns.try_kubectl(&["logs", pod, "-c", container, "--timestamps"])
                .ok()
                .and_then(|log| timestamped(&log).into_iter().next())
        },
    )
}

#[test]
#[ignore = "needs a cluster node: FISKIL_CLUSTER_NODE=1 tests/cluster/up.sh DIR, then FISKIL_CLUSTER_DIR=DIR"]
fn the_sidecar_starts_first_and_the_app_reads_each_token_through_fs_group() {
    let node = Node::connect();
    let ns = node.namespace("e2e-sidecar", true);
    let stand_in = node.stand_in("e2e-client", "e2e-secret", 6);
    let pod = install_example(&node, &ns, &stand_in, ("e2e-client", "e2e-secret"), |p| {
        running(p, "app")
    });
    let pod_name = name(&pod);

    // Ordering, from the kubelet's records (whole seconds) and the containers' log lines
    // (timestamped by the runtime as they are written).
    let sidecar = container_status(&pod, "token-refresher").expect("sidecar status");
    let app = container_status(&pod, "app").expect("app status");
    // containerd pulled the released image from the registry by its digest.
    let image_id = sidecar["imageID"].as_str().expect("imageID");
    assert!(
        image_id.ends_with(&format!("@{}", node.release.digest())),
        "the sidecar runs {image_id}, not the release {}",
        node.release.image
    );
    let sidecar_started =
        time_of(sidecar, &["state", "running", "startedAt"]).expect("sidecar start");
    let app_started = time_of(app, &["state", "running", "startedAt"]).expect("app start");
    assert!(
        sidecar_started <= app_started,
        "the app started before the sidecar"
    );
    let (sidecar_first_log, _) = first_log_line(&ns, &pod_name, "token-refresher");
    let (app_first_log, app_first_line) = first_log_line(&ns, &pod_name, "app");
    let first_request = stand_in.seen().first().expect("a token request").wall;
    // Causal, not a race: the app starts only after the startup probe saw a token, which
    // exists only after the stand-in answered this request.
    assert!(
        first_request < app_first_log,
        "the app logged before the first token was even requested"
    );
    // The app's first words: the token was already there when it started.
    assert!(
        app_first_line.starts_with("token file readable: "),
        "the app's first line: {app_first_line}"
    );

    // The app reads the 0640 file as its own UID, through the fsGroup it was given.
    let identity = ns.kubectl(&[
        "exec",
        &pod_name,
        "-c",
        "app",
        "--",
        "sh",
        "-c",
        &format!("id -u; id -G; stat -c '%a %u %g' {TOKEN_FILE}; touch /written 2>&1 || true"),
    ]);
    let lines: Vec<&str> = identity.lines().collect();
    assert_eq!(lines[0], "10001", "app UID");
    assert!(
        lines[1].split_whitespace().any(|g| g == "65532"),
        "the app has fsGroup 65532: {}",
        lines[1]
    );
    assert_eq!(lines[2], "640 65532 65532", "token file mode and owner");
    let write = lines.get(3).copied().unwrap_or("(touch succeeded)");
    assert!(
        write.contains("Read-only file system"),
        "the app's root filesystem is read-only: {write}"
    );
    // The app reads the token, then each refresh (6 s tokens, refreshed after ~5 s).
    assert_app_reads_refreshed_tokens(&ns, &pod_name, &stand_in);
    assert_log_clean(&ns, &pod_name, "token-refresher", &stand_in, "e2e-secret");
    println!(
        "measured: sidecar's first log line -> first token request {:.2} s -> app's first log \
         line {:.2} s (sidecar start -> app start {:.0} s in the kubelet's whole seconds)",
        seconds_between(sidecar_first_log, first_request),
        seconds_between(first_request, app_first_log),
        seconds_between(sidecar_started, app_started),
    );
}

#[test]
#[ignore = "needs a cluster node: FISKIL_CLUSTER_NODE=1 tests/cluster/up.sh DIR, then FISKIL_CLUSTER_DIR=DIR"]
fn the_chart_helm_installs_by_version_is_the_signed_release() {
    let node = Node::connect();
    let dir = scratch_dir(&node, "chart-pull");
    let version = chart_version();
    let (_, said) = node.helm_said(&[
        "pull",
        &node.release.chart,
        "--version",
        &version,
        "--plain-http",
        "-d",
        dir.to_str().expect("path"),
    ]);
    // helm reports "Digest: sha256:…" of the manifest it pulled; up.sh verified that digest's
    // signature with cosign before any test ran.
    let digest = said
        .lines()
        .find_map(|l| l.strip_prefix("Digest: "))
        .map(str::trim);
    std::fs::remove_dir_all(&dir).expect("remove the pulled chart");
    assert_eq!(
        digest,
        Some(node.release.chart_digest.as_str()),
        "helm pull said: {said}"
    );
}

/// A fresh directory under the cluster's directory.
fn scratch_dir(node: &Node, name: &str) -> std::path::PathBuf {
    let dir = node.dir.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("make a directory");
    dir
}

#[test]
#[ignore = "needs a cluster node: FISKIL_CLUSTER_NODE=1 tests/cluster/up.sh DIR, then FISKIL_CLUSTER_DIR=DIR"]
fn credentials_rotated_in_the_secret_reach_the_sidecar_through_the_kubelet() {
    let node = Node::connect();
    let ns = node.namespace("e2e-rotate", true);
    // Long-lived tokens: no scheduled refresh inside the measurement.
    let stand_in = node.stand_in("e2e-client", "e2e-secret-1", 600);
    let pod = install_example(&node, &ns, &stand_in, ("e2e-client", "e2e-secret-1"), |p| {
        running(p, "app")
    });
    let pod_name = name(&pod);
    let before = stand_in.issued().len();
    assert_eq!(before, 1, "one token before the rotation");

    stand_in.accept("e2e-client-2", "e2e-secret-2");
    let updated = Instant::now();
    ns.credentials(CREDENTIALS, "e2e-client-2", "e2e-secret-2");
    eventually_every(
        "a token request with the rotated credentials",
        Duration::from_secs(240),
        NODE_PROBE_EVERY,
        || {
            stand_in
                .seen()
                .iter()
                .any(|s| s.client_id.as_deref() == Some("e2e-client-2"))
        },
    );
    let seen = stand_in.seen();
    let rotated = seen
        .iter()
        .find(|s| s.client_id.as_deref() == Some("e2e-client-2"))
        .expect("request with the new credentials");
    assert!(
        seen.iter()
            .filter(|s| s.at > updated)
            .all(|s| s.client_id.as_deref() == Some("e2e-client-2")),
        "after the update the refresher still sent the old client ID"
    );
    let delay = rotated.at.duration_since(updated);
    eventually_every(
        "the token from the new credentials in the app",
        Duration::from_secs(30),
        NODE_PROBE_EVERY,
        || {
            let issued = stand_in.issued();
            app_token(&ns, &pod_name).is_some_and(|t| issued[before..].contains(&t))
        },
    );
    assert_log_clean(&ns, &pod_name, "token-refresher", &stand_in, "e2e-secret-2");
    assert_log_clean(&ns, &pod_name, "token-refresher", &stand_in, "e2e-secret-1");
    println!(
        "measured: credentials Secret updated (kubectl apply) -> first exchange with the new \
         credentials {:.1} s (kubelet syncFrequency {})",
        delay.as_secs_f64(),
        sync_frequency(&node)
    );
}

fn sync_frequency(node: &Node) -> String {
    std::fs::read_to_string(node.dir.join("cluster.env"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("FISKIL_CLUSTER_SYNC_FREQUENCY="))
        .unwrap_or("unknown")
        .to_owned()
}

/// A consumer of the token Secret: prints a line (never the token) each time the mounted token
/// changes, with the token's expiry from the same Secret.
fn consumer_pod(secret: &str) -> String {
    let script = r#"trap 'exit 0' TERM
last=""
while true; do
  current="$(cat /var/run/fiskil-token/token 2>/dev/null)"
  if [ -n "$current" ] && [ "$current" != "$last" ]; then
    echo "token changed; expires_at=$(cat /var/run/fiskil-token/expires_at)"
    last="$current"
  fi
  sleep 0.2 &
  wait $!
done"#;
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "consumer", "labels": {"app": "consumer"}},
        "spec": {
            "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 10002, "runAsGroup": 10002,
                                 "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "consumer",
                "image": BUSYBOX,
                "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", script],
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                     "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "token", "mountPath": "/var/run/fiskil-token", "readOnly": true}],
            }],
            "volumes": [{"name": "token", "secret": {"secretName": secret, "defaultMode": 0o444}}],
        },
    })
    .to_string()
}

#[test]
#[ignore = "needs a cluster node: FISKIL_CLUSTER_NODE=1 tests/cluster/up.sh DIR, then FISKIL_CLUSTER_DIR=DIR"]
fn the_standalone_writer_keeps_the_secret_that_consumer_pods_mount() {
    // Long enough for the kubelet's default sync (60-90 s) to deliver a token before it expires.
    const EXPIRES_IN: i64 = 120;
    let node = Node::connect();
    // Not restricted: the writer runs on the host network, the only way to the API server here.
    let ns = node.namespace("e2e-writer", false);
    let stand_in = node.stand_in("e2e-client", "e2e-secret", EXPIRES_IN);
    ns.credentials(CREDENTIALS, "e2e-client", "e2e-secret");
    ns.ca_config_map(CA, stand_in.ca_pem());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut flags = chart_flags(&node, &stand_in);
    flags.extend([
        "--set=tokenSecret.name=fiskil-token".into(),
        // On the host network a second replica on this one node would need the same port; one
        // replica still elects itself through the Lease.
        "--set=standalone.replicas=1".into(),
        format!("--set=port={port}"),
        "--set=extraEnv[0].name=KUBERNETES_SERVICE_HOST".into(),
        "--set=extraEnv[0].value=127.0.0.1".into(),
        "--set=extraEnv[1].name=KUBERNETES_SERVICE_PORT".into(),
        format!("--set-string=extraEnv[1].value={}", node.apiserver_port),
    ]);
    ns.helm_install("e2e", &flags);
    let deployment = ns.kubectl(&["get", "deployment", "-l", WRITER, "-o", "name"]);
    ns.kubectl(&[
        "patch",
        deployment.trim(),
        "-p",
        r#"{"spec":{"template":{"spec":{"hostNetwork":true}}}}"#,
    ]);
    let writer = ns.wait_pod(WRITER, POD_START, "the writer pod, ready", |p| {
        p["spec"]["hostNetwork"] == true
            && container_status(p, "token-refresher").is_some_and(|s| s["ready"] == true)
    });
    let secret_token = || {
        ns.try_kubectl(&[
            "get",
            "secret",
            "fiskil-token",
            "-o",
            r#"go-template={{index .data "token" | base64decode}}"#,
        ])
        .ok()
    };
    eventually_every(
        "the token Secret",
        Duration::from_secs(60),
        NODE_PROBE_EVERY,
        || secret_token().is_some_and(|t| stand_in.issued().contains(&t)),
    );
    // The pod took the Lease under its own name (POD_NAME from the downward API).
    let written_by = ns.kubectl(&[
        "get",
        "secret",
        "fiskil-token",
        "-o",
        r#"go-template={{index .metadata.annotations "fiskil-token-refresher/writer"}}"#,
    ]);
    assert_eq!(written_by.trim(), name(&writer));

    ns.apply(&consumer_pod("fiskil-token"));
    ns.wait_pod("app=consumer", POD_START, "the consumer pod", |p| {
        running(p, "consumer")
    });
    // The consumer sees the next token the writer puts in the Secret.
    let mut changes = Vec::new();
    eventually_every(
        "a refreshed token in the consumer pod",
        Duration::from_secs(4 * EXPIRES_IN as u64),
        NODE_PROBE_EVERY,
        || {
            changes = token_changes(&ns, "consumer");
            changes.len() >= 2
        },
    );
    // The first line is the token the consumer found at its start; later ones were delivered.
    let delays: Vec<f64> = changes[1..]
        .iter()
        .map(|(seen_at, expires_at)| {
            let issued_at = *expires_at - Duration::from_secs(EXPIRES_IN as u64);
            seconds_between(issued_at, *seen_at)
        })
        .collect();
    let consumer_token = ns
        .kubectl(&[
            "exec",
            "consumer",
            "--",
            "cat",
            "/var/run/fiskil-token/token",
        ])
        .trim()
        .to_owned();
    assert!(
        stand_in.issued().contains(&consumer_token),
        "the consumer holds a token the stand-in never issued"
    );
    assert_log_clean(
        &ns,
        &name(&writer),
        "token-refresher",
        &stand_in,
        "e2e-secret",
    );
    let worst = delays.iter().copied().fold(0.0, f64::max);
    assert!(
        worst < EXPIRES_IN as f64,
        "a token reached the consumer only after it had expired"
    );
    println!(
        "measured: token issued -> seen in a consumer pod's Secret volume: {} s (kubelet \
         syncFrequency {})",
        delays
            .iter()
            .map(|d| format!("{d:.1}"))
            .collect::<Vec<_>>()
            .join(", "),
        sync_frequency(&node)
    );
}

/// The consumer pod's log lines saying the mounted token changed: when, and the expiry.
fn token_changes(ns: &Namespace, pod: &str) -> Vec<(SystemTime, SystemTime)> {
    timestamped(
        &ns.try_kubectl(&["logs", pod, "--timestamps"])
            .unwrap_or_default(),
    )
    .into_iter()
    .filter_map(|(at, line)| {
        let expires = line.strip_prefix("token changed; expires_at=")?;
        Some((at, humantime::parse_rfc3339_weak(expires).ok()?))
    })
    .collect()
}

#[test]
#[ignore = "needs a cluster node: FISKIL_CLUSTER_NODE=1 tests/cluster/up.sh DIR, then FISKIL_CLUSTER_DIR=DIR"]
fn the_controller_keeps_a_fiskiltokens_secret_that_consumer_pods_mount() {
    // Long enough for the kubelet's default sync (60-90 s) to deliver a token before it expires.
    const EXPIRES_IN: i64 = 120;
    let node = Node::connect();
    // Not restricted: the controller runs on the host network, the only way to the API server.
    let ns = node.namespace("e2e-controller", false);
    let stand_in = node.stand_in("e2e-ctl-client", "e2e-ctl-secret", EXPIRES_IN);
    ns.credentials(CREDENTIALS, "e2e-ctl-client", "e2e-ctl-secret");
    ns.ca_config_map(CA, stand_in.ca_pem());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut flags = chart_flags(&node, &stand_in);
    flags.extend([
        "--set=controller.enabled=true".into(),
        // On the host network a second replica on this one node would need the same port; one
        // replica still elects itself through the Lease.
        "--set=controller.replicas=1".into(),
        format!("--set=port={port}"),
        "--set=extraEnv[0].name=KUBERNETES_SERVICE_HOST".into(),
        "--set=extraEnv[0].value=127.0.0.1".into(),
        "--set=extraEnv[1].name=KUBERNETES_SERVICE_PORT".into(),
        format!("--set-string=extraEnv[1].value={}", node.apiserver_port),
    ]);
    // The ClusterRole and its binding are cluster-wide: a release name of this run's own keeps
    // them apart from those of an earlier run on the same node.
    ns.helm_install(&ns.name, &flags);
    let deployment = ns.kubectl(&["get", "deployment", "-l", CONTROLLER, "-o", "name"]);
    ns.kubectl(&[
        "patch",
        deployment.trim(),
        "-p",
        r#"{"spec":{"template":{"spec":{"hostNetwork":true}}}}"#,
    ]);
    let controller = ns.wait_pod(CONTROLLER, POD_START, "the controller pod, ready", |p| {
        p["spec"]["hostNetwork"] == true
            && container_status(p, "controller").is_some_and(|s| s["ready"] == true)
    });
    // The CRDs came with the chart; a team asks for a token with its own credentials.
    ns.apply(
        &serde_json::json!({
            "apiVersion": "fiskil-token-refresher.io/v1alpha1",
            "kind": "FiskilCredential",
            "metadata": {"name": "team"},
            "spec": {"secretRef": {"name": CREDENTIALS}},
        })
        .to_string(),
    );
    ns.apply(
        &serde_json::json!({
            "apiVersion": "fiskil-token-refresher.io/v1alpha1",
            "kind": "FiskilToken",
            "metadata": {"name": "api"},
            "spec": {
                "credentialRef": {"kind": "FiskilCredential", "name": "team"},
                "secretName": "fiskil-token",
            },
        })
        .to_string(),
    );
    eventually_every(
        "the FiskilToken Ready with its Secret",
        Duration::from_secs(60),
        NODE_PROBE_EVERY,
        || {
            let ready = ns.try_kubectl(&[
                "get",
                "fiskiltoken",
                "api",
                "-o",
                r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
            ]);
            let token = ns.try_kubectl(&[
                "get",
                "secret",
                "fiskil-token",
                "-o",
                r#"go-template={{index .data "token" | base64decode}}"#,
            ]);
            ready.is_ok_and(|r| r == "True") && token.is_ok_and(|t| stand_in.issued().contains(&t))
        },
    );
    ns.apply(&consumer_pod("fiskil-token"));
    ns.wait_pod("app=consumer", POD_START, "the consumer pod", |p| {
        running(p, "consumer")
    });
    let mut changes = Vec::new();
    eventually_every(
        "a refreshed token in the consumer pod",
        Duration::from_secs(4 * EXPIRES_IN as u64),
        NODE_PROBE_EVERY,
        || {
            changes = token_changes(&ns, "consumer");
            changes.len() >= 2
        },
    );
    let delays: Vec<f64> = changes[1..]
        .iter()
        .map(|(seen_at, expires_at)| {
            let issued_at = *expires_at - Duration::from_secs(EXPIRES_IN as u64);
            seconds_between(issued_at, *seen_at)
        })
        .collect();
    assert!(
        delays.iter().all(|d| *d < EXPIRES_IN as f64),
        "a token reached the consumer only after it had expired: {delays:?}"
    );
    assert_log_clean(
        &ns,
        &name(&controller),
        "controller",
        &stand_in,
        "e2e-ctl-secret",
    );
    // The Secret belongs to the FiskilToken: the garbage collector deletes it with it.
    ns.kubectl(&["delete", "fiskiltoken", "api"]);
    eventually_every(
        "the Secret deleted with its FiskilToken",
        Duration::from_secs(60),
        NODE_PROBE_EVERY,
        || ns.try_kubectl(&["get", "secret", "fiskil-token"]).is_err(),
    );
    println!(
        "measured: controller token issued -> seen in a consumer pod's Secret volume: {} s",
        delays
            .iter()
            .map(|d| format!("{d:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

#[test]
#[ignore = "needs a cluster node: FISKIL_CLUSTER_NODE=1 tests/cluster/up.sh DIR, then FISKIL_CLUSTER_DIR=DIR"]
fn deleting_the_pod_stops_the_app_first_and_the_sidecar_last_with_exit_0() {
    let node = Node::connect();
    let ns = node.namespace("e2e-delete", true);
    let stand_in = node.stand_in("e2e-client", "e2e-secret", 30);
    let pod = install_example(&node, &ns, &stand_in, ("e2e-client", "e2e-secret"), |p| {
        running(p, "app")
    });
    let pod_name = name(&pod);
    let uid = pod["metadata"]["uid"].as_str().expect("uid").to_owned();
    assert!(node.pod_dir(&uid).exists(), "the kubelet's pod directory");
    // Watch the pod's statuses up to its end (the Deployment starts a new pod meanwhile).
    let watch_out = std::env::temp_dir().join(format!("e2e-watch-{}.json", std::process::id()));
    let mut watch = node.kubectl_spawn(
        &[
            "-n", &ns.name, "get", "pod", &pod_name, "--watch", "-o", "json",
        ],
        std::fs::File::create(&watch_out).expect("watch output file"),
    );
    // Follow both containers' logs to their last lines.
    let log_files: Vec<_> = ["app", "token-refresher"]
        .iter()
        .map(|c| std::env::temp_dir().join(format!("e2e-{c}-{}.log", std::process::id())))
        .collect();
    let mut followers: Vec<_> = ["app", "token-refresher"]
        .iter()
        .zip(&log_files)
        .map(|(container, file)| {
            node.kubectl_spawn(
                &[
                    "-n",
                    &ns.name,
                    "logs",
                    "-f",
                    "--timestamps",
                    &pod_name,
                    "-c",
                    container,
                ],
                std::fs::File::create(file).expect("log file"),
            )
        })
        .collect();
    eventually_every(
        "the watch and the log followers",
        Duration::from_secs(30),
        NODE_PROBE_EVERY,
        || {
            std::iter::once(&watch_out)
                .chain(&log_files)
                .all(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 0))
        },
    );
    let started = Instant::now();
    ns.kubectl(&["delete", "pod", &pod_name, "--wait=false"]);
    eventually_every(
        "the pod to be gone",
        Duration::from_secs(120),
        NODE_PROBE_EVERY,
        || {
            ns.try_kubectl(&["get", "pod", &pod_name])
                .is_err_and(|e| e.contains("NotFound"))
        },
    );
    let took = started.elapsed();
    for child in followers.iter_mut().chain(std::iter::once(&mut watch)) {
        let _ = child.kill();
        let _ = child.wait();
    }
    let logs: Vec<Vec<(SystemTime, String)>> = log_files
        .iter()
        .map(|f| {
            let log = std::fs::read_to_string(f).unwrap_or_default();
            let _ = std::fs::remove_file(f);
            timestamped(&log)
        })
        .collect();
    let app_last = logs[0].last().expect("the app's last line");
    assert_eq!(app_last.1, "SIGTERM: exiting", "the app's last line");
    let sidecar_signal = logs[1]
        .iter()
        .find(|(_, line)| line.contains(r#""message":"stopping""#))
        .expect("the sidecar logs the stop signal");
    let sidecar_last = logs[1].last().expect("the sidecar's last line");
    assert!(
        sidecar_last.1.contains(r#""message":"stopped""#),
        "the sidecar's last line: {}",
        sidecar_last.1
    );
    assert!(
        app_last.0 < sidecar_signal.0,
        "the sidecar got its stop signal before the app had exited"
    );
    let text = std::fs::read_to_string(&watch_out).unwrap_or_default();
    let _ = std::fs::remove_file(&watch_out);
    let last = serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .filter_map(Result::ok)
        .filter(|p| {
            container_status(p, "app").is_some_and(|s| !s["state"]["terminated"].is_null())
                && container_status(p, "token-refresher")
                    .is_some_and(|s| !s["state"]["terminated"].is_null())
        })
        .last()
        .expect("the pod's final statuses in the watch");
    let app = &container_status(&last, "app").expect("app")["state"]["terminated"];
    let sidecar =
        &container_status(&last, "token-refresher").expect("sidecar")["state"]["terminated"];
    assert_eq!(app["exitCode"], 0, "the app's exit: {app}");
    assert_eq!(sidecar["exitCode"], 0, "the sidecar's exit: {sidecar}");
    let app_done = time_of(app, &["finishedAt"]).expect("app finishedAt");
    let sidecar_done = time_of(sidecar, &["finishedAt"]).expect("sidecar finishedAt");
    assert!(
        app_done <= sidecar_done,
        "the sidecar finished before the app"
    );
    // The in-memory token volume goes with the pod: nothing stays on the node.
    eventually_every(
        "the pod's directory removed",
        Duration::from_secs(60),
        NODE_PROBE_EVERY,
        || {
            !node.pod_dir(&uid).exists()
                && !std::fs::read_to_string("/proc/self/mountinfo")
                    .unwrap_or_default()
                    .contains(&uid)
        },
    );
    println!(
        "measured: pod deletion -> pod gone {:.1} s (grace period 30 s); the app's SIGTERM line \
         -> the sidecar's stop signal {:.2} s; both exit 0",
        took.as_secs_f64(),
        seconds_between(app_last.0, sidecar_signal.0)
    );
}

#[test]
#[ignore = "needs a cluster node: FISKIL_CLUSTER_NODE=1 tests/cluster/up.sh DIR, then FISKIL_CLUSTER_DIR=DIR"]
fn a_job_with_the_sidecar_completes() {
    let node = Node::connect();
    let ns = node.namespace("e2e-job", true);
    let stand_in = node.stand_in("e2e-client", "e2e-secret", 30);
    install_example(&node, &ns, &stand_in, ("e2e-client", "e2e-secret"), |p| {
        running(p, "app")
    });
    // The example's pod template as the chart rendered it, as a Job whose app reads the token
    // once and exits.
    let deployment = ns.json(&["get", "deployment", "-l", EXAMPLE]);
    let mut template = deployment["items"][0]["spec"]["template"].clone();
    template["spec"]["restartPolicy"] = "Never".into();
    template["metadata"]["labels"] = serde_json::json!({"app": "e2e-job"});
    let app = template["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .iter_mut()
        .find(|c| c["name"] == "app")
        .expect("app container");
    app["command"] = serde_json::json!([
        "/bin/sh",
        "-c",
        format!("test -s {TOKEN_FILE} && echo 'token file present; done'")
    ]);
    ns.apply(
        &serde_json::json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "e2e-job"},
            "spec": {"backoffLimit": 0, "template": template},
        })
        .to_string(),
    );
    let started = Instant::now();
    eventually_every("the Job to complete", POD_START, NODE_PROBE_EVERY, || {
        let job = ns.json(&["get", "job", "e2e-job"]);
        assert!(
            job["status"]["failed"].as_i64().unwrap_or(0) == 0,
            "the Job failed: {}",
            job["status"]
        );
        job["status"]["succeeded"] == 1
    });
    let pod = ns.json(&["get", "pods", "-l", "app=e2e-job"])["items"][0].clone();
    let log = ns.kubectl(&["logs", &name(&pod), "-c", "app"]);
    assert!(
        log.contains("token file present; done"),
        "the Job's app: {log}"
    );
    println!(
        "measured: Job with the sidecar complete {:.1} s after it was created",
        started.elapsed().as_secs_f64()
    );
}

#[test]
#[ignore = "needs a cluster node: FISKIL_CLUSTER_NODE=1 tests/cluster/up.sh DIR, then FISKIL_CLUSTER_DIR=DIR"]
fn rejected_credentials_hold_the_app_back_and_the_events_say_why() {
    let node = Node::connect();
    let ns = node.namespace("e2e-rejected", true);
    let stand_in = node.stand_in("e2e-client", "the-right-secret", 30);
    stand_in.set_default(Behaviour::Fail { status: 401 });
    let pod = install_example(
        &node,
        &ns,
        &stand_in,
        ("e2e-client", "a-wrong-secret"),
        |p| running(p, "token-refresher"),
    );
    let pod_name = name(&pod);
    eventually_every(
        "a startup probe failure event",
        Duration::from_secs(120),
        NODE_PROBE_EVERY,
        || {
            ns.try_kubectl(&[
                "get",
                "events",
                "--field-selector",
                &format!("involvedObject.name={pod_name},reason=Unhealthy"),
                "-o",
                "jsonpath={.items[*].message}",
            ])
            .is_ok_and(|m| m.contains("Startup probe failed"))
        },
    );
    let describe = ns.kubectl(&["describe", "pod", &pod_name]);
    assert!(
        describe.contains("Startup probe failed: HTTP probe failed with statuscode: 503"),
        "kubectl describe tells why the app waits:\n{describe}"
    );
    let pod = ns.json(&["get", "pod", &pod_name]);
    let app = container_status(&pod, "app").expect("app status");
    assert!(
        app["state"]["running"].is_null() && app["state"]["terminated"].is_null(),
        "the app must not start without a token: {app}"
    );
    let log = ns.kubectl(&["logs", &pod_name, "-c", "token-refresher"]);
    assert!(
        log.contains("401"),
        "the refresher's log names the rejection"
    );
    assert_log_clean(
        &ns,
        &pod_name,
        "token-refresher",
        &stand_in,
        "a-wrong-secret",
    );
    assert!(
        !stand_in.seen().is_empty(),
        "the refresher asked for a token"
    );
}

// ---------------------------------------------------------------------------------------------
// Sidecar injection by the chart's MutatingAdmissionPolicy (injection.enabled).

const INJECT_LABEL: &str = "fiskil-token-refresher.io/inject";
const CREDENTIALS_ANNOTATION: &str = "fiskil-token-refresher.io/credentials-secret";

/// The chart's admission policies (and nothing else) installed for one test: bound to its
/// namespace alone, named after it (they are cluster-scoped), uninstalled when dropped.
struct Injection<'a> {
    node: &'a Node,
    namespace: String,
}

impl Drop for Injection<'_> {
    fn drop(&mut self) {
        // A failure leaves only objects bound to a deleted namespace, gone with the cluster.
        let _ = self
            .node
            .try_helm(&["uninstall", "inject", "-n", &self.namespace, "--wait=false"]);
    }
}

/// Installs the policies for `ns` (which gets the namespace label the default selector wants)
/// and waits until the API server applies them: a dry-run of a labelled pod shows the sidecar.
fn install_injection<'a>(node: &'a Node, ns: &Namespace, stand_in: &StandIn) -> Injection<'a> {
    ns.ca_config_map(CA, stand_in.ca_pem());
    ns.kubectl(&[
        "label",
        "namespace",
        &ns.name,
        "fiskil-token-refresher.io/injection=enabled",
    ]);
    let mut flags = chart_flags(node, stand_in);
    flags.extend([
        "--set=standalone.enabled=false".into(),
        "--set=injection.enabled=true".into(),
        format!("--set=fullnameOverride=inject-{}", ns.name),
        format!(
            "--set=injection.namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name={}",
            ns.name
        ),
    ]);
    ns.helm_install("inject", &flags);
    let guard = Injection {
        node,
        namespace: ns.name.clone(),
    };
    let probe = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe", "namespace": ns.name, "labels": {INJECT_LABEL: "true"}},
        "spec": app_pod_spec("sleep 1"),
    })
    .to_string();
    eventually_every(
        "the policy to inject",
        Duration::from_secs(60),
        NODE_PROBE_EVERY,
        || {
            node.kubectl_stdin(
                &["create", "--dry-run=server", "-o", "json", "-f", "-"],
                &probe,
            )
            .contains("\"token-refresher\"")
        },
    );
    guard
}

/// A restricted pod spec whose only container, `app` (UID 10001, busybox), runs `script`.
fn app_pod_spec(script: &str) -> Value {
    serde_json::json!({
        "automountServiceAccountToken": false,
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "app",
            "image": BUSYBOX,
            "imagePullPolicy": "Never",
            "command": ["/bin/sh", "-c", script],
            "securityContext": {"runAsUser": 10001, "runAsGroup": 10001,
                                 "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                 "capabilities": {"drop": ["ALL"]}},
        }],
    })
}

/// The app of the injected workloads: reports whether it can read the token, exits on SIGTERM.
const APP_SCRIPT: &str = r#"trap 'exit 0' TERM
while true; do
  if [ -r /var/run/fiskil/token ]; then echo "token file readable"; else echo "no token file"; fi
  sleep 60 &
  wait $!
done"#;

/// A Deployment whose pod template has only the label and the credentials annotation.
fn labelled_deployment(name: &str) -> String {
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {
                    "labels": {"app": name, INJECT_LABEL: "true"},
                    "annotations": {CREDENTIALS_ANNOTATION: CREDENTIALS},
                },
                "spec": app_pod_spec(APP_SCRIPT),
            },
        },
    })
    .to_string()
}

/// Names of a list of the pod spec (`containers`, `initContainers`, `volumes`).
fn names(pod: &Value, list: &str) -> Vec<String> {
    pod["spec"][list]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The injected pod has the sidecar once, first, native, and each volume and mount once.
fn assert_injected_once(pod: &Value) {
    assert_eq!(
        names(pod, "initContainers"),
        ["token-refresher"],
        "init containers"
    );
    assert_eq!(pod["spec"]["initContainers"][0]["restartPolicy"], "Always");
    let mut volumes = names(pod, "volumes");
    volumes.sort();
    assert_eq!(
        volumes,
        ["fiskil-ca", "fiskil-credentials", "fiskil-token"],
        "volumes"
    );
    let app = &pod["spec"]["containers"][0];
    let mounts: Vec<&Value> = app["volumeMounts"]
        .as_array()
        .expect("the app's volumeMounts")
        .iter()
        .collect();
    assert_eq!(
        mounts,
        [
            &serde_json::json!({"name": "fiskil-token", "mountPath": "/var/run/fiskil", "readOnly": true})
        ],
        "the app's mounts"
    );
    assert_eq!(pod["spec"]["securityContext"]["fsGroup"], 65532);
}

/// The live pods of `selector` (not being deleted).
fn live_pods(ns: &Namespace, selector: &str) -> Vec<Value> {
    ns.json(&["get", "pods", "-l", selector])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

#[test]
#[ignore = "needs a cluster node: FISKIL_CLUSTER_NODE=1 tests/cluster/up.sh DIR, then FISKIL_CLUSTER_DIR=DIR"]
fn a_label_adds_the_sidecar_the_app_reads_refreshed_tokens_and_nothing_else_changes() {
    let node = Node::connect();
    let ns = node.namespace("e2e-inject", true);
    let stand_in = node.stand_in("e2e-client", "e2e-secret", 6);
    ns.credentials(CREDENTIALS, "e2e-client", "e2e-secret");

    // An unlabelled pod, as the API server fills in its defaults before any policy exists: a
    // spec that admission without the policy returns unchanged.
    let plain = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "plain", "namespace": ns.name, "labels": {"app": "plain"}},
        "spec": app_pod_spec(APP_SCRIPT),
    })
    .to_string();
    let defaulted: Value = serde_json::from_str(&node.kubectl_stdin(
        &["create", "--dry-run=server", "-o", "json", "-f", "-"],
        &plain,
    ))
    .expect("dry-run JSON");
    let submitted = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "plain", "namespace": ns.name, "labels": {"app": "plain"}},
        "spec": defaulted["spec"],
    });

    let _injection = install_injection(&node, &ns, &stand_in);

    // With the policy installed, that unlabelled pod is stored byte for byte as submitted.
    let created: Value = serde_json::from_str(
        &node.kubectl_stdin(&["create", "-o", "json", "-f", "-"], &submitted.to_string()),
    )
    .expect("created pod JSON");
    assert_eq!(
        serde_json::to_string(&created["spec"]).unwrap(),
        serde_json::to_string(&submitted["spec"]).unwrap(),
        "the unlabelled pod's spec was changed"
    );

    // A Deployment with only the label and the credentials annotation.
    let manifest = labelled_deployment("injected");
    ns.apply(&manifest);
    let pod = ns.wait_pod("app=injected", POD_START, "the injected pod", |p| {
        running(p, "app")
    });
    let pod_name = name(&pod);
    assert_injected_once(&pod);
    assert_app_reads_refreshed_tokens(&ns, &pod_name, &stand_in);
    assert_log_clean(&ns, &pod_name, "token-refresher", &stand_in, "e2e-secret");

    // No injector: no webhook configuration, and the release is the policies alone.
    assert_eq!(
        node.kubectl(&["get", "mutatingwebhookconfigurations", "-o", "name"])
            .trim(),
        "",
        "a mutating webhook exists"
    );
    let manifest_kinds: Vec<String> = node
        .helm(&["get", "manifest", "inject", "-n", &ns.name])
        .lines()
        .filter_map(|l| l.strip_prefix("kind: ").map(str::to_owned))
        .collect();
    assert!(
        manifest_kinds
            .iter()
            .all(|k| k.ends_with("AdmissionPolicy") || k.ends_with("AdmissionPolicyBinding")),
        "the release holds more than the policies: {manifest_kinds:?}"
    );
    let mut pods: Vec<String> = live_pods(&ns, "app")
        .iter()
        .map(|p| {
            p["metadata"]["labels"]["app"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    pods.sort();
    assert_eq!(pods, ["injected", "plain"], "pods in the namespace");

    // Re-applying the same Deployment changes nothing: same pod, the sidecar once.
    let generation = ns.json(&["get", "deployment", "injected"])["metadata"]["generation"].clone();
    ns.apply(&manifest);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        ns.json(&["get", "deployment", "injected"])["metadata"]["generation"],
        generation,
        "re-applying changed the Deployment"
    );
    let again = live_pods(&ns, "app=injected");
    assert_eq!(again.len(), 1, "pods after re-applying");
    assert_eq!(name(&again[0]), pod_name, "re-applying replaced the pod");
    assert_injected_once(&again[0]);

    // A rollout makes a new pod, injected once too.
    ns.kubectl(&["rollout", "restart", "deployment/injected"]);
    let rolled = ns.wait_pod("app=injected", POD_START, "the rolled pod", |p| {
        name(p) != pod_name && running(p, "app")
    });
    assert_injected_once(&rolled);
    assert!(
        app_token(&ns, &name(&rolled)).is_some_and(|t| stand_in.issued().contains(&t)),
        "the rolled pod's app reads a token"
    );
}

#[test]
#[ignore = "needs a cluster node: FISKIL_CLUSTER_NODE=1 tests/cluster/up.sh DIR, then FISKIL_CLUSTER_DIR=DIR"]
fn an_injected_job_completes() {
    let node = Node::connect();
    let ns = node.namespace("e2e-inject-job", true);
    let stand_in = node.stand_in("e2e-client", "e2e-secret", 30);
    ns.credentials(CREDENTIALS, "e2e-client", "e2e-secret");
    let _injection = install_injection(&node, &ns, &stand_in);
    let mut spec = app_pod_spec(&format!(
        "test -s {TOKEN_FILE} && echo 'token file present; done'"
    ));
    spec["restartPolicy"] = "Never".into();
    ns.apply(
        &serde_json::json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "injected-job"},
            "spec": {"backoffLimit": 0, "template": {
                "metadata": {"labels": {"app": "injected-job", INJECT_LABEL: "true"},
                             "annotations": {CREDENTIALS_ANNOTATION: CREDENTIALS}},
                "spec": spec,
            }},
        })
        .to_string(),
    );
    let started = Instant::now();
    eventually_every(
        "the injected Job to complete",
        POD_START,
        NODE_PROBE_EVERY,
        || {
            let job = ns.json(&["get", "job", "injected-job"]);
            assert!(
                job["status"]["failed"].as_i64().unwrap_or(0) == 0,
                "the Job failed: {}",
                job["status"]
            );
            job["status"]["succeeded"] == 1
        },
    );
    let pod = ns.json(&["get", "pods", "-l", "app=injected-job"])["items"][0].clone();
    assert_eq!(names(&pod, "initContainers"), ["token-refresher"]);
    let log = ns.kubectl(&["logs", &name(&pod), "-c", "app"]);
    assert!(
        log.contains("token file present; done"),
        "the Job's app: {log}"
    );
    println!(
        "measured: injected Job complete {:.1} s after it was created",
        started.elapsed().as_secs_f64()
    );
}

/// Seconds from `kubectl create` of `pod` to its app container running (polled every 100 ms).
fn start_delay(ns: &Namespace, pod: &Value) -> f64 {
    let pod_name = pod["metadata"]["name"].as_str().expect("name").to_owned();
    let started = Instant::now();
    ns.apply(&pod.to_string());
    eventually_every(
        &format!("{pod_name}'s app to start"),
        POD_START,
        Duration::from_millis(100),
        || {
            let json = ns
                .try_kubectl(&["get", "pod", &pod_name, "-o", "json"])
                .ok()?;
            let live: Value = serde_json::from_str(&json).expect("pod JSON");
            running(&live, "app").then(|| started.elapsed().as_secs_f64())
        },
    )
}

#[test]
#[ignore = "needs a cluster node: FISKIL_CLUSTER_NODE=1 tests/cluster/up.sh DIR, then FISKIL_CLUSTER_DIR=DIR"]
fn measured_pod_start_injected_and_hand_written() {
    const RUNS: usize = 3;
    let node = Node::connect();
    let ns = node.namespace("e2e-inject-start", true);
    let stand_in = node.stand_in("e2e-client", "e2e-secret", 600);
    ns.credentials(CREDENTIALS, "e2e-client", "e2e-secret");
    let _injection = install_injection(&node, &ns, &stand_in);
    let labelled = |n: usize| {
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": format!("injected-{n}"), "labels": {"app": "start", INJECT_LABEL: "true"},
                         "annotations": {CREDENTIALS_ANNOTATION: CREDENTIALS}},
            "spec": app_pod_spec(APP_SCRIPT),
        })
    };
    let (mut injected, mut hand_written) = (Vec::new(), Vec::new());
    let mut template: Option<Value> = None;
    for n in 0..RUNS {
        let pod = labelled(n);
        injected.push(start_delay(&ns, &pod));
        // The hand-written pod: the spec the policy produced, written out, without the label.
        let spec = template.get_or_insert_with(|| {
            let mut spec = ns.json(&["get", "pod", &format!("injected-{n}")])["spec"].clone();
            let obj = spec.as_object_mut().expect("spec");
            obj.remove("nodeName");
            spec
        });
        let hand = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": format!("hand-written-{n}"), "labels": {"app": "start"}},
            "spec": spec,
        });
        hand_written.push(start_delay(&ns, &hand));
        for pod in [format!("injected-{n}"), format!("hand-written-{n}")] {
            ns.kubectl(&["delete", "pod", &pod, "--wait=false"]);
        }
    }
    let show = |v: &[f64]| {
        v.iter()
            .map(|d| format!("{d:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "measured: pod created -> app container running: injected {} s (mean {:.2}), \
         hand-written {} s (mean {:.2})",
        show(&injected),
        mean(&injected),
        show(&hand_written),
        mean(&hand_written)
    );
    // The policy runs in the API server: no webhook round trip, no noticeable delay.
    assert!(
        mean(&injected) < mean(&hand_written) + 2.0,
        "injected pods start much later than hand-written ones"
    );
}
