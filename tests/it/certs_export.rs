//! `apns-sim certs export` and the `certs` table, with real consumers: the exported `.p12`
//! (modern and legacy, with a password and with the empty one) opened by `openssl pkcs12`
//! and by Java's `keytool`; the PEM pair and the combined file presented over real TLS to a
//! simulator (HTTP/2 and binary pushes that reach a device), trusting only the exported CA
//! bundle; the bundle verifying the exported certificate with `openssl verify`; the `.p8`
//! with its key id and team id signing a token the simulator accepts; certs/README.md's
//! export section naming the files each format writes and flags that exist.
//!
//! The binary exports from a folder holding the test simulator's own PKI
//! (`Pki::write`), so what it writes is checked against the simulator that runs in this
//! process. openssl and keytool are required: a missing one fails with what to install.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use apns_sim::client::device::DeviceEvent;
use apns_sim::client::http2::{Http2Client, Http2Request};
use apns_sim::client::ProviderTlsFiles;
use apns_sim::pki::{jwt, AuthKey, DEFAULT_KEY_ID, DEFAULT_TEAM_ID, DEFAULT_TOPIC};
use apns_sim::protocol::Environment;
use apns_sim::tls::{self, ClientIdentity};
use tokio::process::Command;

use crate::common::{self, next_notification, TestSim, TIMEOUT};

const BIN: &str = env!("CARGO_BIN_EXE_apns-sim");
const ALERT: &str = r#"{"aps":{"alert":"exported"}}"#;

/// The four `.p12` forms: (extra `certs export` flags, password).
const P12_FORMS: [(&[&str], &str); 4] = [
    (&[], "s3cret-pass"),
    (&[], ""),
    (&["--legacy"], "s3cret-pass"),
    (&["--legacy"], ""),
];

/// A started simulator and a folder holding its PKI, as `serve` would have written it.
async fn sim_with_folder() -> (TestSim, tempfile::TempDir) {
    let t = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    t.pki.write(&dir.path().join("certs")).expect("write PKI");
    (t, dir)
}

/// Runs `apns-sim certs --dir <dir>/certs ARGS` in `dir`; returns stdout, panicking with
/// stderr when it fails.
async fn certs(dir: &Path, args: &[&str]) -> String {
    let (ok, out, err) = run(Command::new(BIN)
        .current_dir(dir)
        .env_remove("APNS_SIM_CERTS")
        .env_remove("APNS_SIM_P12_PASSWORD")
        .env("RUST_LOG", "warn")
        .arg("certs")
        .arg("--dir")
        .arg(dir.join("certs"))
        .args(args))
    .await;
    assert!(ok, "apns-sim certs {args:?} failed: {err}");
    out
}

/// Runs a command to completion: (success, stdout, stderr). A program that is not
/// installed fails the test with what to install.
async fn run(cmd: &mut Command) -> (bool, String, String) {
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(TIMEOUT, cmd.output()).await {
        Err(_) => panic!("{program} did not finish in {TIMEOUT:?}"),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{program} is not installed: these tests load the exported files with it \
             (Debian: apt-get install openssl default-jre-headless; .ci/run installs both)"
        ),
        Ok(Err(e)) => panic!("{program}: {e}"),
        Ok(Ok(output)) => output,
    };
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The PEM blocks (`-----BEGIN X-----` … `-----END X-----`) of `label` in `text`, trimmed.
fn pem_blocks(text: &str, label: &str) -> Vec<String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&begin) {
        let Some(len) = rest[start..].find(&end) else {
            break;
        };
        let stop = start + len + end.len();
        blocks.push(rest[start..stop].to_owned());
        rest = &rest[stop..];
    }
    blocks
}

/// Exports one `.p12` form into a folder of its own; returns its path.
async fn export_p12(dir: &Path, extra: &[&str], password: &str) -> PathBuf {
    let out = dir.join(format!(
        "p12-{}-{}",
        if extra.is_empty() { "modern" } else { "legacy" },
        if password.is_empty() {
            "empty"
        } else {
            "password"
        }
    ));
    let mut args = vec!["export", "--format", "p12", "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    if !password.is_empty() {
        args.extend_from_slice(&["--password", password]);
    }
    let said = certs(dir, &args).await;
    let path = out.join("provider.p12");
    assert!(
        said.contains(&format!("wrote {}", path.display())),
        "{said}"
    );
    path
}

#[tokio::test]
async fn p12_opens_in_openssl_with_its_algorithms() {
    let (t, dir) = sim_with_folder().await;
    let provider = t.pki.default_provider();
    for (extra, password) in P12_FORMS {
        let p12 = export_p12(dir.path(), extra, password).await;
        let form = format!("{extra:?} password {password:?}");
        let pass = format!("pass:{password}");
        // OpenSSL 3 reads pbeWithSHAAnd3-KeyTripleDES-CBC with its default provider; only
        // RC2 and RC4 need -legacy, and this file uses neither (checked below).
        let (ok, out, err) = run(Command::new("openssl")
            .args(["pkcs12", "-nodes", "-passin", &pass, "-in"])
            .arg(&p12))
        .await;
        assert!(ok, "{form}: openssl pkcs12 refused it: {err}");
        assert_eq!(
            pem_blocks(&out, "PRIVATE KEY"),
            pem_blocks(&provider.key_pem, "PRIVATE KEY"),
            "{form}: the key"
        );
        let mut expected = pem_blocks(&provider.cert_pem, "CERTIFICATE");
        expected.extend(pem_blocks(t.pki.ca_cert_pem(), "CERTIFICATE"));
        assert_eq!(
            pem_blocks(&out, "CERTIFICATE"),
            expected,
            "{form}: certificate, then the CA"
        );

        // The algorithms are the ones the form promises.
        let (ok, _, info) = run(Command::new("openssl")
            .args(["pkcs12", "-info", "-noout", "-passin", &pass, "-in"])
            .arg(&p12))
        .await;
        assert!(ok, "{form}: {info}");
        if extra.is_empty() {
            assert!(info.contains("MAC: sha256"), "{form}: {info}");
            assert!(
                info.contains("PBES2, PBKDF2, AES-256-CBC"),
                "{form}: {info}"
            );
            assert!(!info.contains("TripleDES"), "{form}: {info}");
        } else {
            assert!(info.contains("MAC: sha1"), "{form}: {info}");
            assert!(
                info.contains("pbeWithSHA1And3-KeyTripleDES-CBC"),
                "{form}: {info}"
            );
            assert!(!info.contains("PBES2"), "{form}: {info}");
            assert!(!info.contains("RC2"), "{form}: {info}");
        }

        let (ok, _, _) = run(Command::new("openssl")
            .args(["pkcs12", "-nodes", "-passin", "pass:not-it", "-in"])
            .arg(&p12))
        .await;
        assert!(!ok, "{form}: openssl opened it with a wrong password");
    }
    t.stop().await;
}

#[tokio::test]
async fn p12_opens_in_keytool() {
    let (t, dir) = sim_with_folder().await;
    for (extra, password) in P12_FORMS {
        let p12 = export_p12(dir.path(), extra, password).await;
        let form = format!("{extra:?} password {password:?}");
        let keytool = |password: &str| {
            let mut cmd = Command::new("keytool");
            cmd.args([
                "-list",
                "-v",
                "-storetype",
                "PKCS12",
                "-storepass",
                password,
            ])
            .arg("-keystore")
            .arg(&p12);
            cmd
        };
        let (ok, out, err) = run(&mut keytool(password)).await;
        assert!(ok, "{form}: keytool refused it: {out}{err}");
        assert!(
            out.contains("Your keystore contains 1 entry"),
            "{form}: {out}"
        );
        assert!(out.contains("Entry type: PrivateKeyEntry"), "{form}: {out}");
        assert!(out.contains("Certificate chain length: 2"), "{form}: {out}");
        assert!(
            out.contains(&format!("CN=Apple Push Services: {DEFAULT_TOPIC}")),
            "{form}: {out}"
        );
        assert!(
            out.contains(&format!("Alias name: {DEFAULT_TOPIC}")),
            "{form}: {out}"
        );
        let (ok, out, err) = run(&mut keytool("not-the-password")).await;
        assert!(
            !ok,
            "{form}: keytool opened it with a wrong password: {out}{err}"
        );
    }
    t.stop().await;
}

/// The exported PEM pair, and the combined file, are a provider identity the simulator
/// accepts, and the exported bundle is all a client needs to trust it.
#[tokio::test]
async fn exported_pem_pushes_over_http2_and_binary_trusting_the_bundle() {
    let (t, dir) = sim_with_folder().await;
    let out = dir.path().join("pem");
    let said = certs(
        dir.path(),
        &["export", "--format", "pem", "--out", out.to_str().unwrap()],
    )
    .await;
    for name in ["provider.pem", "provider-key.pem", "provider-combined.pem"] {
        assert!(
            said.contains(&out.join(name).display().to_string()),
            "{said}"
        );
    }
    certs(
        dir.path(),
        &[
            "export",
            "--format",
            "bundle",
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |name: &str| {
            std::fs::metadata(out.join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("provider-key.pem"), 0o600, "the key is private");
        assert_eq!(
            mode("provider-combined.pem"),
            0o600,
            "so is the combined file"
        );
    }

    let (mut phone, tokens) = t
        .device("export-phone", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let token = tokens[DEFAULT_TOPIC];

    // HTTP/2 with the pair apart, trusting only the exported bundle.
    let files = ProviderTlsFiles {
        cert: out.join("provider.pem"),
        key: out.join("provider-key.pem"),
        ca: out.join("ca-bundle.pem"),
        server_name: "localhost".into(),
    };
    let tls_config = files
        .client_config(vec![b"h2".to_vec()])
        .expect("the pair loads");
    let mut client = Http2Client::connect(&t.http2_addr(), "localhost", tls_config)
        .await
        .expect("TLS with the exported pair");
    let request = Http2Request::push(&token.to_hex(), ALERT).header("apns-topic", DEFAULT_TOPIC);
    let response = client.send(&request).await.expect("an answer");
    assert_eq!(response.status, 200, "{response}");
    assert!(matches!(
        next_notification(&mut phone).await,
        DeviceEvent::Notification { token: got, .. } if got == token
    ));

    // The binary gateway with the combined file as both certificate and key.
    let combined = std::fs::read(out.join("provider-combined.pem")).unwrap();
    let ca = std::fs::read(out.join("ca-bundle.pem")).unwrap();
    let identity = ClientIdentity::from_pem(&combined, &combined).expect("combined file loads");
    let tls_config = tls::client_config(&ca, Some(identity), Vec::new()).unwrap();
    let mut gateway = t.gateway_as(tls_config, "localhost").await;
    gateway
        .send(&common::frame(token.as_bytes(), ALERT, 7, 0, 10))
        .await
        .unwrap();
    assert_eq!(common::next_id(&mut phone).await, 7);
    common::assert_silent(&mut gateway).await;
    t.stop().await;
}

#[tokio::test]
async fn bundle_is_the_ca_that_verifies_the_exported_certificate() {
    let (t, dir) = sim_with_folder().await;
    let out = dir.path().join("out");
    let out_arg = out.to_str().unwrap();
    certs(
        dir.path(),
        &["export", "--format", "bundle", "--out", out_arg],
    )
    .await;
    certs(dir.path(), &["export", "--format", "pem", "--out", out_arg]).await;
    let bundle = std::fs::read_to_string(out.join("ca-bundle.pem")).unwrap();
    assert_eq!(
        pem_blocks(&bundle, "CERTIFICATE"),
        pem_blocks(t.pki.ca_cert_pem(), "CERTIFICATE")
    );
    for (cert, expected) in [
        (out.join("provider.pem"), true),
        // The server certificate is signed by the same CA; a bundle without it would fail
        // here, so this is the check that can fail.
        (dir.path().join("certs/server.pem"), true),
    ] {
        let (ok, said, err) = run(Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(out.join("ca-bundle.pem"))
            .arg(&cert))
        .await;
        assert_eq!(ok, expected, "{}: {said}{err}", cert.display());
    }
    // A CA of another PKI does not verify it.
    let other = apns_sim::pki::Pki::generate().unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, other.ca_cert_pem()).unwrap();
    let (ok, _, _) = run(Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&other_ca)
        .arg(out.join("provider.pem")))
    .await;
    assert!(!ok, "another CA verified the exported certificate");
    t.stop().await;
}

/// The `.p8` and its ids are what token auth needs: a JWT signed with the exported key and
/// the exported ids is accepted.
#[tokio::test]
async fn p8_export_signs_a_token_the_simulator_accepts() {
    let (t, dir) = sim_with_folder().await;
    let out = dir.path().join("p8");
    let said = certs(
        dir.path(),
        &["export", "--format", "p8", "--out", out.to_str().unwrap()],
    )
    .await;
    assert!(
        said.contains(&format!(
            "(key id {DEFAULT_KEY_ID}, team id {DEFAULT_TEAM_ID})"
        )),
        "{said}"
    );
    let info: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join(format!("AuthKey_{DEFAULT_KEY_ID}.json"))).unwrap(),
    )
    .unwrap();
    let key_id = info["key_id"].as_str().unwrap();
    let team_id = info["team_id"].as_str().unwrap();
    let p8 = std::fs::read_to_string(out.join(info["file"].as_str().unwrap())).unwrap();
    let key = AuthKey {
        key_id: key_id.to_owned(),
        team_id: team_id.to_owned(),
        topics: Vec::new(),
        p8_pem: p8,
    };
    let token_jwt = jwt::sign(&key, t.clock.now_secs()).expect("the .p8 signs");

    let (mut phone, tokens) = t
        .device("p8-phone", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let token = tokens[DEFAULT_TOPIC];
    let mut client = t.http2_token().await;
    let request = Http2Request::push(&token.to_hex(), ALERT)
        .header("apns-topic", DEFAULT_TOPIC)
        .header("authorization", format!("bearer {token_jwt}"));
    let response = client.send(&request).await.expect("an answer");
    assert_eq!(response.status, 200, "{response}");
    next_notification(&mut phone).await;
    t.stop().await;
}

/// `certs` prints a table (role, topic, environment, team, key id, path); `--json` the
/// manifest.
#[tokio::test]
async fn certs_lists_a_table_and_the_manifest_with_json() {
    let (t, dir) = sim_with_folder().await;
    let table = certs(dir.path(), &[]).await;
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["ROLE", "TOPIC", "ENVIRONMENT", "TEAM", "KEY", "ID", "PATH"]
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    let certs_dir = dir.path().join("certs");
    let path = |name: &str| certs_dir.join(name).display().to_string();
    let provider = path("provider.pem");
    let key = path(&format!("AuthKey_{DEFAULT_KEY_ID}.p8"));
    let ca = path("ca.pem");
    assert!(
        rows.contains(&vec![
            "provider",
            DEFAULT_TOPIC,
            "universal",
            DEFAULT_TEAM_ID,
            "-",
            &provider
        ]),
        "{table}"
    );
    assert!(
        rows.contains(&vec![
            "auth-key",
            "(any)",
            "-",
            DEFAULT_TEAM_ID,
            DEFAULT_KEY_ID,
            &key
        ]),
        "{table}"
    );
    assert!(
        rows.contains(&vec!["ca", "-", "-", "-", "-", &ca]),
        "{table}"
    );
    assert_eq!(rows.len(), t.pki.manifest().files.len(), "{table}");

    let json: serde_json::Value =
        serde_json::from_str(&certs(dir.path(), &["--json"]).await).expect("JSON");
    assert_eq!(json, serde_json::to_value(t.pki.manifest()).unwrap());
    t.stop().await;
}

/// Flags that do not fit the format are refused with the reason.
#[tokio::test]
async fn export_refuses_flags_of_another_format() {
    let dir = tempfile::tempdir().unwrap();
    for (args, says) in [
        (
            &["--format", "pem", "--legacy"][..],
            "--password and --legacy are for --format p12",
        ),
        (
            &["--format", "bundle", "--topic", "com.example.app"],
            "--topic and --environment choose a provider certificate",
        ),
        (&["--format", "p12", "--key-id", "SIMKEY0001"], "--key-id"),
        (
            &["--format", "pem", "--topic", "com.nobody"],
            "no provider certificate for topic \"com.nobody\"",
        ),
    ] {
        let (ok, _, err) = run(Command::new(BIN)
            .current_dir(dir.path())
            .env_remove("APNS_SIM_CERTS")
            .env_remove("APNS_SIM_P12_PASSWORD")
            .args(["certs", "export"])
            .args(args))
        .await;
        assert!(!ok, "{args:?} was accepted");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// certs/README.md's section on `certs export` stays true: each format in its table writes
/// exactly the files the row names (`<KEYID>` the simulator's key id), and every flag it
/// shows in backticks is one `certs export -h` lists.
#[tokio::test]
async fn certs_readme_names_the_files_and_flags_export_has() {
    let readme = include_str!("../../certs/README.md");
    let section = readme
        .split_once("## Exporting: `apns-sim certs export`")
        .expect("certs/README.md has the export section")
        .1;
    let empty = tempfile::tempdir().unwrap();
    let help = certs(empty.path(), &["export", "-h"]).await;
    let mut flags = 0;
    // The flags it names in backticks (`--password P`), not other programs' (`curl --cacert`).
    for span in section.split('`').skip(1).step_by(2) {
        let Some(flag) = span
            .split_whitespace()
            .next()
            .filter(|w| w.starts_with("--"))
        else {
            continue;
        };
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}]")),
            "certs/README.md names {flag}, which `certs export -h` does not list:\n{help}"
        );
        flags += 1;
    }
    assert!(
        flags >= 6,
        "the section names the flags it documents ({flags})"
    );
    let (_t, dir) = sim_with_folder().await;
    let mut formats = 0;
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let format = cells[1].trim_matches('`');
        if format.starts_with('-') {
            continue; // the header row
        }
        let named: std::collections::BTreeSet<String> = cells[2]
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|name| name.contains('.'))
            .map(|name| name.replace("<KEYID>", DEFAULT_KEY_ID))
            .collect();
        let out = dir.path().join(format!("export-{format}"));
        let out_arg = out.display().to_string();
        certs(
            dir.path(),
            &["export", "--format", format, "--out", &out_arg],
        )
        .await;
        let written: std::collections::BTreeSet<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            written, named,
            "certs/README.md's row for --format {format}"
        );
        formats += 1;
    }
    assert_eq!(formats, 4, "a row for each of pem, p12, bundle and p8");
}
