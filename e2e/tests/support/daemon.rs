//! Private Redis and NATS servers for the cluster tests, which stop and restart them mid-run
//! (the shared ones on the standard ports serve every other test and are never touched).

use std::net::{Ipv4Addr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server process on a loopback port of its own, killed on drop.
#[derive(Debug)]
pub struct Daemon {
    kind: Kind,
    port: u16,
    child: Option<Child>,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Redis,
    Nats,
}

impl Daemon {
    /// `redis-server` without persistence (a restart loses everything, as the shared one).
    pub fn redis() -> Self {
        Self::start_new(Kind::Redis)
    }

    /// `nats-server` (core NATS; Veza uses no JetStream).
    pub fn nats() -> Self {
        Self::start_new(Kind::Nats)
    }

    fn start_new(kind: Kind) -> Self {
        let mut daemon = Self {
            kind,
            port: super::free_port(),
            child: None,
        };
        daemon.start();
        daemon
    }

    /// `redis://127.0.0.1:<port>` or `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        match self.kind {
            Kind::Redis => format!("redis://127.0.0.1:{}", self.port),
            Kind::Nats => format!("nats://127.0.0.1:{}", self.port),
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the server (again) on its port and waits until it accepts connections.
    pub fn start(&mut self) {
        let port = self.port.to_string();
        let mut command = match self.kind {
            Kind::Redis => {
                let mut c = Command::new("redis-server");
                c.args(["--bind", "127.0.0.1", "--port", &port, "--save", ""])
                    .args(["--appendonly", "no"]);
                c
            }
            Kind::Nats => {
                let mut c = Command::new("nats-server");
                c.args(["-a", "127.0.0.1", "-p", &port]);
                c
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .or_else(|_| {
                // Debian puts nats-server in /usr/sbin, which a user's PATH may lack.
                let mut c = Command::new("/usr/sbin/nats-server");
                c.args(["-a", "127.0.0.1", "-p", &port])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
            })
            .unwrap_or_else(|e| panic!("starting {:?} on {port}: {e}", self.kind));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{:?} did not listen on {port}",
                self.kind
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL: no goodbye to its clients).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `redis-cli` against this Redis and returns its output, trimmed.
    pub fn redis_cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running redis-cli");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}
