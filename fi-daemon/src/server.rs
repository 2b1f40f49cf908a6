//! The gRPC layer: converts between the API types and the domain core, and maps each
//! domain error to its gRPC code. Nothing else.

use std::{
    io,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use fi_api::{
    limits::{MAX_REPORT_BYTES, MAX_REQUEST_BYTES},
    v1::{
        explore_service_server::ExploreServiceServer, observe_service_server::ObserveServiceServer,
        rule_service_server::RuleServiceServer, system_service_server::SystemServiceServer,
    },
};

use crate::daemon::Daemon;

mod convert;
mod explore;
mod observe;
mod rules;
mod system;

/// Failures of setting up or running the API server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("another fi-daemon is already listening on {0:?}")]
    AlreadyRunning(PathBuf),
    #[error("preparing the socket {path:?}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("serving gRPC: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("token file {path:?}: {reason}")]
    Token { path: PathBuf, reason: String },
}

/// Binds the Unix socket, readable and writable by root only (mode 0600, created under a
/// restrictive umask so that there is no window in which others could connect).
pub fn bind_unix(path: &Path) -> Result<UnixListener, ServerError> {
    let socket_err = |source| ServerError::Socket {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServerError::AlreadyRunning(path.to_owned()));
        }
        // A socket left by a daemon that died: nobody answers on it.
        std::fs::remove_file(path).map_err(socket_err)?;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(socket_err)?;
    }
    // SAFETY: umask(2) cannot fail; it is set back right after bind.
    let old_mask = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old_mask) };
    let listener = listener.map_err(socket_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(socket_err)?;
    Ok(listener)
}

/// A bearer token for the TCP listener.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// Shortest accepted token: long enough not to be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

impl Token {
    /// Reads a token file: one word of at least [`MIN_TOKEN_LEN`] ASCII characters,
    /// readable by its owner only (a token others can read protects nothing).
    pub fn from_file(path: &Path) -> Result<Self, ServerError> {
        let err = |reason: String| ServerError::Token {
            path: path.to_owned(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(err(format!(
                "mode {mode:o} lets others read it; chmod 600 it"
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let token = text.trim().to_owned();
        if token.len() < MIN_TOKEN_LEN || token.contains(char::is_whitespace) || !token.is_ascii() {
            return Err(err(format!(
                "a token is one word of at least {MIN_TOKEN_LEN} ASCII characters"
            )));
        }
        Ok(Self(token))
    }

    /// Compares in time independent of where the bytes differ.
    fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        presented.len() == expected.len()
            && presented
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// The optional TCP listener.
#[derive(Debug)]
pub struct Tcp {
    pub listener: tokio::net::TcpListener,
    /// None only with the explicit insecure flag.
    pub token: Option<Token>,
    /// Whether explorations (which run a command as root) may be started over it.
    pub explore: bool,
}

/// Every service, to serve on each listener.
/// How long stopping waits for open calls before it stops anyway.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Concurrent calls per connection, and concurrent streams per HTTP/2 connection.
const MAX_CONCURRENT: u32 = 32;

fn routes(daemon: &Arc<Daemon>, tcp_explore: bool) -> tonic::service::Routes {
    tonic::service::Routes::new(
        SystemServiceServer::new(system::SystemApi::new(Arc::clone(daemon)))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    )
    .add_service(
        ObserveServiceServer::new(observe::ObserveApi::new(Arc::clone(daemon)))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    )
    .add_service(
        RuleServiceServer::new(rules::RuleApi::new(Arc::clone(daemon)))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    )
    .add_service(
        ExploreServiceServer::new(explore::ExploreApi::new(Arc::clone(daemon), tcp_explore))
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            // Reports of long explorations are large; they are read whole.
            .max_encoding_message_size(MAX_REPORT_BYTES),
    )
}

/// A server with the daemon's bounds: a client cannot make it hold unbounded work.
fn bounded() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .concurrency_limit_per_connection(MAX_CONCURRENT as usize)
        .max_concurrent_streams(MAX_CONCURRENT)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
}

/// Serves the API on the Unix socket, and on TCP if asked, until `shutdown` completes.
pub async fn serve(
    daemon: Arc<Daemon>,
    unix: UnixListener,
    tcp: Option<Tcp>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    // The standard gRPC health service (grpc.health.v1), for probes and load balancers:
    // the overall status ("") is SERVING while the daemon serves.
    let (_reporter, health) = tonic_health::server::health_reporter();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let unix_server = bounded()
        .add_routes(routes(&daemon, false).add_service(health.clone()))
        .serve_with_incoming_shutdown(UnixListenerStream::new(unix), stopped(stop_rx.clone()));
    let tcp_server = async {
        let Some(tcp) = tcp else {
            return Ok(());
        };
        let token = tcp.token;
        let explore = tcp.explore;
        let check = move |request: tonic::Request<()>| {
            let Some(token) = &token else {
                return Ok(request);
            };
            let presented = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
            match presented {
                Some(p) if token.matches(p) => Ok(request),
                _ => Err(tonic::Status::unauthenticated(
                    "missing or wrong bearer token (fictl --token-file)",
                )),
            }
        };
        bounded()
            .layer(tonic::service::InterceptorLayer::new(check))
            .add_routes(routes(&daemon, explore).add_service(health.clone()))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(tcp.listener),
                stopped(stop_rx.clone()),
            )
            .await
    };
    let signal = async {
        shutdown.await;
        daemon.control().begin_stopping();
        let _ = stop_tx.send(true);
    };
    let servers = async { tokio::join!(unix_server, tcp_server) };
    let stopping = daemon.control().stopping();
    // Streams end when stopping begins; should a call still hang, the daemon stops anyway
    // a few seconds later (its programs are detached when the process ends in any case).
    let deadline = async move {
        stopped(stopping).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let ((), outcome) = tokio::join!(signal, async {
        tokio::select! {
            (unix_result, tcp_result) = servers => Some((unix_result, tcp_result)),
            () = deadline => None,
        }
    });
    match outcome {
        Some((unix_result, tcp_result)) => {
            unix_result?;
            tcp_result?;
        }
        None => tracing::warn!("calls still open after the grace period; stopping anyway"),
    }
    Ok(())
}
