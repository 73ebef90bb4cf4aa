//! The reconcile loop: watches FiskilTokens, the credentials and the namespaces, and after each
//! change brings the running exchanges and writers in line with what the objects ask for.
//!
//! Level-triggered: every pass compares every FiskilToken with what runs, so a missed or merged
//! event cannot leave anything behind. A pass costs microseconds per FiskilToken.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::core::{PartialObjectMeta, Selector, SelectorExt};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource, ResourceExt};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::exchange::{CredentialKey, CredentialSource, Exchange, Shared};
use super::resources::{
    ClusterFiskilCredential, CredentialKind, FiskilCredential, FiskilToken, GROUP,
};
use super::target::{Readiness, Reporter, Times, TokenRef, Writer};
use super::Tally;
use crate::happenings::ObjectName;
use crate::schedule::Timing;
use crate::sink::secret::SecretSink;

/// Ready reason: the credential the FiskilToken names does not exist.
const CREDENTIAL_NOT_FOUND: &str = "CredentialNotFound";
/// Ready reason: the ClusterFiskilCredential does not allow the FiskilToken's namespace.
const NAMESPACE_NOT_ALLOWED: &str = "NamespaceNotAllowed";
/// Quiet time after a change before a pass, so a burst of changes makes one pass.
const SETTLE: Duration = Duration::from_millis(100);
/// A pass runs at least this often, to retry status updates that failed.
const RESYNC: Duration = Duration::from_secs(60);

/// The cached objects the passes read.
#[derive(Clone)]
struct Stores {
    tokens: Store<FiskilToken>,
    credentials: Store<FiskilCredential>,
    cluster_credentials: Store<ClusterFiskilCredential>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
}

/// A FiskilToken by namespace and name.
type TokenId = (String, String);

/// A FiskilToken's writer while it runs.
struct Running {
    uid: String,
    generation: Option<i64>,
    credential: CredentialKey,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What a FiskilToken asks for, resolved against the credentials it may use.
struct Plan {
    key: CredentialKey,
    source: CredentialSource,
}

/// The controller's reconcile loop.
pub(crate) struct Reconciler {
    pub shared: Arc<Shared>,
    pub timing: Timing,
    pub recorder: Recorder,
    pub tally: Arc<Tally>,
    /// Time allowed for one API call.
    pub timeout: Duration,
    /// Shared by the writers: see [`Writer::slots`].
    pub slots: Arc<Semaphore>,
}

impl Reconciler {
    /// Runs until `stop`: watches, and passes after each change. `synced` is called once every
    /// resource has been listed.
    pub(crate) async fn run(self, stop: CancellationToken, synced: impl FnOnce()) {
        let changed = Arc::new(Notify::new());
        let client = self.shared.client.clone();
        let stores = Stores {
            tokens: self.reflect(Api::all(client.clone()), &changed, &stop),
            credentials: self.reflect(Api::all(client.clone()), &changed, &stop),
            cluster_credentials: self.reflect(Api::all(client.clone()), &changed, &stop),
            namespaces: {
                let (store, writer) = reflector::store();
                let api = Api::<PartialObjectMeta<Namespace>>::all(client);
                let stream = watcher(api, watcher::Config::default())
                    .default_backoff()
                    .modify(|ns| ns.managed_fields_mut().clear())
                    .reflect(writer);
                self.follow(stream, &changed, &stop);
                store
            },
        };
        let ready = async {
            let _ = stores.tokens.wait_until_ready().await;
            let _ = stores.credentials.wait_until_ready().await;
            let _ = stores.cluster_credentials.wait_until_ready().await;
            let _ = stores.namespaces.wait_until_ready().await;
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = ready => {}
        }
        synced();
        tracing::info!("listed the FiskilTokens, credentials and namespaces; reconciling");
        let mut state = State::default();
        let mut role = self.shared.leadership.subscribe();
        loop {
            self.pass(&stores, &mut state, &stop).await;
            tokio::select! {
                () = stop.cancelled() => return,
                () = changed.notified() => {}
                _ = role.changed() => {}
                () = tokio::time::sleep(RESYNC) => {}
            }
            tokio::time::sleep(SETTLE).await;
        }
    }

    /// A store of every `K` in the cluster, kept current on the tracker; `changed` is notified
    /// after each event.
    fn reflect<K>(&self, api: Api<K>, changed: &Arc<Notify>, stop: &CancellationToken) -> Store<K>
    where
        K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
        K: serde::de::DeserializeOwned,
    {
        let (store, writer) = reflector::store();
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(|object: &mut K| object.managed_fields_mut().clear())
            .reflect(writer);
        self.follow(stream, changed, stop);
        store
    }

    fn follow<S, T>(&self, stream: S, changed: &Arc<Notify>, stop: &CancellationToken)
    where
        S: Stream<Item = Result<T, watcher::Error>> + Send + 'static,
        T: Send,
    {
        let changed = Arc::clone(changed);
        let stop = stop.clone();
        self.shared.tasks.spawn(async move {
            let mut stream = std::pin::pin!(stream);
            loop {
                let event = tokio::select! {
                    () = stop.cancelled() => return,
                    event = stream.next() => event,
                };
                let Some(event) = event else { return };
                match event {
                    Ok(_) => changed.notify_one(),
                    Err(e) => tracing::warn!(error = %e, "watching the cluster failed; retrying"),
                }
            }
        });
    }

    /// One pass: stop what no FiskilToken needs, start what is missing, report what cannot be.
    async fn pass(&self, stores: &Stores, state: &mut State, stop: &CancellationToken) {
        let tokens = stores.tokens.state();
        let mut wanted: HashMap<TokenId, (Arc<FiskilToken>, Result<Plan, Readiness>)> =
            HashMap::new();
        for token in tokens {
            let (Some(namespace), Some(_)) = (token.namespace(), token.uid()) else {
                continue;
            };
            if token.meta().deletion_timestamp.is_some() {
                continue;
            }
            let plan = plan(stores, &token, &namespace);
            wanted.insert((namespace, token.name_any()), (token, plan));
        }
        state.writers.retain(|id, running| {
            let keep = wanted.get(id).is_some_and(|(token, plan)| {
                token.uid().as_deref() == Some(running.uid.as_str())
                    && token.meta().generation == running.generation
                    && plan
                        .as_ref()
                        .is_ok_and(|plan| plan.key == running.credential)
            });
            if !keep {
                self.tally.remove(&id.0, &id.1);
            }
            keep
        });
        // Exchanges whose credential changed (another Secret or tokenURL) start again.
        state.exchanges.retain(|key, exchange| {
            wanted.values().any(|(_, plan)| {
                plan.as_ref()
                    .is_ok_and(|plan| plan.key == *key && plan.source == exchange.source)
            })
        });
        state
            .writers
            .retain(|_, running| state.exchanges.contains_key(&running.credential));
        let mut users: BTreeMap<CredentialKey, Vec<&FiskilToken>> = BTreeMap::new();
        for ((namespace, name), (token, plan)) in &wanted {
            let plan = match plan {
                Ok(plan) => plan,
                Err(readiness) => {
                    self.report_refusal(token, namespace, readiness).await;
                    continue;
                }
            };
            users.entry(plan.key.clone()).or_default().push(token);
            let id = (namespace.clone(), name.clone());
            if state.writers.contains_key(&id) {
                continue;
            }
            let exchange = state.exchanges.entry(plan.key.clone()).or_insert_with(|| {
                tracing::info!(credential = %plan.key, "requesting tokens for a credential");
                Exchange::start(
                    &plan.key,
                    plan.source.clone(),
                    self.timing,
                    &self.shared,
                    stop.child_token(),
                )
            });
            let running = self.start_writer(token, namespace, exchange, stop);
            state.writers.insert(id, running);
        }
        for (key, exchange) in &state.exchanges {
            let tokens = users.get(key).map(Vec::as_slice).unwrap_or_default();
            exchange.set_timing(shared_timing(self.timing, tokens));
            self.shared
                .metrics
                .set_users(&key.to_string(), tokens.len());
        }
        for key in state.forgotten(&users) {
            self.shared.metrics.forget(&key.to_string());
        }
        // A pass follows a burst of decoding (a list, many changes): hand back what it freed.
        crate::memory::release_soon();
    }

    fn start_writer(
        &self,
        token: &FiskilToken,
        namespace: &str,
        exchange: &Exchange,
        stop: &CancellationToken,
    ) -> Running {
        let reference = TokenRef {
            namespace: namespace.to_owned(),
            name: token.name_any(),
            uid: token.uid().unwrap_or_default(),
            generation: token.meta().generation,
        };
        let owner = OwnerReference {
            api_version: format!("{GROUP}/v1alpha1"),
            kind: "FiskilToken".into(),
            name: reference.name.clone(),
            uid: reference.uid.clone(),
            controller: Some(true),
            block_owner_deletion: None,
        };
        let sink = SecretSink::owned(
            self.shared.client.clone(),
            ObjectName {
                namespace: namespace.to_owned(),
                name: token.spec.secret_name.clone(),
            },
            owner,
            self.timeout,
        );
        let running = Running {
            uid: reference.uid.clone(),
            generation: reference.generation,
            credential: exchange_key(token, namespace),
            stop: stop.child_token(),
        };
        let writer = Writer {
            sink,
            supply: exchange.supply.clone(),
            reporter: self.reporter(reference, token),
            leadership: Arc::clone(&self.shared.leadership),
            metrics: Arc::clone(&self.shared.metrics),
            timing: self.timing,
            timeout: self.timeout,
            slots: Arc::clone(&self.slots),
        };
        let span = tracing::info_span!("fiskiltoken", namespace, name = %token.name_any());
        self.shared
            .tasks
            .spawn(writer.run(running.stop.clone()).instrument(span));
        running
    }

    fn reporter(&self, reference: TokenRef, token: &FiskilToken) -> Reporter {
        Reporter {
            api: Api::namespaced(self.shared.client.clone(), &reference.namespace),
            token: reference,
            recorder: self.recorder.clone(),
            tally: Arc::clone(&self.tally),
            last: token.status.clone(),
        }
    }

    /// Reports a FiskilToken that cannot be served; only the leader writes.
    async fn report_refusal(&self, token: &FiskilToken, namespace: &str, readiness: &Readiness) {
        let reference = TokenRef {
            namespace: namespace.to_owned(),
            name: token.name_any(),
            uid: token.uid().unwrap_or_default(),
            generation: token.meta().generation,
        };
        if self.shared.leadership.permit().is_none() {
            self.tally.set(&reference, readiness.reason);
            return;
        }
        let mut reporter = self.reporter(reference, token);
        reporter
            .publish(readiness, Times::default(), self.timeout)
            .await;
    }
}

/// What runs.
#[derive(Default)]
struct State {
    exchanges: HashMap<CredentialKey, Exchange>,
    writers: HashMap<TokenId, Running>,
    /// The credentials of the metrics, to drop the series of those no longer used.
    labelled: Vec<CredentialKey>,
}

impl State {
    /// Stops exchanges nobody uses; returns the credentials whose metrics should go.
    fn forgotten(
        &mut self,
        users: &BTreeMap<CredentialKey, Vec<&FiskilToken>>,
    ) -> Vec<CredentialKey> {
        self.exchanges.retain(|key, _| users.contains_key(key));
        let (kept, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.labelled)
            .into_iter()
            .partition(|key| self.exchanges.contains_key(key));
        self.labelled = kept;
        for key in self.exchanges.keys() {
            if !self.labelled.contains(key) {
                self.labelled.push(key.clone());
            }
        }
        gone
    }
}

/// The credential a FiskilToken names, whether or not it exists.
fn exchange_key(token: &FiskilToken, namespace: &str) -> CredentialKey {
    let reference = &token.spec.credential_ref;
    CredentialKey {
        kind: reference.kind,
        namespace: match reference.kind {
            CredentialKind::FiskilCredential => Some(namespace.to_owned()),
            CredentialKind::ClusterFiskilCredential => None,
        },
        name: reference.name.clone(),
    }
}

/// Resolves a FiskilToken's credential: a FiskilCredential of its own namespace, or a
/// ClusterFiskilCredential that allows the namespace. Nothing else is ever looked up.
fn plan(stores: &Stores, token: &FiskilToken, namespace: &str) -> Result<Plan, Readiness> {
    let key = exchange_key(token, namespace);
    let name = &key.name;
    let source = match key.kind {
        CredentialKind::FiskilCredential => {
            let found = stores
                .credentials
                .get(&ObjectRef::new(name).within(namespace))
                .ok_or_else(|| {
                    Readiness::not_ready(
                        CREDENTIAL_NOT_FOUND,
                        format!("no FiskilCredential {name} in the namespace {namespace}"),
                    )
                })?;
            let secret = &found.spec.secret_ref;
            CredentialSource {
                secret: ObjectName {
                    namespace: namespace.to_owned(),
                    name: secret.name.clone(),
                },
                client_id_key: secret.client_id_key.clone(),
                client_secret_key: secret.client_secret_key.clone(),
                token_url: found.spec.token_url.clone(),
            }
        }
        CredentialKind::ClusterFiskilCredential => {
            let found = stores
                .cluster_credentials
                .get(&ObjectRef::new(name))
                .ok_or_else(|| {
                    Readiness::not_ready(
                        CREDENTIAL_NOT_FOUND,
                        format!("no ClusterFiskilCredential {name}"),
                    )
                })?;
            if !allows(&found, namespace, &stores.namespaces) {
                return Err(Readiness::not_ready(
                    NAMESPACE_NOT_ALLOWED,
                    format!("the ClusterFiskilCredential {name} does not allow the namespace {namespace} (spec.allowedNamespaces)"),
                ));
            }
            let secret = &found.spec.secret_ref;
            CredentialSource {
                secret: ObjectName {
                    namespace: secret.namespace.clone(),
                    name: secret.name.clone(),
                },
                client_id_key: secret.client_id_key.clone(),
                client_secret_key: secret.client_secret_key.clone(),
                token_url: found.spec.token_url.clone(),
            }
        }
    };
    Ok(Plan { key, source })
}

/// Whether a ClusterFiskilCredential allows `namespace`: named, or its labels match the
/// selector. A namespace not (yet) seen, or a selector that does not parse, allows nothing.
fn allows(
    credential: &ClusterFiskilCredential,
    namespace: &str,
    namespaces: &Store<PartialObjectMeta<Namespace>>,
) -> bool {
    let allowed = &credential.spec.allowed_namespaces;
    if allowed.names.iter().flatten().any(|name| name == namespace) {
        return true;
    }
    let Some(selector) = &allowed.selector else {
        return false;
    };
    let Ok(selector) = Selector::try_from(selector.clone()) else {
        return false;
    };
    namespaces
        .get(&ObjectRef::new(namespace))
        .is_some_and(|found| selector.matches(found.labels()))
}

/// The timing of a credential shared by `tokens`: the smallest refreshRatio among them (with
/// its jitter), else the controller's.
fn shared_timing(default: Timing, tokens: &[&FiskilToken]) -> Timing {
    let mut timing = default;
    for token in tokens {
        let ratio = token.spec.refresh_ratio.unwrap_or(default.ratio);
        let jitter = token.spec.refresh_jitter.unwrap_or(default.jitter);
        let valid = ratio > 0.0 && ratio < 1.0 && jitter >= 0.0 && jitter < ratio;
        if valid && ratio - jitter < timing.ratio - timing.jitter {
            timing.ratio = ratio;
            timing.jitter = jitter;
        }
    }
    timing
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::resources::{
        AllowedNamespaces, ClusterFiskilCredentialSpec, ClusterSecretRef, CredentialRef,
        FiskilTokenSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn credential(allowed: AllowedNamespaces) -> ClusterFiskilCredential {
        ClusterFiskilCredential::new(
            "shared",
            ClusterFiskilCredentialSpec {
                secret_ref: ClusterSecretRef {
                    namespace: "ops".into(),
                    name: "cred".into(),
                    client_id_key: "client_id".into(),
                    client_secret_key: "client_secret".into(),
                },
                token_url: None,
                allowed_namespaces: allowed,
            },
        )
    }

    fn namespaces(labelled: &[(&str, &str, &str)]) -> Store<PartialObjectMeta<Namespace>> {
        let (store, mut writer) = reflector::store();
        for (name, key, value) in labelled {
            let mut meta: PartialObjectMeta<Namespace> = PartialObjectMeta::default();
            meta.metadata.name = Some((*name).to_owned());
            meta.metadata.labels = Some([((*key).to_owned(), (*value).to_owned())].into());
            writer.apply_watcher_event(&watcher::Event::Apply(meta));
        }
        store
    }

    #[test]
    fn a_cluster_credential_allows_the_namespaces_it_names_or_selects_and_no_others() {
        let seen = namespaces(&[("team-a", "tokens", "yes"), ("team-b", "tokens", "no")]);
        let named = credential(AllowedNamespaces {
            names: Some(vec!["team-b".into()]),
            selector: None,
        });
        assert!(allows(&named, "team-b", &seen));
        assert!(!allows(&named, "team-a", &seen));
        let selected = credential(AllowedNamespaces {
            names: None,
            selector: Some(LabelSelector {
                match_labels: Some([("tokens".to_owned(), "yes".to_owned())].into()),
                ..LabelSelector::default()
            }),
        });
        assert!(allows(&selected, "team-a", &seen));
        assert!(!allows(&selected, "team-b", &seen));
        assert!(
            !allows(&selected, "unseen", &seen),
            "a namespace not listed yet"
        );
        let everyone = credential(AllowedNamespaces {
            names: None,
            selector: Some(LabelSelector::default()),
        });
        assert!(allows(&everyone, "team-b", &seen));
        assert!(!allows(
            &credential(AllowedNamespaces::default()),
            "team-a",
            &seen
        ));
    }

    #[test]
    fn a_shared_credential_refreshes_at_the_earliest_point_any_token_asks_for() {
        let default = Timing {
            ratio: 0.8,
            jitter: 0.05,
            min_interval: Duration::from_secs(1),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            backoff_max_expired: Duration::from_secs(8),
        };
        let token = |ratio: Option<f64>, jitter: Option<f64>| {
            FiskilToken::new(
                "t",
                FiskilTokenSpec {
                    credential_ref: CredentialRef {
                        kind: CredentialKind::FiskilCredential,
                        name: "c".into(),
                    },
                    secret_name: "s".into(),
                    refresh_ratio: ratio,
                    refresh_jitter: jitter,
                },
            )
        };
        assert_eq!(shared_timing(default, &[]), default);
        let (plain, early, odd) = (
            token(None, None),
            token(Some(0.5), Some(0.1)),
            token(Some(0.3), Some(0.4)),
        );
        let timing = shared_timing(default, &[&plain, &early]);
        assert_eq!((timing.ratio, timing.jitter), (0.5, 0.1));
        let unchanged = shared_timing(default, &[&plain, &odd]);
        assert_eq!(unchanged, default, "a jitter above the ratio is ignored");
    }
}
