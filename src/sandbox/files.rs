//! The files `apns-sim run` puts over the system's inside its mount namespace: a hosts
//! file that sends Apple's push host names to the simulator on 127.0.0.1, and CA bundles
//! that hold the system's roots plus the simulator's CA. The texts are built by pure
//! functions (unit-tested); [`install`] writes them to a private folder and bind-mounts
//! them, and returns the variables that point other trust stores at them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::namespace::{bind_over, SandboxError};

/// Apple's host names that resolve to the simulator inside the namespace: the HTTP/2 API
/// (current and 2015–2018 development names), the binary gateway and the feedback service
/// in both environments, and the broadcast channel-management hosts. The simulator does not
/// serve channel management; those names resolve to loopback all the same, so that a
/// client of them fails inside the namespace (its TLS name check) instead of reaching out.
pub const APPLE_HOSTS: &[&str] = &[
    "api.push.apple.com",
    "api.sandbox.push.apple.com",
    "api.development.push.apple.com",
    "gateway.push.apple.com",
    "gateway.sandbox.push.apple.com",
    "feedback.push.apple.com",
    "feedback.sandbox.push.apple.com",
    "api-manage-broadcast.push.apple.com",
    "api-manage-broadcast.sandbox.push.apple.com",
];

/// The system hosts file, replaced inside the namespace.
pub const HOSTS_PATH: &str = "/etc/hosts";

/// Where distributions keep the PEM bundle of trusted roots (the list Go's crypto/x509
/// searches): Debian, Ubuntu, Gentoo, Arch; Fedora and RHEL 6; openSUSE; OpenELEC; CentOS
/// and RHEL 7 and later; Alpine. Each one present is replaced by a combined bundle.
pub const CA_BUNDLE_PATHS: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The largest system file read (a hosts file, a CA bundle; Debian's bundle is ~220 KB).
const MAX_SYSTEM_FILE: u64 = 16 * 1024 * 1024;

/// The hosts file inside the namespace: Apple's names on 127.0.0.1 first (the resolver
/// takes the first match, so an entry of the original for one of them cannot win), then
/// the original file, so every other name resolves as before.
pub fn hosts_file(original: &str) -> String {
    let mut text = String::from("# apns-sim run: Apple's push hosts are the simulator.\n");
    for host in APPLE_HOSTS {
        text.push_str("127.0.0.1\t");
        text.push_str(host);
        text.push('\n');
    }
    text.push_str("# The machine's own /etc/hosts:\n");
    text.push_str(original);
    if !original.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// A CA bundle: the system's `roots` (PEM), then the simulator's `ca` (PEM).
pub fn combined_bundle(roots: &str, ca: &str) -> String {
    let mut text = String::with_capacity(roots.len() + ca.len() + 64);
    text.push_str(roots);
    if !roots.is_empty() && !roots.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("# apns-sim: the simulator's CA\n");
    text.push_str(ca);
    if !ca.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// What [`install`] did.
#[derive(Debug)]
pub struct Installed {
    /// The variables that point other trust stores at the simulator's CA: `SSL_CERT_FILE`
    /// (OpenSSL, Python's ssl, httpx, Go, Ruby), `REQUESTS_CA_BUNDLE` (requests),
    /// `CURL_CA_BUNDLE` (curl, pycurl) and `NODE_EXTRA_CA_CERTS` (Node, which otherwise
    /// trusts only its own copy of Mozilla's roots).
    pub env: Vec<(String, OsString)>,
    /// The system bundles now replaced by combined ones.
    pub bundles: Vec<PathBuf>,
}

/// Reads a system file, bounded.
fn read_system(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_SYSTEM_FILE)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// Writes the hosts file and the combined bundles to `dir` (a private folder that outlives
/// COMMAND) and bind-mounts them over the system's. `ca_pem` is the simulator's CA.
pub fn install(dir: &Path, ca_pem: &str) -> Result<Installed, String> {
    let io = |what: &str, path: &Path, e: std::io::Error| format!("{what} {}: {e}", path.display());
    let mounted = |e: SandboxError| e.to_string();

    // 1. The hosts file.
    let hosts = Path::new(HOSTS_PATH);
    let original = match read_system(hosts) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io("reading", hosts, e)),
    };
    let ours = dir.join("hosts");
    std::fs::write(&ours, hosts_file(&original)).map_err(|e| io("writing", &ours, e))?;
    if hosts.exists() {
        bind_over(&ours, hosts).map_err(mounted)?;
    }

    // 2. The CA's own file, for NODE_EXTRA_CA_CERTS (added to Node's roots).
    let ca = dir.join("apns-sim-ca.pem");
    std::fs::write(&ca, ca_pem).map_err(|e| io("writing", &ca, e))?;

    // 3. Every system bundle present (each once: several paths are often links to one),
    //    replaced by itself plus the CA.
    let mut bundles: Vec<PathBuf> = Vec::new();
    for path in CA_BUNDLE_PATHS {
        let Ok(target) = std::fs::canonicalize(path) else {
            continue;
        };
        if bundles.contains(&target) || !target.is_file() {
            continue;
        }
        let roots = read_system(&target).map_err(|e| io("reading", &target, e))?;
        let combined = dir.join(format!("ca-bundle-{}.pem", bundles.len()));
        std::fs::write(&combined, combined_bundle(&roots, ca_pem))
            .map_err(|e| io("writing", &combined, e))?;
        bind_over(&combined, &target).map_err(mounted)?;
        bundles.push(target);
    }

    // 4. The file the variables name: the first system bundle (now combined), or, on a
    //    machine without one, a bundle of the CA alone.
    let bundle = match bundles.first() {
        Some(first) => first.clone(),
        None => {
            let alone = dir.join("ca-bundle.pem");
            std::fs::write(&alone, combined_bundle("", ca_pem))
                .map_err(|e| io("writing", &alone, e))?;
            alone
        }
    };
    let env = ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"]
        .iter()
        .map(|name| ((*name).to_owned(), bundle.clone().into_os_string()))
        .chain([("NODE_EXTRA_CA_CERTS".to_owned(), ca.into_os_string())])
        .collect();
    Ok(Installed { env, bundles })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apple_names_come_first_and_the_original_follows() {
        let text = hosts_file("127.0.0.1 localhost\n10.0.0.9 api.push.apple.com");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "127.0.0.1\tapi.push.apple.com");
        assert_eq!(lines[2], "127.0.0.1\tapi.sandbox.push.apple.com");
        let first_apple = lines
            .iter()
            .position(|l| l.ends_with("api.push.apple.com"))
            .unwrap();
        let original = lines
            .iter()
            .position(|l| *l == "10.0.0.9 api.push.apple.com")
            .unwrap();
        assert!(first_apple < original);
        assert!(lines.contains(&"127.0.0.1 localhost"));
        assert!(text.ends_with('\n'));
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.starts_with("127.0.0.1\t"))
                .count(),
            APPLE_HOSTS.len()
        );
    }

    #[test]
    fn a_bundle_keeps_the_roots_and_adds_the_ca() {
        let roots = "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----";
        let ca = "-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----\n";
        let text = combined_bundle(roots, ca);
        assert!(text.starts_with(roots));
        assert!(text.ends_with(ca));
        assert_eq!(text.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(combined_bundle("", ca).starts_with("# apns-sim"));
    }
}
