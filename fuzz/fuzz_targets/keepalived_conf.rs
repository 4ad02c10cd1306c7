//! keepalived.conf (`xlb import keepalived`, `--keepalived-conf`).
//!
//! Properties: a file is either refused with an error that names the file and a line,
//! or imported to a config that `xlb apply` reads back to the same model (the import
//! checks this itself and reports a failure as a bug, which is a crash here); reading the
//! same file twice gives the same config and the same warnings.
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};

use xlb_core::{config, keepalived};
use libfuzzer_sys::fuzz_target;

static RUN: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|data: &[u8]| {
    // The parser reads files (and globbed includes relative to them): one private folder
    // per input, so an `include *` sees only the input itself.
    let dir = std::env::temp_dir().join(format!("xlb-fuzz-keepalived-{}-{}", std::process::id(), RUN.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keepalived.conf");
    std::fs::write(&file, data).unwrap();
    let first = keepalived::load(&file);
    let second = keepalived::load(&file);
    let _ = std::fs::remove_dir_all(&dir);
    match (first, second) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.config, b.config, "the same file imported twice differs");
            assert_eq!(format!("{:?}", a.warnings), format!("{:?}", b.warnings), "warnings differ");
            let back = config::parse(&a.toml()).unwrap_or_else(|e| panic!("an import does not read back: {e:#}\n{}", a.toml()));
            assert_eq!(back, a.config, "an import reads back to another model");
        }
        (Err(a), Err(b)) => {
            let (a, b) = (format!("{a:#}"), format!("{b:#}"));
            assert_eq!(a, b, "the same file refused differently");
            assert!(!a.contains("a bug"), "{a}");
        }
        (a, b) => panic!("the same file once accepted, once refused: {:?} / {:?}", a.map(|i| i.config), b.map(|i| i.config)),
    }
});
