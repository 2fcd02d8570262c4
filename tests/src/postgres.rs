//! A private PostgreSQL for the fault campaign: a cluster of its own (`initdb`) on a free port,
//! stopped and started with `pg_ctl`, so that restarting it disturbs nothing else on the machine.
//! PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` user and
//! its commands run through `runuser`.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
}

/// How PostgreSQL goes down: `fast` (clients disconnected, a clean shutdown) or `immediate`
/// (a crash: the next start replays the WAL).
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    Fast,
    Immediate,
}

impl PrivatePostgres {
    pub fn start() -> anyhow::Result<Self> {
        let bin = binaries()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("passerelle-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let uid = Command::new("id").arg("-u").output().context("id -u")?;
        let as_postgres = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        if as_postgres {
            run(Command::new("chown").args(["postgres:", &dir.display().to_string()]))?;
        }
        let cluster = Self { port, dir, bin, as_postgres };
        let data = cluster.data();
        cluster.pg("initdb", &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])?;
        cluster.up()?;
        Ok(cluster)
    }

    /// `postgres://postgres@127.0.0.1:PORT`, without a database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// Stops the cluster, then starts it again on the same data and port.
    pub fn restart(&self, how: Stop) -> anyhow::Result<()> {
        self.down(how)?;
        self.up()
    }

    pub fn down(&self, how: Stop) -> anyhow::Result<()> {
        let mode = match how {
            Stop::Fast => "fast",
            Stop::Immediate => "immediate",
        };
        self.pg("pg_ctl", &["-D", &self.data(), "-m", mode, "-w", "stop"])
    }

    pub fn up(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=on",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("postgres.log").display().to_string();
        self.pg("pg_ctl", &["-D", &self.data(), "-l", &log, "-o", &options, "-w", "-t", "60", "start"])
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn pg(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        run(command.args(args).current_dir(&self.dir))
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        drop(self.down(Stop::Immediate));
        drop(std::fs::remove_dir_all(&self.dir));
    }
}

/// PostgreSQL's server programs: `PASSERELLE_PG_BIN`, else the directory `pg_ctl` resolves to.
fn binaries() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var("PASSERELLE_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let found = Command::new("sh").args(["-c", "command -v pg_ctl"]).output().context("looking for pg_ctl")?;
    let path = String::from_utf8_lossy(&found.stdout).trim().to_owned();
    anyhow::ensure!(!path.is_empty(), "pg_ctl is not on PATH: set PASSERELLE_PG_BIN to PostgreSQL's bin directory");
    let resolved = std::fs::canonicalize(&path)?;
    Ok(resolved.parent().map(Path::to_path_buf).unwrap_or_default())
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command.output().with_context(|| format!("running {command:?}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{command:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
