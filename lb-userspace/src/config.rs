//! The declarative config file `xlb run --config FILE` loads:
//!
//! ```toml
//! [[service]]
//! proto = "tcp"          # tcp (default) or udp
//! vip = "10.0.0.100"
//! port = 80
//! scheduler = "rr"       # default rr
//! reals = ["10.0.0.11", "10.0.0.12"]
//! ```
//!
//! The whole file is parsed and checked before anything is applied.
use std::{collections::HashSet, net::Ipv4Addr, path::Path};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::ops::{Proto, Scheduler, Service};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    service: Vec<ServiceSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceSection {
    #[serde(default = "default_proto")]
    proto: String,
    vip: String,
    port: u16,
    #[serde(default = "default_scheduler")]
    scheduler: String,
    #[serde(default)]
    reals: Vec<String>,
}

fn default_proto() -> String {
    "tcp".into()
}
fn default_scheduler() -> String {
    "rr".into()
}

/// A checked config: services with their schedulers and real servers.
#[derive(Debug, PartialEq, Eq)]
pub struct Config {
    pub services: Vec<(Service, Scheduler, Vec<Ipv4Addr>)>,
}

pub fn load(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("in {}", path.display()))
}

pub fn parse(text: &str) -> Result<Config> {
    // toml's errors carry line and column.
    let file: File = toml::from_str(text)?;
    let mut services = Vec::new();
    let mut seen = HashSet::new();
    for (i, s) in file.service.iter().enumerate() {
        let at = || format!("service #{} ({}:{})", i + 1, s.vip, s.port);
        let proto: Proto = s.proto.parse().with_context(at)?;
        let vip: Ipv4Addr = s.vip.parse().map_err(|_| anyhow::anyhow!("`{}` is not an IPv4 address", s.vip)).with_context(at)?;
        if s.port == 0 {
            bail!("{}: port 0 is not a port", at());
        }
        let sched: Scheduler = s.scheduler.parse().with_context(at)?;
        let svc = Service { proto, vip, port: s.port };
        if !seen.insert(svc) {
            bail!("{}: Service already exists: {svc}", at());
        }
        let mut reals = Vec::new();
        for r in &s.reals {
            let rip: Ipv4Addr = r.parse().map_err(|_| anyhow::anyhow!("`{r}` is not an IPv4 address")).with_context(at)?;
            if reals.contains(&rip) {
                bail!("{}: Destination already exists: {rip}", at());
            }
            reals.push(rip);
        }
        services.push((svc, sched, reals));
    }
    Ok(Config { services })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_file() {
        let cfg = parse(
            r#"
            [[service]]
            vip = "10.0.0.100"
            port = 80
            reals = ["10.0.0.11", "10.0.0.12"]
            [[service]]
            proto = "udp"
            vip = "10.0.0.100"
            port = 53
            scheduler = "rr"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.services.len(), 2);
        let (svc, sched, reals) = &cfg.services[0];
        assert_eq!(*svc, Service { proto: Proto::Tcp, vip: Ipv4Addr::new(10, 0, 0, 100), port: 80 });
        assert_eq!(*sched, Scheduler::Rr);
        assert_eq!(reals, &[Ipv4Addr::new(10, 0, 0, 11), Ipv4Addr::new(10, 0, 0, 12)]);
        assert_eq!(cfg.services[1].0.proto, Proto::Udp);
    }

    #[test]
    fn rejects_bad_files_with_location() {
        let err = format!("{:#}", parse("[[service]]\nvip = \"10.0.0.1\"\nport = 99999\n").unwrap_err());
        assert!(err.contains("line 3"), "{err}");
        let err = format!("{:#}", parse("[[service]]\nvip = \"10.0.0.1\"\nport = 80\ncolour = 1\n").unwrap_err());
        assert!(err.contains("unknown field `colour`"), "{err}");
        let err = format!("{:#}", parse("[[service]]\nvip = \"10.0.0.300\"\nport = 80\n").unwrap_err());
        assert!(err.contains("not an IPv4 address"), "{err}");
        let err = format!("{:#}", parse("[[service]]\nvip = \"10.0.0.1\"\nport = 80\nscheduler = \"xx\"\n").unwrap_err());
        assert!(err.contains("unknown scheduler"), "{err}");
        let dup = "[[service]]\nvip = \"10.0.0.1\"\nport = 80\n[[service]]\nvip = \"10.0.0.1\"\nport = 80\n";
        assert!(format!("{:#}", parse(dup).unwrap_err()).contains("Service already exists"));
        let dup_real = "[[service]]\nvip = \"10.0.0.1\"\nport = 80\nreals = [\"10.0.0.2\", \"10.0.0.2\"]\n";
        assert!(format!("{:#}", parse(dup_real).unwrap_err()).contains("Destination already exists"));
    }
}
