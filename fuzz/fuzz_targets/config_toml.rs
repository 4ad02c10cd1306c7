//! The TOML config (`xlb run --config`, `xlb apply`, and the file the daemon saves its
//! desired state in).
//!
//! Properties: a config that parses, written back with `config::to_toml`, parses to the
//! same model, and writing that again gives the same text (the daemon saves its state
//! in this form and reads it at the next start).
#![no_main]

use xlb_core::config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(cfg) = config::parse(text) else { return };
    let saved = config::to_toml(&cfg);
    let again = config::parse(&saved).unwrap_or_else(|e| panic!("a saved config does not parse: {e:#}\n{saved}"));
    assert_eq!(again, cfg, "a saved config parses to another model:\n{saved}");
    assert_eq!(config::to_toml(&again), saved, "saving is not stable");
});
