//! Everything that talks to the Kubernetes API besides the Secret output: the shared client and
//! the pod's identity, the Lease elector, and the Events publisher.

pub(crate) mod client;
pub(crate) mod events;
pub(crate) mod lease;
#[cfg(test)]
pub(crate) mod mock_api;
pub(crate) mod transport;
