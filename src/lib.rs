//! Keeps a valid Fiskil API bearer token in a file and/or a Kubernetes Secret, refreshed
//! before it expires.
//!
//! # The crate map
//! [`App::build`] (in `app`) turns a [`config::Config`] into every component; [`App::run`]
//! spawns these tasks on one tracker:
//! - the refresh loop (`refresher`): requests tokens (`fiskil`) on the schedule (`schedule`),
//!   reads the credentials' watch channel (`credentials`), waits on the leadership gate
//!   (`leadership`), and publishes each token on the token channel (`fiskil::Tokens`);
//! - one writer per output (`sink`: a file, Secrets), each following the token channel and
//!   asking the gate for a permit before each write;
//! - the credential watcher (`credentials`), which sends rotated credentials to the loop;
//! - the last mile (`reach`): notifications, the loopback token endpoint and the proxy, each
//!   following the token channel; the proxy sends early refresh requests to the loop;
//! - the health and metrics server (`admin`, reading `status` and `metrics`);
//! - with Kubernetes (`kubernetes`): the Lease elector, which keeps the gate current, and the
//!   Events publisher, which takes what the loop, the writers and the elector report
//!   (`happenings`);
//! - the signal handler (`signals`): SIGHUP sends a refresh request, SIGTERM/SIGINT start the
//!   drain, a second one aborts it.
//!
//! All listeners share one bounded HTTP server (`serve`). `explain` is the timing planner the
//! `explain` subcommand prints.
// One call into the C allocator (`memory::trim`, glibc only) is allowed; nothing else.
#![deny(unsafe_code)]
#![warn(unreachable_pub, missing_docs)]

mod admin;
mod app;
mod cli;
mod config;
mod controller;
mod credentials;
mod explain;
mod fiskil;
mod happenings;
mod kubernetes;
mod leadership;
mod memory;
mod metrics;
mod reach;
mod refresher;
mod schedule;
mod serve;
mod signals;
mod sink;
mod small_file;
mod status;
mod telemetry;
mod trust;

pub use app::{App, Error};
pub use config::{Args, Command, Config, ConfigError};
pub use controller::{Controller, ControllerArgs, ControllerConfig};
pub use explain::ExplainArgs;

// For the property tests, the fuzz targets and the fleet suite: the parsers of what the token
// endpoint and the credential files send, the schedule, and the takeover margin.
pub use credentials::{CredentialSources, Source};
pub use fiskil::{parse_token_response, MAX_BODY_BYTES, MAX_EXPIRES_IN};
pub use kubernetes::lease::TAKEOVER_MARGIN;
pub use schedule::{parse_retry_after, Failure, Held, Timing};
// For `cargo xtask crds`: the CustomResourceDefinitions of cluster mode.
pub use controller::resources::definitions as custom_resource_definitions;
