//! Cluster mode: `fiskil-token-refresher controller` keeps FiskilTokens' Secrets current, one
//! token request per credential per lifetime however many FiskilTokens share it.

pub(crate) mod resources;
