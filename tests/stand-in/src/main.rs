//! Runs the token endpoint stand-in until interrupted, for demos and benchmarks.
//!
//! Usage: fiskil-stand-in [--listen ADDR] [--ca-out PATH] [--expires-in SECONDS]
//!                        [--client-id ID] [--client-secret SECRET]
//!                        [--lenient] [--oauth2] [--control] [--api]
//!
//! `--lenient` answers Fiskil token requests whose headers differ from the documented ones
//! (a `curl` loop's, say); `--oauth2` also serves a standard OAuth2 client-credentials
//! endpoint at /oauth2/token with OIDC discovery at /.well-known/openid-configuration (the
//! issuer is https://localhost:PORT); `--control` serves `POST /control/behaviour`
//! (`{"behaviour":"fail","status":500}`, `{"behaviour":"issue","expires_in":3}`, ...) and
//! `GET /control/stats` (request and token counters) and `POST /control/revoke` on the same
//! server; `--api` serves the API side on every other path (tokens it issued only).

use std::process::ExitCode;

use fiskil_stand_in::StandIn;

fn main() -> ExitCode {
    let mut listen = "127.0.0.1:8443".to_owned();
    let mut ca_out = "stand-in-ca.pem".to_owned();
    let mut expires_in = "900".to_owned();
    let mut client_id = "demo-client".to_owned();
    let mut client_secret = "demo-secret".to_owned();
    let (mut lenient, mut oauth2, mut control, mut api) = (false, false, false, false);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let switch = match flag.as_str() {
            "--lenient" => Some(&mut lenient),
            "--oauth2" => Some(&mut oauth2),
            "--control" => Some(&mut control),
            "--api" => Some(&mut api),
            _ => None,
        };
        if let Some(switch) = switch {
            *switch = true;
            continue;
        }
        let slot = match flag.as_str() {
            "--listen" => &mut listen,
            "--ca-out" => &mut ca_out,
            "--expires-in" => &mut expires_in,
            "--client-id" => &mut client_id,
            "--client-secret" => &mut client_secret,
            _ => {
                eprintln!("fiskil-stand-in: unknown argument {flag:?}; see the usage in the source header");
                return ExitCode::from(2);
            }
        };
        let Some(value) = args.next() else {
            eprintln!("fiskil-stand-in: {flag} needs a value");
            return ExitCode::from(2);
        };
        *slot = value;
    }
    let (Ok(addr), Ok(expires_in)) = (listen.parse(), expires_in.parse()) else {
        eprintln!("fiskil-stand-in: --listen needs HOST:PORT and --expires-in a number of seconds");
        return ExitCode::from(2);
    };
    let stand_in = StandIn::start_on(addr, &client_id, &client_secret, expires_in);
    stand_in.set_lenient(lenient);
    if oauth2 {
        stand_in.enable_oauth2();
    }
    if control {
        stand_in.enable_control();
    }
    if api {
        stand_in.enable_api();
    }
    if let Err(e) = std::fs::write(&ca_out, stand_in.ca_pem()) {
        eprintln!("fiskil-stand-in: cannot write {ca_out}: {e}");
        return ExitCode::from(1);
    }
    println!("token endpoint {} (CA in {ca_out})", stand_in.url());
    if oauth2 {
        println!(
            "OAuth2 token endpoint {} (OIDC issuer {})",
            stand_in.oauth2_url(),
            stand_in.issuer_url()
        );
    }
    if api {
        println!("API side {}", stand_in.api_url());
    }
    if control {
        println!(
            "control https://localhost:{}/control/behaviour and /control/stats",
            stand_in.addr().port()
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    println!(
        "served {} requests, issued {} tokens",
        stand_in.seen().len(),
        stand_in.issued().len()
    );
    ExitCode::SUCCESS
}
