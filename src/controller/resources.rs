//! The custom resources of cluster mode (group `fiskil-token-refresher.io`, version `v1alpha1`):
//! where credentials live, who may use them, and which Secrets receive tokens.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of the custom resources.
pub(crate) const GROUP: &str = "fiskil-token-refresher.io";
/// The Secret key read for the client ID unless a credential names another.
const CLIENT_ID_KEY: &str = "client_id";
/// The Secret key read for the client secret unless a credential names another.
const CLIENT_SECRET_KEY: &str = "client_secret";

fn client_id_key() -> String {
    CLIENT_ID_KEY.to_owned()
}

fn client_secret_key() -> String {
    CLIENT_SECRET_KEY.to_owned()
}

/// Fiskil client credentials kept in a Secret of this namespace, for FiskilTokens of this
/// namespace only. However many FiskilTokens use it, one token request is sent per token
/// lifetime.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "fiskil-token-refresher.io",
    version = "v1alpha1",
    kind = "FiskilCredential",
    namespaced,
    doc = "Fiskil client credentials kept in a Secret of this namespace, for the FiskilTokens of this namespace only.",
    category = "fiskil",
    shortname = "fiskilcred",
    printcolumn = r#"{"name":"Secret","type":"string","jsonPath":".spec.secretRef.name","description":"The Secret holding the client credentials"}"#,
    printcolumn = r#"{"name":"Token URL","type":"string","jsonPath":".spec.tokenURL","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FiskilCredentialSpec {
    /// The Secret in this namespace holding the client ID and client secret from the Fiskil
    /// console. Changes to it are picked up at once: the next token is requested with them.
    pub(crate) secret_ref: LocalSecretRef,
    /// The token endpoint for these credentials, an https:// URL. Default: the controller's
    /// --token-url (https://api.fiskil.com/v1/token).
    #[serde(default, rename = "tokenURL", skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() == 'https'").message("tokenURL must be an https:// URL"))]
    #[schemars(length(max = 2048))]
    pub(crate) token_url: Option<String>,
}

/// Fiskil client credentials kept in a Secret of any namespace, for the FiskilTokens of the
/// namespaces that allowedNamespaces names or selects, and of no others.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "fiskil-token-refresher.io",
    version = "v1alpha1",
    kind = "ClusterFiskilCredential",
    doc = "Fiskil client credentials kept in a Secret of any namespace, for the FiskilTokens of the namespaces that spec.allowedNamespaces allows.",
    category = "fiskil",
    shortname = "cfiskilcred",
    printcolumn = r#"{"name":"Namespace","type":"string","jsonPath":".spec.secretRef.namespace","description":"The namespace of the Secret holding the client credentials"}"#,
    printcolumn = r#"{"name":"Secret","type":"string","jsonPath":".spec.secretRef.name","description":"The Secret holding the client credentials"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClusterFiskilCredentialSpec {
    /// The Secret holding the client ID and client secret from the Fiskil console.
    pub(crate) secret_ref: ClusterSecretRef,
    /// The token endpoint for these credentials, an https:// URL. Default: the controller's
    /// --token-url (https://api.fiskil.com/v1/token).
    #[serde(default, rename = "tokenURL", skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() == 'https'").message("tokenURL must be an https:// URL"))]
    #[schemars(length(max = 2048))]
    pub(crate) token_url: Option<String>,
    /// The namespaces whose FiskilTokens may use these credentials: those listed in names and
    /// those whose labels match selector. A FiskilToken in any other namespace is refused
    /// (Ready=False, reason NamespaceNotAllowed) and causes no token request.
    pub(crate) allowed_namespaces: AllowedNamespaces,
}

/// A Secret of the credential's own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LocalSecretRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub(crate) name: String,
    /// The key holding the client ID.
    #[serde(default = "client_id_key")]
    #[schemars(length(min = 1, max = 253))]
    pub(crate) client_id_key: String,
    /// The key holding the client secret.
    #[serde(default = "client_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    pub(crate) client_secret_key: String,
}

/// A Secret by namespace and name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClusterSecretRef {
    /// The Secret's namespace.
    #[schemars(length(min = 1, max = 63))]
    pub(crate) namespace: String,
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub(crate) name: String,
    /// The key holding the client ID.
    #[serde(default = "client_id_key")]
    #[schemars(length(min = 1, max = 253))]
    pub(crate) client_id_key: String,
    /// The key holding the client secret.
    #[serde(default = "client_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    pub(crate) client_secret_key: String,
}

/// Which namespaces may use a ClusterFiskilCredential: a namespace is allowed when names lists
/// it or selector matches its labels. At least one of the two must be given; an empty selector
/// ({}) allows every namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("has(self.names) || has(self.selector)").message("give names, selector or both"))]
#[serde(rename_all = "camelCase")]
pub(crate) struct AllowedNamespaces {
    /// Namespaces allowed by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000))]
    pub(crate) names: Option<Vec<String>>,
    /// Namespaces allowed by their labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) selector: Option<LabelSelector>,
}

/// A bearer token for the Fiskil API kept in a Secret of this namespace (keys token and
/// expires_at), refreshed before it expires. The Secret is created and owned by this
/// FiskilToken: deleting the FiskilToken deletes the Secret.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "fiskil-token-refresher.io",
    version = "v1alpha1",
    kind = "FiskilToken",
    namespaced,
    doc = "A bearer token for the Fiskil API kept in a Secret of this namespace and refreshed before it expires.",
    status = "FiskilTokenStatus",
    category = "fiskil",
    shortname = "fiskiltoken",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".status.expiresAt","description":"When the token in the Secret expires (UTC)"}"#,
    printcolumn = r#"{"name":"Secret","type":"string","jsonPath":".spec.secretName","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("!has(self.refreshJitter) || self.refreshJitter < (has(self.refreshRatio) ? self.refreshRatio : 0.8)").message("refreshJitter must be less than refreshRatio (default 0.8)"))]
#[serde(rename_all = "camelCase")]
pub(crate) struct FiskilTokenSpec {
    /// The credentials the token is requested with.
    pub(crate) credential_ref: CredentialRef,
    /// The Secret of this namespace that receives the token (keys token and expires_at). It is
    /// created if missing; an existing Secret that this FiskilToken does not own is left alone
    /// (Ready=False, reason SecretNotOwned). Cannot be changed.
    #[x_kube(validation = Rule::new("self == oldSelf").message("secretName cannot be changed; create another FiskilToken"))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("secretName must be a lowercase DNS subdomain"))]
    #[schemars(length(min = 1, max = 253))]
    pub(crate) secret_name: String,
    /// Refresh when this fraction of the token's lifetime has passed, as --refresh-ratio
    /// (default 0.8). Credentials shared by several FiskilTokens are refreshed at the smallest
    /// ratio among them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0 && self < 1.0").message("refreshRatio must be between 0 and 1 (exclusive)"))]
    pub(crate) refresh_ratio: Option<f64>,
    /// Refresh at a random point in [ratio - jitter, ratio] of the lifetime, as
    /// --refresh-jitter (default 0.05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0.0 && self < 1.0").message("refreshJitter must be at least 0 and less than 1"))]
    pub(crate) refresh_jitter: Option<f64>,
}

/// Which credentials a FiskilToken uses.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CredentialRef {
    /// FiskilCredential (in this namespace) or ClusterFiskilCredential.
    pub(crate) kind: CredentialKind,
    /// The credential's name.
    #[schemars(length(min = 1, max = 253))]
    pub(crate) name: String,
}

/// The kinds of credential a FiskilToken may name.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub(crate) enum CredentialKind {
    /// A FiskilCredential in the FiskilToken's own namespace.
    FiskilCredential,
    /// A ClusterFiskilCredential that allows the FiskilToken's namespace.
    ClusterFiskilCredential,
}

/// What the controller last did for a FiskilToken.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FiskilTokenStatus {
    /// Ready is True while the Secret holds a token that has not expired; its reason says why
    /// not otherwise: CredentialNotFound, CredentialInvalid, NamespaceNotAllowed,
    /// CredentialsRejected, EndpointUnavailable, SecretNotOwned or SecretWriteFailed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub(crate) conditions: Vec<Condition>,
    /// When the token in the Secret expires (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) expires_at: Option<String>,
    /// When the token in the Secret was requested (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_refresh_time: Option<String>,
    /// When the next token request for these credentials is due (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) next_refresh_time: Option<String>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) observed_generation: Option<i64>,
}

/// The CustomResourceDefinitions of the three kinds, as JSON, for `cargo xtask crds`.
pub fn definitions() -> Vec<serde_json::Value> {
    use kube::CustomResourceExt;
    [
        serde_json::to_value(FiskilCredential::crd()),
        serde_json::to_value(ClusterFiskilCredential::crd()),
        serde_json::to_value(FiskilToken::crd()),
    ]
    .into_iter()
    .map(|definition| definition.expect("a CustomResourceDefinition serializes"))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_name_the_kinds_their_scope_and_the_token_columns() {
        let all = definitions();
        let names: Vec<_> = all
            .iter()
            .map(|d| d["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "fiskilcredentials.fiskil-token-refresher.io",
                "clusterfiskilcredentials.fiskil-token-refresher.io",
                "fiskiltokens.fiskil-token-refresher.io"
            ]
        );
        let scopes: Vec<_> = all
            .iter()
            .map(|d| d["spec"]["scope"].as_str().unwrap())
            .collect();
        assert_eq!(scopes, ["Namespaced", "Cluster", "Namespaced"]);
        assert!(all.iter().all(|d| d["spec"]["group"] == GROUP));
        let token = &all[2]["spec"]["versions"][0];
        assert_eq!(token["subresources"]["status"], serde_json::json!({}));
        let columns: Vec<_> = token["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["name"].as_str().unwrap(), c["type"].as_str().unwrap()))
            .collect();
        // A future time in a `date` column prints as <invalid>: Expires is a string.
        assert_eq!(
            columns,
            [
                ("Ready", "string"),
                ("Reason", "string"),
                ("Expires", "string"),
                ("Secret", "string"),
                ("Age", "date")
            ]
        );
        let kind = &token["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["credentialRef"]["properties"]["kind"]["enum"];
        assert_eq!(
            *kind,
            serde_json::json!(["FiskilCredential", "ClusterFiskilCredential"])
        );
    }
}
