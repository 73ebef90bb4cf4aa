//! A stand-in Kubernetes API server over plain HTTP on loopback, for Secret output behaviour
//! that a real API server cannot be made to show on demand: hanging, or failing every call.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the fake API server answers Secret applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiMode {
    /// 200 with the applied Secret.
    Ok,
    /// Read the request and never answer.
    Hang,
    /// Answer with this status and a Kubernetes `Status` body.
    Fail(u16),
}

/// The fake API server; requests are counted.
pub struct FakeApi {
    pub addr: SocketAddr,
    mode: Arc<Mutex<ApiMode>>,
    requests: Arc<AtomicU64>,
}

impl FakeApi {
    pub fn start(mode: ApiMode) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake API server");
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(Mutex::new(mode));
        let requests = Arc::new(AtomicU64::new(0));
        let (m, r) = (Arc::clone(&mode), Arc::clone(&requests));
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (m, r) = (Arc::clone(&m), Arc::clone(&r));
                std::thread::spawn(move || serve(stream, &m, &r));
            }
        });
        FakeApi {
            addr,
            mode,
            requests,
        }
    }

    pub fn set_mode(&self, mode: ApiMode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Writes a kubeconfig pointing at this server into `path`.
    pub fn write_kubeconfig(&self, path: &Path) {
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"http://{}\"}}}}]\n\
                 users: [{{name: u, user: {{token: fake-api-token}}}}]\n\
                 contexts: [{{name: x, context: {{cluster: c, user: u, namespace: team}}}}]\ncurrent-context: x\n",
                self.addr
            ),
        )
        .expect("write the kubeconfig");
    }
}

fn serve(stream: TcpStream, mode: &Mutex<ApiMode>, requests: &AtomicU64) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
    let mut writer = stream;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        requests.fetch_add(1, Ordering::SeqCst);
        let current = *mode.lock().unwrap();
        let (code, text) = match current {
            ApiMode::Hang => {
                std::thread::sleep(Duration::from_secs(3600));
                return;
            }
            ApiMode::Ok => (
                200,
                r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"token","namespace":"team"}}"#
                    .to_owned(),
            ),
            ApiMode::Fail(code) => (
                code,
                format!(
                    r#"{{"apiVersion":"v1","kind":"Status","status":"Failure","message":"fake failure","reason":"ServiceUnavailable","code":{code}}}"#
                ),
            ),
        };
        let response = format!(
            "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
