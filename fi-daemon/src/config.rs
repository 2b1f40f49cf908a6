//! The daemon's configuration file (TOML). Precedence, highest first: command-line flags,
//! environment variables, this file, built-in defaults. Every key is optional:
//!
//! ```toml
//! ifaces = ["lo", "eth0"]          # --iface
//! no_veths = false                 # --no-veths
//! veth_prefixes = ["veth", "cali"] # --veth-prefix
//! cgroup = "/"                     # --cgroup
//! targets = ["/system.slice/docker-3f2a9c1d7e5b.scope"]  # --target
//! capture_headers = ["traceparent", "x-fi-target"]       # --capture-header
//! socket = "/run/fi/fi.sock"       # --socket, FI_SOCKET
//! listen = "127.0.0.1:7443"        # --listen
//! token_file = "/etc/fi/token"     # --token-file
//! store = "/var/lib/fi/fi.db"      # --store, FI_STORE
//! tcp_explore = false              # --tcp-explore
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// What a configuration file may set. Unknown keys are refused (a typo must not be a
/// silently ignored setting).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub ifaces: Option<Vec<String>>,
    pub no_veths: Option<bool>,
    pub veth_prefixes: Option<Vec<String>>,
    pub cgroup: Option<PathBuf>,
    pub targets: Option<Vec<String>>,
    pub capture_headers: Option<Vec<String>>,
    pub socket: Option<PathBuf>,
    pub listen: Option<std::net::SocketAddr>,
    pub token_file: Option<PathBuf>,
    pub store: Option<PathBuf>,
    pub tcp_explore: Option<bool>,
}

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path:?}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path:?}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
}

impl FileConfig {
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }
}

/// Takes the file's value unless a flag or the environment gave one.
pub fn merge<T>(current: &mut T, from_user: bool, file: Option<T>) {
    if !from_user && let Some(value) = file {
        *current = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_parses_and_unknown_keys_are_refused() {
        let text = r#"
            ifaces = ["lo", "eth0"]
            no_veths = true
            veth_prefixes = ["cali"]
            cgroup = "/kubepods.slice"
            targets = ["/a", "3f2a9c1d7e5b"]
            capture_headers = ["traceparent"]
            socket = "/tmp/fi.sock"
            listen = "127.0.0.1:7443"
            token_file = "/etc/fi/token"
        "#;
        let c = FileConfig::parse(text, Path::new("fi.toml")).unwrap();
        assert_eq!(
            c.ifaces.as_deref(),
            Some(&["lo".to_owned(), "eth0".to_owned()][..])
        );
        assert_eq!(c.listen.map(|a| a.port()), Some(7443));
        let err = FileConfig::parse("sockett = \"/x\"", Path::new("fi.toml")).unwrap_err();
        assert!(err.to_string().contains("sockett"), "{err}");
        assert!(FileConfig::parse("listen = \"nope\"", Path::new("fi.toml")).is_err());
    }

    #[test]
    fn flags_and_environment_win_over_the_file() {
        let mut socket = PathBuf::from("/run/fi/fi.sock");
        merge(&mut socket, true, Some(PathBuf::from("/from/file")));
        assert_eq!(
            socket,
            PathBuf::from("/run/fi/fi.sock"),
            "given by the user"
        );
        merge(&mut socket, false, Some(PathBuf::from("/from/file")));
        assert_eq!(
            socket,
            PathBuf::from("/from/file"),
            "a default yields to the file"
        );
        merge(&mut socket, false, None);
        assert_eq!(
            socket,
            PathBuf::from("/from/file"),
            "no file value: unchanged"
        );
    }
}
