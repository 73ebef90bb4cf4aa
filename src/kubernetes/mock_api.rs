//! An in-process Kubernetes API server for tests: a `kube::Client` whose requests are answered
//! by a small object store (get, create, replace with resourceVersion checks, server-side apply,
//! watches that end at once), with every request recorded at its paused-clock time, and faults a
//! test can switch on (an error status for every request, requests never answered, or a lost
//! connection).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{json, Value};
use tokio::time::Instant;
use tower_test::mock::SendResponse;

/// What the server does with every request while it is set.
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    /// Answers with this HTTP status and a Kubernetes `Status` with this reason.
    Refuse(u16, &'static str),
    /// Never answers: the request stays on the wire.
    Hang,
    /// Fails the request below HTTP, as a dropped connection does.
    Reset,
}

/// One request as the server received it.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    /// When it arrived, on the (paused) tokio clock.
    pub(crate) at: Instant,
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) content_type: Option<String>,
    /// The request body as JSON, if it had one.
    pub(crate) body: Option<Value>,
    /// The status answered; `None` while held unanswered.
    pub(crate) status: Option<u16>,
    /// The object answered, if any.
    pub(crate) answer: Option<Value>,
}

impl Call {
    /// A watch request.
    pub(crate) fn is_watch(&self) -> bool {
        self.query.split('&').any(|pair| pair == "watch=true")
    }
}

#[derive(Default)]
struct State {
    /// Objects by their path.
    objects: BTreeMap<String, Value>,
    /// The last resourceVersion given out.
    version: u64,
    calls: Vec<Call>,
    fault: Option<Fault>,
    /// Requests held unanswered under [`Fault::Hang`].
    held: Vec<SendResponse<Response<Body>>>,
}

/// The server's store, log and faults; clones share them.
#[derive(Clone, Default)]
pub(crate) struct MockApi {
    state: Arc<Mutex<State>>,
}

impl MockApi {
    /// A server and a client talking to it, with `default` as the client's default namespace.
    /// The server runs on the current tokio runtime until the client is dropped.
    pub(crate) fn start(default: &str) -> (MockApi, kube::Client) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let api = MockApi::default();
        let server = api.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                server.answer(request, send).await;
            }
        });
        (api, kube::Client::new(service, default))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `object` at `path` with a new resourceVersion, as another client's write would;
    /// returns that version.
    pub(crate) fn put(&self, path: &str, mut object: Value) -> String {
        let mut state = self.state();
        state.version += 1;
        let version = state.version.to_string();
        object["metadata"]["resourceVersion"] = json!(version);
        state.objects.insert(path.to_owned(), object);
        version
    }

    /// The object at `path`.
    pub(crate) fn get(&self, path: &str) -> Option<Value> {
        self.state().objects.get(path).cloned()
    }

    /// Deletes the object at `path`.
    pub(crate) fn remove(&self, path: &str) {
        self.state().objects.remove(path);
    }

    /// Sets (or, with `None`, clears) the fault applied to every request from now on.
    pub(crate) fn fail(&self, fault: Option<Fault>) {
        self.state().fault = fault;
    }

    /// Every request so far, oldest first.
    pub(crate) fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    async fn answer(&self, request: Request<Body>, send: SendResponse<Response<Body>>) {
        let (parts, body) = request.into_parts();
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut call = Call {
            at: Instant::now(),
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: serde_json::from_slice(&bytes).ok(),
            status: None,
            answer: None,
        };
        let mut state = self.state();
        let (status, answer) = match state.fault.clone() {
            Some(Fault::Hang) => {
                state.calls.push(call);
                state.held.push(send);
                return;
            }
            Some(Fault::Reset) => {
                state.calls.push(call);
                send.send_error("connection reset by the mock API server");
                return;
            }
            Some(Fault::Refuse(code, reason)) => (code, refusal(code, reason)),
            None => state.serve(&call),
        };
        call.status = Some(status);
        call.answer = Some(answer.clone());
        state.calls.push(call);
        drop(state);
        let body = if answer.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(&answer).unwrap_or_default()
        };
        let response = Response::builder()
            .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap_or_else(|_| Response::new(Body::empty()));
        send.send_response(response);
    }
}

impl State {
    /// Answers one request from the store: the status and the body (`null`: none).
    fn serve(&mut self, call: &Call) -> (u16, Value) {
        let path = call.path.clone();
        match call.method {
            Method::GET if call.is_watch() => (200, Value::Null),
            Method::GET => match self.objects.get(&path) {
                Some(object) => (200, object.clone()),
                None => (404, refusal(404, "NotFound")),
            },
            Method::POST => {
                let Some(body) = call.body.clone() else {
                    return (400, refusal(400, "BadRequest"));
                };
                let name = body["metadata"]["name"].as_str().unwrap_or_default();
                let key = format!("{path}/{name}");
                if self.objects.contains_key(&key) {
                    return (409, refusal(409, "AlreadyExists"));
                }
                (201, self.store(key, body))
            }
            Method::PUT => {
                let Some(body) = call.body.clone() else {
                    return (400, refusal(400, "BadRequest"));
                };
                let Some(current) = self.objects.get(&path) else {
                    return (404, refusal(404, "NotFound"));
                };
                let expected = &current["metadata"]["resourceVersion"];
                if body["metadata"]["resourceVersion"] != *expected {
                    return (409, refusal(409, "Conflict"));
                }
                (200, self.store(path, body))
            }
            Method::PATCH => {
                let Some(body) = call.body.clone() else {
                    return (400, refusal(400, "BadRequest"));
                };
                let created = !self.objects.contains_key(&path);
                let stored = self.store(path, body);
                (if created { 201 } else { 200 }, stored)
            }
            _ => (405, refusal(405, "MethodNotAllowed")),
        }
    }

    fn store(&mut self, key: String, mut object: Value) -> Value {
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.objects.insert(key, object.clone());
        object
    }
}

/// A Kubernetes `Status` refusing a request.
pub(crate) fn refusal(code: u16, reason: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("mock API server: {reason}"),
        "reason": reason,
        "code": code,
    })
}
