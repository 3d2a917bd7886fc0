//! The docs cannot drift from what runs: every code block of `docs/*.md` marked
//! `<!-- file: PATH -->` is that file of `docs/examples/` exactly, every example file is shown,
//! the commands `docs/clients.md` shows are the ones `interop/docs_examples.sh` runs (which
//! `.ci/run` runs), `docs/examples/scenario.toml` is a valid scenario for `apns-sim test`, and
//! the README's byte-layout examples decode, with the simulator's own codec, to the values
//! their comments give and encode back to the same bytes. (Only reads files.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use apns_sim::protocol::error_response::{ErrorResponse, Status};
use apns_sim::protocol::feedback::FeedbackTuple;
use apns_sim::protocol::notification::{self, Command, MAX_BUFFERED_FRAME_LEN, MAX_FRAME_LEN};
use apns_sim::protocol::token::DeviceToken;
use apns_sim::scenario::check::{check, check_for, Host};
use bytes::BytesMut;

/// The pages whose code blocks are files of `docs/examples/`.
const PAGES: &[&str] = &["docs/clients.md", "docs/ci.md"];

/// The marker before a code block that shows a file: `<!-- file: docs/examples/… -->`.
const FILE_MARKER: &str = "<!-- file: ";

/// The marker before a README block of annotated bytes: `<!-- bytes: NAME -->`.
const BYTES_MARKER: &str = "<!-- bytes: ";

/// What clients.md shows before each example's command.
const TEST_PREFIX: &str = "apns-sim test --scenario docs/examples/scenario.toml -- ";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Each `(NAME, block)` in `text` where a line `MARKERNAME -->` is followed by a fenced
/// block: the lines between the fences, each ending in `\n`.
fn marked_blocks(text: &str, marker: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = line.strip_prefix(marker) else {
            continue;
        };
        let name = name
            .strip_suffix(" -->")
            .unwrap_or_else(|| panic!("line {}: a marker ends in ` -->`: {line:?}", i + 1));
        let open = lines.get(i + 1).copied().unwrap_or_default();
        assert!(
            open.starts_with("```"),
            "line {}: the marker for {name} is not followed by a code block",
            i + 1
        );
        let len = lines[i + 2..]
            .iter()
            .position(|l| *l == "```")
            .unwrap_or_else(|| panic!("line {}: the block for {name} is not closed", i + 2));
        let block: String = lines[i + 2..i + 2 + len]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect();
        out.push((name.to_owned(), block));
    }
    out
}

/// Every file under `dir`, as a path relative to the repository's root.
fn files_under(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path: PathBuf = entry.expect("a directory entry").path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            let relative = path.strip_prefix(root()).expect("under the root");
            out.push(relative.to_string_lossy().into_owned());
        }
    }
}

#[test]
fn every_docs_code_block_marked_with_a_file_is_that_file() {
    let mut shown = BTreeSet::new();
    for page in PAGES {
        let blocks = marked_blocks(&read(page), FILE_MARKER);
        assert!(!blocks.is_empty(), "{page} shows no example file");
        for (path, block) in blocks {
            let file = read(&path);
            if let Some(n) = block.lines().zip(file.lines()).position(|(a, b)| a != b) {
                panic!(
                    "{page} and {path} differ at line {} of the file:\n  page: {:?}\n  file: {:?}\n\
                     Copy the file into the page so that it shows the code that runs.",
                    n + 1,
                    block.lines().nth(n),
                    file.lines().nth(n)
                );
            }
            assert_eq!(block, file, "{page}: the block of {path} (its length)");
            shown.insert(path);
        }
    }
    let mut files = Vec::new();
    files_under(&root().join("docs/examples"), &mut files);
    let unshown: Vec<&String> = files.iter().filter(|f| !shown.contains(*f)).collect();
    assert!(
        unshown.is_empty(),
        "example files no page shows: {unshown:?}"
    );
}

#[test]
fn the_commands_clients_md_shows_are_the_ones_the_script_runs() {
    let shown: BTreeSet<String> = read("docs/clients.md")
        .lines()
        .filter_map(|l| l.strip_prefix(TEST_PREFIX))
        .map(str::to_owned)
        .collect();
    let run: BTreeSet<String> = read("interop/docs_examples.sh")
        .lines()
        .filter_map(|l| l.strip_prefix("example \"")?.strip_suffix('"'))
        .map(str::to_owned)
        .collect();
    assert!(shown.len() >= 11, "commands in docs/clients.md: {shown:?}");
    assert_eq!(
        shown, run,
        "docs/clients.md shows (left) what interop/docs_examples.sh runs (right)"
    );
    let ci_run = read(".ci/run");
    assert!(
        ci_run.contains("interop/docs_examples.sh"),
        ".ci/run runs interop/docs_examples.sh"
    );
}

#[test]
fn the_examples_scenario_is_valid_for_apns_sim_test() {
    let scenario = check(&read("docs/examples/scenario.toml"))
        .unwrap_or_else(|e| panic!("docs/examples/scenario.toml: {e}"));
    let problems = check_for(&scenario, Host::Test);
    assert!(problems.is_empty(), "under apns-sim test: {problems:?}");
}

/// The bytes of an annotated block: on each line, the hex pairs before the first double space.
fn hex_bytes(block: &str) -> Vec<u8> {
    block
        .lines()
        .flat_map(|line| {
            line.split("  ")
                .next()
                .unwrap_or_default()
                .split_whitespace()
        })
        .map(|pair| u8::from_str_radix(pair, 16).unwrap_or_else(|e| panic!("{pair:?}: {e}")))
        .collect()
}

/// The token, payload, identifier and expiry every README example carries.
fn example_token() -> DeviceToken {
    let bytes: Vec<u8> = (0..32).collect();
    DeviceToken::new(&bytes).expect("a 32-byte token")
}
const PAYLOAD: &str = r#"{"aps":{"alert":"Hi"}}"#;
const IDENTIFIER: [u8; 4] = [0, 0, 0, 7];
const EXPIRY: u32 = 1_767_225_600;

/// Decodes a notification example, checks it, and checks that it encodes back to `bytes`.
fn notification_example(name: &str, bytes: &[u8], command: Command) -> notification::Notification {
    let mut buf = BytesMut::from(bytes);
    let n = notification::decode(&mut buf)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .unwrap_or_else(|| panic!("{name}: incomplete"));
    assert!(
        buf.is_empty(),
        "{name}: {} bytes after the notification",
        buf.len()
    );
    assert_eq!(n.command, command, "{name}");
    assert_eq!(n.token, example_token(), "{name}: token");
    assert_eq!(&n.payload[..], PAYLOAD.as_bytes(), "{name}: payload");
    let mut again = BytesMut::new();
    notification::encode(&n, &mut again);
    assert_eq!(&again[..], bytes, "{name}: encoded again");
    n
}

#[test]
fn the_readme_byte_examples_are_what_the_codec_reads_and_writes() {
    let readme = read("README.md");
    let blocks = marked_blocks(&readme, BYTES_MARKER);
    let names: Vec<&str> = blocks.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "command 0",
            "command 1",
            "command 2",
            "command 8",
            "feedback tuple"
        ],
        "the README's byte examples"
    );
    for (name, block) in &blocks {
        let bytes = hex_bytes(block);
        match name.as_str() {
            "command 0" => {
                let n = notification_example(name, &bytes, Command::Simple);
                assert_eq!((n.identifier, n.expiry, n.priority), ([0; 4], None, 10));
            }
            "command 1" => {
                let n = notification_example(name, &bytes, Command::Enhanced);
                assert_eq!(
                    (n.identifier, n.expiry, n.priority),
                    (IDENTIFIER, Some(EXPIRY), 10)
                );
            }
            "command 2" => {
                let n = notification_example(name, &bytes, Command::Frame);
                assert_eq!(
                    (n.identifier, n.expiry, n.priority),
                    (IDENTIFIER, Some(EXPIRY), 10)
                );
            }
            "command 8" => {
                let (response, used) = ErrorResponse::decode(&bytes)
                    .expect("an error response")
                    .expect("complete");
                assert_eq!(used, bytes.len(), "{name}: one packet");
                assert_eq!(response.status, Status::InvalidToken);
                assert_eq!(response.identifier, IDENTIFIER);
                assert_eq!(response.encode().as_slice(), &bytes[..]);
            }
            _ => {
                let mut buf = BytesMut::from(&bytes[..]);
                let tuple = FeedbackTuple::decode(&mut buf)
                    .expect("a feedback tuple")
                    .expect("complete");
                assert!(buf.is_empty(), "{name}: one tuple");
                assert_eq!((tuple.timestamp, tuple.token), (EXPIRY, example_token()));
                let mut again = BytesMut::new();
                tuple.encode(&mut again);
                assert_eq!(&again[..], &bytes[..]);
            }
        }
    }
}

/// `n` with thousands separators, as the README writes numbers.
fn grouped(n: u32) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn the_readme_byte_layout_states_the_codecs_limits_and_statuses() {
    let readme = read("README.md");
    let section = readme
        .split("### Byte layout of the binary API")
        .nth(1)
        .and_then(|s| s.split("\n### ").next())
        .expect("README.md has a section \"Byte layout of the binary API\"");
    // The largest valid frame, its frame length, and the length answered before buffering.
    for (what, n) in [
        ("the largest valid frame", MAX_FRAME_LEN + 5),
        ("its frame length", MAX_FRAME_LEN),
        ("the frame length answered at once", MAX_BUFFERED_FRAME_LEN),
    ] {
        assert!(section.contains(&grouped(n)), "{what}, {}", grouped(n));
    }
    // The status table: every code the codec knows, with Apple's meaning, and no other.
    let rows: Vec<(u8, &str)> = section
        .lines()
        .skip_while(|l| *l != "| status | Apple's meaning |")
        .skip(2)
        .take_while(|l| l.starts_with("| "))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            let code = cells[0].parse().unwrap_or_else(|e| panic!("{l:?}: {e}"));
            (code, cells[1])
        })
        .collect();
    let statuses: Vec<u8> = (0..=255u8)
        .filter(|c| Status::from_code(*c).is_some())
        .collect();
    let codes: Vec<u8> = rows.iter().map(|(c, _)| *c).collect();
    assert_eq!(codes, statuses, "status codes in the README's table");
    for (code, meaning) in rows {
        let status = Status::from_code(code).expect("a status");
        assert!(
            meaning.starts_with(status.description()),
            "status {code}: {meaning:?} is not {:?}",
            status.description()
        );
    }
}
