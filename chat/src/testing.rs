//! A `nats-server` of a test's own, for tests that stop and restart NATS (the shared server on
//! port 4222 serves every other test and is never touched). `VEZA_TEST_NATS_SERVER` names the
//! program; default Debian's `/usr/sbin/nats-server`.

use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// A running `nats-server` on a loopback port, killed when dropped.
#[derive(Debug)]
pub struct NatsServer {
    port: u16,
    child: Child,
}

impl NatsServer {
    /// Starts one on `port` (a free one if `None`) and waits until it accepts connections.
    pub async fn start(port: Option<u16>) -> Self {
        let port = port.unwrap_or_else(|| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port()
        });
        let program = std::env::var("VEZA_TEST_NATS_SERVER")
            .unwrap_or_else(|_| "/usr/sbin/nats-server".to_owned());
        let child = Command::new(program)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "nats-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { port, child }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (no goodbye to its clients); returns its port, to start it again on.
    pub async fn stop(mut self) -> u16 {
        self.child.kill().await.expect("kill nats-server");
        self.port
    }
}
