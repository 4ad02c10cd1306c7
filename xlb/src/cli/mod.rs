//! `xlb`'s command groups, one file each: their arguments and what runs them beside
//! main.rs's dispatch.
use anyhow::Result;
use serde::Serialize;
use xlb_core::listing::Output;

pub(crate) mod daemon;
pub(crate) mod frontend;
pub(crate) mod health;
pub(crate) mod import;
pub(crate) mod list;
pub(crate) mod real;
pub(crate) mod service;
pub(crate) mod sorry;

/// Prints a reply as JSON, or as text with `text`.
pub(crate) fn show<T: Serialize>(output: Output, value: &T, text: impl FnOnce(&T) -> String) -> Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Text => print!("{}", text(value)),
    }
    Ok(())
}
