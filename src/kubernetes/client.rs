//! The one Kubernetes client the Secret outputs, the Lease and Events share, and the pod's own
//! name and namespace from the downward API.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::kubernetes::transport::{self, TransportError};
use crate::trust::TrustSources;

/// Where a pod finds its own namespace.
pub(crate) const SERVICE_ACCOUNT_NAMESPACE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// How long a watching client waits for a read: above the API server's end of a quiet watch.
const WATCH_READ: Duration = Duration::from_secs(300);

/// No usable Kubernetes connection.
#[derive(Debug, thiserror::Error)]
pub enum KubeSetupError {
    #[error("no Kubernetes connection for {needed}: {source}; set KUBECONFIG, or run in a pod with a ServiceAccount")]
    NoCluster {
        needed: &'static str,
        source: kube::config::InferConfigError,
    },
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// A connected client and the namespace things default to.
#[derive(Clone)]
pub(crate) struct Kube {
    pub client: kube::Client,
    /// `POD_NAMESPACE`, else the pod's ServiceAccount namespace, else the kubeconfig context's.
    pub default_namespace: String,
}

impl Kube {
    /// Connects the usual way (KUBECONFIG or ~/.kube/config when present, else the pod's
    /// ServiceAccount). The client does not retry on its own: callers retry with their own
    /// backoff, and `timeout` bounds each connection, read and write. `needed` names the
    /// option that needs the connection, for the error; `pod_namespace_env` is `POD_NAMESPACE`.
    /// An API server whose CA the configuration does not give is checked against `trust`'s
    /// built-in roots and system bundles (not `--ca-file`, which is the token endpoint's).
    pub(crate) async fn connect(
        timeout: Duration,
        needed: &'static str,
        pod_namespace_env: Option<&str>,
        trust: &TrustSources,
    ) -> Result<Kube, KubeSetupError> {
        Self::connect_reading(timeout, timeout, needed, pod_namespace_env, trust).await
    }

    /// As [`Kube::connect`], for a client that also watches: a watch may stay quiet until the
    /// API server ends it (290 s, kube-runtime's default), so reads may take [`WATCH_READ`];
    /// every other call is bounded by its caller.
    pub(crate) async fn connect_watching(
        timeout: Duration,
        needed: &'static str,
        pod_namespace_env: Option<&str>,
        trust: &TrustSources,
    ) -> Result<Kube, KubeSetupError> {
        Self::connect_reading(timeout, WATCH_READ, needed, pod_namespace_env, trust).await
    }

    async fn connect_reading(
        timeout: Duration,
        read_timeout: Duration,
        needed: &'static str,
        pod_namespace_env: Option<&str>,
        trust: &TrustSources,
    ) -> Result<Kube, KubeSetupError> {
        let mut config = kube::Config::infer()
            .await
            .map_err(|source| KubeSetupError::NoCluster { needed, source })?;
        config.default_retry = false;
        config.connect_timeout = Some(timeout);
        config.read_timeout = Some(read_timeout);
        config.write_timeout = Some(timeout);
        let default_namespace =
            pod_namespace(pod_namespace_env, Path::new(SERVICE_ACCOUNT_NAMESPACE))
                .unwrap_or_else(|| config.default_namespace.clone());
        let system = TrustSources {
            ca_file: None,
            ..trust.clone()
        };
        let client = transport::client(&config, || Ok(Arc::new(system.root_store()?)))?;
        Ok(Kube {
            client,
            default_namespace,
        })
    }
}

/// The pod's namespace: `POD_NAMESPACE` from the downward API, else the ServiceAccount's
/// namespace file.
pub(crate) fn pod_namespace(env: Option<&str>, service_account_file: &Path) -> Option<String> {
    env.map(str::to_owned)
        .or_else(|| std::fs::read_to_string(service_account_file).ok())
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
}

/// What the downward API tells this process about its pod (`POD_NAME`, `POD_NAMESPACE`,
/// `POD_UID`), read once from the environment `Config` is given; empty values count as unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Downward {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub uid: Option<String>,
}

impl Downward {
    /// Reads the three variables through `env`.
    pub(crate) fn from_env(env: impl Fn(&str) -> Option<String>) -> Downward {
        let set = |name| env(name).filter(|value: &String| !value.is_empty());
        Downward {
            name: set("POD_NAME"),
            namespace: set("POD_NAMESPACE"),
            uid: set("POD_UID"),
        }
    }

    /// The pod, or `None` without `POD_NAME`; its namespace defaults to `default_namespace`.
    pub(crate) fn pod(&self, default_namespace: &str) -> Option<Pod> {
        Some(Pod {
            name: self.name.clone()?,
            namespace: self
                .namespace
                .clone()
                .unwrap_or_else(|| default_namespace.to_owned()),
            uid: self.uid.clone(),
        })
    }

    /// This process's name among replicas: `POD_NAME`, else the hostname.
    pub(crate) fn identity(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned()
        })
    }
}

/// The pod this process runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pod {
    pub name: String,
    pub namespace: String,
    pub uid: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_comes_from_the_environment_then_the_service_account() {
        let dir = std::env::temp_dir().join(format!("fiskil-ns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("namespace");
        assert_eq!(pod_namespace(None, &file), None);
        std::fs::write(&file, "pod-namespace\n").unwrap();
        assert_eq!(pod_namespace(None, &file).as_deref(), Some("pod-namespace"));
        assert_eq!(pod_namespace(Some("env"), &file).as_deref(), Some("env"));
        std::fs::write(&file, "  \n").unwrap();
        assert_eq!(pod_namespace(None, &file), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn identity_is_the_pod_name_else_the_hostname() {
        let named = Downward::from_env(|_| Some("writer-0".into()));
        assert_eq!(named.identity(), "writer-0");
        let host = Downward::from_env(|_| None).identity();
        assert!(!host.is_empty());
        assert_eq!(Downward::from_env(|_| Some(String::new())).identity(), host);
    }

    #[test]
    fn the_pod_needs_a_name() {
        assert_eq!(Downward::from_env(|_| None).pod("ns"), None);
        let env = |name: &str| (name == "POD_NAME").then(|| "p".to_owned());
        assert_eq!(
            Downward::from_env(env).pod("ns"),
            Some(Pod {
                name: "p".into(),
                namespace: "ns".into(),
                uid: None
            })
        );
    }
}
