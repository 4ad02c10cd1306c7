//! ipvsadm command lines (`xlb ipvsadm ARGS`, `xlbadm ARGS`): the input is split into
//! arguments at whitespace, as a shell would split an LVS script's line.
//!
//! Properties:
//! - parsing is deterministic (the same argv gives the same invocation or error);
//! - a refused command line leaves with ipvsadm's statuses (2 for its checks, 255 for
//!   popt's and for what xlb does not do) and says why (a non-empty message);
//! - the same line in a restore file (`-R`) is refused with the same words and status,
//!   prefixed with "line 1:", and an accepted add/edit/delete line restores to exactly
//!   one request: the command line and the restore file read one grammar.
#![no_main]

use xlb_core::ipvsadm::{Command, EXIT_FAILURE, EXIT_USAGE, parse, restore_requests};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let args: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    let parsed = parse(&args);
    assert_eq!(parsed, parse(&args), "parsing is deterministic");
    if let Err(e) = &parsed {
        assert!(e.status == EXIT_USAGE || e.status == EXIT_FAILURE, "status {} for {:?}", e.status, e.message);
        assert!(!e.message.trim().is_empty(), "a refusal says why");
    }
    // The restore file's own rewrites (a leading `ipvsadm`, bare `ops`/`pe`, comments)
    // and an empty line make it read a different command line: compare only the rest.
    let rewritten = args.is_empty() || args[0].starts_with('#') || args.iter().any(|a| matches!(a.as_str(), "ipvsadm" | "ops" | "pe"));
    if rewritten {
        return;
    }
    let restored = restore_requests(&args.join(" "));
    match (&parsed, &restored) {
        (Err(p), Err(r)) => {
            assert_eq!(r.message, format!("line 1: {}", p.message));
            assert_eq!(r.status, p.status);
        }
        (Err(p), Ok(_)) => panic!("the command line is refused ({}) but restores", p.message),
        (Ok(inv), restored) => {
            let mutation = matches!(
                inv.command,
                Command::AddService
                    | Command::EditService
                    | Command::DelService
                    | Command::AddServer
                    | Command::EditServer
                    | Command::DelServer
                    | Command::Zero
            );
            if mutation {
                let requests = restored.as_ref().unwrap_or_else(|e| panic!("{:?} parses but does not restore: {}", inv.command, e.message));
                assert_eq!(requests.len(), 1);
            } else if matches!(inv.command, Command::List | Command::Save | Command::Restore | Command::Help | Command::Version) {
                assert!(restored.is_err(), "{:?} is not a change a restore file can make", inv.command);
            }
        }
    }
});
