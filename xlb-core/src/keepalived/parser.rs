//! keepalived.conf's grammar, as keepalived's lib/parser.c reads it: one statement a
//! line (keyword and words), `{ … }` blocks that nest, `#` and `!` comments, words in
//! double quotes, and `include PATTERN` anywhere (a glob with braces, relative to the
//! including file's directory, as keepalived's read_conf_file chdir()s there).
//!
//! Beyond lib/parser.c: `{` and `}` are words of their own even when written against
//! another word (`url{`), so `TCP_CHECK { connect_timeout 3 }` on one line reads as
//! keepalived 2.x reads it.
use std::{
    ffi::{CStr, CString},
    fmt,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Result, bail};

/// Where a statement is: file and 1-based line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loc {
    pub file: Arc<Path>,
    pub line: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One statement: its keyword, its other words, and its block if it opens one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub keyword: String,
    pub args: Vec<String>,
    pub block: Option<Vec<Node>>,
    pub at: Loc,
}

/// A note the reader or the import leaves for the operator (not an error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub at: Loc,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

#[derive(Debug, PartialEq)]
enum Tok {
    Word(String),
    Open,
    Close,
    EndOfLine,
}

/// How deep includes may nest (a file including itself would never end).
const MAX_INCLUDE_DEPTH: usize = 16;

/// Reads `path` and everything it includes into statements. A syntax error (an unclosed
/// block or quote, a `}` too many, a missing file) refuses the whole file and names
/// file and line; an include pattern matching nothing is a warning, as in keepalived.
pub fn read(path: &Path) -> Result<(Vec<Node>, Vec<Warning>)> {
    let mut toks = Vec::new();
    let mut warnings = Vec::new();
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    tokenize(Arc::from(path), &text, 0, &mut toks, &mut warnings)?;
    let mut pos = 0;
    let nodes = block(&toks, &mut pos, None)?;
    Ok((nodes, warnings))
}

/// Splits one line into words: double quotes keep spaces (and lose the quotes); a `#`
/// or `!` at the start of a word outside quotes starts a comment.
fn words(line: &str, at: &Loc) -> Result<Vec<Tok>> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    let mut word = String::new();
    let mut in_word = false;
    let flush = |word: &mut String, in_word: &mut bool, out: &mut Vec<Tok>| {
        if *in_word {
            out.push(Tok::Word(std::mem::take(word)));
            *in_word = false;
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                let mut closed = false;
                for q in chars.by_ref() {
                    if q == '"' {
                        closed = true;
                        break;
                    }
                    word.push(q);
                }
                if !closed {
                    bail!("{at}: unmatched quote");
                }
                in_word = true;
            }
            '#' | '!' if !in_word => break,
            '{' => {
                flush(&mut word, &mut in_word, &mut out);
                out.push(Tok::Open);
            }
            '}' => {
                flush(&mut word, &mut in_word, &mut out);
                out.push(Tok::Close);
            }
            c if c.is_whitespace() => flush(&mut word, &mut in_word, &mut out),
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    flush(&mut word, &mut in_word, &mut out);
    Ok(out)
}

#[derive(Debug)]
struct Located(Tok, Loc);

/// What lib/parser.c does to a line before splitting it: `@ID` lines belong to the
/// instance ID only, `@^ID` lines to every other one (xlb is the instance named by the
/// host's short name, keepalived's default for `-i`); `$NAME=VALUE` defines a
/// parameter, and `$NAME` / `${NAME}` are replaced by its value afterwards.
struct Preprocess {
    instance: String,
    defs: Vec<(String, String)>,
}

impl Preprocess {
    fn new() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        Self { instance: host.trim().split('.').next().unwrap_or_default().to_string(), defs: Vec::new() }
    }

    /// The line to read, or None for a line this instance skips (or a definition).
    fn line(&mut self, line: &str, at: &Loc) -> Result<Option<String>> {
        let t = line.trim_start();
        let mut line = line.to_string();
        if let Some(rest) = t.strip_prefix('@') {
            let (id, body) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let mine = match id.strip_prefix('^') {
                Some(not) => not != self.instance,
                None => id == self.instance,
            };
            if !mine {
                return Ok(None);
            }
            line = body.to_string();
        }
        let t = line.trim_start();
        if let Some(def) = t.strip_prefix('$')
            && let Some((name, value)) = def.split_once('=')
            && !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            if value.trim_end().ends_with('\\') {
                bail!("{at}: multi-line definitions are not supported");
            }
            let value = self.expand(value.trim());
            self.defs.retain(|(n, _)| n != name);
            self.defs.push((name.to_string(), value));
            return Ok(None);
        }
        Ok(Some(self.expand(&line)))
    }

    fn expand(&self, line: &str) -> String {
        if !line.contains('$') || self.defs.is_empty() {
            return line.to_string();
        }
        let mut out = line.to_string();
        // Longest names first, so that $AB is not taken for $A followed by B.
        let mut defs: Vec<&(String, String)> = self.defs.iter().collect();
        defs.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
        for (name, value) in defs {
            out = out.replace(&format!("${{{name}}}", name = name), value);
            let mut res = String::new();
            let mut rest = out.as_str();
            let pat = format!("${name}");
            while let Some(i) = rest.find(&pat) {
                let after = &rest[i + pat.len()..];
                res.push_str(&rest[..i]);
                if after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                    res.push_str(&pat);
                } else {
                    res.push_str(value);
                }
                rest = after;
            }
            res.push_str(rest);
            out = res;
        }
        out
    }
}

fn tokenize(file: Arc<Path>, text: &str, depth: usize, out: &mut Vec<Located>, warnings: &mut Vec<Warning>) -> Result<()> {
    tokenize_with(file, text, depth, out, warnings, &mut Preprocess::new())
}

fn tokenize_with(
    file: Arc<Path>,
    text: &str,
    depth: usize,
    out: &mut Vec<Located>,
    warnings: &mut Vec<Warning>,
    pre: &mut Preprocess,
) -> Result<()> {
    for (i, line) in text.lines().enumerate() {
        let at = Loc { file: file.clone(), line: i + 1 };
        let Some(line) = pre.line(line, &at)? else { continue };
        let toks = words(&line, &at)?;
        if let [Tok::Word(kw), Tok::Word(pattern)] = toks.as_slice()
            && kw == "include"
        {
            if depth >= MAX_INCLUDE_DEPTH {
                bail!("{at}: includes nest deeper than {MAX_INCLUDE_DEPTH} (does a file include itself?)");
            }
            let dir = file.parent().unwrap_or(Path::new("."));
            let paths = glob(pattern, dir).map_err(|e| anyhow::anyhow!("{at}: include {pattern}: {e}"))?;
            if paths.is_empty() {
                warnings.push(Warning { at: at.clone(), message: format!("include: no file matches `{pattern}`") });
            }
            for p in paths {
                let text = std::fs::read_to_string(&p).map_err(|e| anyhow::anyhow!("{at}: include {}: {e}", p.display()))?;
                tokenize_with(Arc::from(p.as_path()), &text, depth + 1, out, warnings, pre)?;
            }
            continue;
        }
        out.extend(toks.into_iter().map(|t| Located(t, at.clone())));
        out.push(Located(Tok::EndOfLine, at));
    }
    Ok(())
}

/// The files `pattern` names (glob(3) with GLOB_BRACE, as keepalived), sorted; a
/// relative pattern is relative to `dir`. Directories are skipped, as keepalived does.
fn glob(pattern: &str, dir: &Path) -> Result<Vec<PathBuf>> {
    let full = if Path::new(pattern).is_absolute() { PathBuf::from(pattern) } else { dir.join(pattern) };
    let c = CString::new(full.as_os_str().as_bytes())?;
    // SAFETY: glob_t is plain data glob() fills in; globfree() releases it, once.
    let mut g: libc::glob_t = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::glob(c.as_ptr(), libc::GLOB_MARK | libc::GLOB_BRACE, None, &mut g) };
    let mut out = Vec::new();
    if rc == 0 {
        for i in 0..g.gl_pathc {
            // SAFETY: gl_pathv holds gl_pathc valid C strings until globfree.
            let p = unsafe { CStr::from_ptr(*g.gl_pathv.add(i)) };
            let p = PathBuf::from(std::ffi::OsStr::from_bytes(p.to_bytes()));
            if !p.as_os_str().as_bytes().ends_with(b"/") {
                out.push(p);
            }
        }
    }
    unsafe { libc::globfree(&mut g) };
    match rc {
        0 | libc::GLOB_NOMATCH => Ok(out),
        _ => bail!("glob failed ({rc})"),
    }
}

/// Statements up to the end of the block opened at `opened` (None: the file's end).
fn block(toks: &[Located], pos: &mut usize, opened: Option<&Loc>) -> Result<Vec<Node>> {
    let mut nodes = Vec::new();
    loop {
        while matches!(toks.get(*pos), Some(Located(Tok::EndOfLine, _))) {
            *pos += 1;
        }
        let Some(Located(tok, at)) = toks.get(*pos) else {
            if let Some(o) = opened {
                bail!("{o}: this block is never closed (a `}}` is missing)");
            }
            return Ok(nodes);
        };
        match tok {
            Tok::Close => {
                if opened.is_none() {
                    bail!("{at}: `}}` closes no block");
                }
                *pos += 1;
                return Ok(nodes);
            }
            Tok::Open => bail!("{at}: `{{` without a keyword before it"),
            Tok::EndOfLine => unreachable!(),
            Tok::Word(_) => {}
        }
        let at = at.clone();
        let mut words = Vec::new();
        while let Some(Located(Tok::Word(w), _)) = toks.get(*pos) {
            words.push(w.clone());
            *pos += 1;
        }
        // The block may open on the statement's line or on a line of its own after it.
        let mut look = *pos;
        while matches!(toks.get(look), Some(Located(Tok::EndOfLine, _))) {
            look += 1;
        }
        let block = if matches!(toks.get(look), Some(Located(Tok::Open, _))) {
            *pos = look + 1;
            Some(self::block(toks, pos, Some(&at))?)
        } else {
            None
        };
        let mut words = words.into_iter();
        let keyword = words.next().expect("a statement starts with a word");
        nodes.push(Node { keyword, args: words.collect(), block, at });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Node>> {
        let dir = std::env::temp_dir().join(format!("xlb-kaparse-{}-{:?}", std::process::id(), std::thread::current().id()));
        std::fs::create_dir_all(&dir)?;
        let f = dir.join("keepalived.conf");
        std::fs::write(&f, text)?;
        let r = read(&f).map(|(n, _)| n);
        std::fs::remove_dir_all(&dir)?;
        r
    }

    #[test]
    fn nested_blocks_comments_quotes() {
        let nodes = parse(
            "! Configuration File for keepalived\nvirtual_server 10.0.0.1 80 {  # web\n  lb_algo wrr\n  real_server 10.0.0.11 80\n  {\n    MISC_CHECK { misc_path \"/bin/check one#two\" }\n  }\n}\n",
        )
        .unwrap();
        assert_eq!(nodes.len(), 1);
        let vs = &nodes[0];
        assert_eq!((vs.keyword.as_str(), vs.args.clone()), ("virtual_server", vec!["10.0.0.1".to_string(), "80".into()]));
        let body = vs.block.as_ref().unwrap();
        assert_eq!(body[0].keyword, "lb_algo");
        assert_eq!(body[0].at.line, 3);
        let rs = &body[1];
        assert_eq!(rs.keyword, "real_server");
        let misc = &rs.block.as_ref().unwrap()[0];
        assert_eq!(misc.block.as_ref().unwrap()[0].args, vec!["/bin/check one#two".to_string()]);
    }

    #[test]
    fn definitions_and_instance_lines() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let me = host.trim().split('.').next().unwrap();
        let nodes = parse(&format!(
            "$VIP=10.0.0.1\n$PORT=80\n$VIPS=x\nvirtual_server $VIP ${{PORT}} {{\n  @{me} lb_algo rr\n  @not-{me} lb_algo wrr\n  @^{me} lb_kind NAT\n  @^not-{me} lb_kind DR\n  notify_up \"$VIPS $PORTX\"\n}}\n"
        ))
        .unwrap();
        let vs = &nodes[0];
        assert_eq!(vs.args, ["10.0.0.1", "80"]);
        let body: Vec<String> = vs.block.as_ref().unwrap().iter().map(|n| format!("{} {}", n.keyword, n.args.join(" "))).collect();
        assert_eq!(body, ["lb_algo rr", "lb_kind DR", "notify_up x $PORTX"]);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = |t: &str| format!("{:#}", parse(t).unwrap_err());
        assert!(err("virtual_server 10.0.0.1 80 {\n  lb_algo rr\n").contains("keepalived.conf:1: this block is never closed"));
        assert!(err("a {\n}\n}\n").contains("keepalived.conf:3: `}` closes no block"));
        assert!(err("x\nnotify_up \"/bin/x\n").contains("keepalived.conf:2: unmatched quote"));
        assert!(err("{\n").contains("keepalived.conf:1: `{` without a keyword"));
    }
}
