//! The Kubernetes Secret output: server-side apply of the token keys under a named field
//! manager, leaving keys, labels and annotations that others own untouched.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams};
use kube::Api;
use secrecy::ExposeSecret;

use crate::config::SecretOutput;
use crate::fiskil::Token;

/// The field manager that owns the keys this program writes.
pub const FIELD_MANAGER: &str = "fiskil-token-refresher";
/// The Secret key holding the token's expiry as RFC 3339.
pub const EXPIRES_AT_KEY: &str = "expires_at";
/// Label marking the Secret as written by this program.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "fiskil-token-refresher");
/// Where a pod finds its own namespace.
pub const SERVICE_ACCOUNT_NAMESPACE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The Secret output cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SecretSetupError {
    #[error("no Kubernetes connection for --secret-name: {0}; run in a pod with a ServiceAccount or set KUBECONFIG")]
    NoCluster(String),
    #[error("cannot build the Kubernetes client: {0}")]
    Client(String),
}

/// A write to the Secret failed.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("forbidden to apply Secret {namespace}/{name} (verbs create and patch); bind this ServiceAccount to a Role with apiGroups [\"\"], resources [\"secrets\"], resourceNames [\"{name}\"], verbs [\"create\", \"patch\"] ({message})")]
    Forbidden {
        namespace: String,
        name: String,
        message: String,
    },
    #[error(
        "the API server refused the Secret {namespace}/{name} (HTTP {code} {reason}): {message}"
    )]
    Refused {
        namespace: String,
        name: String,
        code: u16,
        reason: String,
        message: String,
    },
    #[error("cannot reach the API server: {0}")]
    Unreachable(String),
}

/// Writes the token into one Secret.
#[derive(Clone)]
pub struct SecretSink {
    api: Api<Secret>,
    name: String,
    namespace: String,
    key: String,
}

impl std::fmt::Debug for SecretSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SecretSink({}/{} key {})",
            self.namespace, self.name, self.key
        )
    }
}

impl SecretSink {
    /// Connects the usual way (the in-cluster ServiceAccount in a pod, else KUBECONFIG or
    /// ~/.kube/config) and settles the namespace.
    pub async fn new(output: &SecretOutput) -> Result<Self, SecretSetupError> {
        let mut config = if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
            kube::Config::incluster().map_err(|e| SecretSetupError::NoCluster(e.to_string()))?
        } else {
            kube::Config::infer()
                .await
                .map_err(|e| SecretSetupError::NoCluster(e.to_string()))?
        };
        config.connect_timeout = Some(output.timeout);
        config.read_timeout = Some(output.timeout);
        config.write_timeout = Some(output.timeout);
        let namespace = infer_namespace(
            output.namespace.as_deref(),
            Path::new(SERVICE_ACCOUNT_NAMESPACE),
            &config.default_namespace,
        );
        let client =
            kube::Client::try_from(config).map_err(|e| SecretSetupError::Client(e.to_string()))?;
        tracing::info!(secret = %output.name, namespace = %namespace, key = %output.key, "writing the token to a Secret");
        Ok(SecretSink {
            api: Api::namespaced(client, &namespace),
            name: output.name.clone(),
            namespace,
            key: output.key.clone(),
        })
    }

    /// Applies the token and its expiry; creates the Secret if it does not exist.
    pub async fn write(&self, token: &Token) -> Result<(), SecretError> {
        let expires_at = humantime::format_rfc3339_millis(token.expires_at()).to_string();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([(
                    MANAGED_BY.0.to_owned(),
                    MANAGED_BY.1.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([
                (
                    self.key.clone(),
                    ByteString(token.value.expose_secret().as_bytes().to_vec()),
                ),
                (
                    EXPIRES_AT_KEY.to_owned(),
                    ByteString(expires_at.into_bytes()),
                ),
            ])),
            ..Secret::default()
        };
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.api
            .patch(&self.name, &params, &Patch::Apply(&secret))
            .await
            .map(drop)
            .map_err(|e| self.classify(e))
    }

    fn classify(&self, error: kube::Error) -> SecretError {
        match error {
            kube::Error::Api(status) if status.code == 403 => SecretError::Forbidden {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                message: status.message,
            },
            kube::Error::Api(status) => SecretError::Refused {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                code: status.code,
                reason: status.reason,
                message: status.message,
            },
            other => SecretError::Unreachable(other.to_string()),
        }
    }
}

/// The namespace to write in: the flag, else the pod's own namespace from its
/// ServiceAccount files, else the kubeconfig context's namespace.
pub fn infer_namespace(flag: Option<&str>, service_account_file: &Path, context: &str) -> String {
    if let Some(namespace) = flag {
        return namespace.to_owned();
    }
    std::fs::read_to_string(service_account_file)
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| context.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_comes_from_the_flag_then_the_pod_then_the_context() {
        let dir = std::env::temp_dir().join(format!("fiskil-ns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("namespace");
        assert_eq!(infer_namespace(None, &file, "from-context"), "from-context");
        std::fs::write(&file, "pod-namespace\n").unwrap();
        assert_eq!(
            infer_namespace(None, &file, "from-context"),
            "pod-namespace"
        );
        assert_eq!(infer_namespace(Some("flag"), &file, "from-context"), "flag");
        std::fs::write(&file, "  \n").unwrap();
        assert_eq!(infer_namespace(None, &file, "from-context"), "from-context");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn kubeconfig_context_namespace_is_the_fallback() {
        let dir = std::env::temp_dir().join(format!("fiskil-kubeconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = kube::config::Kubeconfig::from_yaml(
            r#"
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: not-a-real-token}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: team-a}}]
current-context: x
"#,
        )
        .unwrap();
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(
            infer_namespace(None, &dir.join("absent"), &config.default_namespace),
            "team-a"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
