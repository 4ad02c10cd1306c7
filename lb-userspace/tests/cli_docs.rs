//! Shell completions and the man page, generated from the real binary's clap definitions.
use std::process::Command;

const XLB: &str = env!("CARGO_BIN_EXE_xlb");

fn xlb(args: &[&str]) -> String {
    let out = Command::new(XLB).args(args).output().unwrap();
    assert!(out.status.success(), "xlb {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn completions_cover_the_subcommands() {
    let bash = xlb(&["completions", "bash"]);
    assert!(bash.contains("complete -F _xlb"), "a bash completion script: {bash}");
    for word in ["realserver", "service", "teardown", "completions"] {
        assert!(bash.contains(word), "bash completion lacks {word}");
    }
    assert!(xlb(&["completions", "zsh"]).starts_with("#compdef xlb"));
    assert!(xlb(&["completions", "fish"]).contains("complete -c xlb"));
}

#[test]
fn man_page_is_roff_with_the_subcommands() {
    let man = xlb(&["man"]);
    assert!(man.contains(".TH xlb 1"), "{man}");
    for subcommand in ["run", "service", "real", "list", "counters", "realserver", "completions", "man"] {
        assert!(man.contains(&format!("xlb\\-{subcommand}(1)")), "man page lacks {subcommand}: {man}");
    }
    assert!(!man.contains("http\\-serve"), "hidden commands stay out of the man page");
}

#[test]
fn man_dir_gets_a_page_per_subcommand() {
    let dir = std::env::temp_dir().join(format!("xlb-man-{}", lb_userspace::netns::run_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(XLB).arg("man").arg("--dir").arg(&dir).output().unwrap();
    let pages: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for page in ["xlb.1", "xlb-realserver.1", "xlb-realserver-setup.1", "xlb-service-add.1", "xlb-completions.1"] {
        assert!(pages.iter().any(|p| p == page), "{page} missing from {pages:?}");
    }
    assert!(!pages.iter().any(|p| p.contains("http-serve") || p.contains("help")), "{pages:?}");
}

/// The README's examples are what the CLI takes: no `--json` flag (the global
/// `--output json` is what exists), and every `xlb ipvsadm …` line of its shell blocks
/// is a command line ipvsadm's parser accepts.
#[test]
fn readme_examples_are_what_the_cli_takes() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    assert!(!readme.contains("--json"), "README shows a --json flag; xlb has the global --output json");
    let mut in_shell = false;
    let mut checked = 0;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_shell = line == "```sh";
            continue;
        }
        let Some(rest) = line.trim_start().strip_prefix("xlb ipvsadm") else { continue };
        if !in_shell {
            continue;
        }
        // The command up to a shell operator or comment.
        let command = rest.split(['#', '>', '<', '&', ';']).next().unwrap();
        let args: Vec<String> = command.split_whitespace().map(String::from).collect();
        if let Err(e) = lb_userspace::ipvsadm::parse(&args) {
            panic!("README: `xlb ipvsadm{command}` is refused: {}", e.message);
        }
        checked += 1;
    }
    assert!(checked >= 4, "the README's ipvsadm examples were found ({checked})");
}
