//! `xlb list`, `xlb top`, `xlb conns`, `xlb counters`, `xlb status`: what the balancer holds and counts.
use anyhow::Result;
use xlb_core::listing::Output;

use super::show;

/// `xlb counters`: one line per counter, or a JSON object.
pub(crate) fn show_counters(output: Output, counters: Vec<(String, u64)>) -> Result<()> {
    let map: serde_json::Map<String, serde_json::Value> = counters.iter().map(|(k, v)| (k.clone(), (*v).into())).collect();
    show(output, &map, |_| counters.iter().map(|(k, v)| format!("{k:<24} {v}\n")).collect())
}
