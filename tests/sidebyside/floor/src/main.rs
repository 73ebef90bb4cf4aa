//! floor URL CA_FILE CLIENT_ID_FILE CLIENT_SECRET_FILE TOKEN_FILE
//!
//! Posts `{"client_id","client_secret"}` to URL (https, HTTP/1.1, `Connection: close`) trusting
//! the built-in Mozilla roots plus CA_FILE, writes the `token` of the answer to TOKEN_FILE
//! atomically (a temporary file beside it, fsync, rename), then sleeps until killed. No retries,
//! no checks beyond what writing the token needs: the floor under any program doing this job.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, ca_file, id_file, secret_file, token_file] = &args[..] else {
        eprintln!("usage: floor URL CA_FILE CLIENT_ID_FILE CLIENT_SECRET_FILE TOKEN_FILE");
        std::process::exit(2);
    };
    let rest = url.strip_prefix("https://").expect("an https:// URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    let port = authority
        .rsplit_once(':')
        .map_or(443, |(_, p)| p.parse().expect("a port"));

    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let pem = std::fs::read(ca_file).expect("the CA file");
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots
            .add(cert.expect("a certificate"))
            .expect("a usable CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).expect("a host name");
    let tls = rustls::ClientConnection::new(Arc::new(config), name).expect("a TLS client");
    let tcp = TcpStream::connect((host, port)).expect("connected");
    tcp.set_nodelay(true).expect("nodelay");
    let mut stream = rustls::StreamOwned::new(tls, tcp);

    let read = |path: &str| std::fs::read_to_string(path).expect("a credential file");
    let body = serde_json::json!({
        "client_id": read(id_file).trim(),
        "client_secret": read(secret_file).trim(),
    })
    .to_string();
    let agent = concat!("fiskil-token-refresher/", env!("CARGO_PKG_VERSION"));
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {authority}\r\naccept: application/json; charset=UTF-8\r\n\
         content-type: application/json; charset=UTF-8\r\nuser-agent: {agent}\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("request sent");
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => {}
        // A peer that closes without close_notify; the body is complete by then.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => panic!("reading the answer: {e}"),
    }
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let json: serde_json::Value = serde_json::from_slice(&answer[split..]).expect("a JSON body");
    let token = json["token"].as_str().expect("a token");

    let temp = format!("{token_file}.tmp.{}", std::process::id());
    let mut file = std::fs::File::create(&temp).expect("the temporary file");
    file.write_all(token.as_bytes()).expect("written");
    file.sync_all().expect("synced");
    std::fs::rename(&temp, token_file).expect("renamed");
    loop {
        std::thread::park();
    }
}
