//! The state file's schema: its version (`PRAGMA user_version`), the statements that create
//! it, and the migrations from every older version. Opening a file checks its version before
//! anything else: an older one is migrated in one transaction, a newer one is refused, and a
//! file that is not a database is reported with its path, never recreated.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

/// The schema version this build writes. Bump it with a new entry in `MIGRATIONS` (below).
pub const SCHEMA_VERSION: i64 = 1;

/// The statements that take a file from version `i` to `i + 1`, at index `i`. Version 0 is
/// an empty file (SQLite's `user_version` starts at 0), so the first entry creates the
/// schema.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: the first schema.
    "CREATE TABLE devices (
        serial TEXT NOT NULL,
        environment TEXT NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        PRIMARY KEY (serial, environment)
    ) WITHOUT ROWID;
    CREATE TABLE tokens (
        token BLOB PRIMARY KEY,
        serial TEXT NOT NULL,
        environment TEXT NOT NULL,
        app TEXT NOT NULL,
        kind TEXT NOT NULL,
        current INTEGER NOT NULL,
        unregistered_at_ms INTEGER
    );
    CREATE TABLE feedback (
        topic TEXT NOT NULL,
        environment TEXT NOT NULL,
        token BLOB NOT NULL,
        timestamp INTEGER NOT NULL,
        PRIMARY KEY (topic, environment, token)
    );
    CREATE TABLE stored (
        serial TEXT NOT NULL,
        environment TEXT NOT NULL,
        app TEXT NOT NULL,
        api TEXT NOT NULL,
        token BLOB NOT NULL,
        topic TEXT NOT NULL,
        identifier BLOB NOT NULL,
        apns_id BLOB NOT NULL,
        expiry INTEGER,
        keep_until INTEGER NOT NULL,
        priority INTEGER NOT NULL,
        push_type TEXT,
        collapse_id TEXT,
        payload BLOB NOT NULL,
        frame BLOB,
        fault TEXT,
        PRIMARY KEY (serial, environment, app)
    );",
];

/// Why a state file cannot be used. Each names the file, so the user knows what to look at.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file was written by a newer apns-sim: this one does not know its schema and must
    /// not guess (a downgrade would lose or misread what the newer one kept).
    #[error(
        "{path}: state written by a newer apns-sim (schema version {found}; this build \
         knows up to {supported}): run the newer apns-sim, or pass another --state \
         directory (or --in-memory)"
    )]
    Newer {
        /// The state file.
        path: PathBuf,
        /// The version in the file.
        found: i64,
        /// [`SCHEMA_VERSION`].
        supported: i64,
    },
    /// The file is not a database SQLite can read, or fails its integrity check. It is left
    /// as it is for the user to inspect or remove: resetting it would silently lose state.
    #[error(
        "{path}: the state file is corrupt ({detail}); it was left untouched: move it \
         away to start with empty state, or pass another --state directory"
    )]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What SQLite said.
        detail: String,
    },
    /// Any other failure to open, read or write the file (permissions, a full disk).
    #[error("{path}: {source}")]
    Sqlite {
        /// The state file.
        path: PathBuf,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// Another process holds the state directory's lock ([`LOCK_FILE`](crate::store::LOCK_FILE)): two simulators
    /// writing one file would each answer from state the other does not see, and a token one
    /// minted could route nowhere in the other. The first one keeps it; this one does not
    /// start.
    #[error(
        "{dir}: the state directory is in use by another apns-sim{}: stop it, or pass \
         another --state directory (or --in-memory)",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked {
        /// The state directory.
        dir: PathBuf,
        /// The process holding it, as it wrote it into the lock file (if it had yet).
        pid: Option<u32>,
    },
    /// The state directory (or its lock file) could not be created or opened.
    #[error("{path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// `source`, about `path`, as [`StoreError::Corrupt`] when SQLite says the file is not a
    /// database or is malformed, [`StoreError::Sqlite`] otherwise.
    pub(crate) fn from_sqlite(path: &Path, source: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        let corrupt = matches!(
            source.sqlite_error_code(),
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
        );
        if corrupt {
            StoreError::Corrupt {
                path: path.to_owned(),
                detail: source.to_string(),
            }
        } else {
            StoreError::Sqlite {
                path: path.to_owned(),
                source,
            }
        }
    }
}

/// Brings the open file at `path` to [`SCHEMA_VERSION`]: checks that it is a sound
/// database, refuses a newer version, and runs the migrations it lacks in one transaction
/// (all or nothing: a crash mid-way leaves the old version). Returns the version found.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<i64, StoreError> {
    let sqlite = |e| StoreError::from_sqlite(path, e);
    // Reading the header is the first thing that fails on a file that is not a database.
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(sqlite)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::Newer {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found < 0 {
        return Err(StoreError::Corrupt {
            path: path.to_owned(),
            detail: format!("schema version {found} is negative"),
        });
    }
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |row| row.get(0))
        .map_err(sqlite)?;
    if check != "ok" {
        return Err(StoreError::Corrupt {
            path: path.to_owned(),
            detail: format!("integrity check: {check}"),
        });
    }
    if found < SCHEMA_VERSION {
        let tx = conn.transaction().map_err(sqlite)?;
        // `found` is within 0..SCHEMA_VERSION here, so the indices exist.
        for step in &MIGRATIONS[found as usize..SCHEMA_VERSION as usize] {
            tx.execute_batch(step).map_err(sqlite)?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(sqlite)?;
        tx.commit().map_err(sqlite)?;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        stmt.query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn every_version_has_its_migration() {
        assert_eq!(MIGRATIONS.len() as i64, SCHEMA_VERSION);
    }

    #[test]
    fn an_empty_file_is_created_at_the_current_version_and_a_second_open_changes_nothing() {
        let mut conn = Connection::open_in_memory().unwrap();
        let path = Path::new("mem");
        assert_eq!(migrate(&mut conn, path).unwrap(), 0);
        assert_eq!(tables(&conn), ["devices", "feedback", "stored", "tokens"]);
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        conn.execute(
            "INSERT INTO devices VALUES ('D1', 'sandbox', 5)",
            rusqlite::params![],
        )
        .unwrap();
        assert_eq!(migrate(&mut conn, path).unwrap(), SCHEMA_VERSION);
        let kept: i64 = conn
            .query_row("SELECT count(*) FROM devices", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, 1, "migrating a current file keeps its rows");
    }

    #[test]
    fn a_newer_version_is_refused_naming_the_file_and_both_versions() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = migrate(&mut conn, Path::new("/x/state.sqlite3")).unwrap_err();
        assert!(
            matches!(err, StoreError::Newer { found, supported, .. }
                if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.starts_with("/x/state.sqlite3: "), "{text}");
        assert!(text.contains("newer apns-sim"), "{text}");
        assert!(tables(&conn).is_empty(), "nothing was created");
    }

    #[test]
    fn a_file_that_is_not_a_database_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite3");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let mut conn = Connection::open(&path).unwrap();
        let err = migrate(&mut conn, &path).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("corrupt"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), vec![0x5a; 8192], "untouched");
    }
}
