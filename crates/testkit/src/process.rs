//! How the tests start every process they do not talk to through a pipe of their own
//! making: [`spawn`] (left running; [`Background`] logs to a file, `Daemon` reads an
//! ntp-offset daemon's log as it comes) and its one-shot mode, [`run_bounded`]. Each gets a
//! runtime directory of its own, so no two ntp-offset daemons meet at a control socket.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Starts `cmd` with its output where asked; panics, naming it, if it cannot start.
pub fn spawn(cmd: &mut Command, stdout: Stdio, stderr: Stdio) -> Child {
    own_runtime_dir(cmd);
    cmd.stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

/// Runs a command to completion within `timeout`, or kills it and fails.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = spawn(cmd, Stdio::piped(), Stdio::piped());
    let deadline = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} did not finish within {timeout:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Gives a daemon a runtime directory of its own (systemd's RUNTIME_DIRECTORY, where its
/// default control socket goes), so tests running side by side never share one.
pub fn own_runtime_dir(cmd: &mut Command) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir()
        .join(format!("ntp-offset-test-{}-run", std::process::id()))
        .join(n.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    cmd.env("RUNTIME_DIRECTORY", &dir);
    dir
}

/// A background process whose stdout and stderr go to `<dir>/<name>.log`; killed on drop.
pub struct Background {
    pub child: Child,
    pub log: PathBuf,
    pub name: String,
}

impl Background {
    pub fn start(dir: &Path, name: &str, argv: &[String]) -> Background {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = spawn(
            Command::new(&argv[0]).args(&argv[1..]),
            Stdio::from(file.try_clone().unwrap()),
            Stdio::from(file),
        );
        Background {
            child,
            log,
            name: name.into(),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with the log) if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{} exited ({status}):\n{}", self.name, self.log_text());
        }
    }

    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
