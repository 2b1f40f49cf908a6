//! The store: explorations and their executions in SQLite, so that reports survive a
//! daemon restart. Rules are deliberately not stored (a fault never outlives its daemon).
//!
//! Every execution is committed when it ends; an exploration still `running` when the
//! store is opened belonged to a daemon that died, and becomes `interrupted` with the
//! executions it finished.

use std::{
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use rusqlite::{Connection, OptionalExtension, params};

use fi_explore::model::{
    Execution, Exploration, ExplorationRow, ExploreConfig, GraphSnapshot, Status,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path:?}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("store {path:?}: creating its directory: {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("store: a record does not decode ({0}); was it written by a newer fi?")]
    Decode(#[from] serde_json::Error),
    #[error("store {path:?} has schema version {found}, newer than this fi knows ({known})")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: usize,
    },
    #[error("no exploration {0}")]
    NotFound(i64),
}

/// Schema migrations, in order; `PRAGMA user_version` is how many have run.
const MIGRATIONS: [&str; 3] = [
    // 1: explorations and their executions; plans, outcomes and calls as JSON documents
    // (read back whole, never queried inside).
    "CREATE TABLE explorations (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         created_ms INTEGER NOT NULL,
         finished_ms INTEGER,
         status TEXT NOT NULL,
         config TEXT NOT NULL,
         error TEXT
     );
     CREATE TABLE executions (
         exploration_id INTEGER NOT NULL REFERENCES explorations(id) ON DELETE CASCADE,
         number INTEGER NOT NULL,
         plan TEXT NOT NULL,
         outcome TEXT NOT NULL,
         failed INTEGER NOT NULL,
         duration_ms INTEGER NOT NULL,
         pruned TEXT,
         calls TEXT NOT NULL,
         output_tail TEXT NOT NULL,
         notes TEXT NOT NULL,
         PRIMARY KEY (exploration_id, number)
     );",
    // 2: call-graph snapshots (the reference run's graph, kept with the exploration).
    "CREATE TABLE graph_snapshots (
         exploration_id INTEGER NOT NULL REFERENCES explorations(id) ON DELETE CASCADE,
         taken_ms INTEGER NOT NULL,
         graph TEXT NOT NULL
     );",
    // 3: how long the test command itself ran (fi's share of an execution is the rest).
    "ALTER TABLE executions ADD COLUMN test_ms INTEGER NOT NULL DEFAULT 0;",
];

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The SQLite store.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates, with its directory, mode 0700) the store and migrates it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            use std::os::unix::fs::DirBuilderExt as _;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| StoreError::Directory {
                    path: dir.to_owned(),
                    source,
                })?;
        }
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        Store::init(conn, path)
    }

    /// A store that lives in memory (tests).
    pub fn in_memory() -> Result<Store, StoreError> {
        Store::init(Connection::open_in_memory()?, Path::new(":memory:"))
    }

    fn init(conn: Connection, path: &Path) -> Result<Store, StoreError> {
        // WAL: a reader (fictl explore show) never blocks the running exploration, and a
        // SIGKILL loses at most the transaction in flight. FULL: a committed execution is
        // on disk.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut store = Store {
            conn,
            path: path.to_owned(),
        };
        store.migrate()?;
        let interrupted = store.conn.execute(
            "UPDATE explorations SET status = 'interrupted', finished_ms = ?1,
                 error = coalesce(error, 'the daemon stopped while it ran')
             WHERE status = 'running'",
            params![now_ms() as i64],
        )?;
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "explorations left running by an earlier daemon marked interrupted"
            );
        }
        Ok(store)
    }

    /// The schema version (migrations applied).
    pub fn version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let found = self.version()?;
        if found > MIGRATIONS.len() as i64 {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found,
                known: MIGRATIONS.len(),
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
            tracing::info!(version = i + 1, "store schema migrated");
        }
        Ok(())
    }

    pub fn create(&self, config: &ExploreConfig) -> Result<i64, StoreError> {
        self.conn.execute(
            "INSERT INTO explorations (created_ms, status, config) VALUES (?1, 'running', ?2)",
            params![now_ms() as i64, serde_json::to_string(config)?],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Commits one execution (a pruned one too).
    pub fn save_execution(&self, id: i64, e: &Execution) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO executions
                 (exploration_id, number, plan, outcome, failed, duration_ms, pruned, calls,
                  output_tail, notes, test_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                id,
                e.number,
                serde_json::to_string(&e.plan)?,
                serde_json::to_string(&e.outcome)?,
                e.outcome.is_failure(),
                e.duration_ms as i64,
                e.pruned.as_ref().map(serde_json::to_string).transpose()?,
                serde_json::to_string(&e.calls)?,
                e.output_tail,
                serde_json::to_string(&e.notes)?,
                e.test_ms as i64,
            ],
        )?;
        Ok(())
    }

    pub fn save_graph(&self, id: i64, graph: &GraphSnapshot) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO graph_snapshots (exploration_id, taken_ms, graph) VALUES (?1, ?2, ?3)",
            params![id, now_ms() as i64, serde_json::to_string(graph)?],
        )?;
        Ok(())
    }

    pub fn finish(&self, id: i64, status: Status, error: Option<&str>) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE explorations SET status = ?2, finished_ms = ?3, error = ?4 WHERE id = ?1",
            params![id, status.as_str(), now_ms() as i64, error],
        )?;
        Ok(())
    }

    /// Explorations, newest first.
    pub fn list(&self, limit: u32) -> Result<Vec<ExplorationRow>, StoreError> {
        self.rows("ORDER BY e.id DESC LIMIT ?1", limit)
    }

    pub fn row(&self, id: i64) -> Result<ExplorationRow, StoreError> {
        self.rows("WHERE e.id = ?1", id)?
            .pop()
            .ok_or(StoreError::NotFound(id))
    }

    /// Exploration rows with their counts of executions run and failed; `tail` is the
    /// WHERE/ORDER clause, with one parameter.
    fn rows(
        &self,
        tail: &str,
        param: impl rusqlite::ToSql,
    ) -> Result<Vec<ExplorationRow>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT e.id, e.created_ms, e.finished_ms, e.status, e.config, e.error,
                    (SELECT count(*) FROM executions x WHERE x.exploration_id = e.id
                         AND x.pruned IS NULL),
                    (SELECT count(*) FROM executions x WHERE x.exploration_id = e.id
                         AND x.failed)
             FROM explorations e {tail}"
        ))?;
        let rows = stmt.query_map(params![param], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, u32>(6)?,
                r.get::<_, u32>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, created, finished, status, config, error, executions, failures) = row?;
            out.push(ExplorationRow {
                id,
                created_ms: created as u64,
                finished_ms: finished.map(|f| f as u64),
                status: Status::parse(&status),
                config: serde_json::from_str(&config)?,
                error,
                executions,
                failures,
            });
        }
        Ok(out)
    }

    /// An exploration with all its executions, in order.
    pub fn load(&self, id: i64) -> Result<Exploration, StoreError> {
        let row = self.row(id)?;
        let mut stmt = self.conn.prepare(
            "SELECT number, plan, outcome, duration_ms, pruned, calls, output_tail, notes, test_ms
             FROM executions WHERE exploration_id = ?1 ORDER BY number",
        )?;
        let raw = stmt.query_map(params![id], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, i64>(8)?,
            ))
        })?;
        let mut executions = Vec::new();
        for r in raw {
            let (number, plan, outcome, duration, pruned, calls, output_tail, notes, test_ms) = r?;
            executions.push(Execution {
                number,
                plan: serde_json::from_str(&plan)?,
                outcome: serde_json::from_str(&outcome)?,
                duration_ms: duration as u64,
                test_ms: test_ms as u64,
                pruned: pruned.map(|p| serde_json::from_str(&p)).transpose()?,
                calls: serde_json::from_str(&calls)?,
                output_tail,
                notes: serde_json::from_str(&notes)?,
            });
        }
        let graph: Option<String> = self
            .conn
            .query_row(
                "SELECT graph FROM graph_snapshots WHERE exploration_id = ?1
                 ORDER BY taken_ms DESC LIMIT 1",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(Exploration {
            row,
            executions,
            graph: graph.map(|g| serde_json::from_str(&g)).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fi_common::fault::Fault;
    use fi_explore::model::{Outcome, Plan};

    fn config() -> ExploreConfig {
        ExploreConfig {
            targets: vec!["lab/a".into()],
            faults: Fault::DEFAULT_SET.to_vec(),
            command: "true".into(),
            reset_command: None,
            working_dir: "/".into(),
            reduction: true,
            max_executions: 100,
            run_timeout_ms: 1000,
            replay_of: None,
            test_requests: false,
            label: Some("checkout".into()),
        }
    }

    fn execution(number: u32, outcome: Outcome) -> Execution {
        Execution {
            number,
            plan: Plan::default(),
            outcome,
            duration_ms: 12,
            test_ms: 10,
            calls: Vec::new(),
            pruned: None,
            output_tail: "ok".into(),
            notes: vec!["a note".into()],
        }
    }

    #[test]
    fn an_exploration_round_trips() {
        let store = Store::in_memory().unwrap();
        let id = store.create(&config()).unwrap();
        store
            .save_execution(id, &execution(0, Outcome::Passed))
            .unwrap();
        store
            .save_execution(id, &execution(1, Outcome::Failed { exit_code: 3 }))
            .unwrap();
        store.save_graph(id, &GraphSnapshot::default()).unwrap();
        store.finish(id, Status::Finished, None).unwrap();
        let loaded = store.load(id).unwrap();
        assert_eq!(loaded.row.status, Status::Finished);
        assert_eq!(loaded.row.executions, 2);
        assert_eq!(loaded.row.failures, 1);
        assert_eq!(
            loaded.executions[1],
            execution(1, Outcome::Failed { exit_code: 3 })
        );
        assert_eq!(loaded.row.config, config());
        assert!(loaded.graph.is_some());
        assert!(matches!(store.load(id + 1), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn running_explorations_become_interrupted_on_reopen_and_keep_their_executions() {
        let dir = std::env::temp_dir().join(format!("fi-store-{}", std::process::id()));
        let path = dir.join("sub/fi.db");
        let _ = std::fs::remove_dir_all(&dir);
        let id = {
            let store = Store::open(&path).unwrap();
            let id = store.create(&config()).unwrap();
            store
                .save_execution(id, &execution(0, Outcome::Passed))
                .unwrap();
            id
        };
        let store = Store::open(&path).unwrap();
        let loaded = store.load(id).unwrap();
        assert_eq!(loaded.row.status, Status::Interrupted);
        assert_eq!(loaded.executions.len(), 1);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_old_schema_is_migrated_and_a_newer_one_refused() {
        let dir = std::env::temp_dir().join(format!("fi-store-mig-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fi.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.version().unwrap(), MIGRATIONS.len() as i64);
        let id = store.create(&config()).unwrap();
        store.save_graph(id, &GraphSnapshot::default()).unwrap();
        drop(store);
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", 99).unwrap();
        }
        let err = Store::open(&path).unwrap_err().to_string();
        assert!(err.contains("newer than this fi knows"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
