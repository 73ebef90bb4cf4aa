//! Running as one of many replicas for a whole cluster: leader election and Kubernetes Events.

pub mod events;
pub mod lease;
