//! The stack a run measures: a fresh database, the configuration, secrets and credentials of a
//! national hub, and the `passerelle` binary started and stopped as a deployment would.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::population::{self, PLACES};

/// Where a run keeps its files, and how to reach its services.
pub struct Stack {
    pub dir: PathBuf,
    pub binary: PathBuf,
    pub config_file: PathBuf,
    pub config: passerelle::config::Config,
    pub owner_url: String,
    pub grpc: String,
    pub http: String,
    /// The operators' listener (`/metrics`, `/readyz`).
    pub ops: String,
}

/// A free TCP port on 127.0.0.1 (bound then released).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn random_hex() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    let mut urandom = std::fs::File::open("/dev/urandom")?;
    std::io::Read::read_exact(&mut urandom, &mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The organisation (SIRET) of each authority in the bench habilitations.
pub fn authority_siret(authority: &str) -> String {
    let position = PLACES.iter().position(|p| p.authority == authority).unwrap_or(0) as u64;
    population::siret(2_200_000_000_000 + position * 10_000)
}

/// The chargé d'orientation of an authority in the bench habilitations.
pub fn orientation_agent(authority: &str) -> String {
    format!("bench.orientation.{}", authority.to_ascii_lowercase())
}

fn habilitations_toml() -> String {
    let mut out = String::from("# Written by passerelle-bench: one chargé d'orientation per RSA authority.\n");
    let mut seen = std::collections::BTreeSet::new();
    for place in PLACES {
        if !seen.insert(place.authority) {
            continue;
        }
        out.push_str(&format!(
            "[[organisations]]\nsiret = \"{}\"\nnom = \"Autorité RSA {}\"\nkind = \"autorite_rsa\"\nterritory = \"{}\"\n\n[[agents]]\nuid = \"{}\"\nsiret = \"{}\"\nrole = \"charge_orientation\"\n\n",
            authority_siret(place.authority),
            place.authority,
            place.authority,
            orientation_agent(place.authority),
            authority_siret(place.authority),
        ));
    }
    out
}

impl Stack {
    /// Prepares a run: its directory, a fresh database, configuration, secrets, credentials.
    pub async fn prepare(
        dir: &Path,
        binary: &Path,
        bootstrap: &str,
        database: &str,
        projector_batch: usize,
        projector_workers: usize,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let owner_base = "postgres://postgres@127.0.0.1:5432";
        let admin = sqlx::PgPool::connect(&format!("{owner_base}/postgres")).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")))
            .execute(&admin)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}"))).execute(&admin).await?;
        admin.close().await;
        let secrets = dir.join("secrets");
        std::fs::create_dir_all(&secrets)?;
        std::fs::write(secrets.join("pepper"), random_hex()?)?;
        std::fs::write(dir.join("institutions.toml"), population::institutions_toml())?;
        std::fs::write(dir.join("habilitations.toml"), habilitations_toml())?;
        let (grpc, http, api_grpc, registry) = (free_port()?, free_port()?, free_port()?, free_port()?);
        let ops = free_port()?;
        let pki = dir.join("pki");
        let config_text = format!(
            r#"# Written by passerelle-bench for one run.
database_url = "postgres://passerelle_app@127.0.0.1:5432/{database}"
database_owner_url = "{owner_base}/{database}"
grpc_listen = "127.0.0.1:{grpc}"
http_listen = "127.0.0.1:{http}"
ops_listen = "127.0.0.1:{ops}"
api_grpc_listen = "127.0.0.1:{api_grpc}"
registry_listen = "127.0.0.1:{registry}"
institutions_file = "{dir}/institutions.toml"
log_format = "json"
projector_max_batch = {projector_batch}
projector_workers = {projector_workers}

[kafka]
bootstrap_servers = "{bootstrap}"
partitions = 6
delivery_timeout_ms = 4000

[secrets]
pepper_file = "{dir}/secrets/pepper"
root_keys_dir = "{dir}/secrets/root-keys"

[tls]
cert_file = "{pki}/server.pem"
key_file = "{pki}/server.key"
client_ca_file = "{pki}/ca.pem"

# The benchmark measures the hub's capacity: no institution is held back by its rate limit.
[ingest.limits]
events_per_second = 1000000
events_burst = 1000000

[api]
habilitations_file = "{dir}/habilitations.toml"
jwks_file = "{pki}/oidc-dev-jwks.json"

[web]
assets_dir = "{repo}/services/web/node_modules/@gouvfr/dsfr/dist"
dev_signing_key_file = "{pki}/oidc-dev-key.der"
dev_jwks_file = "{pki}/oidc-dev-jwks.json"
"#,
            repo = concat!(env!("CARGO_MANIFEST_DIR"), "/.."),
            dir = dir.display(),
            pki = pki.display(),
        );
        let config_file = dir.join("passerelle.toml");
        std::fs::write(&config_file, config_text)?;
        let status = Command::new(binary)
            .arg("--config")
            .arg(&config_file)
            .args(["dev", "pki", "--out"])
            .arg(&pki)
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("running {}", binary.display()))?;
        if !status.success() {
            bail!("passerelle dev pki failed");
        }
        let config = passerelle::config::Config::load(Some(&config_file))?;
        Ok(Self {
            dir,
            binary: binary.to_owned(),
            config_file,
            config,
            owner_url: format!("{owner_base}/{database}"),
            grpc: format!("https://localhost:{grpc}"),
            http: format!("http://127.0.0.1:{http}"),
            ops: format!("http://127.0.0.1:{ops}"),
        })
    }

    /// Starts `passerelle <args>` and waits until its `/readyz` answers ready.
    pub async fn start(&self, args: &[&str], log: &str) -> anyhow::Result<Hub> {
        let log_file = std::fs::File::create(self.dir.join(log))?;
        let child = Command::new(&self.binary)
            .arg("--config")
            .arg(&self.config_file)
            .args(args)
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let hub = Hub { child, started: Instant::now() };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(response) = client.get(format!("{}/readyz", self.ops)).send().await
                && response.status().is_success()
            {
                return Ok(hub);
            }
            if Instant::now() > deadline {
                bail!("passerelle {args:?} not ready after 120 s (see {})", self.dir.join(log).display());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The database as its owner (the read models in schema `readmodel`).
    pub async fn owner_pool(&self) -> anyhow::Result<sqlx::PgPool> {
        Ok(sqlx::postgres::PgPoolOptions::new().max_connections(4).connect(&self.owner_url).await?)
    }

    /// Runs `passerelle <args>` to completion, its output in `log`.
    pub fn run(&self, args: &[&str], log: &str) -> anyhow::Result<()> {
        let log_file = std::fs::File::create(self.dir.join(log))?;
        let status = Command::new(&self.binary)
            .arg("--config")
            .arg(&self.config_file)
            .args(args)
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .status()?;
        if !status.success() {
            bail!("passerelle {args:?} failed (see {})", self.dir.join(log).display());
        }
        Ok(())
    }
}

/// A running `passerelle` process.
pub struct Hub {
    child: Child,
    pub started: Instant,
}

impl Hub {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits for the process to finish its batch and exit.
    pub fn stop(mut self) -> anyhow::Result<()> {
        Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                self.child.kill()?;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU seconds used so far by the processes of the stack, read from /proc (user + system):
/// a per-process profile of a stage is the difference of two readings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub hub: f64,
    pub broker: f64,
    pub postgres: f64,
    pub bench: f64,
}

fn ticks_of(stat: &str) -> Option<f64> {
    // Fields after the command name (which may contain spaces, inside parentheses).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / 100.0)
}

impl Cpu {
    pub fn read(hub_pid: Option<u32>) -> Self {
        let mut cpu = Cpu::default();
        let Ok(entries) = std::fs::read_dir("/proc") else { return cpu };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            let Some(seconds) = ticks_of(&stat) else { continue };
            let command = stat.split('(').nth(1).and_then(|rest| rest.split(')').next()).unwrap_or_default();
            if Some(pid) == hub_pid {
                cpu.hub += seconds;
            } else if pid == std::process::id() {
                cpu.bench += seconds;
            } else if command.starts_with("tansu") {
                cpu.broker += seconds;
            } else if command.starts_with("postgres") {
                cpu.postgres += seconds;
            }
        }
        cpu
    }

    pub fn since(&self, before: &Cpu) -> serde_json::Value {
        serde_json::json!({
            "hub_s": self.hub - before.hub,
            "broker_s": self.broker - before.broker,
            "postgres_s": self.postgres - before.postgres,
            "bench_client_s": self.bench - before.bench,
        })
    }
}
