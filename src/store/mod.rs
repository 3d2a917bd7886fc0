//! Durable state: the one SQLite file in the state directory (`serve --state DIR`) that keeps
//! what the hub must not forget across a restart, even one after kill -9: devices and their
//! tokens, unregistered tokens with their timestamps, unread feedback tuples and the
//! notifications stored for offline devices.
//!
//! This layer knows rows and nothing of the hub's rules: plain strings, bytes and numbers,
//! so the file can be read with `sqlite3` and this module tested alone. The hub turns its
//! state into [`Change`]s and back from a [`Snapshot`].
//!
//! # Writing: one writer, group commits
//!
//! SQLite is synchronous, so the file belongs to one writer thread, and nothing else touches
//! the connection. The hub never waits for it:
//!
//! 1. under the hub's lock, a rule's changes are put in the pending table with
//!    [`Store::submit`], keyed by the row they touch: a newer change of a row replaces the
//!    older one not yet written (a stored notification superseded before the writer got to
//!    it is never written at all), so the table holds at most one entry per row the hub
//!    holds, and the submission number grows by one;
//! 2. the writer wakes, takes the whole pending table (everything submitted meanwhile, from
//!    every connection) and writes it in one transaction: one commit, one `fsync`, for many
//!    changes, so durability costs little throughput;
//! 3. after the commit it publishes the last submission number it wrote on a `watch`
//!    channel; an answer that must be durable ([`Store::synced`], taken after the change was
//!    submitted) waits for that number to reach its own.
//!
//! The answers of an in-memory simulator (no store) never wait.

mod schema;

use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::future::Future;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::watch;
use tracing::{error, info, warn};

pub use schema::{StoreError, SCHEMA_VERSION};

/// The state file's name inside the state directory.
pub const STATE_FILE: &str = "apns-sim.sqlite3";

/// The lock file's name inside the state directory. The store holds an exclusive lock on it
/// from [`Store::open`] to [`Store::close`] (or the process's end, kill -9 included: the
/// kernel releases it), so one process at a time writes a state directory; it holds the
/// owner's process id, for the message that refuses a second one.
pub const LOCK_FILE: &str = "apns-sim.lock";

/// How long the writer waits before trying again after a failed commit (a full disk, a
/// file locked by another program): long enough not to spin, short enough that answers
/// waiting for durability resume soon after the cause is gone.
pub const RETRY_AFTER: Duration = Duration::from_millis(500);

/// How long SQLite waits for a lock another process holds (a `sqlite3` shell reading the
/// file) before a write fails and is retried.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A device the hub knows (it said hello at least once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    /// Its serial number.
    pub serial: String,
    /// `sandbox` or `production`.
    pub environment: String,
    /// When it was last seen connecting or leaving (ms since the epoch): old records expire.
    pub last_seen_ms: u64,
}

/// A token the hub minted, current or kept for its unregistration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// The token's bytes.
    pub token: Vec<u8>,
    /// The device it was minted for.
    pub serial: String,
    /// Its environment.
    pub environment: String,
    /// The app (bundle id).
    pub app: String,
    /// The kind of token (`remote-notification`, `voip`, …).
    pub kind: String,
    /// Whether it is the (device, app, kind)'s current token, given again on re-registering.
    pub current: bool,
    /// When the device reported the app as not installed (ms since the epoch), if it did.
    pub unregistered_at_ms: Option<u64>,
}

/// An unread feedback tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackRow {
    /// The topic whose feedback connection reads it.
    pub topic: String,
    /// Its environment.
    pub environment: String,
    /// The token.
    pub token: Vec<u8>,
    /// The tuple's timestamp (UNIX seconds).
    pub timestamp: u32,
}

/// A notification stored for an offline device: the newest per (device, app).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    /// The device's serial.
    pub serial: String,
    /// The device's environment.
    pub environment: String,
    /// The app it is for.
    pub app: String,
    /// `binary` or `http2`.
    pub api: String,
    /// The device token it was pushed to.
    pub token: Vec<u8>,
    /// The topic it was pushed to.
    pub topic: String,
    /// The binary identifier.
    pub identifier: [u8; 4],
    /// The apns-id.
    pub apns_id: [u8; 16],
    /// The expiry as the provider gave it.
    pub expiry: Option<u32>,
    /// UNIX seconds it is kept until (the hub's decision on arrival).
    pub keep_until: u64,
    /// Priority.
    pub priority: u8,
    /// `apns-push-type`, if any.
    pub push_type: Option<String>,
    /// `apns-collapse-id`, if any.
    pub collapse_id: Option<String>,
    /// The payload.
    pub payload: Vec<u8>,
    /// The binary command's bytes, if it came over the binary API.
    pub frame: Option<Vec<u8>>,
    /// The fault that hit it, if one did.
    pub fault: Option<String>,
}

/// Everything the file held when it was opened, for the hub to start from.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Every device.
    pub devices: Vec<DeviceRow>,
    /// Every token.
    pub tokens: Vec<TokenRow>,
    /// Unread feedback, oldest first (by timestamp, then by when it was written).
    pub feedback: Vec<FeedbackRow>,
    /// Stored notifications.
    pub stored: Vec<StoredRow>,
}

/// The row a change touches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A device: serial and environment.
    Device(String, String),
    /// A token.
    Token(Vec<u8>),
    /// A feedback tuple: topic, environment, token.
    Feedback(String, String, Vec<u8>),
    /// A stored notification: serial, environment, app.
    Stored(String, String, String),
}

/// A row's new contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    /// A device.
    Device(DeviceRow),
    /// A token.
    Token(TokenRow),
    /// A feedback tuple.
    Feedback(FeedbackRow),
    /// A stored notification (boxed: it is several times the size of the others).
    Stored(Box<StoredRow>),
}

impl Row {
    /// The row it writes.
    pub fn key(&self) -> Key {
        match self {
            Row::Device(d) => Key::Device(d.serial.clone(), d.environment.clone()),
            Row::Token(t) => Key::Token(t.token.clone()),
            Row::Feedback(f) => {
                Key::Feedback(f.topic.clone(), f.environment.clone(), f.token.clone())
            }
            Row::Stored(s) => Key::Stored(s.serial.clone(), s.environment.clone(), s.app.clone()),
        }
    }
}

/// One change the hub made: a row written, or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Insert or replace the row.
    Put(Row),
    /// Delete the row (nothing if it is not there).
    Delete(Key),
}

impl Change {
    fn split(self) -> (Key, Option<Row>) {
        match self {
            Change::Put(row) => (row.key(), Some(row)),
            Change::Delete(key) => (key, None),
        }
    }
}

/// The state could not be written: answers that must be durable are refused instead of
/// claiming what the disk does not hold. The writer keeps trying ([`RETRY_AFTER`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the state file could not be written: {0}")]
pub struct NotSaved(pub String);

/// The durable state, shared by the hub and its writer thread. Clone it freely.
#[derive(Debug, Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// The state file.
    path: PathBuf,
    /// Changes submitted and not yet taken by the writer.
    pending: Mutex<Pending>,
    /// Wakes the writer when something is submitted or the store closes.
    wake: Condvar,
    /// What the writer has committed.
    committed: watch::Sender<Committed>,
    /// The writer thread, joined by [`Store::close`].
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The open lock file, locked; dropped (unlocked) by [`Store::close`].
    lock_file: Mutex<Option<File>>,
}

#[derive(Debug, Default)]
struct Pending {
    /// The newest change of each row not yet written (`None`: delete it).
    changes: HashMap<Key, Option<Row>>,
    /// The number of the last submission.
    submitted: u64,
    /// Set by [`Store::close`]: the writer writes what is left and stops.
    closing: bool,
}

/// What the writer published after its last attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Committed {
    /// Every submission up to this number is on disk.
    through: u64,
    /// Why the last attempt failed, while the writer retries.
    failing: Option<String>,
}

impl Store {
    /// Opens (creating it if needed) the state file in `dir`, migrates it to
    /// [`SCHEMA_VERSION`], reads it, and starts its writer thread. Refuses a directory
    /// another process holds ([`LOCK_FILE`]) and a file of a newer version, and reports a
    /// corrupt one, leaving all of them untouched. `sync_to_disk`: sync the write-ahead log
    /// at every commit (SQLite `synchronous = FULL`, survives a power cut) rather than
    /// leaving it in the kernel's cache (`NORMAL`, survives kill -9).
    pub fn open(dir: &Path, sync_to_disk: bool) -> Result<(Store, Snapshot), StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        // Before the database is opened at all, so that a second process changes nothing.
        let lock_file = lock_dir(dir)?;
        let path = dir.join(STATE_FILE);
        let sqlite = |e| StoreError::from_sqlite(&path, e);
        let mut conn = Connection::open(&path).map_err(sqlite)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
        // The version is checked before WAL mode is set, so that a newer or corrupt file is
        // not changed at all.
        schema::migrate(&mut conn, &path)?;
        // WAL: readers (a `sqlite3` shell) do not block the writer, and a commit appends to
        // the log instead of rewriting pages. NORMAL: a commit is in the log, in the
        // kernel's cache, so it survives kill -9; FULL also syncs the log at every commit
        // (one sync per group commit), so it survives a power cut.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(sqlite)?;
        if !mode.eq_ignore_ascii_case("wal") {
            warn!(path = %path.display(), mode, "the state file could not use WAL mode");
        }
        let synchronous = if sync_to_disk { "FULL" } else { "NORMAL" };
        conn.pragma_update(None, "synchronous", synchronous)
            .map_err(sqlite)?;
        let snapshot = load(&conn).map_err(sqlite)?;
        info!(
            path = %path.display(),
            devices = snapshot.devices.len(),
            tokens = snapshot.tokens.len(),
            feedback = snapshot.feedback.len(),
            stored = snapshot.stored.len(),
            "state loaded"
        );
        let (committed, _) = watch::channel(Committed::default());
        let shared = Arc::new(Shared {
            path,
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            committed,
            writer: Mutex::new(None),
            lock_file: Mutex::new(Some(lock_file)),
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("apns-sim-store".to_owned())
                .spawn(move || write_loop(&shared, conn))
                .map_err(|source| StoreError::Dir {
                    path: dir.to_owned(),
                    source,
                })?
        };
        *lock(&shared.writer) = Some(writer);
        Ok((Store { shared }, snapshot))
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Hands changes to the writer (step 1 of the module docs); never waits for the disk.
    /// The hub calls it under its own lock, so changes are submitted in the order the state
    /// changed.
    pub fn submit(&self, changes: impl IntoIterator<Item = Change>) {
        let mut pending = lock(&self.shared.pending);
        let before = pending.changes.len();
        let mut any = false;
        for change in changes {
            let (key, row) = change.split();
            pending.changes.insert(key, row);
            any = true;
        }
        if any {
            pending.submitted += 1;
            if before == 0 {
                self.shared.wake.notify_one();
            }
        }
    }

    /// Resolves once everything submitted before this call is committed (step 3 of the
    /// module docs), or fails if the writer cannot write it now.
    pub fn synced(&self) -> impl Future<Output = Result<(), NotSaved>> + Send + 'static {
        let target = lock(&self.shared.pending).submitted;
        let mut rx = self.shared.committed.subscribe();
        async move {
            let seen = rx
                .wait_for(|c| c.through >= target || c.failing.is_some())
                .await
                .map_err(|_| NotSaved("the state writer stopped".to_owned()))?;
            match (&seen.failing, seen.through >= target) {
                (_, true) => Ok(()),
                (Some(why), false) => Err(NotSaved(why.clone())),
                (None, false) => Err(NotSaved("the state writer stopped".to_owned())),
            }
        }
    }

    /// Writes everything submitted, stops the writer and checkpoints the log into the file
    /// (shutdown, after the endpoints stopped). Later submissions are not written.
    pub async fn close(&self) {
        lock(&self.shared.pending).closing = true;
        self.shared.wake.notify_one();
        let writer = lock(&self.shared.writer).take();
        if let Some(writer) = writer {
            // Joining blocks, so it runs off the runtime's threads.
            let joined = tokio::task::spawn_blocking(move || writer.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                error!(path = %self.shared.path.display(), "the state writer panicked");
            }
        }
        // Nothing writes the file any more: another process (or a restart in this one) may
        // take the directory.
        drop(lock(&self.shared.lock_file).take());
    }
}

/// Takes the exclusive lock on `dir`'s [`LOCK_FILE`] without waiting, and writes this
/// process's id into it; the lock lasts as long as the returned file is open.
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let io = |source| StoreError::Dir {
        path: path.clone(),
        source,
    };
    // Not truncated on opening: the owner's pid must stay readable for a second process.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            // Best effort: the owner may not have written its pid yet.
            let pid = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse().ok());
            return Err(StoreError::Locked {
                dir: dir.to_owned(),
                pid,
            });
        }
        Err(TryLockError::Error(source)) => return Err(io(source)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(file)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The writer never panics holding these; if it did, the data is still consistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The writer thread: steps 2 and 3 of the module docs, until [`Store::close`].
fn write_loop(shared: &Shared, mut conn: Connection) {
    let path = shared.path.display().to_string();
    loop {
        // Wait for work, then take all of it at once.
        let (batch, through, closing) = {
            let mut pending = lock(&shared.pending);
            while pending.changes.is_empty() && !pending.closing {
                pending = shared
                    .wake
                    .wait(pending)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            (
                std::mem::take(&mut pending.changes),
                pending.submitted,
                pending.closing,
            )
        };
        if !batch.is_empty() {
            match write_batch(&mut conn, &batch) {
                Ok(()) => {
                    shared.committed.send_replace(Committed {
                        through,
                        failing: None,
                    });
                }
                Err(e) => {
                    let why = e.to_string();
                    error!(path, error = %why, rows = batch.len(), "state not saved; retrying");
                    shared.committed.send_modify(|c| c.failing = Some(why));
                    // Put back what no newer change replaced meanwhile, to be retried.
                    let mut pending = lock(&shared.pending);
                    for (key, row) in batch {
                        pending.changes.entry(key).or_insert(row);
                    }
                    if closing {
                        error!(path, "shutting down with state not saved");
                        return;
                    }
                    drop(pending);
                    std::thread::sleep(RETRY_AFTER);
                    continue;
                }
            }
        }
        if closing && lock(&shared.pending).changes.is_empty() {
            if let Err(e) = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE") {
                warn!(path, error = %e, "state checkpoint failed (the log keeps the changes)");
            }
            return;
        }
    }
}

/// Writes one batch in one transaction.
fn write_batch(conn: &mut Connection, batch: &HashMap<Key, Option<Row>>) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for (key, row) in batch {
        match row {
            Some(row) => put(&tx, row)?,
            None => delete(&tx, key)?,
        }
    }
    tx.commit()
}

fn put(tx: &rusqlite::Transaction<'_>, row: &Row) -> rusqlite::Result<()> {
    match row {
        Row::Device(d) => tx
            .prepare_cached("INSERT OR REPLACE INTO devices VALUES (?1, ?2, ?3)")?
            .execute(params![d.serial, d.environment, d.last_seen_ms as i64]),
        Row::Token(t) => tx
            .prepare_cached("INSERT OR REPLACE INTO tokens VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?
            .execute(params![
                t.token,
                t.serial,
                t.environment,
                t.app,
                t.kind,
                t.current,
                t.unregistered_at_ms.map(|v| v as i64)
            ]),
        Row::Feedback(f) => tx
            .prepare_cached("INSERT OR REPLACE INTO feedback VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![f.topic, f.environment, f.token, f.timestamp]),
        Row::Stored(s) => tx
            .prepare_cached(
                "INSERT OR REPLACE INTO stored VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )?
            .execute(params![
                s.serial,
                s.environment,
                s.app,
                s.api,
                s.token,
                s.topic,
                &s.identifier[..],
                &s.apns_id[..],
                s.expiry,
                s.keep_until as i64,
                s.priority,
                s.push_type,
                s.collapse_id,
                s.payload,
                s.frame,
                s.fault
            ]),
    }
    .map(drop)
}

fn delete(tx: &rusqlite::Transaction<'_>, key: &Key) -> rusqlite::Result<()> {
    match key {
        Key::Device(serial, env) => tx
            .prepare_cached("DELETE FROM devices WHERE serial = ?1 AND environment = ?2")?
            .execute(params![serial, env]),
        Key::Token(token) => tx
            .prepare_cached("DELETE FROM tokens WHERE token = ?1")?
            .execute(params![token]),
        Key::Feedback(topic, env, token) => tx
            .prepare_cached(
                "DELETE FROM feedback WHERE topic = ?1 AND environment = ?2 AND token = ?3",
            )?
            .execute(params![topic, env, token]),
        Key::Stored(serial, env, app) => tx
            .prepare_cached(
                "DELETE FROM stored WHERE serial = ?1 AND environment = ?2 AND app = ?3",
            )?
            .execute(params![serial, env, app]),
    }
    .map(drop)
}

/// A column of fixed length (an identifier, an apns-id), or a conversion error naming it.
fn fixed<const N: usize>(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<[u8; N]> {
    let bytes: Vec<u8> = row.get(idx)?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Blob,
            format!("{} bytes where {N} belong", b.len()).into(),
        )
    })
}

/// Reads the whole file.
fn load(conn: &Connection) -> rusqlite::Result<Snapshot> {
    let u64_of = |v: i64| v.max(0) as u64;
    let devices = conn
        .prepare("SELECT serial, environment, last_seen_ms FROM devices")?
        .query_map([], |r| {
            Ok(DeviceRow {
                serial: r.get(0)?,
                environment: r.get(1)?,
                last_seen_ms: u64_of(r.get(2)?),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let tokens = conn
        .prepare(
            "SELECT token, serial, environment, app, kind, current, unregistered_at_ms \
             FROM tokens",
        )?
        .query_map([], |r| {
            Ok(TokenRow {
                token: r.get(0)?,
                serial: r.get(1)?,
                environment: r.get(2)?,
                app: r.get(3)?,
                kind: r.get(4)?,
                current: r.get(5)?,
                unregistered_at_ms: r.get::<_, Option<i64>>(6)?.map(u64_of),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let feedback = conn
        .prepare(
            "SELECT topic, environment, token, timestamp FROM feedback \
             ORDER BY timestamp, rowid",
        )?
        .query_map([], |r| {
            Ok(FeedbackRow {
                topic: r.get(0)?,
                environment: r.get(1)?,
                token: r.get(2)?,
                timestamp: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let stored = conn
        .prepare(
            "SELECT serial, environment, app, api, token, topic, identifier, apns_id, expiry, \
             keep_until, priority, push_type, collapse_id, payload, frame, fault FROM stored",
        )?
        .query_map([], |r| {
            Ok(StoredRow {
                serial: r.get(0)?,
                environment: r.get(1)?,
                app: r.get(2)?,
                api: r.get(3)?,
                token: r.get(4)?,
                topic: r.get(5)?,
                identifier: fixed(r, 6)?,
                apns_id: fixed(r, 7)?,
                expiry: r.get(8)?,
                keep_until: u64_of(r.get(9)?),
                priority: r.get(10)?,
                push_type: r.get(11)?,
                collapse_id: r.get(12)?,
                payload: r.get(13)?,
                frame: r.get(14)?,
                fault: r.get(15)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    // A read-only check that the file has what this version needs (`optional` so that an
    // empty table is fine).
    conn.query_row("SELECT 1 FROM tokens LIMIT 1", [], |_| Ok(()))
        .optional()?;
    Ok(Snapshot {
        devices,
        tokens,
        feedback,
        stored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_row(token: u8, current: bool, unregistered: Option<u64>) -> TokenRow {
        TokenRow {
            token: vec![token; 32],
            serial: "D1".to_owned(),
            environment: "sandbox".to_owned(),
            app: "com.example.app".to_owned(),
            kind: "remote-notification".to_owned(),
            current,
            unregistered_at_ms: unregistered,
        }
    }

    fn stored_row() -> StoredRow {
        StoredRow {
            serial: "D1".to_owned(),
            environment: "sandbox".to_owned(),
            app: "com.example.app".to_owned(),
            api: "http2".to_owned(),
            token: vec![1; 32],
            topic: "com.example.app".to_owned(),
            identifier: [0, 0, 0, 7],
            apns_id: [9; 16],
            expiry: None,
            keep_until: 1_800_000_000,
            priority: 10,
            push_type: Some("alert".to_owned()),
            collapse_id: None,
            payload: br#"{"aps":{}}"#.to_vec(),
            frame: None,
            fault: None,
        }
    }

    #[tokio::test]
    async fn changes_are_committed_and_read_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (store, snapshot) = Store::open(dir.path(), false).unwrap();
        assert_eq!(snapshot, Snapshot::default());
        store.submit([
            Change::Put(Row::Device(DeviceRow {
                serial: "D1".into(),
                environment: "sandbox".into(),
                last_seen_ms: 5,
            })),
            Change::Put(Row::Token(token_row(1, true, None))),
            Change::Put(Row::Token(token_row(2, false, Some(77)))),
            Change::Put(Row::Stored(Box::new(stored_row()))),
            Change::Put(Row::Feedback(FeedbackRow {
                topic: "com.example.app".into(),
                environment: "sandbox".into(),
                token: vec![2; 32],
                timestamp: 9,
            })),
        ]);
        // A later change of the same row replaces it; a delete removes it.
        store.submit([Change::Put(Row::Token(token_row(2, false, Some(78))))]);
        store.submit([Change::Put(Row::Token(token_row(3, true, None)))]);
        store.submit([Change::Delete(Key::Token(vec![3; 32]))]);
        store.synced().await.unwrap();
        store.close().await;

        let (again, snapshot) = Store::open(dir.path(), false).unwrap();
        assert_eq!(snapshot.devices.len(), 1);
        let mut tokens = snapshot.tokens.clone();
        tokens.sort_by(|a, b| a.token.cmp(&b.token));
        assert_eq!(
            tokens,
            [token_row(1, true, None), token_row(2, false, Some(78))]
        );
        assert_eq!(snapshot.stored, [stored_row()]);
        assert_eq!(snapshot.feedback[0].timestamp, 9);
        again.close().await;
    }

    #[tokio::test]
    async fn synced_waits_only_for_what_was_submitted_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), false).unwrap();
        // Nothing submitted: resolves at once.
        store.synced().await.unwrap();
        for i in 0..100u8 {
            store.submit([Change::Put(Row::Token(token_row(i, true, None)))]);
        }
        store.synced().await.unwrap();
        let conn = Connection::open(store.path()).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM tokens", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 100, "committed before synced resolved");
        store.close().await;
    }

    #[test]
    fn the_file_is_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), false).unwrap();
        let conn = Connection::open(store.path()).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[tokio::test]
    async fn a_second_open_of_a_directory_is_refused_until_the_first_closes() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), false).unwrap();
        let owner = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(owner.trim(), std::process::id().to_string());
        // A lock on the open file, so a second open in the same process is refused too.
        let err = Store::open(dir.path(), false).unwrap_err();
        assert!(
            matches!(&err, StoreError::Locked { dir: d, pid: Some(p) }
                if d == dir.path() && *p == std::process::id()),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        store.close().await;
        let (again, _) = Store::open(dir.path(), false).unwrap();
        again.close().await;
    }

    #[test]
    fn a_corrupt_file_is_reported_with_its_path_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        std::fs::write(
            &path,
            b"this is not a database, just some text padding it out",
        )
        .unwrap();
        let err = Store::open(dir.path(), false).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert!(std::fs::read(&path).unwrap().starts_with(b"this is not"));
    }
}
