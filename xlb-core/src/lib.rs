//! xlb's core library: the model and its map sync, loader, next hops, health checks,
//! API types, config and importers, the daemon; everything the `xlb` binary does.
pub mod api;
pub mod config;
pub mod daemon;
pub mod decap;
pub mod ebpf;
pub mod health;
pub mod ipvsadm;
pub mod keepalived;
pub mod listing;
pub mod loader;
pub mod maps;
pub mod metrics;
pub mod netns;
pub mod nexthop;
pub mod observe;
pub mod offline;
pub mod ops;
pub mod realserver;
pub mod reconcile;
pub mod rtnl;
pub mod run;
pub mod sd_notify;
pub mod tables;
pub mod top;
pub mod trace;
pub mod web;
