//! A test cluster with a node (`FISKIL_CLUSTER_NODE=1 tests/cluster/up.sh`): kubectl and helm
//! against it, namespaces that are deleted afterwards, the stand-in on the host's bridge address,
//! and reading pod and container states.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use fiskil_stand_in::StandIn;
use serde_json::Value;

use super::eventually_every;

/// The image `up.sh` imports for applications.
pub const BUSYBOX: &str = "busybox:e2e";

/// What `up.sh` released into the node's registry with `cargo xtask release` and verified with
/// cosign (DIR/node/release/released).
pub struct Release {
    /// The image by digest: `127.0.0.1:PORT/fiskil-token-refresher@sha256:…`.
    pub image: String,
    /// The chart as `helm install` takes it: `oci://127.0.0.1:PORT/charts/fiskil-token-refresher`.
    pub chart: String,
    /// The chart's digest in the registry.
    pub chart_digest: String,
}

impl Release {
    /// The image's repository, without the digest.
    pub fn repository(&self) -> &str {
        self.image.split_once('@').expect("image@digest").0
    }

    /// The image's digest, `sha256:…`.
    pub fn digest(&self) -> &str {
        self.image.split_once('@').expect("image@digest").1
    }
}

/// How often waits on the node probe: most probes run kubectl.
pub const NODE_PROBE_EVERY: Duration = Duration::from_millis(200);

/// The running cluster and its node.
pub struct Node {
    pub dir: PathBuf,
    pub name: String,
    /// The host's address on the pod network.
    pub host_ip: IpAddr,
    pub apiserver_port: u16,
    pub release: Release,
    kubectl: PathBuf,
    helm: PathBuf,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs one of the `tests/deploy` scripts that print the path of a tool they build once.
pub fn tool(script: &str) -> PathBuf {
    let out = Command::new(repo().join("tests/deploy").join(script))
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run tests/deploy/{script}: {e}"));
    assert!(out.status.success(), "tests/deploy/{script} failed");
    PathBuf::from(String::from_utf8(out.stdout).expect("utf-8").trim())
}

/// The chart's version in `Chart.yaml`: what `cargo xtask release` pushed.
pub fn chart_version() -> String {
    let chart = std::fs::read_to_string(repo().join("charts/fiskil-token-refresher/Chart.yaml"))
        .expect("read Chart.yaml");
    chart
        .lines()
        .find_map(|l| l.strip_prefix("version:"))
        .expect("version in Chart.yaml")
        .trim()
        .trim_matches('"')
        .to_owned()
}

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (start the cluster with FISKIL_CLUSTER_NODE=1 tests/cluster/up.sh DIR)",
                path.display()
            )
        })
        .trim()
        .to_owned()
}

impl Node {
    pub fn connect() -> Node {
        let dir = PathBuf::from(std::env::var("FISKIL_CLUSTER_DIR").expect(
            "FISKIL_CLUSTER_DIR must name the directory given to FISKIL_CLUSTER_NODE=1 tests/cluster/up.sh",
        ));
        let env = read_trimmed(&dir.join("cluster.env"));
        let apiserver_port = env
            .lines()
            .find_map(|l| l.strip_prefix("FISKIL_CLUSTER_APISERVER_PORT="))
            .and_then(|p| p.parse().ok())
            .expect("FISKIL_CLUSTER_APISERVER_PORT in cluster.env");
        let released = read_trimmed(&dir.join("node/release/released"));
        let field = |name: &str| {
            released
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("no {name} in node/release/released: {released}"))
                .to_owned()
        };
        let (chart, chart_digest) = field("chart")
            .split_once('@')
            .map(|(c, d)| (format!("oci://{c}"), d.to_owned()))
            .expect("chart@digest");
        Node {
            release: Release {
                image: field("image"),
                chart,
                chart_digest,
            },
            name: read_trimmed(&dir.join("node-name")),
            host_ip: read_trimmed(&dir.join("host-ip")).parse().expect("host-ip"),
            apiserver_port,
            kubectl: tool("kubectl.sh"),
            helm: tool("helm.sh"),
            dir,
        }
    }

    fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(program);
        command
            .args(args)
            .env("KUBECONFIG", self.dir.join("kubeconfig"));
        command
    }

    /// kubectl ARGS: its stdout, or `Err` with its stderr.
    pub fn try_kubectl(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .command(&self.kubectl, args)
            .output()
            .expect("run kubectl");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub fn kubectl(&self, args: &[&str]) -> String {
        self.try_kubectl(args)
            .unwrap_or_else(|e| panic!("kubectl {}: {e}", args.join(" ")))
    }

    /// kubectl ARGS running in the background, its output into `stdout` (a `--watch`).
    pub fn kubectl_spawn(&self, args: &[&str], stdout: std::fs::File) -> std::process::Child {
        self.command(&self.kubectl, args)
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .expect("run kubectl")
    }

    /// kubectl ARGS with `input` on its standard input (`apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> String {
        use std::io::Write;
        let mut child = self
            .command(&self.kubectl, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write to kubectl");
        let out = child.wait_with_output().expect("kubectl output");
        assert!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl ARGS -o json`, parsed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&all)).expect("kubectl JSON")
    }

    /// helm ARGS: its stdout, or `Err` with its stderr.
    pub fn try_helm(&self, args: &[&str]) -> Result<String, String> {
        let out = self.command(&self.helm, args).output().expect("run helm");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub fn helm(&self, args: &[&str]) -> String {
        self.helm_said(args).0
    }

    /// helm ARGS, which must succeed: its stdout and its stderr (where `helm pull` reports
    /// the digest it pulled).
    pub fn helm_said(&self, args: &[&str]) -> (String, String) {
        let out = self.command(&self.helm, args).output().expect("run helm");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "helm {}: {stderr}",
            args.first().unwrap_or(&""),
        );
        (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
    }

    /// A fresh namespace (deleted when the guard drops); with `restricted`, the restricted Pod
    /// Security profile is enforced in it.
    pub fn namespace(&self, prefix: &str, restricted: bool) -> Namespace<'_> {
        let name = format!("{prefix}-{}", std::process::id());
        self.kubectl(&["create", "namespace", &name]);
        if restricted {
            self.kubectl(&[
                "label",
                "namespace",
                &name,
                "pod-security.kubernetes.io/enforce=restricted",
                "pod-security.kubernetes.io/warn=restricted",
            ]);
        }
        eventually_every(
            "the default ServiceAccount",
            Duration::from_secs(60),
            NODE_PROBE_EVERY,
            || {
                self.try_kubectl(&["-n", &name, "get", "serviceaccount", "default"])
                    .is_ok()
            },
        );
        Namespace { node: self, name }
    }

    /// The token stand-in on the host's address on the pod network, so that pods reach it.
    pub fn stand_in(&self, client_id: &str, client_secret: &str, expires_in: i64) -> StandIn {
        StandIn::start_on(
            SocketAddr::new(self.host_ip, 0),
            client_id,
            client_secret,
            expires_in,
        )
    }

    /// The kubelet's directory for the pod with this UID.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.dir.join("node/kubelet/pods").join(uid)
    }
}

/// A namespace deleted (without waiting) when dropped.
pub struct Namespace<'a> {
    node: &'a Node,
    pub name: String,
}

impl Namespace<'_> {
    pub fn kubectl(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend(args);
        self.node.kubectl(&all)
    }

    pub fn try_kubectl(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-n", &self.name];
        all.extend(args);
        self.node.try_kubectl(&all)
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["-n", &self.name];
        all.extend(args);
        self.node.json(&all)
    }

    pub fn apply(&self, manifest: &str) {
        self.node
            .kubectl_stdin(&["-n", &self.name, "apply", "-f", "-"], manifest);
    }

    /// The credentials Secret `name`, created or updated with `kubectl apply`.
    pub fn credentials(&self, name: &str, client_id: &str, client_secret: &str) {
        self.apply(
            &serde_json::json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name},
                "stringData": {"client_id": client_id, "client_secret": client_secret},
            })
            .to_string(),
        );
    }

    /// A ConfigMap with the stand-in's CA under `ca.crt` (the chart's `ca.configMap`).
    pub fn ca_config_map(&self, name: &str, pem: &str) {
        self.apply(
            &serde_json::json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name},
                "data": {"ca.crt": pem},
            })
            .to_string(),
        );
    }

    /// `helm install RELEASE oci://REGISTRY/charts/fiskil-token-refresher --version V`, the
    /// chart as released into the node's registry, with these flags (`--set=K=V`,
    /// `--set-string=K=V`).
    pub fn helm_install(&self, release: &str, flags: &[String]) {
        let version = chart_version();
        let mut args = vec![
            "install",
            release,
            &self.node.release.chart,
            "--version",
            &version,
            "--plain-http",
            "-n",
            &self.name,
        ];
        args.extend(flags.iter().map(String::as_str));
        self.node.helm(&args);
    }

    /// The single pod matching `selector`, once `ready(pod)` holds.
    pub fn wait_pod(
        &self,
        selector: &str,
        timeout: Duration,
        what: &str,
        ready: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        eventually_every(what, timeout, Duration::from_millis(500), || {
            let pods = self.json(&["get", "pods", "-l", selector]);
            let items = pods["items"].as_array().cloned().unwrap_or_default();
            let live: Vec<_> = items
                .into_iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .collect();
            if let [pod] = live.as_slice() {
                if ready(pod) {
                    return Ok(pod.clone());
                }
            }
            // What the failure shows once the time is up: kubectl describe of the pods.
            Err(if started.elapsed() >= timeout {
                let describe = self
                    .try_kubectl(&["describe", "pods", "-l", selector])
                    .unwrap_or_else(|e| e);
                format!("\n{describe}")
            } else {
                format!("{} live pods", live.len())
            })
        })
    }
}

impl Drop for Namespace<'_> {
    fn drop(&mut self) {
        let _ = self
            .node
            .try_kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

/// The status of container `name` (an init container or a regular one) in `pod`.
pub fn container_status<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    ["initContainerStatuses", "containerStatuses"]
        .iter()
        .filter_map(|key| pod["status"][key].as_array())
        .flatten()
        .find(|s| s["name"] == name)
}

/// The time of an RFC 3339 field such as `state.running.startedAt`.
pub fn time_of(status: &Value, path: &[&str]) -> Option<SystemTime> {
    let mut value = status;
    for key in path {
        value = &value[key];
    }
    humantime::parse_rfc3339_weak(value.as_str()?).ok()
}

/// Whether container `name` in `pod` runs.
pub fn running(pod: &Value, name: &str) -> bool {
    container_status(pod, name).is_some_and(|s| !s["state"]["running"].is_null())
}

/// Seconds from `earlier` to `later`, negative when `later` is before it.
pub fn seconds_between(earlier: SystemTime, later: SystemTime) -> f64 {
    match later.duration_since(earlier) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}
