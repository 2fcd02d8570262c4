//! `passerelle` processes started by the tests and the fault campaign, killed at will.

use std::{
    path::Path,
    process::{Child, Command},
    time::{Duration, Instant},
};

/// A projector running as its own `passerelle up` process, killed with SIGKILL at will.
pub struct Worker(Child);

impl Worker {
    pub fn start(config: &Path, name: &str) -> anyhow::Result<Self> {
        Self::start_with(config, name, None)
    }

    /// A worker that aborts at a failpoint (`NAME=N`, see passerelle_projector::failpoint).
    pub fn start_with(config: &Path, name: &str, failpoint: Option<&str>) -> anyhow::Result<Self> {
        Self::run(config, name, &["up"], failpoint)
    }

    /// The hub's ingestion and API services without projector (`passerelle serve ingest`).
    pub fn start_hub(config: &Path, name: &str) -> anyhow::Result<Self> {
        Self::run(config, name, &["serve", "ingest"], None)
    }

    fn run(config: &Path, name: &str, args: &[&str], failpoint: Option<&str>) -> anyhow::Result<Self> {
        let binary = crate::repo_root().join("target/debug/passerelle");
        anyhow::ensure!(binary.exists(), "{} is missing: build it first (infra/test.sh does)", binary.display());
        let mut command = Command::new(binary);
        if let Some(failpoint) = failpoint {
            command.env("PASSERELLE_FAILPOINT", failpoint);
        }
        let child = command
            .args(["--config", &config.display().to_string()])
            .args(args)
            .env("RUST_LOG", "info,passerelle_projector=debug")
            .stdout(std::fs::File::create(config.with_file_name(format!("{name}.log")))?)
            .stderr(std::fs::File::create(config.with_file_name(format!("{name}.err")))?)
            .spawn()?;
        Ok(Self(child))
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    pub fn kill(mut self) {
        drop(self.0.kill());
        drop(self.0.wait());
    }

    /// Waits for the worker to abort at its failpoint (SIGABRT), at most `within`.
    pub async fn aborted(mut self, within: Duration) -> anyhow::Result<()> {
        use std::os::unix::process::ExitStatusExt;
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.0.try_wait()? {
                anyhow::ensure!(status.signal() == Some(6), "the worker exited otherwise: {status}");
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "the worker did not reach its failpoint");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the worker as an operator would (SIGTERM): it finishes its batch and leaves the group.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let status = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        let exited = self.0.wait()?;
        anyhow::ensure!(exited.success(), "the worker did not stop cleanly: {exited}");
        Ok(())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        drop(self.0.kill());
        drop(self.0.wait());
    }
}
