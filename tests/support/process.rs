//! The one child-process wrapper: a program of a test (the crate's binaries,
//! demo.sh, the Lambda emulator), stdout and stderr in a log file under
//! `target/test-logs`, an environment with nothing of the developer's
//! (`NP_*`, `AWS_*`, `KUBECONFIG` removed), killed when dropped.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::{eventually, repo_root, try_http, unique};

pub struct Process {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    /// Start `program` with `args` and `envs` (on top of a scrubbed
    /// environment), from the repository root.
    pub fn spawn(
        name: &str,
        program: impl AsRef<OsStr>,
        args: &[String],
        envs: &[(&str, String)],
    ) -> Process {
        let logs = repo_root().join("target/test-logs");
        std::fs::create_dir_all(&logs).unwrap();
        let file_name: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let log = logs.join(format!("{}.log", unique(&file_name)));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(program.as_ref());
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .current_dir(repo_root());
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("NP_") || k.starts_with("AWS_") || k == "KUBECONFIG" {
                command.env_remove(&key);
            }
        }
        for (key, value) in envs {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({}): {e}", program.as_ref().to_string_lossy()));
        Process {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    /// Everything the process wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Panic with the log if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("{} exited early ({status}):\n{}", self.name, self.log());
        }
    }

    /// SIGKILL and reap: a crash, nothing released.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, then wait (bounded) for the exit; the status and the log.
    pub async fn terminate(self) -> (ExitStatus, String) {
        let pid = self.pid().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid}");
        self.wait(Duration::from_secs(30)).await
    }

    /// Wait (bounded) for the process to exit by itself; the status and the log.
    pub async fn wait(mut self, timeout: Duration) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let (name, log) = (self.name.clone(), self.log.clone());
        let what = format!("{name} to exit");
        let status = eventually(timeout, &what, || {
            let exited = child.try_wait().unwrap();
            let log = log.clone();
            async move { exited.ok_or_else(|| std::fs::read_to_string(log).unwrap_or_default()) }
        })
        .await;
        (status, self.log())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Wait (30 s) until `GET http://addr/path` answers 200; fail early with the
/// log if the process exits.
pub async fn wait_http_ok(addr: &str, path: &str, process: &mut Process) {
    wait_http_ok_within(addr, path, process, Duration::from_secs(30)).await;
}

/// [`wait_http_ok`] with a timeout of the caller's.
pub async fn wait_http_ok_within(addr: &str, path: &str, process: &mut Process, timeout: Duration) {
    let log = process.log_path();
    let what = format!("http://{addr}{path} to answer 200 ({})", process.name);
    eventually(timeout, &what, || {
        process.assert_running();
        let log = log.clone();
        async move {
            match try_http(addr, "GET", path, None, None).await {
                Some(answer) if answer.status == 200 => Ok(()),
                other => Err(format!(
                    "{:?}; log:\n{}",
                    other.map(|a| a.status),
                    std::fs::read_to_string(log).unwrap_or_default()
                )),
            }
        }
    })
    .await;
}

/// The provisioner binary serving on two free loopback ports.
pub struct Provisioner {
    pub process: Process,
    /// The API listener (`NP_LISTEN`).
    pub addr: String,
    /// The internal listener: health, readiness, metrics (`NP_INTERNAL_LISTEN`).
    pub internal: String,
}

/// Start the provisioner binary with `args` and `envs` plus its two
/// listeners, and wait until `ready` (a path on the internal listener) answers 200.
pub async fn start_provisioner(
    name: &str,
    args: &[String],
    envs: &[(&str, String)],
    ready: &str,
) -> Provisioner {
    let addr = format!("127.0.0.1:{}", super::free_port());
    let internal = format!("127.0.0.1:{}", super::free_port());
    let mut all = vec![
        ("NP_LISTEN", addr.clone()),
        ("NP_INTERNAL_LISTEN", internal.clone()),
    ];
    all.extend(envs.iter().cloned());
    let mut process = Process::spawn(name, env!("CARGO_BIN_EXE_provisioner"), args, &all);
    wait_http_ok(&internal, ready, &mut process).await;
    Provisioner {
        process,
        addr,
        internal,
    }
}

/// `PATH` with the tools `tests/run` installs (`target/tools/bin`, its venv) first.
pub fn tools_path() -> String {
    let tools = repo_root().join("target/tools");
    format!(
        "{}:{}:{}",
        tools.join("bin").display(),
        tools.join("venv/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A prerequisite a test needs: `tool args` must run, found on `PATH` or among the tools
/// `tests/run` installs; otherwise the test fails saying how to install it (nothing skips).
pub fn require(tool: &str, args: &[&str], install: &str) {
    let ok = Command::new(tool)
        .args(args)
        .env("PATH", tools_path())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "`{tool} {}` does not run; install it with `{install}` (tests/run does)",
        args.join(" ")
    );
}
