//! Entering `apns-sim run`'s namespaces: a network namespace of its own (only a loopback
//! interface, so nothing COMMAND does reaches Apple or anything else), a mount namespace of
//! its own (so `/etc/hosts` and the trust store can be replaced for this process tree
//! only), and, when the process is not root, a user namespace that gives it the
//! capabilities for both. When that is not possible, [`diagnose`] says which privilege is
//! missing and how to get it.
//!
//! ## Why this runs before any thread
//!
//! unshare(2) moves the *calling thread* into new namespaces, and `CLONE_NEWUSER` is
//! refused (EINVAL) outright in a process with more than one thread. The tokio runtime is
//! multi-threaded, and so is the log writer. So [`enter`] is called by `main` right after
//! the command line is parsed, while the process still has its one thread: every thread
//! started afterwards (the runtime's workers, the log writer) and every child (COMMAND)
//! inherits the namespaces, with nothing forked or re-executed. The rest (binding Apple's
//! ports, the bind mounts) happens later on the runtime, in the same namespaces.

use std::fmt;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::socket::{
    recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use nix::unistd::{getegid, geteuid};

use super::netlink::{link_up_request, parse_ack, AckError};

/// Whether `run` creates a user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserNamespace {
    /// Only when not root (root can create the other namespaces itself); root falls back to
    /// one when it lacks CAP_SYS_ADMIN (a container).
    #[default]
    Auto,
    /// Always, root or not (how the tests exercise the unprivileged path as root).
    Always,
    /// Never: the process must hold CAP_SYS_ADMIN.
    Never,
}

/// What [`enter`] did; only [`enter`] makes one, so a function that takes it (such as
/// [`super::run`]) runs inside the namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entered {
    user_namespace: bool,
}

impl Entered {
    /// A user namespace was created (the process's uid and gid are mapped to themselves).
    pub fn user_namespace(&self) -> bool {
        self.user_namespace
    }
}

/// A step of entering the namespaces, for the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// unshare(2); `user` when `CLONE_NEWUSER` was part of it.
    Unshare {
        /// `CLONE_NEWUSER` was asked for.
        user: bool,
    },
    /// Writing the user namespace's uid and gid maps (`/proc/self/{setgroups,uid_map,gid_map}`).
    IdMap,
    /// Making every mount private, so the bind mounts stay inside the namespace.
    PrivateMounts,
    /// Setting the loopback interface up (rtnetlink).
    LoopbackUp,
    /// Bind-mounting a file (the hosts file, a CA bundle) over the system's.
    BindMount,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Unshare { user: true } => {
                "creating a user, network and mount namespace (unshare CLONE_NEWUSER|CLONE_NEWNET|CLONE_NEWNS)"
            }
            Step::Unshare { user: false } => {
                "creating a network and mount namespace (unshare CLONE_NEWNET|CLONE_NEWNS)"
            }
            Step::IdMap => "mapping the user and group ids into the user namespace",
            Step::PrivateMounts => "making the namespace's mounts private",
            Step::LoopbackUp => "setting the loopback interface up",
            Step::BindMount => "bind-mounting over a system file",
        })
    }
}

/// The sandbox could not be set up: what failed, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{step}: {errno}: {advice}")]
pub struct SandboxError {
    /// The step that failed.
    pub step: Step,
    /// The system's answer.
    pub errno: Errno,
    /// Which privilege is missing and how to get it ([`diagnose`]).
    pub advice: String,
}

/// What the machine allows, read from `/proc` when a step fails: the inputs of [`diagnose`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// The effective uid (0: root).
    pub euid: u32,
    /// The kernel has user namespaces at all (`/proc/self/ns/user` exists).
    pub user_namespaces_built: bool,
    /// `kernel.unprivileged_userns_clone` (Debian's and older Ubuntu's switch), if present.
    pub unprivileged_userns_clone: Option<u64>,
    /// `user.max_user_namespaces`, if present.
    pub max_user_namespaces: Option<u64>,
    /// `kernel.apparmor_restrict_unprivileged_userns` (Ubuntu 23.10 and later), if present.
    pub apparmor_restrict: Option<u64>,
}

impl Probe {
    /// Reads this machine's values.
    pub fn read() -> Probe {
        let sysctl = |path: &str| {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        };
        Probe {
            euid: geteuid().as_raw(),
            user_namespaces_built: Path::new("/proc/self/ns/user").exists(),
            unprivileged_userns_clone: sysctl("/proc/sys/kernel/unprivileged_userns_clone"),
            max_user_namespaces: sysctl("/proc/sys/user/max_user_namespaces"),
            apparmor_restrict: sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
        }
    }
}

/// What to tell the user when `step` failed with `errno` on a machine like `probe`: which
/// privilege is missing and how to get it (pure, so every branch is unit-tested).
pub fn diagnose(step: Step, errno: Errno, probe: &Probe) -> String {
    const AS_ROOT: &str = "run as root (sudo apns-sim run …)";
    let root = probe.euid == 0;
    match (step, errno) {
        (Step::Unshare { user: true }, _) if !probe.user_namespaces_built => format!(
            "this kernel has no user namespaces (CONFIG_USER_NS is off); {AS_ROOT}, \
             with --user-namespace never"
        ),
        (Step::Unshare { user: true }, Errno::EPERM | Errno::ENOSPC | Errno::EUSERS)
            if probe.max_user_namespaces == Some(0)
                || (!root && probe.unprivileged_userns_clone == Some(0)) =>
        {
            let mut off = Vec::new();
            let mut fix = Vec::new();
            if !root && probe.unprivileged_userns_clone == Some(0) {
                off.push("kernel.unprivileged_userns_clone=0");
                fix.push("sysctl -w kernel.unprivileged_userns_clone=1");
            }
            if probe.max_user_namespaces == Some(0) {
                off.push("user.max_user_namespaces=0");
                fix.push("sysctl -w user.max_user_namespaces=15000");
            }
            let who = if root { "user" } else { "unprivileged user" };
            let instead = if root {
                "run with --user-namespace never (root needs none)".to_owned()
            } else {
                AS_ROOT.to_owned()
            };
            format!(
                "{who} namespaces are disabled: {}; {instead} or enable them: {}",
                off.join(" / "),
                fix.join(" and ")
            )
        }
        (Step::Unshare { user: true }, Errno::ENOSPC | Errno::EUSERS) => format!(
            "the limit of user namespaces is reached (user.max_user_namespaces={}); \
             {AS_ROOT} or raise it: sysctl -w user.max_user_namespaces=15000",
            probe
                .max_user_namespaces
                .map_or_else(|| "?".to_owned(), |n| n.to_string())
        ),
        (Step::Unshare { user: true }, Errno::EPERM) => format!(
            "user namespaces are allowed by the sysctls, yet refused: a seccomp filter (a \
             container's default profile, e.g. Docker's) or a security module blocks \
             unshare; {AS_ROOT} in a container with CAP_SYS_ADMIN (docker run --cap-add \
             SYS_ADMIN, or --security-opt seccomp=unconfined)"
        ),
        (Step::Unshare { .. }, Errno::EINVAL) => {
            "the process already runs more than one thread (apns-sim must enter the \
             namespaces before any thread starts: a bug, please report it)"
                .to_owned()
        }
        (Step::Unshare { user: false }, Errno::EPERM) => {
            if root {
                "this root lacks CAP_SYS_ADMIN (a container without it?): let apns-sim \
                 create a user namespace (--user-namespace auto), or give the container \
                 CAP_SYS_ADMIN"
                    .to_owned()
            } else {
                format!(
                    "network and mount namespaces need CAP_SYS_ADMIN: {AS_ROOT}, or let \
                     apns-sim create a user namespace (--user-namespace auto)"
                )
            }
        }
        (_, Errno::EPERM | Errno::EACCES) if !root && probe.apparmor_restrict == Some(1) => {
            format!(
                "AppArmor restricts unprivileged user namespaces: \
                 kernel.apparmor_restrict_unprivileged_userns=1 leaves the namespace \
                 without capabilities; {AS_ROOT}, or allow it: sysctl -w \
                 kernel.apparmor_restrict_unprivileged_userns=0 (or an AppArmor profile \
                 for apns-sim with `userns,`)"
            )
        }
        (_, Errno::EPERM | Errno::EACCES) => {
            format!("the namespace lacks the privilege for this; {AS_ROOT}")
        }
        _ => format!("unexpected; {AS_ROOT}, or report it with this message"),
    }
}

/// Enters the network and mount namespaces (and a user namespace, per `mode`), makes their
/// mounts private and sets the loopback interface up. Must be called while the process
/// has a single thread (see the module's docs).
pub fn enter(mode: UserNamespace) -> Result<Entered, SandboxError> {
    let fail = |step, errno| SandboxError {
        step,
        errno,
        advice: diagnose(step, errno, &Probe::read()),
    };
    // 1. The namespaces, in one call: the kernel creates the user namespace first, so the
    //    other two belong to it, and this process holds every capability in it (bind a
    //    port below 1024 there, mount there, configure its interfaces) and none outside.
    let (euid, egid) = (geteuid().as_raw(), getegid().as_raw());
    let others = CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS;
    let with_user = others | CloneFlags::CLONE_NEWUSER;
    let user_namespace = match mode {
        UserNamespace::Always => true,
        UserNamespace::Never => false,
        UserNamespace::Auto => euid != 0,
    };
    // Without a user namespace the kernel would not notice a second thread (it would
    // simply stay outside): refuse as it does with one.
    if threads() != Some(1) {
        return Err(fail(
            Step::Unshare {
                user: user_namespace,
            },
            Errno::EINVAL,
        ));
    }
    let user_namespace = if user_namespace {
        unshare(with_user).map_err(|e| fail(Step::Unshare { user: true }, e))?;
        true
    } else {
        match unshare(others) {
            Ok(()) => false,
            // Root without CAP_SYS_ADMIN (a container): a user namespace still gives it.
            Err(Errno::EPERM) if mode == UserNamespace::Auto => {
                unshare(with_user).map_err(|e| fail(Step::Unshare { user: true }, e))?;
                true
            }
            Err(e) => return Err(fail(Step::Unshare { user: false }, e)),
        }
    };
    // 2. In a user namespace, map this uid and gid to themselves: COMMAND sees the same ids
    //    (its files stay the user's), and, not being uid 0 there, loses the capabilities
    //    when it is executed. setgroups must be denied before an unprivileged gid map.
    if user_namespace {
        write_proc("/proc/self/setgroups", "deny", true).map_err(|e| fail(Step::IdMap, e))?;
        write_proc("/proc/self/uid_map", &format!("{euid} {euid} 1\n"), false)
            .map_err(|e| fail(Step::IdMap, e))?;
        write_proc("/proc/self/gid_map", &format!("{egid} {egid} 1\n"), false)
            .map_err(|e| fail(Step::IdMap, e))?;
    }
    // 3. Every mount private: without this, a root process's bind mount over /etc/hosts
    //    would propagate back to the machine's own mount namespace through shared mounts.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| fail(Step::PrivateMounts, e))?;
    // 4. The loopback interface up, so 127.0.0.1 (and ::1) work.
    loopback_up().map_err(|e| fail(Step::LoopbackUp, e))?;
    Ok(Entered { user_namespace })
}

/// How many threads this process has (`/proc/self/task` holds one folder per thread).
fn threads() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/task").ok()?.count())
}

/// Writes `text` to a `/proc` file; `optional` when its absence is fine (older kernels have
/// no `setgroups`).
fn write_proc(path: &str, text: &str, optional: bool) -> Result<(), Errno> {
    match std::fs::write(path, text) {
        Ok(()) => Ok(()),
        Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)),
    }
}

/// The largest kernel answer read: an acknowledgement is 36 bytes; one with the request
/// echoed whole is 52.
const ACK_BUFFER: usize = 512;

/// Sets `lo` up over rtnetlink ([`super::netlink`]).
fn loopback_up() -> Result<(), Errno> {
    let index = nix::net::if_::if_nametoindex("lo")?;
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    const SEQ: u32 = 1;
    let request = link_up_request(index, SEQ);
    sendto(
        fd.as_raw_fd(),
        &request,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut answer = [0u8; ACK_BUFFER];
    let n = recv(fd.as_raw_fd(), &mut answer, MsgFlags::empty())?;
    match parse_ack(&answer[..n], SEQ) {
        Ok(()) => Ok(()),
        Err(AckError::Refused(errno)) => Err(Errno::from_raw(errno)),
        Err(_) => Err(Errno::EPROTO),
    }
}

/// Bind-mounts `source` over `target` (a file over a file) in this mount namespace.
pub(crate) fn bind_over(source: &Path, target: &Path) -> Result<(), SandboxError> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|errno| SandboxError {
        step: Step::BindMount,
        errno,
        advice: format!(
            "{} over {}: {}",
            source.display(),
            target.display(),
            diagnose(Step::BindMount, errno, &Probe::read())
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(euid: u32) -> Probe {
        Probe {
            euid,
            user_namespaces_built: true,
            unprivileged_userns_clone: None,
            max_user_namespaces: Some(96_363),
            apparmor_restrict: None,
        }
    }
    const USER: Step = Step::Unshare { user: true };

    #[test]
    fn disabled_sysctls_are_named_with_their_fix() {
        let p = Probe {
            unprivileged_userns_clone: Some(0),
            ..probe(1000)
        };
        assert_eq!(
            diagnose(USER, Errno::EPERM, &p),
            "unprivileged user namespaces are disabled: kernel.unprivileged_userns_clone=0; \
             run as root (sudo apns-sim run …) or enable them: sysctl -w \
             kernel.unprivileged_userns_clone=1"
        );
        let both = Probe {
            max_user_namespaces: Some(0),
            ..p
        };
        let text = diagnose(USER, Errno::ENOSPC, &both);
        assert!(
            text.starts_with(
                "unprivileged user namespaces are disabled: \
                 kernel.unprivileged_userns_clone=0 / user.max_user_namespaces=0; run as root"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("sysctl -w user.max_user_namespaces=15000"),
            "{text}"
        );
        // Root is not stopped by unprivileged_userns_clone, only by the count.
        let root = Probe {
            max_user_namespaces: Some(0),
            ..probe(0)
        };
        let text = diagnose(USER, Errno::ENOSPC, &root);
        assert!(
            text.starts_with("user namespaces are disabled: user.max_user_namespaces=0; run with --user-namespace never"),
            "{text}"
        );
    }

    #[test]
    fn other_refusals_point_at_their_cause() {
        let p = probe(1000);
        let full = Probe {
            max_user_namespaces: Some(3),
            ..probe(1000)
        };
        assert!(diagnose(USER, Errno::ENOSPC, &full)
            .starts_with("the limit of user namespaces is reached (user.max_user_namespaces=3)"));
        assert!(diagnose(USER, Errno::EPERM, &p).contains("seccomp"));
        let unbuilt = Probe {
            user_namespaces_built: false,
            ..probe(1000)
        };
        assert!(diagnose(USER, Errno::EINVAL, &unbuilt).contains("CONFIG_USER_NS"));
        assert!(diagnose(USER, Errno::EINVAL, &p).contains("more than one thread"));
        let plain = Step::Unshare { user: false };
        assert!(
            diagnose(plain, Errno::EPERM, &probe(0)).starts_with("this root lacks CAP_SYS_ADMIN")
        );
        assert!(diagnose(plain, Errno::EPERM, &p)
            .starts_with("network and mount namespaces need CAP_SYS_ADMIN"));
        let apparmor = Probe {
            apparmor_restrict: Some(1),
            ..probe(1000)
        };
        assert!(diagnose(Step::PrivateMounts, Errno::EPERM, &apparmor)
            .starts_with("AppArmor restricts unprivileged user namespaces"));
        assert!(diagnose(Step::PrivateMounts, Errno::EPERM, &p).starts_with("the namespace lacks"));
    }

    #[test]
    fn the_error_says_the_step_the_errno_and_the_advice() {
        let e = SandboxError {
            step: Step::LoopbackUp,
            errno: Errno::EPERM,
            advice: "x".to_owned(),
        };
        assert_eq!(
            e.to_string(),
            "setting the loopback interface up: EPERM: Operation not permitted: x"
        );
    }
}
