//! xlb's controller library: everything the `xlb` binary does, usable by tests.
pub mod config;
pub mod decap;
pub mod demo;
pub mod ebpf;
pub mod fixtures;
pub mod httpd;
pub mod listing;
pub mod loader;
pub mod maps;
pub mod netns;
pub mod nexthop;
pub mod ops;
pub mod realserver;
pub mod rtnl;
pub mod run;
pub mod tables;
pub mod testbed;
