//! The API side of the stand-in: every path but the token endpoint's answers only bearer
//! tokens the stand-in issued and has not revoked, so a proxy's 401 path can be exercised.
//!
//! `GET|POST|... /echo...` answers `{"method","path","query","headers","body_bytes",
//! "body_fnv1a"}` (headers without `authorization`), reading the body as it streams in;
//! `GET /download/N` answers N pattern bytes (`byte i = i % 251`), with a length, or chunked
//! with `?chunked=1`; `/redirect` answers 307 to `/elsewhere`; any other path answers
//! `{"ok":true}`. JSON answers carry the end-to-end header `x-stand-in: api`. A missing, unknown or revoked token
//! gets Fiskil's 401 error body.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use super::{error_body, State};

/// One API request as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct ApiSeen {
    pub method: String,
    pub path: String,
    /// The bearer token sent, if any.
    pub token: Option<String>,
    pub status: u16,
}

/// FNV-1a, 64 bits: a checksum tests can compute on their side.
pub fn fnv1a(hash: u64, data: &[u8]) -> u64 {
    data.iter().fold(hash, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The FNV-1a starting value.
pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// The byte at offset `i` of a `/download` body.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

pub(crate) async fn answer(
    request: Request<Incoming>,
    state: &Mutex<State>,
) -> Response<BoxBody<Bytes, hyper::Error>> {
    let (parts, mut body) = request.into_parts();
    let token = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let accepted = {
        let guard = state.lock().unwrap_or_else(|e| e.into_inner());
        token.as_ref().is_some_and(|t| {
            !guard.refuse_all && guard.issued.contains(t) && !guard.revoked.contains(t)
        })
    };
    let path = parts.uri.path().to_owned();
    let record = |status: StatusCode| {
        state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .api_seen
            .push(ApiSeen {
                method: parts.method.to_string(),
                path: path.clone(),
                token: token.clone(),
                status: status.as_u16(),
            });
    };
    if !accepted {
        // Read the body first, as servers behind load balancers do, so the client sees the 401.
        while let Some(Ok(_)) = body.frame().await {}
        record(StatusCode::UNAUTHORIZED);
        return full(
            StatusCode::UNAUTHORIZED,
            error_body(
                "err_stand_in_api_401",
                "unauthorized",
                "invalid or revoked token",
            )
            .to_string(),
        );
    }
    if path.starts_with("/echo") {
        let (mut bytes, mut hash) = (0u64, FNV_START);
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                record(StatusCode::BAD_REQUEST);
                return full(
                    StatusCode::BAD_REQUEST,
                    "{\"error\":\"body broken off\"}".into(),
                );
            };
            if let Some(data) = frame.data_ref() {
                bytes += data.len() as u64;
                hash = fnv1a(hash, data);
            }
        }
        let headers: serde_json::Map<String, serde_json::Value> = parts
            .headers
            .iter()
            .filter(|(name, _)| name.as_str() != "authorization")
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes())
                        .into_owned()
                        .into(),
                )
            })
            .collect();
        record(StatusCode::OK);
        let echo = json!({
            "method": parts.method.as_str(),
            "path": path,
            "query": parts.uri.query(),
            "headers": headers,
            "body_bytes": bytes,
            "body_fnv1a": format!("{hash:016x}"),
        });
        return full(StatusCode::OK, echo.to_string());
    }
    if let Some(size) = path.strip_prefix("/download/") {
        let Ok(size) = size.parse::<u64>() else {
            record(StatusCode::NOT_FOUND);
            return full(StatusCode::NOT_FOUND, "{\"error\":\"size\"}".into());
        };
        record(StatusCode::OK);
        let chunked = parts.uri.query() == Some("chunked=1");
        let mut response = Response::new(
            Pattern {
                offset: 0,
                size,
                chunked,
            }
            .map_err(|never| match never {})
            .boxed(),
        );
        response.headers_mut().insert(
            "content-type",
            "application/octet-stream".parse().expect("header value"),
        );
        return response;
    }
    if path == "/redirect" {
        record(StatusCode::TEMPORARY_REDIRECT);
        let mut response = full(StatusCode::TEMPORARY_REDIRECT, "{}".into());
        response
            .headers_mut()
            .insert("location", "/elsewhere".parse().expect("header value"));
        return response;
    }
    record(StatusCode::OK);
    full(StatusCode::OK, "{\"ok\":true}".into())
}

fn full(status: StatusCode, body: String) -> Response<BoxBody<Bytes, hyper::Error>> {
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("header value"),
    );
    response
        .headers_mut()
        .insert("x-stand-in", "api".parse().expect("header value"));
    response
}

/// A body of pattern bytes, produced 64 KiB at a time.
struct Pattern {
    offset: u64,
    size: u64,
    chunked: bool,
}

impl Body for Pattern {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.offset >= this.size {
            return Poll::Ready(None);
        }
        let end = (this.offset + 64 * 1024).min(this.size);
        let chunk: Vec<u8> = (this.offset..end).map(pattern_byte).collect();
        this.offset = end;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.offset >= self.size
    }

    fn size_hint(&self) -> SizeHint {
        if self.chunked {
            SizeHint::default()
        } else {
            SizeHint::with_exact(self.size - self.offset)
        }
    }
}
