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
    let dir = std::env::temp_dir().join(format!("xlb-man-{}", xlb_core::netns::run_id()));
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
        if let Err(e) = xlb_core::ipvsadm::parse(&args) {
            panic!("README: `xlb ipvsadm{command}` is refused: {}", e.message);
        }
        checked += 1;
    }
    assert!(checked >= 4, "the README's ipvsadm examples were found ({checked})");
}

/// The real command line, compiled in from the binary's source: README's commands are
/// parsed by exactly what `xlb` parses them with.
#[path = "../src/main.rs"]
#[allow(dead_code, unused_imports)]
mod xlb_main;

const README: &str = include_str!("../../README.md");

/// The commands of README's code blocks: continuation lines joined, split at `&&`, `;`
/// and `|`, each as words (quotes removed), without comments, redirections and `&`.
fn readme_commands() -> Vec<(String, Vec<String>)> {
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in README.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            pending += head;
            continue;
        }
        let full = std::mem::take(&mut pending) + line;
        for command in shell_commands(&full) {
            commands.push((full.clone(), command));
        }
    }
    commands
}

/// A small shell word splitter: enough for README's lines (quotes, comments, `&&`, `;`,
/// `|`, `&`, `>`/`<` redirections).
fn shell_commands(line: &str) -> Vec<Vec<String>> {
    let mut commands = vec![Vec::new()];
    let mut word: Option<String> = None;
    let mut chars = line.chars().peekable();
    let mut skip_next_word = false;
    let end_word = |word: &mut Option<String>, commands: &mut Vec<Vec<String>>, skip: &mut bool| {
        if let Some(w) = word.take() {
            if std::mem::take(skip) {
                return;
            }
            commands.last_mut().unwrap().push(w);
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                let w = word.get_or_insert_with(String::new);
                for q in chars.by_ref() {
                    if q == c {
                        break;
                    }
                    w.push(q);
                }
            }
            '#' if word.is_none() => break,
            // Inside a word, `a|b` is README's notation for alternatives, not a pipe.
            '|' if word.is_some() => word.as_mut().unwrap().push(c),
            ' ' | '\t' => end_word(&mut word, &mut commands, &mut skip_next_word),
            ';' | '|' | '&' => {
                end_word(&mut word, &mut commands, &mut skip_next_word);
                if chars.peek() == Some(&c) {
                    chars.next();
                }
                commands.push(Vec::new());
            }
            '>' | '<' => {
                end_word(&mut word, &mut commands, &mut skip_next_word);
                skip_next_word = true;
            }
            _ => word.get_or_insert_with(String::new).push(c),
        }
    }
    end_word(&mut word, &mut commands, &mut skip_next_word);
    commands.retain(|c| !c.is_empty());
    commands
}

/// Every concrete command a README line stands for: each `[--optional …]` group left out
/// and put in, each `a|b|c` alternative taken, `…` dropped.
fn expansions(words: &[String]) -> Vec<Vec<String>> {
    let mut variants: Vec<Vec<String>> = vec![Vec::new()];
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        if w.starts_with("[-") {
            // An optional group, up to the word that closes it.
            let mut group = Vec::new();
            let mut j = i;
            loop {
                let part = words[j].trim_start_matches('[');
                let closes = part.ends_with(']');
                group.push(part.trim_end_matches(']').to_string());
                if closes || j + 1 == words.len() {
                    break;
                }
                j += 1;
            }
            let with: Vec<Vec<String>> = expansions(&group);
            variants = variants
                .into_iter()
                .flat_map(|v| {
                    let mut out = vec![v.clone()];
                    out.extend(with.iter().map(|g| [v.clone(), g.clone()].concat()));
                    out
                })
                .collect();
            i = j + 1;
            continue;
        }
        if w == "…" {
            i += 1;
            continue;
        }
        let choices: Vec<String> =
            if w.contains('|') && !w.starts_with('[') { w.split('|').map(String::from).collect() } else { vec![w.clone()] };
        variants = variants.into_iter().flat_map(|v| choices.iter().map(move |c| [v.clone(), vec![c.clone()]].concat())).collect();
        i += 1;
    }
    variants
}

#[test]
fn readme_expansion_understands_its_notation() {
    let words = |s: &str| shell_commands(s).remove(0);
    assert_eq!(
        shell_commands("xlb ipvsadm -S -n > rules && xlb ipvsadm -C; xlb x 'a b' # c"),
        [vec!["xlb", "ipvsadm", "-S", "-n"], vec!["xlb", "ipvsadm", "-C"], vec!["xlb", "x", "a b"]]
    );
    assert_eq!(expansions(&words("xlb list [--stats] [--output json]")).len(), 4);
    assert_eq!(
        expansions(&words("run [--mode auto|native] x")),
        [vec!["run", "x"], vec!["run", "--mode", "auto", "x"], vec!["run", "--mode", "native", "x"]]
    );
    assert_eq!(expansions(&words("tcp [2001:db8::100]:80")), [vec!["tcp", "[2001:db8::100]:80"]], "IPv6 brackets stay");
}

#[test]
fn every_xlb_command_in_the_readme_is_one_xlb_accepts() {
    use clap::CommandFactory;
    let mut checked = 0;
    let mut refused = Vec::new();
    for (line, command) in readme_commands() {
        if command.first().map(String::as_str) != Some("xlb") {
            continue;
        }
        for words in expansions(&command) {
            checked += 1;
            if let Err(e) = xlb_main::Cli::command().try_get_matches_from(&words) {
                refused.push(format!("{line}\n  as {words:?}: {}", e.render()));
                continue;
            }
            // ipvsadm's words go through xlb's ipvsadm parser as well.
            if words.get(1).map(String::as_str) == Some("ipvsadm") {
                if let Err(e) = xlb_core::ipvsadm::parse(&words[2..]) {
                    refused.push(format!("{line}\n  as {words:?}: ipvsadm: {e:?}"));
                }
            }
        }
    }
    assert!(checked > 40, "README's code blocks hold xlb commands: found only {checked}");
    assert!(refused.is_empty(), "README shows commands xlb refuses:\n{}", refused.join("\n"));
}

#[test]
fn every_counter_the_readme_names_exists() {
    let known: Vec<&str> = lb_common::counter::NAMES.iter().chain(lb_common::decap_counter::NAMES.iter()).copied().collect();
    let words = README.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
    let mut named: Vec<&str> = words
        .filter(|w| ["tx_", "drop_", "pass_"].iter().any(|p| w.starts_with(p) && w.len() > p.len()))
        .chain(README.contains("persist_table_full").then_some("persist_table_full"))
        .collect();
    named.sort();
    named.dedup();
    assert!(named.len() >= 10, "README names counters: {named:?}");
    let unknown: Vec<&&str> = named.iter().filter(|n| !known.contains(n)).collect();
    assert!(unknown.is_empty(), "README names counters xlb does not have: {unknown:?} (it has {known:?})");
}
