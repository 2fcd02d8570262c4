//! A private broker for tests that stop and restart it: tansu on a free port, durable storage
//! in a temporary directory.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct PrivateBroker {
    pub port: u16,
    data: PathBuf,
    child: Option<Child>,
}

impl PrivateBroker {
    pub fn start() -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let data = std::env::temp_dir().join(format!("passerelle-broker-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&data)?;
        let mut broker = Self { port, data, child: None };
        broker.resume()?;
        Ok(broker)
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (again) the broker on the same port and data.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        let binary = std::env::var("PASSERELLE_TANSU_BIN").unwrap_or_else(|_| {
            format!("{}/.cache/passerelle/tansu-0.6.0/bin/tansu", std::env::var("HOME").unwrap_or_default())
        });
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::File::create(self.data.join("tansu.log"))?;
        let child = Command::new(&binary)
            .current_dir(&self.data)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "sqlite://tansu.db",
            ])
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start tansu at {binary}: {e} (infra/install-tansu.sh installs it)"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "tansu did not open its port");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Kills the broker (SIGKILL): what was acknowledged must survive.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.kill());
            drop(child.wait());
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.kill();
        drop(std::fs::remove_dir_all(&self.data));
    }
}
