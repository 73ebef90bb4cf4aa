//! The token exchange with Fiskil: the request, response validation and error classes.

use std::path::Path;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::config::HttpSettings;
use crate::credentials::Credentials;
use crate::schedule::{parse_retry_after, Failure};

/// The largest response body read; anything bigger is not a token response.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The longest token lifetime accepted; longer ones point at a unit mistake.
pub const MAX_EXPIRES_IN: u64 = 24 * 3600;
const JSON_UTF8: &str = "application/json; charset=UTF-8";
/// Longest piece of an endpoint's error text copied into a log line.
const MAX_ERROR_FIELD: usize = 200;

/// A bearer token and its lifetime. `Debug` does not show the token.
#[derive(Debug, Clone)]
pub struct Token {
    pub value: SecretString,
    pub lifetime: Duration,
    /// Wall-clock time at which the request was sent: the lifetime counts from here.
    pub issued_at: SystemTime,
}

impl Token {
    /// Wall-clock time after which the token is no longer valid.
    pub fn expires_at(&self) -> SystemTime {
        self.issued_at + self.lifetime
    }
}

/// Fiskil's error body: `{"id", "name", "message"}`; `id` is what Fiskil support asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiError {
    pub id: Option<String>,
    pub name: Option<String>,
    pub message: Option<String>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fields = [
            ("id", &self.id),
            ("name", &self.name),
            ("message", &self.message),
        ];
        let mut first = true;
        for (key, value) in fields {
            if let Some(value) = value {
                write!(f, "{}{key}={value:?}", if first { "" } else { " " })?;
                first = false;
            }
        }
        if first {
            f.write_str("no error details")?;
        }
        Ok(())
    }
}

/// Why a token request failed. Messages never contain credentials or tokens.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("the token endpoint rejected the credentials (HTTP {status}; {api}); check the client_id and client_secret in the Fiskil console")]
    Rejected { status: u16, api: ApiError },
    #[error("the token endpoint is unavailable (HTTP {status}; {api})")]
    Unavailable {
        status: u16,
        api: ApiError,
        retry_after: Option<Duration>,
    },
    #[error("the token request failed: {0}")]
    Transport(String),
    #[error("the token endpoint sent an unusable answer: {0}")]
    InvalidResponse(String),
}

impl ExchangeError {
    /// The class of the failure, for retry timing.
    pub fn failure(&self) -> Failure {
        match self {
            ExchangeError::Rejected { .. } => Failure::Rejected,
            ExchangeError::Unavailable { retry_after, .. } => Failure::Transient {
                retry_after: *retry_after,
            },
            ExchangeError::Transport(_) => Failure::Transient { retry_after: None },
            ExchangeError::InvalidResponse(_) => Failure::InvalidResponse,
        }
    }
}

/// Why an HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read --ca-file {path}: {source}")]
    CaRead {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "--ca-file {0} holds no PEM certificate; give a PEM bundle (-----BEGIN CERTIFICATE-----)"
    )]
    CaEmpty(String),
    #[error("--ca-file {path} holds a certificate that cannot be used: {reason}")]
    CaInvalid { path: String, reason: String },
    #[error("cannot set up the HTTPS client: {0}")]
    Build(String),
}

/// Sends token requests to one endpoint.
pub struct TokenClient {
    http: reqwest::Client,
    url: reqwest::Url,
}

impl TokenClient {
    /// Builds a client trusting the built-in roots plus `--ca-file`, never following redirects.
    pub fn new(settings: &HttpSettings) -> Result<Self, ClientError> {
        let tls = tls_config(settings)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .user_agent(concat!(
                env!("CARGO_PKG_NAME"),
                "/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|e| ClientError::Build(error_chain(&e)))?;
        Ok(TokenClient {
            http,
            url: settings.token_url.clone(),
        })
    }

    /// Exchanges the credentials for a token: exactly the documented request, validated answer.
    pub async fn exchange(&self, credentials: &Credentials) -> Result<Token, ExchangeError> {
        let body = SecretString::from(
            serde_json::json!({
                "client_id": credentials.client_id.expose_secret(),
                "client_secret": credentials.client_secret.expose_secret(),
            })
            .to_string(),
        );
        let issued_at = SystemTime::now();
        let response = self
            .http
            .post(self.url.clone())
            .header(ACCEPT, JSON_UTF8)
            .header(CONTENT_TYPE, JSON_UTF8)
            .body(body.expose_secret().as_bytes().to_vec())
            .send()
            .await
            .map_err(|e| ExchangeError::Transport(error_chain(&e)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_capped(response).await?;
        classify(status, &headers, &body, issued_at)
    }
}

/// The TLS settings every outgoing HTTPS connection uses: the built-in roots plus `--ca-file`.
pub fn tls_config(settings: &HttpSettings) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = &settings.ca_file {
        add_ca_file(&mut roots, path)?;
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn add_ca_file(roots: &mut rustls::RootCertStore, path: &Path) -> Result<(), ClientError> {
    let shown = path.display().to_string();
    let pem = std::fs::read(path).map_err(|source| ClientError::CaRead {
        path: shown.clone(),
        source,
    })?;
    let mut found = 0;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| ClientError::CaInvalid {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        roots.add(cert).map_err(|e| ClientError::CaInvalid {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        found += 1;
    }
    if found == 0 {
        return Err(ClientError::CaEmpty(shown));
    }
    Ok(())
}

/// Reads at most [`MAX_BODY_BYTES`] of the body; a longer 2xx body is an invalid response.
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, ExchangeError> {
    let success = response.status().is_success();
    let mut body = Vec::new();
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|e| ExchangeError::Transport(error_chain(&e)))?;
        let Some(chunk) = chunk else { return Ok(body) };
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            if success {
                return Err(ExchangeError::InvalidResponse(format!(
                    "the body is larger than {MAX_BODY_BYTES} bytes"
                )));
            }
            return Ok(body);
        }
        body.extend_from_slice(&chunk);
    }
}

/// Turns a status, headers and body into a token or a classified error.
fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    issued_at: SystemTime,
) -> Result<Token, ExchangeError> {
    let code = status.as_u16();
    match code {
        200..=299 => {
            let (value, lifetime) =
                parse_token_response(body).map_err(ExchangeError::InvalidResponse)?;
            Ok(Token {
                value,
                lifetime,
                issued_at,
            })
        }
        300..=399 => {
            let target = headers
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(|v| format!(" to {}", sanitize(v)))
                .unwrap_or_default();
            Err(ExchangeError::InvalidResponse(format!(
                "HTTP {code} redirect{target}, which is not followed so the credentials go nowhere else; set --token-url to the final address"
            )))
        }
        400 | 401 | 403 => Err(ExchangeError::Rejected {
            status: code,
            api: parse_api_error(body),
        }),
        408 | 429 | 500..=599 => Err(ExchangeError::Unavailable {
            status: code,
            api: parse_api_error(body),
            retry_after: headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now())),
        }),
        _ => Err(ExchangeError::InvalidResponse(format!(
            "unexpected HTTP {code} ({}); check --token-url",
            parse_api_error(body)
        ))),
    }
}

/// Validates a 2xx body: a usable `token` (or `access_token`) and a sane `expires_in`.
pub fn parse_token_response(body: &[u8]) -> Result<(SecretString, Duration), String> {
    let json: Value =
        serde_json::from_slice(body).map_err(|_| "the body is not JSON".to_owned())?;
    let Value::Object(mut fields) = json else {
        return Err("the body is not a JSON object".to_owned());
    };
    let token = match fields.remove("token") {
        Some(Value::Null) | None => fields.remove("access_token"),
        present => present,
    };
    let token = match token {
        None | Some(Value::Null) => return Err("it has no token field".to_owned()),
        Some(Value::String(token)) => SecretString::from(token),
        Some(_) => return Err("the token field is not a string".to_owned()),
    };
    let text = token.expose_secret();
    if text.is_empty() {
        return Err("the token is empty".to_owned());
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the token contains whitespace or control characters".to_owned());
    }
    let lifetime = match fields.get("expires_in") {
        None | Some(Value::Null) => return Err("it has no expires_in".to_owned()),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
            (Some(0), _) => return Err("expires_in is 0".to_owned()),
            (Some(secs), _) if secs <= MAX_EXPIRES_IN => Duration::from_secs(secs),
            (Some(secs), _) => {
                return Err(format!(
                    "expires_in is {secs} s, more than the {MAX_EXPIRES_IN} s accepted"
                ))
            }
            (None, Some(secs)) => return Err(format!("expires_in is negative ({secs})")),
            (None, None) => {
                return Err(format!("expires_in is not a whole number of seconds ({n})"))
            }
        },
        Some(_) => return Err("expires_in is not a number".to_owned()),
    };
    Ok((token, lifetime))
}

/// Reads Fiskil's `{"id","name","message"}` error body, if that is what it is.
fn parse_api_error(body: &[u8]) -> ApiError {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return ApiError::default();
    };
    let field = |key: &str| fields.get(key).and_then(Value::as_str).map(sanitize);
    ApiError {
        id: field("id"),
        name: field("name"),
        message: field("message"),
    }
}

/// Keeps text from the network printable and short before it reaches a log line.
fn sanitize(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(MAX_ERROR_FIELD)
        .collect()
}

/// An error and its sources on one line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> (String, u64) {
        let (token, lifetime) = parse_token_response(body.as_bytes()).unwrap();
        (token.expose_secret().to_owned(), lifetime.as_secs())
    }

    fn bad(body: &str) -> String {
        parse_token_response(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn accepts_the_documented_response_and_access_token() {
        assert_eq!(
            ok(r#"{"token":"abc.def","expires_in":900}"#),
            ("abc.def".into(), 900)
        );
        assert_eq!(
            ok(r#"{"access_token":"xyz","token_type":"Bearer","expires_in":60}"#),
            ("xyz".into(), 60)
        );
        assert_eq!(
            ok(r#"{"token":null,"access_token":"xyz","expires_in":1}"#).0,
            "xyz"
        );
    }

    #[test]
    fn rejects_unusable_responses_without_echoing_the_token() {
        assert_eq!(bad("<html>"), "the body is not JSON");
        assert_eq!(bad("[1]"), "the body is not a JSON object");
        assert_eq!(bad(r#"{"expires_in":900}"#), "it has no token field");
        assert_eq!(
            bad(r#"{"token":"","expires_in":900}"#),
            "the token is empty"
        );
        assert_eq!(
            bad(r#"{"token":7,"expires_in":900}"#),
            "the token field is not a string"
        );
        let spaced = bad(r#"{"token":"sekret tok","expires_in":900}"#);
        assert_eq!(
            spaced,
            "the token contains whitespace or control characters"
        );
        assert_eq!(
            bad(r#"{"token":"a\u0000b","expires_in":900}"#),
            "the token contains whitespace or control characters"
        );
        assert_eq!(bad(r#"{"token":"t"}"#), "it has no expires_in");
        assert_eq!(bad(r#"{"token":"t","expires_in":0}"#), "expires_in is 0");
        assert_eq!(
            bad(r#"{"token":"t","expires_in":-5}"#),
            "expires_in is negative (-5)"
        );
        assert_eq!(
            bad(r#"{"token":"t","expires_in":"900"}"#),
            "expires_in is not a number"
        );
        assert!(bad(r#"{"token":"t","expires_in":1.5}"#).contains("not a whole number"));
        assert!(bad(r#"{"token":"t","expires_in":31536000}"#).contains("more than"));
    }

    #[test]
    fn statuses_are_classified() {
        let now = SystemTime::now();
        let none = HeaderMap::new();
        let err = classify(
            StatusCode::UNAUTHORIZED,
            &none,
            br#"{"id":"err_1","name":"unauthorized","message":"bad key"}"#,
            now,
        )
        .unwrap_err();
        assert_eq!(err.failure(), Failure::Rejected);
        assert!(
            err.to_string()
                .contains(r#"id="err_1" name="unauthorized" message="bad key""#),
            "{err}"
        );
        let mut retry = HeaderMap::new();
        retry.insert(RETRY_AFTER, "7".parse().unwrap());
        let err = classify(StatusCode::TOO_MANY_REQUESTS, &retry, b"", now).unwrap_err();
        assert_eq!(
            err.failure(),
            Failure::Transient {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        let err = classify(StatusCode::BAD_GATEWAY, &none, b"oops", now).unwrap_err();
        assert_eq!(err.failure(), Failure::Transient { retry_after: None });
        assert!(err.to_string().contains("no error details"));
        let mut moved = HeaderMap::new();
        moved.insert(LOCATION, "https://elsewhere.example/t".parse().unwrap());
        let err = classify(StatusCode::TEMPORARY_REDIRECT, &moved, b"", now).unwrap_err();
        assert_eq!(err.failure(), Failure::InvalidResponse);
        assert!(err.to_string().contains("to https://elsewhere.example/t"));
        let err = classify(StatusCode::NOT_FOUND, &none, b"", now).unwrap_err();
        assert_eq!(err.failure(), Failure::InvalidResponse);
        let token = classify(
            StatusCode::OK,
            &none,
            br#"{"token":"t","expires_in":2}"#,
            now,
        )
        .unwrap();
        assert_eq!(token.expires_at(), now + Duration::from_secs(2));
        assert!(!format!("{token:?}").contains("\"t\""));
    }
}
