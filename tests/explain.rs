//! `explain` as users run it: the real binary, its text and JSON reports, warnings and errors.

mod support;

use std::process::{Command, Output};

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(support::Daemon::binary());
    command.args(args);
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("FISKIL_")) {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command.output().expect("run the binary")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[test]
fn the_text_report_describes_the_defaults() {
    let output = run(&["explain"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for expected in [
        "next request 675–720 s after the previous one was sent",
        "validity left at refresh (margin): 180–225 s",
        "  7        30–60        ",
        "requests before the token expires: 8 ",
        "retries every 4–8 s: 7.5–15 requests a minute",
        "per pod: 5–5.333 requests an hour",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert!(!text.contains("warning"), "{text}");
    assert!(!text.contains("Secret consumers"), "{text}");
}

#[test]
fn the_json_report_follows_flags_and_environment() {
    // A token endpoint that would see any request explain sent.
    let endpoint = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/token", endpoint.local_addr().unwrap());
    let output = run(
        &[
            "explain",
            "--output",
            "json",
            "--pods",
            "1000",
            "--secret-consumers",
        ],
        &[
            ("FISKIL_REFRESH_RATIO", "0.5"),
            ("FISKIL_REFRESH_JITTER", "0.1"),
            // The daemon's other settings in the environment (as in a pod) do not get in the way.
            ("FISKIL_TOKEN_FILE", "/nonexistent/token"),
            ("FISKIL_TOKEN_URL", &url),
            ("FISKIL_INSECURE_ALLOW_HTTP", "true"),
            ("FISKIL_CLIENT_ID", "explain-client-id"),
            ("FISKIL_CLIENT_SECRET", "explain-client-secret-value"),
        ],
    );
    endpoint.set_nonblocking(true).unwrap();
    assert_eq!(
        endpoint.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "explain connected to the token endpoint"
    );
    let all = format!("{}{}", stdout(&output), stderr(&output));
    assert!(!all.contains("explain-client"), "{all}");
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["refresh_s"]["min"], 360.0);
    assert_eq!(report["refresh_s"]["max"], 450.0);
    assert_eq!(report["margin_s"]["min"], 450.0);
    assert_eq!(report["secret_consumers"]["margin_s"]["min"], 360.0);
    assert_eq!(report["load"]["pods"], 1000);
    let average = report["load"]["average_per_second"].as_f64().unwrap();
    assert!((average - 1000.0 / 405.0).abs() < 1e-3, "{average}");
    let peak = report["load"]["peak_per_second"].as_u64().unwrap();
    assert!(peak > 11 && peak < 40, "{peak}");
    assert_eq!(report["warnings"], serde_json::json!([]));
}

#[test]
fn settings_that_cannot_work_are_warned_about() {
    let output = run(
        &[
            "explain",
            "--expires-in",
            "300",
            "--secret-consumers",
            "--propagation-delay",
            "2m",
        ],
        &[],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains(
            "warning: the smallest margin (60 s) is not longer than the propagation delay (120 s)"
        ),
        "{text}"
    );
    let output = run(
        &[
            "explain",
            "--expires-in",
            "30",
            "--min-refresh-interval",
            "1m",
            "--output",
            "json",
        ],
        &[],
    );
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    let warnings = report["warnings"].as_array().unwrap();
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .starts_with("--min-refresh-interval (60 s) is not shorter"),
        "{warnings:?}"
    );
}

#[test]
fn bad_options_exit_2_with_the_daemons_message() {
    let explain = run(&["explain", "--refresh-ratio", "1.5"], &[]);
    assert_eq!(explain.status.code(), Some(2));
    let daemon = run(
        &[
            "--refresh-ratio",
            "1.5",
            "--token-file",
            "/nonexistent/token",
        ],
        &[],
    );
    assert_eq!(daemon.status.code(), Some(2));
    assert_eq!(stderr(&explain), stderr(&daemon));
    assert_eq!(
        stderr(&explain),
        "fiskil-token-refresher: error: --refresh-ratio must be between 0 and 1 (exclusive), got 1.5\n"
    );
    assert!(explain.stdout.is_empty());

    let output = run(&["explain"], &[("FISKIL_BACKOFF_INITIAL", "5m")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--backoff-initial (300s) must not exceed --backoff-max"));

    let output = run(&["explain", "--pods", "0"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--pods"), "{}", stderr(&output));

    let output = run(&["--token-file", "/nonexistent/token", "explain"], &[]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "daemon flags before the command"
    );
}

/// The README's `explain` examples are what the binary prints today.
#[test]
fn the_readme_shows_real_output() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut checked = 0;
    for block in readme.split("```console\n").skip(1) {
        let block = block.split("```").next().unwrap();
        let (command, shown) = block.split_once('\n').unwrap();
        let Some(rest) = command.strip_prefix("$ fiskil-token-refresher explain") else {
            continue;
        };
        let binary = support::Daemon::binary();
        let line = format!("'{binary}' explain{rest}");
        let output = Command::new("bash")
            .args(["-c", &line])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .output()
            .unwrap();
        assert!(output.status.success(), "{command}: {}", stderr(&output));
        assert_eq!(stdout(&output), shown, "README output of {command}");
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} examples found");
}
