//! xlb's controller library: everything the `xlb` binary does, usable by tests.
pub mod bench;
pub mod config;
pub mod demo;
pub mod ebpf;
pub mod fixtures;
pub mod httpd;
pub mod listing;
pub mod loader;
pub mod maps;
pub mod neigh;
pub mod netns;
pub mod ops;
pub mod run;
pub mod testbed;
