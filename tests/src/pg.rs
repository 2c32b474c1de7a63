//! A throwaway PostgreSQL cluster for tests: Debian's server binaries (`/usr/lib/postgresql/N/bin`,
//! or `SIGHTLINE_PG_BIN`), `initdb` in a temporary directory with password (SCRAM) logins over
//! TCP on a free 127.0.0.1 port and its unix socket inside that directory; run as the `postgres`
//! user when the tests run as root (the server refuses root). Started with a bounded wait for
//! `pg_isready`, stopped with `pg_ctl stop -m immediate` on drop. Tests run it without
//! durability (`fsync=off`: nothing they check needs it); benchmarks with PostgreSQL's durable
//! defaults ([`PgCluster::start_durable`]).
//!
//! [`PgCluster::shared`] is one cluster per test binary (stopped when the binary exits);
//! [`PgCluster::database`] makes a fresh database per test, owned by the unprivileged role
//! [`USER`] that the store logs in as.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sightline_aggregator::store::PgTarget;

/// The role the store connects as (owner of each test database, not a superuser).
pub const USER: &str = "sightline";
pub const PASSWORD: &str = "sightline-test-password";
const SUPERUSER_PASSWORD: &str = "superuser-test-password";
const READY_WITHIN: Duration = Duration::from_secs(60);

/// A running PostgreSQL cluster.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    /// Runs with `fsync`, `synchronous_commit` and `full_page_writes` on (the defaults).
    durable: bool,
    next_db: AtomicU32,
}

impl std::fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgCluster(127.0.0.1:{}, {})", self.port, self.dir.path().display())
    }
}

fn bin_dir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("SIGHTLINE_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context(
            "PostgreSQL server binaries not found in /usr/lib/postgresql (install `postgresql`: scripts/setup.sh)",
        )?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).context("no /usr/lib/postgresql/N/bin/initdb (install `postgresql`: scripts/setup.sh)")
}

impl PgCluster {
    /// Starts a new cluster without durability (for tests); it is stopped when dropped.
    pub fn start() -> Result<PgCluster> {
        PgCluster::start_with(false)
    }

    /// Starts a new cluster that commits as a production server does: each commit is flushed to
    /// disk (for benchmarks). It is stopped when dropped.
    pub fn start_durable() -> Result<PgCluster> {
        PgCluster::start_with(true)
    }

    fn start_with(durable: bool) -> Result<PgCluster> {
        let bin = bin_dir()?;
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let dir = tempfile::Builder::new().prefix("sightline-pg-").tempdir()?;
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, SUPERUSER_PASSWORD)?;
        std::fs::create_dir(dir.path().join("sock"))?;
        if as_postgres {
            let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status()?.success();
            if !ok {
                bail!("chown postgres {} failed", dir.path().display());
            }
        }
        let port = crate::free_port();
        let cluster = PgCluster { dir, bin, port, as_postgres, durable, next_db: AtomicU32::new(0) };
        let data = cluster.data_dir();
        cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth-host=scram-sha-256".as_ref(),
                "--auth-local=trust".as_ref(),
                format!("--pwfile={}", pwfile.display()).as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                // not the environment's locale, which may not exist on the machine
                "--locale=C.UTF-8".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        cluster.serve()?;
        let mut admin = cluster.admin("postgres")?;
        admin.batch_execute(&format!("CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'"))?;
        Ok(cluster)
    }

    /// Starts the server on the existing data directory and waits until it takes connections.
    pub fn serve(&self) -> Result<()> {
        let data = self.data_dir();
        let port = self.port;
        let mut opts = format!("-p {port} -k {} -c listen_addresses=127.0.0.1", self.dir.path().join("sock").display());
        if !self.durable {
            opts.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                opts.as_ref(),
                "-W".as_ref(),
                "start".as_ref(),
            ],
        )?;
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                bail!("PostgreSQL on 127.0.0.1:{port} not ready within {READY_WITHIN:?}; its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (`pg_ctl stop -m fast`: connections are closed, nothing is lost) and
    /// waits until it is down; [`PgCluster::serve`] starts it again.
    pub fn stop(&self) -> Result<()> {
        let data = self.data_dir();
        self.run(
            "pg_ctl",
            &["-D".as_ref(), data.as_os_str(), "-m".as_ref(), "fast".as_ref(), "-w".as_ref(), "stop".as_ref()],
        )
    }

    /// The cluster of this test binary, started on first use and stopped when the binary exits.
    pub fn shared() -> Arc<PgCluster> {
        static SHARED: OnceLock<Mutex<Option<Arc<PgCluster>>>> = OnceLock::new();
        extern "C" fn stop_shared() {
            if let Some(m) = SHARED.get() {
                drop(m.lock().unwrap_or_else(|e| e.into_inner()).take());
            }
        }
        let m = SHARED.get_or_init(|| Mutex::new(None));
        let mut slot = m.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = slot.as_ref() {
            return c.clone();
        }
        let c = Arc::new(PgCluster::start().unwrap_or_else(|e| panic!("starting PostgreSQL: {e:#}")));
        // statics are never dropped: stop the server when the test binary exits
        unsafe { libc::atexit(stop_shared) };
        *slot = Some(c.clone());
        c
    }

    fn run(&self, tool: &str, args: &[&std::ffi::OsStr]) -> Result<()> {
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(tool));
            c
        } else {
            Command::new(self.bin.join(tool))
        };
        let out = cmd.args(args).current_dir(self.dir.path()).stdin(Stdio::null()).output()?;
        if !out.status.success() {
            bail!(
                "{tool} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A superuser connection to `database`.
    pub fn admin(&self, database: &str) -> Result<postgres::Client> {
        let mut cfg = postgres::Config::new();
        cfg.host("127.0.0.1").port(self.port).user("postgres").password(SUPERUSER_PASSWORD).dbname(database);
        cfg.connect_timeout(Duration::from_secs(10));
        Ok(cfg.connect(postgres::NoTls)?)
    }

    /// `store.url` of `database` on this cluster, as [`USER`] (no password in it).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// A new empty database owned by [`USER`].
    pub fn database(self: &Arc<Self>) -> PgDatabase {
        let name = format!("t{}_{}", std::process::id(), self.next_db.fetch_add(1, Ordering::SeqCst));
        let mut admin = self.admin("postgres").unwrap_or_else(|e| panic!("{e:#}"));
        admin.batch_execute(&format!("CREATE DATABASE {name} OWNER {USER}")).unwrap_or_else(|e| panic!("{e:#}"));
        let target = PgTarget::new(&self.url(&name), Some(PASSWORD)).unwrap_or_else(|e| panic!("{e}"));
        PgDatabase { cluster: self.clone(), name, target }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self
            .run("pg_ctl", &["-D".as_ref(), data.as_os_str(), "-m".as_ref(), "immediate".as_ref(), "stop".as_ref()]);
    }
}

/// A database of a [`PgCluster`], for one test.
pub struct PgDatabase {
    pub cluster: Arc<PgCluster>,
    pub name: String,
    /// Where the store connects (as [`USER`], with its password).
    pub target: PgTarget,
}

impl PgDatabase {
    /// A superuser connection to this database.
    pub fn admin(&self) -> postgres::Client {
        self.cluster.admin(&self.name).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Every file of this database in the cluster's data directory, after a checkpoint has
    /// written its pages there.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut admin = self.admin();
        admin.batch_execute("CHECKPOINT").unwrap();
        let oid: u32 =
            admin.query_one("SELECT oid FROM pg_database WHERE datname = current_database()", &[]).unwrap().get(0);
        let dir = self.cluster.data_dir().join("base").join(oid.to_string());
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
        files.sort();
        files
    }

    /// The bytes of every file of this database (see [`PgDatabase::files`]).
    pub fn file_bytes(&self) -> Vec<u8> {
        self.files().iter().flat_map(|p| std::fs::read(p).unwrap_or_default()).collect()
    }
}
