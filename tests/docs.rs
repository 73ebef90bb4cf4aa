//! The documentation agrees with the binary: every option, environment variable, default and
//! metric that `--help` and `/metrics` show is in the README's tables.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{eventually, Fixture};

fn help() -> String {
    help_of(&[])
}

/// `--help` of the daemon, or of a command such as `explain`.
fn help_of(command: &[&str]) -> String {
    let output = Command::new(support::Daemon::binary())
        .args(command)
        .arg("--help")
        .env("COLUMNS", "200")
        .output()
        .expect("run --help");
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// Each `--flag` of the help text with its environment variable and default, if any.
fn options(help: &str) -> Vec<(String, String, Option<String>)> {
    let mut found = Vec::new();
    let mut current: Option<(String, String, Option<String>)> = None;
    for line in help.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("--") {
            found.extend(current.take());
            let flag = trimmed.split([' ', ',', '=']).next().unwrap().to_owned();
            current = Some((flag, String::new(), None));
        }
        if let Some((_, env, default)) = current.as_mut() {
            if let Some(rest) = line.split("[env: ").nth(1) {
                *env = rest.split(['=', ']']).next().unwrap().to_owned();
            }
            if let Some(rest) = line.split("[default: ").nth(1) {
                *default = Some(rest.split(']').next().unwrap().to_owned());
            }
        }
    }
    found.extend(current);
    found
}

#[test]
fn every_option_is_in_the_readme_with_its_environment_variable_and_default() {
    let help = help();
    let readme = readme();
    let options = options(&help);
    assert!(
        options.len() >= 24,
        "parsed only {} options from --help",
        options.len()
    );
    for (flag, env, _) in &options {
        assert!(
            !env.is_empty(),
            "daemon option {flag} has no environment variable"
        );
    }
    check_rows(options, &readme);
}

/// `explain` takes the daemon's timing options (same rows) and its own, which have no
/// environment variables.
#[test]
fn every_explain_option_is_in_the_readme() {
    let options = options(&help_of(&["explain"]));
    let own: Vec<_> = options
        .iter()
        .filter(|(_, env, _)| env.is_empty())
        .collect();
    assert!(own.len() >= 5, "explain shows only {own:?} of its own");
    check_rows(options, &readme());
}

/// `controller` takes the daemon's endpoint, timing, leader election, listener and logging
/// options: the same rows.
#[test]
fn every_controller_option_is_in_the_readme() {
    let options = options(&help_of(&["controller"]));
    assert!(
        options.len() >= 17,
        "controller shows only {} options",
        options.len()
    );
    check_rows(options, &readme());
}

fn check_rows(options: Vec<(String, String, Option<String>)>, readme: &str) {
    for (flag, env, default) in options {
        let row = readme
            .lines()
            .find(|line| line.starts_with(&format!("| `{flag}` |")))
            .unwrap_or_else(|| panic!("README has no options row for {flag}"));
        assert!(
            env.is_empty() || row.contains(&format!("`{env}`")),
            "README row of {flag} lacks `{env}`: {row}"
        );
        if let Some(default) = default {
            assert!(
                row.contains(&format!("`{default}`")) || row.contains(&default),
                "README row of {flag} lacks the default {default}: {row}"
            );
        }
    }
}

#[test]
fn every_metric_is_in_the_readme() {
    let fixture = Fixture::new("docs-metrics", 900);
    let mut daemon = fixture.spawn(&[]);
    eventually("the first token", Duration::from_secs(10), || {
        fixture.read_token().is_some()
    });
    let (_, text) = daemon.get("/metrics");
    let readme = readme();
    let families: Vec<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|rest| match rest.split_once(' ') {
            Some((name, "counter")) => format!("{name}_total"),
            Some((name, _)) => name.to_owned(),
            None => rest.to_owned(),
        })
        .collect();
    assert!(families.len() >= 8, "{families:?}");
    for name in families {
        assert!(
            readme.contains(&format!("`{name}")),
            "README does not document {name}"
        );
    }
}

#[test]
fn the_chart_defaults_match_the_binary() {
    let values = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/fiskil-token-refresher/values.yaml"
    ))
    .unwrap();
    let top_level: std::collections::HashMap<&str, &str> = values
        .lines()
        .filter(|line| !line.starts_with([' ', '#']))
        .filter_map(|line| line.split_once(": "))
        .map(|(key, value)| (key, value.trim().trim_matches('"')))
        .collect();
    let mut compared = 0;
    for (flag, _, default) in options(&help()) {
        let Some(default) = default else { continue };
        let mut key = String::new();
        let mut upper = false;
        for c in flag.trim_start_matches("--").chars() {
            match c {
                '-' => upper = true,
                c if upper => {
                    key.push(c.to_ascii_uppercase());
                    upper = false;
                }
                c => key.push(c),
            }
        }
        if let Some(value) = top_level.get(key.as_str()) {
            assert_eq!(*value, default, "chart value {key} differs from {flag}");
            compared += 1;
        }
    }
    assert!(
        compared >= 11,
        "compared only {compared} chart values with the binary's defaults"
    );
}

#[test]
fn every_listener_bound_is_in_the_readme_with_its_value() {
    let readme = readme();
    let mut shown_as: std::collections::HashMap<String, String> = Default::default();
    for source in ["src/serve.rs", "src/reach/proxy.rs"] {
        let text =
            std::fs::read_to_string(format!("{}/{source}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        for line in text.lines() {
            let Some(rest) = line
                .strip_prefix("pub const ")
                .or_else(|| line.strip_prefix("pub(crate) const "))
            else {
                continue;
            };
            let (name, rest) = rest.split_once(':').unwrap();
            let expr = rest.split_once('=').unwrap().1.trim().trim_end_matches(';');
            let shown = match expr.strip_prefix("Duration::from_secs(") {
                Some(secs) => format!("{} s", secs.trim_end_matches(')')),
                None if shown_as.contains_key(expr) => shown_as[expr].clone(),
                None => {
                    let value: u64 = expr
                        .split('*')
                        .map(|n| n.trim().replace('_', "").parse::<u64>().unwrap())
                        .product();
                    if value % 1024 == 0 {
                        format!("{} KiB", value / 1024)
                    } else {
                        value.to_string()
                    }
                }
            };
            let row = readme
                .lines()
                .find(|l| l.starts_with("| `") && l.contains(&format!("`{name}`")))
                .unwrap_or_else(|| panic!("README's bounds table lacks {name} ({source})"));
            assert!(
                row.contains(&shown),
                "README row of {name} lacks {shown}: {row}"
            );
            shown_as.insert(name.to_owned(), shown);
        }
    }
    assert!(
        shown_as.len() >= 10,
        "only {} bounds checked",
        shown_as.len()
    );
}

/// `--version` names the version, the git commit the binary was built from and its build profile,
/// as the README says; a binary built from this checkout names its HEAD.
#[test]
fn version_names_the_commit_and_the_build_profile() {
    let output = Command::new(support::Daemon::binary())
        .arg("--version")
        .output()
        .expect("run --version");
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let line = text.trim_end();
    let prefix = concat!(
        "fiskil-token-refresher ",
        env!("CARGO_PKG_VERSION"),
        " (commit "
    );
    let rest = line
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{line:?} does not start with {prefix:?}"));
    let (commit, profile) = rest
        .strip_suffix(" build)")
        .and_then(|r| r.split_once(", "))
        .unwrap_or_else(|| panic!("{line:?} does not end with \", PROFILE build)\""));
    assert!(["debug", "release"].contains(&profile), "{line:?}");
    let head = Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8(o.stdout).unwrap().trim().to_owned());
    match head {
        Some(head) => assert_eq!(commit, head, "{line:?} should name this checkout's HEAD"),
        None => assert!(commit == "unknown" || commit.bytes().all(|b| b.is_ascii_hexdigit())),
    }
    assert!(
        readme().contains("fiskil-token-refresher --version"),
        "the README shows --version"
    );
}
