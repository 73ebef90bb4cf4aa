//! The Secret output against an in-process API server: what one write sends, and how the API
//! server's refusals, silence and a lost connection become errors that name the Secret.

use std::time::{Duration, UNIX_EPOCH};

use http::Method;
use tokio::time::Instant;

use super::*;
use crate::kubernetes::mock_api::{Call, Fault, MockApi};

const TIMEOUT: Duration = Duration::from_secs(30);

/// A mock server and one sink per target: `fiskil-token` in the default namespace `team-a`, and
/// `team-b/other`.
fn sinks() -> (MockApi, Vec<SecretSink>) {
    let (api, client) = MockApi::start("team-a");
    let kube = Kube {
        client,
        default_namespace: "team-a".to_owned(),
    };
    let output = SecretOutput {
        targets: vec![
            Target {
                namespace: None,
                name: "fiskil-token".to_owned(),
            },
            Target {
                namespace: Some("team-b".to_owned()),
                name: "other".to_owned(),
            },
        ],
        key: "bearer".to_owned(),
        timeout: TIMEOUT,
    };
    (api, SecretSink::for_each_target(&kube, &output))
}

fn token() -> Token {
    Token {
        value: "tok-123".into(),
        lifetime: Duration::from_secs(3600),
        issued_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    }
}

fn term() -> Term {
    Term {
        identity: "replica-a".to_owned(),
        number: 7,
    }
}

/// The Secret a request carried.
fn applied(call: &Call) -> Secret {
    serde_json::from_value(call.body.clone().expect("a body")).expect("a Secret")
}

#[tokio::test(start_paused = true)]
async fn a_write_is_a_forced_server_side_apply_of_the_token_its_expiry_and_the_term() {
    let (api, sinks) = sinks();
    assert_eq!(sinks[0].name(), "secret:team-a/fiskil-token");
    sinks[0].write(&token(), Some(&term())).await.unwrap();
    sinks[1].write(&token(), None).await.unwrap();
    let calls = api.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");

    let call = &calls[0];
    assert_eq!(call.method, Method::PATCH);
    assert_eq!(call.path, "/api/v1/namespaces/team-a/secrets/fiskil-token");
    let query: Vec<&str> = call.query.split('&').filter(|p| !p.is_empty()).collect();
    assert!(
        query.contains(&"fieldManager=fiskil-token-refresher"),
        "{query:?}"
    );
    assert!(query.contains(&"force=true"), "{query:?}");
    assert_eq!(
        call.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    let body = call.body.as_ref().unwrap();
    assert_eq!(body["apiVersion"], "v1");
    assert_eq!(body["kind"], "Secret");
    let secret = applied(call);
    assert_eq!(secret.metadata.name.as_deref(), Some("fiskil-token"));
    assert_eq!(secret.metadata.namespace.as_deref(), Some("team-a"));
    assert!(
        secret.metadata.labels.is_none(),
        "labels are left to their owners"
    );
    let annotations = secret.metadata.annotations.unwrap();
    assert_eq!(annotations.len(), 2, "{annotations:?}");
    assert_eq!(annotations[WRITER_ANNOTATION], "replica-a");
    assert_eq!(annotations[TERM_ANNOTATION], "7");
    let data = secret.data.unwrap();
    assert_eq!(data.len(), 2, "only the token and its expiry");
    assert_eq!(data["bearer"].0, b"tok-123");
    assert_eq!(data[EXPIRES_AT_KEY].0, b"2023-11-14T23:13:20.000Z");

    let call = &calls[1];
    assert_eq!(call.path, "/api/v1/namespaces/team-b/secrets/other");
    let secret = applied(call);
    assert_eq!(secret.metadata.namespace.as_deref(), Some("team-b"));
    assert!(
        secret.metadata.annotations.is_none(),
        "without a term, no writer annotations"
    );
    assert_eq!(secret.data.unwrap()["bearer"].0, b"tok-123");
}

#[tokio::test(start_paused = true)]
async fn a_forbidden_write_names_the_secret_and_the_role_it_needs() {
    let (api, sinks) = sinks();
    api.fail(Some(Fault::Refuse(403, "Forbidden")));
    let error = sinks[0].write(&token(), None).await.unwrap_err();
    let SecretError::Forbidden {
        namespace,
        name,
        message,
    } = &error
    else {
        panic!("not Forbidden: {error:?}");
    };
    assert_eq!(
        (namespace.as_str(), name.as_str()),
        ("team-a", "fiskil-token")
    );
    assert_eq!(message, "mock API server: Forbidden");
    let text = error.to_string();
    assert!(
        text.starts_with("forbidden to apply Secret team-a/fiskil-token (verbs create and patch)"),
        "{text}"
    );
    assert!(
        text.contains("resourceNames [\"fiskil-token\"], verbs [\"create\", \"patch\"]"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn other_refusals_keep_the_status_code_and_reason() {
    let (api, sinks) = sinks();
    for (code, reason) in [
        (409, "Conflict"),
        (422, "Invalid"),
        (404, "NotFound"),
        (500, "InternalError"),
    ] {
        api.fail(Some(Fault::Refuse(code, reason)));
        let error = sinks[1].write(&token(), Some(&term())).await.unwrap_err();
        match &error {
            SecretError::Refused {
                namespace,
                name,
                code: got,
                reason: why,
                ..
            } => {
                assert_eq!((namespace.as_str(), name.as_str()), ("team-b", "other"));
                assert_eq!((*got, why.as_str()), (code, reason));
            }
            other => panic!("{code}: not Refused: {other:?}"),
        }
        let text = error.to_string();
        let prefix =
            format!("the API server refused the Secret team-b/other (HTTP {code} {reason}): ");
        assert!(text.starts_with(&prefix), "{text}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_server_times_out_at_the_request_timeout_and_a_lost_connection_is_unreachable() {
    let (api, sinks) = sinks();
    api.fail(Some(Fault::Hang));
    let started = Instant::now();
    let error = sinks[0].write(&token(), None).await.unwrap_err();
    assert!(
        matches!(error, SecretError::TimedOut(t) if t == TIMEOUT),
        "{error:?}"
    );
    assert_eq!(started.elapsed(), TIMEOUT);

    api.fail(Some(Fault::Reset));
    let error = sinks[0].write(&token(), None).await.unwrap_err();
    assert!(
        matches!(&error, SecretError::Unreachable(text) if text.contains("connection reset")),
        "{error:?}"
    );
}
