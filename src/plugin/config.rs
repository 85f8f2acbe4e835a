//! Where the provisioner URL, the token and an extra CA come from, validated.
//!
//! Order: flags and their environment variables (clap merges those), then
//! `NP_TOKEN` for the token, then the config file. The token is never a flag
//! value (it would show in the process list), never printed, never logged.
//! Reads files; no network.

use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::error::PluginError;

/// Keys of the config file; anything else is refused, naming these.
const KEYS: &[&str] = &["server-url", "token-file", "ca-file"];

/// What the caller gave; the binary fills this from clap and the environment.
#[derive(Debug, Default)]
pub struct Sources {
    /// `--server-url` / `NP_URL`.
    pub server_url: Option<String>,
    /// `--token-file` / `NP_TOKEN_FILE`.
    pub token_file: Option<PathBuf>,
    /// `NP_TOKEN`.
    pub token: Option<SecretString>,
    /// `--ca-file` / `NP_CA_FILE`.
    pub ca_file: Option<PathBuf>,
    /// `--config` / `NP_CONFIG`: must exist.
    pub config: Option<PathBuf>,
    /// The default config path: used when it exists.
    pub default_config: Option<PathBuf>,
}

/// Validated settings for the client.
pub struct Settings {
    pub server_url: Url,
    pub token: Option<SecretString>,
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("server_url", &self.server_url.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .finish()
    }
}

/// The config file, as read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FileConfig {
    pub server_url: Option<String>,
    /// Relative paths are taken from the config file's directory.
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
}

/// `$XDG_CONFIG_HOME/kubectl-np/config.yaml`, else `$HOME/.config/kubectl-np/config.yaml`.
pub fn default_config_path(xdg_config_home: Option<PathBuf>, home: Option<PathBuf>) -> Option<PathBuf> {
    xdg_config_home
        .filter(|p| p.is_absolute())
        .or_else(|| home.map(|h| h.join(".config")))
        .map(|base| base.join("kubectl-np").join("config.yaml"))
}

/// Parse the config file strictly: a YAML mapping of known keys to strings.
pub fn parse_file(text: &str, path: &Path) -> Result<FileConfig, PluginError> {
    let err = |reason: String| PluginError::Config {
        path: path.display().to_string(),
        reason,
    };
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| err(format!("not YAML: {e}")))?;
    let mapping = match value {
        serde_yaml_ng::Value::Null => return Ok(FileConfig::default()),
        serde_yaml_ng::Value::Mapping(m) => m,
        _ => {
            return Err(err(format!(
                "must be a mapping of {}, e.g. `server-url: https://np.example.com`",
                KEYS.join(", ")
            )));
        }
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let mut config = FileConfig::default();
    for (key, value) in mapping {
        let Some(key) = key.as_str() else {
            return Err(err(format!(
                "keys must be strings; known keys: {}",
                KEYS.join(", ")
            )));
        };
        if key == "token" {
            return Err(err(
                "a token is not kept in the config file; put it in its own file (mode 0600) and name that file with `token-file`".into(),
            ));
        }
        let Some(text) = value.as_str().map(str::trim).filter(|v| !v.is_empty()) else {
            return Err(err(format!("`{key}` must be a non-empty string")));
        };
        match key {
            "server-url" => config.server_url = Some(text.to_owned()),
            "token-file" => config.token_file = Some(relative_to(base, text)),
            "ca-file" => config.ca_file = Some(relative_to(base, text)),
            other => {
                return Err(err(format!(
                    "unknown key `{other}`; known keys: {}",
                    KEYS.join(", ")
                )));
            }
        }
    }
    Ok(config)
}

fn relative_to(base: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    }
}

/// An absolute http(s) URL without credentials, query or fragment.
pub fn parse_server_url(text: &str, from: &str) -> Result<Url, PluginError> {
    let bad = |why: &str| {
        PluginError::Usage(format!(
            "{from} {text:?} {why}; give the provisioner's base URL, e.g. https://np.example.com"
        ))
    };
    let url = Url::parse(text.trim()).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("is not http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "holds credentials (they would show in the process list and logs)",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("has a query or fragment"));
    }
    Ok(url)
}

/// The token in a token file: the whole file, trimmed; one word.
pub fn parse_token(text: &str, path: &Path) -> Result<SecretString, PluginError> {
    let token = text.trim();
    let err = |reason: &str| PluginError::Config {
        path: path.display().to_string(),
        reason: reason.to_owned(),
    };
    if token.is_empty() {
        return Err(err("the token file is empty"));
    }
    if token.contains(char::is_whitespace) {
        // Likely the provisioner's own `tenant token` file, which NP_TOKEN_FILE also names there.
        return Err(err(
            "a token file holds just the token, one word (this looks like the provisioner's `tenant token` file)",
        ));
    }
    Ok(SecretString::from(token.to_owned()))
}

/// Combine the sources, reading the config, token and CA files.
pub fn resolve(sources: Sources) -> Result<Settings, PluginError> {
    let (file, file_path) = match (&sources.config, &sources.default_config) {
        (Some(path), _) => (Some(read_config(path)?), Some(path.clone())),
        (None, Some(path)) if path.exists() => (Some(read_config(path)?), Some(path.clone())),
        _ => (None, None),
    };
    let file = file.unwrap_or_default();
    // Name the file that was read, else the one that would be, in messages.
    let shown = file_path
        .as_ref()
        .or(sources.default_config.as_ref())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "~/.config/kubectl-np/config.yaml".to_owned());

    let server_url = match (&sources.server_url, &file.server_url) {
        (Some(url), _) => parse_server_url(url, "--server-url/NP_URL")?,
        (None, Some(url)) => parse_server_url(url, &format!("server-url in {shown}"))?,
        (None, None) => {
            return Err(PluginError::Usage(format!(
                "no provisioner URL: give --server-url, set NP_URL, or put `server-url: https://...` in {shown}"
            )));
        }
    };

    let token = match (&sources.token_file, sources.token) {
        (Some(_), Some(_)) => {
            return Err(PluginError::Usage(
                "both a token file (--token-file/NP_TOKEN_FILE) and NP_TOKEN are set; keep one".into(),
            ));
        }
        (Some(path), None) => Some(read_token(path)?),
        (None, Some(token)) => {
            let trimmed = token.expose_secret().trim().to_owned();
            if trimmed.is_empty() || trimmed.contains(char::is_whitespace) {
                return Err(PluginError::Usage("NP_TOKEN must be one non-empty word".into()));
            }
            Some(SecretString::from(trimmed))
        }
        (None, None) => file.token_file.as_deref().map(read_token).transpose()?,
    };

    let ca_file = sources.ca_file.or(file.ca_file);
    let ca_pem = match ca_file {
        None => None,
        Some(path) => {
            let pem = std::fs::read(&path).map_err(|source| PluginError::ReadFile {
                what: "CA file",
                path: path.display().to_string(),
                source,
            })?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(PluginError::Usage(format!(
                    "CA file {} holds no PEM certificate",
                    path.display()
                )));
            }
            Some(pem)
        }
    };
    Ok(Settings {
        server_url,
        token,
        ca_pem,
    })
}

fn read_config(path: &Path) -> Result<FileConfig, PluginError> {
    let text = std::fs::read_to_string(path).map_err(|source| PluginError::ReadFile {
        what: "config file",
        path: path.display().to_string(),
        source,
    })?;
    parse_file(&text, path)
}

fn read_token(path: &Path) -> Result<SecretString, PluginError> {
    let text = std::fs::read_to_string(path).map_err(|source| PluginError::ReadFile {
        what: "token file",
        path: path.display().to_string(),
        source,
    })?;
    parse_token(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig, String> {
        parse_file(text, Path::new("/home/me/.config/kubectl-np/config.yaml")).map_err(|e| e.to_string())
    }

    #[test]
    fn config_file_is_parsed_strictly() {
        assert_eq!(
            parse("server-url: https://np.example.com\ntoken-file: token\nca-file: /etc/ca.pem\n").unwrap(),
            FileConfig {
                server_url: Some("https://np.example.com".into()),
                token_file: Some("/home/me/.config/kubectl-np/token".into()),
                ca_file: Some("/etc/ca.pem".into()),
            }
        );
        assert_eq!(parse("").unwrap(), FileConfig::default());
        assert_eq!(parse("# nothing yet\n").unwrap(), FileConfig::default());
        for (text, words) in [
            (
                "server_url: x",
                "unknown key `server_url`; known keys: server-url, token-file, ca-file",
            ),
            ("token: abc", "token-file"),
            ("- a\n- b", "must be a mapping"),
            ("server-url: [a]", "`server-url` must be a non-empty string"),
            ("server-url: ''", "`server-url` must be a non-empty string"),
            ("server-url: :\n  - :", "not YAML"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(words), "{text:?}: {err}");
            assert!(
                err.starts_with("config file /home/me/.config/kubectl-np/config.yaml: "),
                "{err}"
            );
        }
        // The token value never appears in an error.
        assert!(!parse("token: sekrit-value").unwrap_err().contains("sekrit"));
    }

    #[test]
    fn server_urls_are_checked() {
        let ok = parse_server_url("https://np.example.com/base/", "x").unwrap();
        assert_eq!(ok.path(), "/base/");
        for bad in [
            "np.example.com",
            "ftp://np.example.com",
            "https://user:pw@np.example.com",
            "https://np.example.com/?a=b",
            "not a url",
        ] {
            let err = parse_server_url(bad, "--server-url").unwrap_err();
            assert!(matches!(err, PluginError::Usage(_)), "{bad}");
            assert!(!err.to_string().contains("pw@") || bad.contains("pw@"));
        }
    }

    #[test]
    fn token_files_hold_one_word() {
        let path = Path::new("/t");
        assert_eq!(parse_token(" abc\n", path).unwrap().expose_secret(), "abc");
        assert!(parse_token("\n", path).unwrap_err().to_string().contains("empty"));
        let err = parse_token("alice abc\n", path).unwrap_err().to_string();
        assert!(err.contains("one word") && !err.contains("abc"), "{err}");
    }

    #[test]
    fn sources_combine_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(dir.path().join("tok"), "from-file\n").unwrap();
        std::fs::write(&config, "server-url: https://file.example.com\ntoken-file: tok\n").unwrap();
        let settings = resolve(Sources {
            config: Some(config.clone()),
            ..Sources::default()
        })
        .unwrap();
        assert_eq!(settings.server_url.as_str(), "https://file.example.com/");
        assert_eq!(settings.token.unwrap().expose_secret(), "from-file");
        // Flags and env win over the file; NP_TOKEN over the file's token-file.
        let settings = resolve(Sources {
            server_url: Some("http://127.0.0.1:8080".into()),
            token: Some(SecretString::from("from-env")),
            default_config: Some(config.clone()),
            ..Sources::default()
        })
        .unwrap();
        assert_eq!(settings.server_url.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(settings.token.as_ref().unwrap().expose_secret(), "from-env");
        assert!(!format!("{settings:?}").contains("from-env"));
        // Both token sources: refused.
        let both = resolve(Sources {
            server_url: Some("http://x".into()),
            token: Some(SecretString::from("a")),
            token_file: Some(dir.path().join("tok")),
            ..Sources::default()
        });
        assert!(matches!(both, Err(PluginError::Usage(_))));
        // A missing default file is fine, a missing named one is not.
        let missing = dir.path().join("absent.yaml");
        let err = resolve(Sources {
            default_config: Some(missing.clone()),
            ..Sources::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("no provisioner URL") && err.contains("NP_URL"),
            "{err}"
        );
        assert!(err.contains("absent.yaml"), "names the file it looked for: {err}");
        let err = resolve(Sources {
            config: Some(missing),
            ..Sources::default()
        })
        .unwrap_err();
        assert!(matches!(
            err,
            PluginError::ReadFile {
                what: "config file",
                ..
            }
        ));
    }

    #[test]
    fn default_config_path_follows_xdg() {
        assert_eq!(
            default_config_path(Some("/x".into()), Some("/h".into())),
            Some(PathBuf::from("/x/kubectl-np/config.yaml"))
        );
        assert_eq!(
            default_config_path(Some("rel".into()), Some("/h".into())),
            Some(PathBuf::from("/h/.config/kubectl-np/config.yaml"))
        );
        assert_eq!(default_config_path(None, None), None);
    }
}
