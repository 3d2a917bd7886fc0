//! The layering test: reads every `.rs` file of the library under `src/` (not `src/main.rs`
//! and `src/cli/`, which are the binary), finds every `crate::…` path in code (`use` lines,
//! `use crate::{…}` groups over several lines, inline paths such as `crate::hub::Hub`;
//! comments, doc comments and string literals are skipped), and fails, naming the file, the
//! line and the edge, when a module uses a layer its row in [`LAYERS`] does not list.
//!
//! The reader is a small lexer, not a Rust parser: it blanks comments and literals, then
//! looks for the token `crate` followed by `::`. The tests at the bottom feed it synthetic
//! files, so the checker is seen to fail as well as to pass.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::Path;

/// A row's marker for "may use every layer".
const ANY: &str = "*";

/// The layers, lowest first, and what each may use besides itself. A layer is a top-level
/// module of the library (`src/NAME.rs` or `src/NAME/`); `lib` is `src/lib.rs` and the items
/// it defines itself (the default ports).
const LAYERS: &[(&str, &[&str])] = &[
    // Pure codecs: bytes in, values out, no I/O. Everything else is built on them, so they
    // can be unit-tested and fuzzed alone.
    ("protocol", &[]),
    // The simulator's clock (tests move it): a primitive every layer may read, so it must
    // depend on nothing.
    ("clock", &[]),
    // Progress bars on a terminal (indicatif): counts the long work above it reports, so
    // it needs no other layer.
    ("progress", &[]),
    // Plain configuration values; they speak in protocol terms (environments) and nothing
    // else, so the CLI can build them without starting anything.
    ("settings", &["protocol"]),
    // `serve`'s configuration (file, variables, flags) mapped onto the settings; plain
    // values too, so the CLI and any launcher can resolve it without starting anything.
    ("config", &["protocol", "settings"]),
    // Identity: minting and storing certificates and keys, Apple's certificate profile,
    // provider tokens. Needs the protocol's environments and the time a token is issued.
    ("pki", &["protocol", "clock"]),
    // rustls configurations, built from the PKI's certificates.
    ("tls", &["protocol", "pki"]),
    // A framed connection over any async stream: it moves protocol frames and nothing else,
    // so servers and clients share it.
    ("connection", &["protocol"]),
    // The routing core: rules over protocol values, timed by the clock, bounded by the
    // settings. It never sees a socket or a certificate, so its state is testable without
    // TLS; the endpoints feed it.
    // Durable state: rows in one SQLite file, written by one thread. Plain strings and
    // bytes, so it needs no other layer and the hub alone decides what a row means.
    ("store", &[]),
    ("hub", &["protocol", "clock", "settings", "store"]),
    // The other side of every endpoint: what an outside provider or device has (codecs, a
    // clock, certificates, TLS, a framed connection). Never the hub or the servers, so a
    // client proves the wire protocol alone is enough.
    ("client", &["protocol", "clock", "pki", "tls", "connection"]),
    // Everything that accepts connections: TLS with the PKI, frames over connections,
    // decisions by the hub, limits from the settings.
    (
        "server",
        &[
            "protocol",
            "clock",
            "settings",
            "pki",
            "tls",
            "connection",
            "hub",
        ],
    ),
    // The simulator's own actors: in-process devices (clients, over the wire like any
    // other) that the control API drives through a trait `server` defines, and a test
    // provider. Above both, because it is a client that implements a server's trait; it
    // reads the hub (a token's owner, the binary API's outcome) but never writes to it.
    (
        "actors",
        &[
            "protocol",
            "clock",
            "settings",
            "pki",
            "tls",
            "connection",
            "hub",
            "client",
            "server",
        ],
    ),
    // Builds the hub and starts the servers and the actors; it may start clients too
    // (webhooks), which is why it sits above them all.
    (
        "sim",
        &[
            "protocol",
            "clock",
            "settings",
            "pki",
            "tls",
            "connection",
            "store",
            "hub",
            "client",
            "server",
            "actors",
        ],
    ),
    // Scenario files: the format names the hub's fault spec and protocol values; the run
    // starts a simulator, drives its actors (their types are the control API's, in
    // `server`), mints credentials (pki, tls) and pushes through the clients, and reads the
    // hub's delivery log for its verdicts; a fleet's start is shown on a progress bar. It
    // never frames bytes itself (no `connection`).
    (
        "scenario",
        &[
            "protocol", "clock", "settings", "pki", "tls", "hub", "client", "server", "actors",
            "sim", "progress",
        ],
    ),
    // The guided tour (`apns-sim tour`): starts its own simulator and drives it through
    // clients, narrating from the hub's events. Above sim; only the binary uses it.
    (
        "tour",
        &[
            "protocol",
            "clock",
            "settings",
            "pki",
            "tls",
            "connection",
            "hub",
            "client",
            "server",
            "actors",
            "sim",
        ],
    ),
    // The load generator (`apns-sim bench`): starts a simulator (sim) or targets one over
    // the wire like any provider and device (clients), with the PKI's credentials. It never
    // reads the hub: what it counts comes back over the wire, so it measures the anchors too.
    // Its pump counts on a progress bar.
    (
        "loadgen",
        &[
            "protocol", "clock", "pki", "tls", "client", "sim", "progress",
        ],
    ),
    // `apns-sim run` (Linux): namespaces, bind mounts and a relay around a simulator on
    // Apple's ports (sim, with the PKI's CA and the settings), handed to the scenario
    // harness that runs COMMAND and judges. Above scenario; only the binary uses it.
    ("sandbox", &["clock", "settings", "pki", "sim", "scenario"]),
    // The crate root declares every module, so it may use any. Its own items sit above every
    // module: no row lists `lib`, and a constant a layer needs belongs in that layer.
    ("lib", &[ANY]),
];

/// The library's layer of a file (a path relative to `src/`, with `/` separators), or `None`
/// for the binary's files, which the test does not read.
fn module_of(path: &str) -> Option<&str> {
    if path == "main.rs" || path.starts_with("cli/") {
        return None;
    }
    if path == "lib.rs" {
        return Some("lib");
    }
    let first = path.split('/').next().unwrap_or(path);
    Some(first.strip_suffix(".rs").unwrap_or(first))
}

/// The row of `layer`, if it has one.
fn row(layer: &str) -> Option<&'static [&'static str]> {
    LAYERS
        .iter()
        .find(|(name, _)| *name == layer)
        .map(|(_, uses)| *uses)
}

/// Whether `from` may use `to` according to [`LAYERS`].
fn allowed(from: &str, to: &str) -> bool {
    from == to || row(from).is_some_and(|uses| uses.contains(&ANY) || uses.contains(&to))
}

/// Every layer `from` may reach through its row and theirs (not itself unless by a cycle).
fn reachable(from: &str) -> BTreeSet<&'static str> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<&str> = row(from).unwrap_or(&[]).to_vec();
    while let Some(layer) = todo.pop() {
        if layer != ANY && seen.insert(layer) {
            todo.extend(row(layer).unwrap_or(&[]));
        }
    }
    seen
}

/// `src` with every comment (line, block, doc) and every string, byte-string, raw-string
/// and character literal replaced by spaces. Newlines stay, so line numbers do not move.
fn blank_comments_and_literals(src: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        // Line comments, including `///` and `//!`.
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                blank(&mut out, chars[i]);
                i += 1;
            }
            continue;
        }
        // Block comments, which nest, including `/** */` and `/*! */`.
        if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
            continue;
        }
        // Raw strings: `r"…"`, `r#"…"#`, `br#"…"#` (the `r`, or the `b` before it, starts a
        // token; `r#type`, a raw identifier, has no quote after its hashes).
        let token_start = |k: usize| k == 0 || !ident(chars[k - 1]);
        if c == 'r' && (token_start(i) || (chars[i - 1] == 'b' && token_start(i - 1))) {
            let mut j = i + 1;
            while chars.get(j) == Some(&'#') {
                j += 1;
            }
            if chars.get(j) == Some(&'"') {
                let hashes = j - i - 1;
                out.push('r');
                out.push_str(&" ".repeat(hashes + 1));
                i = j + 1;
                while i < chars.len() {
                    if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
                        out.push_str(&" ".repeat(hashes + 1));
                        i += hashes + 1;
                        break;
                    }
                    blank(&mut out, chars[i]);
                    i += 1;
                }
                continue;
            }
        }
        // Strings and byte strings, with escapes; they may span lines.
        if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() {
                match chars[i] {
                    '\\' => {
                        blank(&mut out, chars[i]);
                        if let Some(&escaped) = chars.get(i + 1) {
                            blank(&mut out, escaped);
                        }
                        i += 2;
                    }
                    '"' => {
                        out.push(' ');
                        i += 1;
                        break;
                    }
                    other => {
                        blank(&mut out, other);
                        i += 1;
                    }
                }
            }
            continue;
        }
        // Character literals (`'x'`, `'"'`, `'\''`, `'\u{1F600}'`); a lifetime (`'a`) stays.
        if c == '\'' {
            let end = if next == Some('\\') {
                (i + 2..chars.len()).find(|&j| chars[j] == '\'' && j > i + 2)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            if let Some(end) = end {
                for &ch in &chars[i..=end] {
                    blank(&mut out, ch);
                }
                i = end + 1;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// One `crate::…` path found in code.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CratePath {
    /// 1-based line of the path's first segment (inside a group: of that element).
    line: usize,
    /// The first segment after `crate::`: a top-level module or an item of `lib.rs`.
    first: String,
    /// The path as written, whitespace removed, for the message (`crate::hub::Hub`).
    text: String,
}

/// A tiny cursor over blanked source text, tracking the line.
struct Cursor<'a> {
    chars: &'a [char],
    at: usize,
    line: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        if c == '\n' {
            self.line += 1;
        }
        self.at += 1;
        Some(c)
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    /// Consumes `s` (after whitespace) if it comes next.
    fn eat(&mut self, s: &str) -> bool {
        self.skip_space();
        let want: Vec<char> = s.chars().collect();
        if self.chars[self.at..].starts_with(&want) {
            for _ in 0..want.len() {
                self.bump();
            }
            true
        } else {
            false
        }
    }

    /// An identifier (after whitespace), or `None`.
    fn ident(&mut self) -> Option<String> {
        self.skip_space();
        let start = self.at;
        while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            self.bump();
        }
        (self.at > start).then(|| self.chars[start..self.at].iter().collect())
    }

    /// The rest of a path after its first segment: `::b::c`, `::{…}`, `::*`, as text.
    fn path_tail(&mut self) -> String {
        let mut text = String::new();
        loop {
            let save = (self.at, self.line);
            if !self.eat("::") {
                break;
            }
            if let Some(segment) = self.ident() {
                text.push_str("::");
                text.push_str(&segment);
            } else if self.eat("*") {
                text.push_str("::*");
                break;
            } else if self.eat("{") {
                text.push_str("::{…}");
                self.skip_group();
                break;
            } else {
                (self.at, self.line) = save;
                break;
            }
        }
        text
    }

    /// Skips to just after the `}` closing a group whose `{` was consumed.
    fn skip_group(&mut self) {
        let mut depth = 1;
        while let Some(c) = self.bump() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return;
                    }
                }
                _ => {}
            }
        }
    }
}

/// Every `crate::…` path in the code of `src` (comments and literals ignored). A group
/// `crate::{a, b::c}` yields one path per element, each at its own line.
fn crate_paths(src: &str) -> Vec<CratePath> {
    let code = blank_comments_and_literals(src);
    let chars: Vec<char> = code.chars().collect();
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut found = Vec::new();
    let mut cursor = Cursor {
        chars: &chars,
        at: 0,
        line: 1,
    };
    while cursor.at < chars.len() {
        let at = cursor.at;
        let is_crate_token = chars[at..].starts_with(&['c', 'r', 'a', 't', 'e'])
            && (at == 0 || !(ident(chars[at - 1]) || chars[at - 1] == '$'))
            && !chars.get(at + 5).copied().is_some_and(ident);
        if !is_crate_token {
            cursor.bump();
            continue;
        }
        for _ in 0..5 {
            cursor.bump();
        }
        let save = (cursor.at, cursor.line);
        if !cursor.eat("::") {
            // `pub(crate)`, `crate` as a word in code: not a path.
            (cursor.at, cursor.line) = save;
            continue;
        }
        if cursor.eat("{") {
            // A group: one path per top-level element.
            loop {
                cursor.skip_space();
                let line = cursor.line;
                match cursor.ident() {
                    Some(first) => {
                        let tail = cursor.path_tail();
                        if first != "self" {
                            found.push(CratePath {
                                line,
                                text: format!("crate::{first}{tail}"),
                                first,
                            });
                        }
                    }
                    None if cursor.eat("}") => break,
                    None => {}
                }
                // Past `as alias`, to the next element or the group's end.
                loop {
                    cursor.skip_space();
                    match cursor.peek() {
                        Some(',') => {
                            cursor.bump();
                            break;
                        }
                        Some('}') | None => break,
                        Some('{') => {
                            cursor.bump();
                            cursor.skip_group();
                        }
                        Some(_) => {
                            cursor.bump();
                        }
                    }
                }
                if cursor.peek().is_none() {
                    break;
                }
            }
        } else {
            cursor.skip_space();
            let line = cursor.line;
            if let Some(first) = cursor.ident() {
                let tail = cursor.path_tail();
                found.push(CratePath {
                    line,
                    text: format!("crate::{first}{tail}"),
                    first,
                });
            }
        }
    }
    found
}

/// A rule broken by one file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Violation {
    /// The file, relative to the crate (`src/client/device.rs`).
    file: String,
    /// 1-based line (0 for a file without a layer).
    line: usize,
    /// The layer of the file.
    from: String,
    /// The layer the path points into.
    to: String,
    /// The path as written.
    path: String,
    /// Why it is refused.
    why: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.why)
        } else {
            write!(
                f,
                "{}:{}: {} → {} (`{}`): {}",
                self.file, self.line, self.from, self.to, self.path, self.why
            )
        }
    }
}

/// Checks library files given as (path relative to `src/`, contents) against [`LAYERS`].
/// Files of the binary are skipped. Returns the violations and how many edges were read.
fn check(files: &[(String, String)]) -> (Vec<Violation>, usize) {
    let modules: BTreeSet<&str> = files.iter().filter_map(|(p, _)| module_of(p)).collect();
    let mut violations = Vec::new();
    let mut edges = 0;
    for (path, text) in files {
        let Some(from) = module_of(path) else {
            continue;
        };
        let file = format!("src/{path}");
        if row(from).is_none() {
            violations.push(Violation {
                file,
                line: 0,
                from: from.into(),
                to: String::new(),
                path: String::new(),
                why: format!(
                    "module `{from}` has no row in LAYERS; give it one (what it may use, and why)"
                ),
            });
            continue;
        }
        for found in crate_paths(text) {
            edges += 1;
            let to = if row(&found.first).is_some() && found.first != "lib" {
                found.first.clone()
            } else if modules.contains(found.first.as_str()) {
                violations.push(Violation {
                    file: file.clone(),
                    line: found.line,
                    from: from.into(),
                    to: found.first.clone(),
                    path: found.text.clone(),
                    why: format!("module `{}` has no row in LAYERS", found.first),
                });
                continue;
            } else {
                // Not a module: an item `lib.rs` defines or re-exports.
                "lib".to_owned()
            };
            if allowed(from, &to) {
                continue;
            }
            let uses = row(from).unwrap_or(&[]);
            let listed = if uses.is_empty() {
                "nothing else".to_owned()
            } else {
                uses.join(", ")
            };
            let kind = if from == "client" && (to == "server" || to == "hub") {
                "a client must reach the simulator only over the wire, never through server/ or hub/"
            } else if reachable(&to).contains(from) || to == "lib" {
                "points up"
            } else {
                "not in its row"
            };
            violations.push(Violation {
                file: file.clone(),
                line: found.line,
                from: from.into(),
                to: to.clone(),
                path: found.text,
                why: format!("{kind}; {from} may use only {listed}"),
            });
        }
    }
    (violations, edges)
}

/// Every `.rs` file under `dir`, as (path relative to `root` with `/`, contents), sorted.
fn read_tree(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            read_tree(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path
                .strip_prefix(root)
                .expect("under src/")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            out.insert(relative, text);
        }
    }
}

/// The library under `src/` keeps to [`LAYERS`].
#[test]
fn src_follows_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut tree = BTreeMap::new();
    read_tree(&src, &src, &mut tree);
    let files: Vec<(String, String)> = tree.into_iter().collect();
    let (violations, edges) = check(&files);
    // A reader that finds nothing would pass everything: the library has about a hundred
    // `crate::` paths.
    assert!(
        edges > 50,
        "read only {edges} crate:: paths in src/: is the reader broken?"
    );
    assert!(
        violations.is_empty(),
        "{} layering violation(s) in src/ (the table is at the top of tests/layering.rs):\n{}",
        violations.len(),
        violations
            .iter()
            .map(|v| format!("  {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Every name in a row is a row, and the rows form no cycle (so "up" means something).
#[test]
fn the_table_is_a_hierarchy() {
    for (layer, uses) in LAYERS {
        for used in *uses {
            assert!(
                *used == ANY || row(used).is_some(),
                "{layer} lists {used}, which has no row"
            );
        }
        assert!(
            !reachable(layer).contains(layer),
            "{layer} reaches itself through the table"
        );
        assert!(
            !uses.contains(&"lib"),
            "{layer} lists lib, which sits above it"
        );
    }
}

/// Runs [`check`] on synthetic files.
fn check_files(files: &[(&str, &str)]) -> Vec<Violation> {
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
    check(&files).0
}

#[test]
fn a_client_using_the_server_is_reported() {
    let v = check_files(&[
        ("client/device.rs", "use std::io;\nuse crate::server::x;\n"),
        ("server/mod.rs", ""),
    ]);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(
        (
            v[0].file.as_str(),
            v[0].line,
            v[0].from.as_str(),
            v[0].to.as_str()
        ),
        ("src/client/device.rs", 2, "client", "server")
    );
    assert_eq!(v[0].path, "crate::server::x");
    let message = v[0].to_string();
    assert!(
        message.starts_with("src/client/device.rs:2: client → server (`crate::server::x`)"),
        "{message}"
    );
    assert!(
        message.contains("never through server/ or hub/"),
        "{message}"
    );
}

#[test]
fn a_client_using_the_hub_inline_is_reported() {
    let v = check_files(&[(
        "client/http2.rs",
        "fn f() {\n    let hub = crate::hub::Hub::new(crate::clock::Clock::system());\n}\n",
    )]);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!((v[0].line, v[0].to.as_str()), (2, "hub"));
    assert_eq!(v[0].path, "crate::hub::Hub::new");
}

#[test]
fn an_upward_edge_in_a_multi_line_group_is_reported_at_its_line() {
    let v = check_files(&[(
        "hub/mod.rs",
        "use crate::{\n    protocol::Environment,\n    settings::{RateLimit, Settings},\n    server::gateway::{self, identify},\n    clock::Clock as C,\n};\n",
    )]);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(
        (v[0].line, v[0].from.as_str(), v[0].to.as_str()),
        (4, "hub", "server")
    );
    assert_eq!(v[0].path, "crate::server::gateway::{…}");
    assert!(v[0].why.starts_with("points up"), "{}", v[0].why);
}

#[test]
fn group_elements_are_each_read() {
    let paths = crate_paths("use crate::{self, a::b, c::{d, e::f}, g as h, i::*};");
    let firsts: Vec<&str> = paths.iter().map(|p| p.first.as_str()).collect();
    assert_eq!(firsts, ["a", "c", "g", "i"]);
    assert_eq!(paths[1].text, "crate::c::{…}");
    assert_eq!(paths[3].text, "crate::i::*");
}

#[test]
fn crate_in_comments_and_literals_is_not_a_path() {
    let src = r####"//! Uses [`crate::server::Gateway`] in its docs.
/// See [`crate::hub::Hub`] and [crate::server].
// use crate::server::x;
/* use crate::server::y; /* nested crate::hub */ still comment crate::server */
/** crate::server::z */
pub(crate) fn f() -> &'static str {
    let _c = '"';
    let _q = '\'';
    let _s = "crate::server::a \" crate::hub::b";
    let _r = r#"crate::server::c " crate::hub"#;
    let _b = br"crate::server::d";
    macro_rules! m { () => { $crate::server::e } }
    "crate::hub::f"
}
"####;
    assert_eq!(crate_paths(src), Vec::new());
    assert!(check_files(&[("client/x.rs", src)]).is_empty());
}

#[test]
fn code_after_a_comment_or_literal_is_still_read() {
    let src = "let s = \"crate::hub\"; let c = '}'; /* x */ use crate::server::y; // crate::hub
fn f<'a>(x: &'a str) -> &'a str { let r#type = b'x'; crate::
    sim::Simulator::start(x) }
";
    let paths = crate_paths(src);
    let found: Vec<(usize, &str)> = paths.iter().map(|p| (p.line, p.first.as_str())).collect();
    assert_eq!(found, [(1, "server"), (3, "sim")], "{paths:?}");
}

#[test]
fn allowed_edges_pass() {
    let v = check_files(&[
        (
            "server/gateway.rs",
            "use crate::hub::Hub;\nuse crate::server::accept;\nuse crate::{tls, pki::Pki};\n",
        ),
        (
            "client/http2.rs",
            "use crate::client::{self, ClientError};\nuse crate::pki::jwt;\n",
        ),
        (
            "sim.rs",
            "use crate::server::{devices, gateway};\nuse crate::client::device;\n",
        ),
        (
            "lib.rs",
            "pub mod hub;\nfn f() { crate::scenario::run(); }\n",
        ),
        (
            "protocol/notification.rs",
            "use crate::protocol::token::DeviceToken;\n",
        ),
    ]);
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn the_binary_is_not_read() {
    let v = check_files(&[
        ("main.rs", "use crate::cli::x;"),
        ("cli/push.rs", "use crate::sim::Simulator;"),
    ]);
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn a_module_without_a_row_is_reported() {
    let v = check_files(&[
        ("extra.rs", "use crate::protocol::x;"),
        ("hub/mod.rs", "use crate::extra::y;"),
    ]);
    let messages: Vec<String> = v.iter().map(ToString::to_string).collect();
    assert_eq!(v.len(), 2, "{messages:?}");
    assert!(
        messages[0].starts_with("src/extra.rs: module `extra` has no row"),
        "{messages:?}"
    );
    assert!(
        messages[1].starts_with("src/hub/mod.rs:1: hub → extra"),
        "{messages:?}"
    );
}

#[test]
fn items_of_the_crate_root_sit_above_every_module() {
    let v = check_files(&[("settings.rs", "const P: u16 = crate::DEFAULT_GATEWAY_PORT;")]);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!((v[0].to.as_str(), v[0].line), ("lib", 1));
    assert!(v[0].why.starts_with("points up"), "{}", v[0].why);
}

#[test]
fn a_sideways_edge_not_in_the_row_is_reported() {
    // connection and pki are unrelated: neither sits above the other.
    let v = check_files(&[("connection.rs", "use crate::pki::Pki;")]);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].why.starts_with("not in its row"), "{}", v[0].why);
}
