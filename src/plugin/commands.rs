//! One function per subcommand: call the provisioner, print the answer,
//! wait when asked. The binary builds an [`Invocation`]; this module never
//! sees clap. Output goes to the writers given, so tests can read it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use super::client::Client;
use super::error::PluginError;
use super::output;
use super::{CreateRequest, Credentials, ExtendRequest, Namespace, NamespaceList};

/// `-o`: what to print on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// A kubectl-like table (list, get), or one summary line (create, extend, delete).
    Table,
    Json,
    Yaml,
    /// `namespace/NAME`, for scripts.
    Name,
    /// The kubeconfig YAML (create, extend, kubeconfig).
    Kubeconfig,
}

/// `kubeconfig NAME --ttl`: the API can only hand out a kubeconfig by setting
/// a new expiry, so the caller must say which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeconfigTtl {
    /// A new lifetime from now, e.g. `30m`.
    Lifetime(String),
    /// The time the namespace has left, so its expiry stays (to the second).
    Remaining,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Create {
        request: CreateRequest,
        write_kubeconfig: Option<PathBuf>,
        wait: bool,
    },
    List,
    Get {
        name: String,
    },
    Extend {
        name: String,
        ttl: Option<String>,
        write_kubeconfig: Option<PathBuf>,
    },
    Delete {
        name: String,
        wait: bool,
    },
    Kubeconfig {
        name: String,
        ttl: Option<KubeconfigTtl>,
        write_kubeconfig: Option<PathBuf>,
    },
}

#[derive(Debug, Clone)]
pub struct Invocation {
    pub action: Action,
    pub output: Option<Output>,
    /// Bound of each call and of each `--wait`.
    pub timeout: Duration,
    /// How often `--wait` asks the provisioner.
    pub poll_interval: Duration,
}

/// Where to print: stdout for results, stderr for progress.
pub struct Terminal<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    /// Progress overwrites one line on a terminal, and prints whole lines otherwise.
    pub err_is_tty: bool,
}

/// Why `kubeconfig NAME` needs `--ttl`; shown in its help and as the error.
pub const KUBECONFIG_NEEDS_TTL: &str = "the provisioner has no call that returns an existing namespace's kubeconfig without \
     setting a new expiry (PATCH issues the token and the expiry together); say which: \
     `--ttl 30m` sets the expiry to now + 30m, `--ttl remaining` keeps the current expiry (to the second)";

impl Invocation {
    /// The output to use, or a usage error for one the subcommand cannot print.
    pub fn output(&self) -> Result<Output, PluginError> {
        let (subcommand, writes_kubeconfig) = match &self.action {
            Action::List => ("list", None),
            Action::Get { .. } => ("get", None),
            Action::Delete { .. } => ("delete", None),
            Action::Create { write_kubeconfig, .. } => ("create", Some(write_kubeconfig.is_some())),
            Action::Extend { write_kubeconfig, .. } => ("extend", Some(write_kubeconfig.is_some())),
            Action::Kubeconfig { write_kubeconfig, .. } => ("kubeconfig", Some(write_kubeconfig.is_some())),
        };
        match (self.output, writes_kubeconfig) {
            (Some(Output::Kubeconfig), None) => Err(PluginError::Usage(format!(
                "-o kubeconfig is for create, extend and kubeconfig, not {subcommand}; use -o table|json|yaml|name"
            ))),
            (Some(output), _) => Ok(output),
            (None, None) => Ok(Output::Table),
            // The kubeconfig on stdout, unless it goes to a file: then a summary line.
            (None, Some(false)) => Ok(Output::Kubeconfig),
            (None, Some(true)) => Ok(Output::Table),
        }
    }
}

pub async fn run(
    client: &Client,
    invocation: Invocation,
    term: &mut Terminal<'_>,
) -> Result<(), PluginError> {
    let output = invocation.output()?;
    let timeout = invocation.timeout;
    match invocation.action {
        Action::List => {
            let items = client.list().await?;
            match output {
                Output::Table => print(term, &output::namespaces_table(&items, Timestamp::now())),
                Output::Name => print_names(term, items.iter().map(|ns| ns.name.as_str())),
                _ => print_value(term, output, &NamespaceList { items }),
            }
        }
        Action::Get { name } => {
            let ns = client.get(&name).await?;
            print_namespace(term, output, &ns)
        }
        Action::Create {
            request,
            write_kubeconfig,
            wait,
        } => {
            let creds = client.create(&request).await?;
            if let Some(path) = &write_kubeconfig {
                write_private(path, &creds.kubeconfig)?;
            }
            if wait {
                wait_active(client, &creds.name, timeout, invocation.poll_interval).await?;
            }
            print_credentials(term, output, &creds, "created", write_kubeconfig.as_deref())
        }
        Action::Extend {
            name,
            ttl,
            write_kubeconfig,
        } => {
            let creds = client.extend(&name, &ExtendRequest { ttl }).await?;
            if let Some(path) = &write_kubeconfig {
                write_private(path, &creds.kubeconfig)?;
            }
            print_credentials(term, output, &creds, "extended", write_kubeconfig.as_deref())
        }
        Action::Kubeconfig {
            name,
            ttl,
            write_kubeconfig,
        } => {
            let ttl = match ttl {
                None => {
                    return Err(PluginError::Usage(format!(
                        "kubeconfig {name}: {KUBECONFIG_NEEDS_TTL}"
                    )));
                }
                Some(KubeconfigTtl::Lifetime(ttl)) => ttl,
                Some(KubeconfigTtl::Remaining) => {
                    let ns = client.get(&name).await?;
                    remaining_ttl(&ns, Timestamp::now())?
                }
            };
            let creds = client.extend(&name, &ExtendRequest { ttl: Some(ttl) }).await?;
            if let Some(path) = &write_kubeconfig {
                write_private(path, &creds.kubeconfig)?;
            }
            print_credentials(
                term,
                output,
                &creds,
                "kubeconfig issued",
                write_kubeconfig.as_deref(),
            )
        }
        Action::Delete { name, wait } => {
            let deleting = client.delete(&name).await?;
            if wait {
                wait_gone(client, &deleting, timeout, invocation.poll_interval, term).await?;
            }
            match output {
                Output::Table => print(term, &format!("namespace \"{name}\" deleted\n")),
                Output::Name => print_names(term, [name.as_str()].into_iter()),
                _ => print_value(term, output, &deleting),
            }
        }
    }
}

/// The ttl that keeps `ns`'s expiry where it is: whole seconds left, rounded
/// up (the expiry label has whole seconds). `0` would mean "the default", so
/// an expired namespace is refused rather than renewed.
pub fn remaining_ttl(ns: &Namespace, now: Timestamp) -> Result<String, PluginError> {
    let at = ns
        .expires_at
        .as_deref()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .ok_or_else(|| {
            PluginError::Usage(format!(
                "{} has no readable expiry, so `--ttl remaining` cannot keep it; give --ttl DURATION",
                ns.name
            ))
        })?;
    let left = at.as_millisecond() - now.as_millisecond();
    if left <= 0 {
        return Err(PluginError::Usage(format!(
            "{} has expired (at {at}); give --ttl DURATION to renew it",
            ns.name
        )));
    }
    Ok(format!("{}s", (left + 999) / 1000))
}

async fn wait_active(
    client: &Client,
    name: &str,
    timeout: Duration,
    poll: Duration,
) -> Result<(), PluginError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let ns = client.get(name).await?;
        if ns.phase == "Active" {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(PluginError::WaitTimedOut(format!(
                "namespace/{name} is still {} after {}",
                ns.phase,
                humantime::format_duration(timeout)
            )));
        }
        tokio::time::sleep(poll).await;
    }
}

/// Poll GET until 404, showing the phase and the time waited on stderr.
async fn wait_gone(
    client: &Client,
    deleting: &Namespace,
    timeout: Duration,
    poll: Duration,
    term: &mut Terminal<'_>,
) -> Result<(), PluginError> {
    let name = &deleting.name;
    let start = tokio::time::Instant::now();
    let deadline = start + timeout;
    let mut phase = deleting.phase.clone();
    progress(term, name, &phase, Duration::ZERO, false)?;
    loop {
        match client.get_opt(name).await? {
            None => {
                progress(term, name, "gone", start.elapsed(), true)?;
                return Ok(());
            }
            Some(ns) => {
                if ns.phase != phase || term.err_is_tty {
                    phase = ns.phase;
                    progress(term, name, &phase, start.elapsed(), false)?;
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            if term.err_is_tty {
                writeln!(term.err)?;
            }
            return Err(PluginError::WaitTimedOut(format!(
                "namespace/{name} is still {phase} after {}; its deletion goes on (check with `kubectl np get {name}`)",
                humantime::format_duration(timeout)
            )));
        }
        tokio::time::sleep(poll).await;
    }
}

/// `namespace/np-abc: Terminating (3s)`; on a terminal the line is rewritten in place.
fn progress(
    term: &mut Terminal<'_>,
    name: &str,
    phase: &str,
    waited: Duration,
    last: bool,
) -> Result<(), PluginError> {
    let line = format!(
        "namespace/{name}: {phase} ({})",
        output::human_duration(waited.as_secs() as i64)
    );
    if term.err_is_tty {
        // \x1b[K clears what a longer previous line left.
        write!(term.err, "\r{line}\x1b[K")?;
        if last {
            writeln!(term.err)?;
        }
    } else {
        writeln!(term.err, "{line}")?;
    }
    term.err.flush()?;
    Ok(())
}

/// Write a kubeconfig readable by its owner only (it holds a token), in
/// place of any older file, atomically.
pub fn write_private(path: &Path, contents: &str) -> Result<(), PluginError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| PluginError::WriteFile {
        path: path.display().to_string(),
        source,
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(err)
}

fn print(term: &mut Terminal<'_>, text: &str) -> Result<(), PluginError> {
    term.out.write_all(text.as_bytes())?;
    term.out.flush()?;
    Ok(())
}

fn print_names<'n>(term: &mut Terminal<'_>, names: impl Iterator<Item = &'n str>) -> Result<(), PluginError> {
    let text: String = names.map(|n| format!("namespace/{n}\n")).collect();
    print(term, &text)
}

fn print_value<T: Serialize>(term: &mut Terminal<'_>, output: Output, value: &T) -> Result<(), PluginError> {
    let text = match output {
        Output::Yaml => output::yaml(value)?,
        _ => output::json(value)?,
    };
    print(term, &text)
}

fn print_namespace(term: &mut Terminal<'_>, output: Output, ns: &Namespace) -> Result<(), PluginError> {
    match output {
        Output::Table => print(
            term,
            &output::namespaces_table(std::slice::from_ref(ns), Timestamp::now()),
        ),
        Output::Name => print_names(term, [ns.name.as_str()].into_iter()),
        _ => print_value(term, output, ns),
    }
}

fn print_credentials(
    term: &mut Terminal<'_>,
    output: Output,
    creds: &Credentials,
    verb: &str,
    written_to: Option<&Path>,
) -> Result<(), PluginError> {
    match output {
        Output::Kubeconfig => print(term, &creds.kubeconfig),
        Output::Name => print_names(term, [creds.name.as_str()].into_iter()),
        Output::Table => {
            let mut line = output::credentials_line(creds, verb, Timestamp::now());
            if let Some(path) = written_to {
                line.push_str(&format!("; kubeconfig written to {}", path.display()));
            }
            line.push('\n');
            print(term, &line)
        }
        Output::Json | Output::Yaml => print_value(term, output, creds),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invocation(action: Action, output: Option<Output>) -> Invocation {
        Invocation {
            action,
            output,
            timeout: Duration::from_secs(1),
            poll_interval: Duration::from_millis(10),
        }
    }

    #[test]
    fn outputs_default_per_subcommand_and_kubeconfig_only_where_there_is_one() {
        let create = |file: Option<&str>| Action::Create {
            request: CreateRequest::default(),
            write_kubeconfig: file.map(PathBuf::from),
            wait: false,
        };
        assert_eq!(
            invocation(create(None), None).output().unwrap(),
            Output::Kubeconfig
        );
        assert_eq!(
            invocation(create(Some("kc")), None).output().unwrap(),
            Output::Table
        );
        assert_eq!(
            invocation(create(Some("kc")), Some(Output::Json))
                .output()
                .unwrap(),
            Output::Json
        );
        assert_eq!(invocation(Action::List, None).output().unwrap(), Output::Table);
        let err = invocation(Action::List, Some(Output::Kubeconfig))
            .output()
            .unwrap_err();
        assert!(
            matches!(err, PluginError::Usage(_)) && err.to_string().contains("not list"),
            "{err}"
        );
        let delete = Action::Delete {
            name: "a".into(),
            wait: true,
        };
        assert!(invocation(delete, Some(Output::Kubeconfig)).output().is_err());
    }

    fn ns(expires_at: Option<&str>) -> Namespace {
        Namespace {
            name: "np-a".into(),
            tenant: "t".into(),
            parent: None,
            created: None,
            expires_at: expires_at.map(Into::into),
            phase: "Active".into(),
            other: Default::default(),
        }
    }

    #[test]
    fn remaining_ttl_keeps_the_expiry_and_refuses_what_would_renew() {
        let now: Timestamp = "2026-11-30T18:00:00.250Z".parse().unwrap();
        assert_eq!(
            remaining_ttl(&ns(Some("2026-11-30T18:30:00Z")), now).unwrap(),
            "1800s"
        );
        assert_eq!(
            remaining_ttl(&ns(Some("2026-11-30T18:00:01Z")), now).unwrap(),
            "1s"
        );
        for expired in [
            Some("2026-11-30T18:00:00Z"),
            Some("2026-11-30T17:00:00Z"),
            None,
            Some("soon"),
        ] {
            assert!(
                matches!(remaining_ttl(&ns(expired), now), Err(PluginError::Usage(_))),
                "{expired:?}"
            );
        }
    }

    #[test]
    fn progress_is_one_line_per_phase_or_rewritten_in_place_on_a_terminal() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut term = Terminal {
            out: &mut out,
            err: &mut err,
            err_is_tty: false,
        };
        progress(&mut term, "np-a", "Terminating", Duration::ZERO, false).unwrap();
        progress(&mut term, "np-a", "gone", Duration::from_secs(130), true).unwrap();
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "namespace/np-a: Terminating (0s)\nnamespace/np-a: gone (2m10s)\n"
        );
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut term = Terminal {
            out: &mut out,
            err: &mut err,
            err_is_tty: true,
        };
        progress(&mut term, "np-a", "Terminating", Duration::from_secs(3), false).unwrap();
        progress(&mut term, "np-a", "gone", Duration::from_secs(4), true).unwrap();
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "\rnamespace/np-a: Terminating (3s)\x1b[K\rnamespace/np-a: gone (4s)\x1b[K\n"
        );
        assert!(out.is_empty());
    }

    #[test]
    fn kubeconfigs_are_written_owner_only_over_older_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kc");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temp file left"
        );
        let missing_dir = dir.path().join("no/such/kc");
        assert!(matches!(
            write_private(&missing_dir, "x"),
            Err(PluginError::WriteFile { .. })
        ));
    }
}
