//! Fleet fixtures on a real control plane: a writer ServiceAccount holding only the documented
//! Roles (each Secret target, the Lease, Events), writer processes with leader election, and
//! ordered watch streams of Secrets and the Lease recorded with the time each event arrived.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::prelude::{Engine, BASE64_STANDARD};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde_json::Value;

use super::control_plane::{Cluster, SECRET};
use super::{eventually, Daemon, Fixture};

/// The annotation naming the process that wrote a Secret version.
pub const WRITER_ANNOTATION: &str = "fiskil-token-refresher/writer";
/// The annotation holding the Lease term a Secret version was written in.
pub const TERM_ANNOTATION: &str = "fiskil-token-refresher/lease-term";
/// The writer's ServiceAccount, in the fleet's home namespace.
pub const WRITER_ACCOUNT: &str = "writer";

/// A writer's ServiceAccount in a home namespace (where its Lease and pod Events live) and the
/// target namespaces it writes one Secret in each.
pub struct Fleet {
    pub home: String,
    pub targets: Vec<String>,
    pub lease: String,
    pub kubeconfig: PathBuf,
    admin: Client,
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        ..ObjectMeta::default()
    }
}

fn rule(group: &str, resource: &str, names: Option<&str>, verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.into()]),
        resources: Some(vec![resource.into()]),
        resource_names: names.map(|n| vec![n.into()]),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    }
}

impl Fleet {
    /// Namespaces `NAME-PID` (home) and `NAME-PID-tI` for `targets` targets; the writer's
    /// ServiceAccount with the Lease Role (get, update, watch on the named Lease; create) and the
    /// Events Role (create, patch) in home. No target is granted yet: see [`Fleet::grant`].
    pub async fn create(cluster: &Cluster, name: &str, work: &Path, targets: usize) -> Fleet {
        let home = format!("{name}-{}", std::process::id());
        let targets: Vec<String> = (0..targets).map(|i| format!("{home}-t{i}")).collect();
        let namespaces: Api<Namespace> = Api::all(cluster.admin.clone());
        for ns in std::iter::once(&home).chain(&targets) {
            namespaces
                .create(
                    &PostParams::default(),
                    &Namespace {
                        metadata: meta(ns),
                        ..Namespace::default()
                    },
                )
                .await
                .expect("create namespace");
        }
        let accounts: Api<ServiceAccount> = Api::namespaced(cluster.admin.clone(), &home);
        accounts
            .create(
                &PostParams::default(),
                &ServiceAccount {
                    metadata: meta(WRITER_ACCOUNT),
                    ..ServiceAccount::default()
                },
            )
            .await
            .expect("create ServiceAccount");
        let lease = format!("{name}-lease");
        let fleet = Fleet {
            kubeconfig: work.join("writer-kubeconfig"),
            home: home.clone(),
            targets,
            lease: lease.clone(),
            admin: cluster.admin.clone(),
        };
        fleet
            .bind(
                &home,
                "lease",
                vec![
                    rule(
                        "coordination.k8s.io",
                        "leases",
                        Some(&lease),
                        &["get", "update", "watch"],
                    ),
                    rule("coordination.k8s.io", "leases", None, &["create"]),
                ],
            )
            .await;
        fleet
            .bind(
                &home,
                "events",
                vec![rule("events.k8s.io", "events", None, &["create", "patch"])],
            )
            .await;

        cluster
            .kubeconfig_for(&home, WRITER_ACCOUNT, &fleet.kubeconfig)
            .await;
        fleet
    }

    /// A Role named `name` with `rules` in `namespace`, bound to the writer's ServiceAccount.
    async fn bind(&self, namespace: &str, name: &str, rules: Vec<PolicyRule>) {
        let roles: Api<Role> = Api::namespaced(self.admin.clone(), namespace);
        roles
            .create(
                &PostParams::default(),
                &Role {
                    metadata: meta(name),
                    rules: Some(rules),
                },
            )
            .await
            .expect("create Role");
        let bindings: Api<RoleBinding> = Api::namespaced(self.admin.clone(), namespace);
        let binding = RoleBinding {
            metadata: meta(name),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: name.into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: WRITER_ACCOUNT.into(),
                namespace: Some(self.home.clone()),
                ..Subject::default()
            }]),
        };
        bindings
            .create(&PostParams::default(), &binding)
            .await
            .expect("create RoleBinding");
    }

    /// The documented Role for target `i` (create, patch on its one Secret), bound to the
    /// writer's ServiceAccount.
    pub async fn grant(&self, i: usize) {
        self.bind(
            &self.targets[i],
            "fiskil-token-refresher",
            vec![rule("", "secrets", Some(SECRET), &["create", "patch"])],
        )
        .await;
    }

    /// The Events Role (create, patch) in target `i`'s namespace, for a writer whose Events
    /// regard the Secret (no POD_NAME).
    pub async fn allow_events(&self, i: usize) {
        self.bind(
            &self.targets[i],
            "events",
            vec![rule("events.k8s.io", "events", None, &["create", "patch"])],
        )
        .await;
    }

    /// `NAMESPACE/NAME` of target `i`, as `--secret` takes it and output names show it.
    pub fn target(&self, i: usize) -> String {
        format!("{}/{SECRET}", self.targets[i])
    }

    /// The shared fixture's arguments without the token file.
    pub fn base_args(fixture: &Fixture) -> Vec<String> {
        let mut args = Vec::new();
        let mut base = fixture.base_args().into_iter();
        while let Some(arg) = base.next() {
            if arg == "--token-file" {
                base.next();
            } else {
                args.push(arg);
            }
        }
        args
    }

    /// The shared fixture's arguments without the token file, every target as `--secret`, the
    /// fleet's Lease name, then `extra`.
    pub fn writer_args(&self, fixture: &Fixture, extra: &[&str]) -> Vec<String> {
        let mut args = Self::base_args(fixture);
        for i in 0..self.targets.len() {
            args.extend(["--secret".to_owned(), self.target(i)]);
        }
        args.extend(["--lease-name".to_owned(), self.lease.clone()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Starts a writer as pod `identity` of the home namespace, as the writer's ServiceAccount.
    pub fn spawn(&self, fixture: &Fixture, identity: &str, extra: &[&str]) -> Writer {
        self.spawn_args(identity, &self.writer_args(fixture, extra), &[])
    }

    /// Starts a writer as pod `identity` with exactly `args` and the extra environment `env`.
    pub fn spawn_args(&self, identity: &str, args: &[String], env: &[(&str, &str)]) -> Writer {
        let mut all_env = vec![
            ("KUBECONFIG", self.kubeconfig.to_str().unwrap()),
            ("POD_NAME", identity),
            ("POD_NAMESPACE", self.home.as_str()),
        ];
        all_env.extend_from_slice(env);
        Writer {
            identity: identity.to_owned(),
            daemon: Daemon::spawn(args, &all_env),
        }
    }

    /// The Secrets watch of every target, and the Lease's, from now on.
    pub async fn watch(&self, cluster: &Cluster) -> (Vec<Watch>, Watch) {
        let mut secrets = Vec::new();
        for ns in &self.targets {
            secrets.push(
                Watch::start(cluster, &format!("/api/v1/namespaces/{ns}/secrets"), SECRET).await,
            );
        }
        let lease = Watch::start(
            cluster,
            &format!(
                "/apis/coordination.k8s.io/v1/namespaces/{}/leases",
                self.home
            ),
            &self.lease,
        )
        .await;
        (secrets, lease)
    }
}

/// One writer process and the identity (POD_NAME) it runs as.
pub struct Writer {
    pub identity: String,
    pub daemon: Daemon,
}

impl Writer {
    /// `fiskil_token_refresher_leader` from /metrics (`None` when absent).
    pub fn leader_gauge(&mut self) -> Option<f64> {
        self.sample("fiskil_token_refresher_leader")
    }

    /// Every token request this process made, whatever its result (absent counts as 0).
    pub fn requests(&mut self) -> f64 {
        let (_, text) = self.daemon.get("/metrics");
        text.lines()
            .filter(|l| l.starts_with("fiskil_token_refresher_refresh_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// One sample of /metrics by its exact name and labels.
    pub fn sample(&mut self, sample: &str) -> Option<f64> {
        let (_, text) = self.daemon.get("/metrics");
        text.lines().find_map(|line| {
            line.strip_prefix(sample)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    /// /readyz: the status code and the JSON body.
    pub fn readyz(&mut self) -> (u16, Value) {
        let (code, body) = self.daemon.get("/readyz");
        let json =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("/readyz is not JSON: {body}"));
        (code, json)
    }
}

/// One watch event as it arrived.
#[derive(Clone, Debug)]
pub struct Observed {
    /// When the test received it.
    pub at: Instant,
    pub wall: SystemTime,
    /// ADDED, MODIFIED, DELETED.
    pub kind: String,
    pub object: Value,
}

impl Observed {
    pub fn resource_version(&self) -> u64 {
        self.object["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|rv| rv.parse().ok())
            .expect("a numeric resourceVersion")
    }

    /// A Lease's holderIdentity, `None` when released or empty.
    pub fn holder(&self) -> Option<String> {
        self.object["spec"]["holderIdentity"]
            .as_str()
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
    }

    /// A Lease's spec.leaseTransitions (absent is 0).
    pub fn transitions(&self) -> u64 {
        self.object["spec"]["leaseTransitions"]
            .as_u64()
            .unwrap_or(0)
    }

    pub fn annotation(&self, key: &str) -> Option<String> {
        self.object["metadata"]["annotations"][key]
            .as_str()
            .map(str::to_owned)
    }

    /// A Secret's data key, decoded.
    pub fn data(&self, key: &str) -> Option<String> {
        let encoded = self.object["data"][key].as_str()?;
        let decoded = BASE64_STANDARD
            .decode(encoded)
            .unwrap_or_else(|e| panic!("Secret data {key} is not base64 ({e}): {encoded:?}"));
        Some(String::from_utf8(decoded).expect("UTF-8 data"))
    }

    /// A Secret's `expires_at`, parsed.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.data("expires_at").map(|text| {
            humantime::parse_rfc3339(&text)
                .unwrap_or_else(|_| panic!("expires_at {text:?} is not RFC 3339"))
        })
    }

    /// A Secret version's `(writer, term)` annotations.
    pub fn writer_term(&self) -> Option<(String, u64)> {
        let writer = self.annotation(WRITER_ANNOTATION)?;
        let term = self.annotation(TERM_ANNOTATION)?;
        Some((
            writer,
            term.parse()
                .unwrap_or_else(|_| panic!("lease-term {term:?} is not a number")),
        ))
    }
}

/// Standard base64 with padding, as Secret data is encoded.
pub fn base64_encode(text: &str) -> String {
    BASE64_STANDARD.encode(text)
}

/// A watch of one object by name, on its own thread and runtime so that the arrival times it
/// records do not depend on what the test is doing. Watch streams are ordered by the API server;
/// when one ends, the next starts from the last resourceVersion seen, so no version is missed.
pub struct Watch {
    events: Arc<Mutex<Vec<Observed>>>,
    failure: Arc<Mutex<Option<String>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Watch {
    /// Watches the object `name` in the collection at `path` (e.g.
    /// `/api/v1/namespaces/NS/secrets`) from the collection's current resourceVersion on.
    pub async fn start(cluster: &Cluster, path: &str, name: &str) -> Watch {
        let listed: Value = serde_json::from_str(
            &cluster
                .admin
                .request_text(
                    hyper::Request::get(format!("{path}?fieldSelector=metadata.name%3D{name}"))
                        .body(Vec::new())
                        .unwrap(),
                )
                .await
                .expect("list before the watch"),
        )
        .unwrap();
        let mut from = listed["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_owned();
        let events = Arc::new(Mutex::new(Vec::new()));
        let failure = Arc::new(Mutex::new(None));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let kubeconfig = cluster.dir.join("kubeconfig");
        let path = path.to_owned();
        let name = name.to_owned();
        let sink = Arc::clone(&events);
        let failed = Arc::clone(&failure);
        apart(move || async move {
            let client = admin_client(&kubeconfig).await;
            loop {
                let uri = format!(
                        "{path}?watch=true&fieldSelector=metadata.name%3D{name}&resourceVersion={from}&timeoutSeconds=240"
                    );
                let request = hyper::Request::get(uri).body(Vec::new().into()).unwrap();
                let response = tokio::select! {
                    r = client.send(request) => r,
                    _ = &mut stopped => return,
                };
                let mut body = match response {
                    Ok(r) if r.status().is_success() => r.into_body(),
                    other => {
                        *failed.lock().unwrap() = Some(format!("watch {path}: {other:?}"));
                        return;
                    }
                };
                let mut pending = Vec::new();
                loop {
                    let frame = tokio::select! {
                        f = body.frame() => f,
                        _ = &mut stopped => return,
                    };
                    let Some(Ok(frame)) = frame else { break };
                    let Ok(bytes) = frame.into_data() else {
                        continue;
                    };
                    let (at, wall) = (Instant::now(), SystemTime::now());
                    pending.extend_from_slice(&bytes);
                    while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=end).collect();
                        let event: Value = serde_json::from_slice(&line).expect("a watch event");
                        let kind = event["type"].as_str().unwrap_or_default().to_owned();
                        if kind == "ERROR" {
                            *failed.lock().unwrap() = Some(format!("watch {path}: {event}"));
                            return;
                        }
                        let observed = Observed {
                            at,
                            wall,
                            kind,
                            object: event["object"].clone(),
                        };
                        from = observed.object["metadata"]["resourceVersion"]
                            .as_str()
                            .unwrap()
                            .to_owned();
                        sink.lock().unwrap().push(observed);
                    }
                }
            }
        });
        Watch {
            events,
            failure,
            _stop: stop,
        }
    }

    /// Every event so far, in the API server's order. Fails the test if the watch broke.
    pub fn events(&self) -> Vec<Observed> {
        if let Some(failure) = self.failure.lock().unwrap().as_ref() {
            panic!("{failure}");
        }
        self.events.lock().unwrap().clone()
    }

    /// Waits until an event after the first `after` satisfies `check`; returns it.
    pub fn wait(
        &self,
        timeout: Duration,
        after: usize,
        what: &str,
        check: impl Fn(&Observed) -> bool,
    ) -> Observed {
        eventually(what, timeout, || {
            self.events().into_iter().skip(after).find(|e| check(e))
        })
    }

    pub fn len(&self) -> usize {
        self.events().len()
    }
}

/// One holder's tenure of the Lease, as resourceVersions of the Lease: from the version that
/// made it holder to the first later version naming another holder or none (`None` while it
/// still holds it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Term {
    pub holder: String,
    pub from: u64,
    pub until: Option<u64>,
}

/// The Lease's history from its watch: each term (spec.leaseTransitions) and its holder's
/// tenure. Fails the test if a term had two holders or the transitions count went backwards.
pub fn lease_terms(lease: &[Observed]) -> BTreeMap<u64, Term> {
    lease_terms_with_edits(lease, &[])
}

/// As [`lease_terms`], for a history in which the test itself wrote the Lease versions `edits`
/// (by resourceVersion), as someone editing it by hand would. An edit is no writer's term: it
/// neither ends the open tenure nor begins one, and the Lease's holder learns of it only when it
/// next renews, so the holder's writes until the next term began still count as its tenure's.
/// An edit naming another holder or term leaves the open term orphaned: only a new term may
/// follow it. A deleted Lease leaves its holder's tenure open too (the holder learns of it when
/// it next renews), and the Lease created again must start above the deleted one's term. Fails
/// the test if a term had two holders, went on after it was edited away, came back after a
/// deletion, or if the transitions count went backwards.
pub fn lease_terms_with_edits(lease: &[Observed], edits: &[u64]) -> BTreeMap<u64, Term> {
    let mut terms: BTreeMap<u64, Term> = BTreeMap::new();
    let mut last = 0;
    let mut current: Option<u64> = None;
    // The open term was edited to name another holder or term.
    let mut orphaned = false;
    // The term of a Lease that was deleted, until the next version.
    let mut deleted: Option<u64> = None;
    for version in lease {
        let transitions = version.transitions();
        assert!(
            transitions >= last,
            "leaseTransitions went back from {last} to {transitions}"
        );
        last = transitions;
        let rv = version.resource_version();
        let holder = version.holder();
        if let Some(gone) = deleted.take() {
            assert!(
                transitions > gone,
                "the Lease was created again at term {transitions} after a Lease at term {gone} was deleted"
            );
        }
        if version.kind == "DELETED" {
            deleted = Some(transitions);
        }
        if edits.contains(&rv) {
            if let Some(open) = current {
                orphaned |=
                    holder.as_deref() != Some(terms[&open].holder.as_str()) || transitions != open;
            }
            continue;
        }
        if let Some(open) = current {
            assert!(
                !(orphaned && transitions == open),
                "Lease term {open} went on (resourceVersion {rv}, holder {holder:?}) after an edit named another holder or term"
            );
            if holder.as_deref() != Some(terms[&open].holder.as_str()) || transitions != open {
                terms.get_mut(&open).unwrap().until = Some(rv);
                current = None;
                orphaned = false;
            }
        }
        if let (Some(holder), None) = (holder, current) {
            assert!(
                !terms.contains_key(&transitions),
                "Lease term {transitions} had two tenures: {:?} and {holder} from {rv}",
                terms[&transitions]
            );
            terms.insert(
                transitions,
                Term {
                    holder,
                    from: rv,
                    until: None,
                },
            );
            current = Some(transitions);
        }
    }
    terms
}

/// Checks every version of one target Secret, in the watch's order: each holds a token the
/// stand-in issued, unexpired when it arrived and still unexpired when the next version
/// arrived (and, for the last one, at `end`); with leader election, each version names its
/// writer and term, terms never go back, each term's writer is that term's Lease holder, and
/// it wrote while it held the Lease. Returns the number of versions.
pub fn check_secret_versions(
    target: &str,
    versions: &[Observed],
    issued: &[String],
    terms: Option<&BTreeMap<u64, Term>>,
    end: SystemTime,
) -> usize {
    let mut last_term = 0;
    for (i, version) in versions.iter().enumerate() {
        assert_ne!(version.kind, "DELETED", "{target}: the Secret was deleted");
        let token = version
            .data("token")
            .unwrap_or_else(|| panic!("{target}: a version without a token"));
        assert!(
            issued.contains(&token),
            "{target}: version {i} holds a token the stand-in never issued"
        );
        let expires_at = version.expires_at().expect("expires_at");
        assert!(
            expires_at > version.wall,
            "{target}: version {i} arrived holding a token expired {:?} before",
            version.wall.duration_since(expires_at).unwrap_or_default()
        );
        let until = versions.get(i + 1).map_or(end, |next| next.wall);
        assert!(
            expires_at > until,
            "{target}: version {i}'s token expired {:?} before it was replaced",
            until.duration_since(expires_at).unwrap_or_default()
        );
        if let Some(terms) = terms {
            let (writer, term) = version.writer_term().unwrap_or_else(|| {
                panic!("{target}: version {i} lacks the writer and lease-term annotations")
            });
            assert!(
                term >= last_term,
                "{target}: term went back from {last_term} to {term}"
            );
            last_term = term;
            let tenure = terms.get(&term).unwrap_or_else(|| {
                panic!("{target}: version {i} written by {writer} in term {term}, which the Lease never had")
            });
            assert_eq!(
                tenure.holder, writer,
                "{target}: version {i} written by {writer} in term {term}, whose Lease holder was {}",
                tenure.holder
            );
            // One etcd orders every write: a resourceVersion is its global revision, so the
            // Secret version falls inside the Lease versions that bound its writer's tenure.
            let rv = version.resource_version();
            assert!(
                rv > tenure.from && tenure.until.is_none_or(|until| rv < until),
                "{target}: version {i} (resourceVersion {rv}) written by {writer} outside its tenure of term {term}: {tenure:?}"
            );
        }
    }
    versions.len()
}

/// One GET of a target Secret: when it was answered, the namespace, and the expiry and token
/// the Secret held.
type Sample = (SystemTime, String, SystemTime, Option<String>);

/// GETs every target Secret several times a second on its own thread; each sample must hold an
/// unexpired token the stand-in issued.
pub struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Sampler {
    pub fn start(cluster: &Cluster, namespaces: &[String], every: Duration) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let kubeconfig = cluster.dir.join("kubeconfig");
        let namespaces = namespaces.to_vec();
        let sink = Arc::clone(&samples);
        apart(move || async move {
            let client = admin_client(&kubeconfig).await;
            loop {
                for ns in &namespaces {
                    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
                        Api::namespaced(client.clone(), ns);
                    let got = tokio::select! {
                        g = secrets.get_opt(SECRET) => g,
                        _ = &mut stopped => return,
                    };
                    let wall = SystemTime::now();
                    if let Ok(Some(secret)) = got {
                        let data = secret.data.unwrap_or_default();
                        let text =
                            |k: &str| data.get(k).map(|v| String::from_utf8(v.0.clone()).unwrap());
                        let expires = text("expires_at")
                            .and_then(|t| humantime::parse_rfc3339(&t).ok())
                            .unwrap_or(SystemTime::UNIX_EPOCH);
                        sink.lock()
                            .unwrap()
                            .push((wall, ns.clone(), expires, text("token")));
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = &mut stopped => return,
                }
            }
        });
        Sampler {
            samples,
            _stop: stop,
        }
    }

    /// Asserts every sample held an unexpired token the stand-in issued; returns the count.
    pub fn check(&self, issued: &[String]) -> usize {
        let samples = self.samples.lock().unwrap().clone();
        for (wall, ns, expires, token) in &samples {
            assert!(
                expires > wall,
                "{ns}: a sample held a token expired at {expires:?}, read at {wall:?}"
            );
            assert!(
                token.as_ref().is_some_and(|t| issued.contains(t)),
                "{ns}: a sample held a token the stand-in never issued"
            );
        }
        samples.len()
    }
}

/// Runs the task `make` returns on a thread and runtime of its own, so it keeps going while the
/// test's thread blocks on a daemon.
fn apart<F, Fut>(make: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(make());
    });
}

/// A client with the control plane's admin kubeconfig.
async fn admin_client(kubeconfig: &Path) -> Client {
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(kubeconfig).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    Client::try_from(config).unwrap()
}
