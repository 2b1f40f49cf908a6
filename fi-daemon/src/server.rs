//! The gRPC layer: converts between the API types and the domain core, and maps each
//! domain error to its gRPC code. Nothing else.

use std::{
    io,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::{
    api::v1::{
        observe_service_server::ObserveServiceServer, rule_service_server::RuleServiceServer,
        system_service_server::SystemServiceServer,
    },
    dataplane::DataPlane,
    requests::RequestLog,
    rules::Rules,
    targets::Targets,
};

mod convert;
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
}

/// State shared by the services.
#[derive(Debug)]
pub struct Daemon {
    pub dataplane: Mutex<DataPlane>,
    pub targets: Mutex<Targets>,
    pub rules: Mutex<Rules>,
    pub requests: Arc<Mutex<RequestLog>>,
    /// Names of the captured headers, by slot.
    pub capture: Vec<String>,
    pub kernel_release: String,
}

impl Daemon {
    pub fn new(
        dataplane: DataPlane,
        targets: Targets,
        rules: Rules,
        requests: Arc<Mutex<RequestLog>>,
        capture: Vec<String>,
    ) -> Self {
        Self {
            dataplane: Mutex::new(dataplane),
            targets: Mutex::new(targets),
            rules: Mutex::new(rules),
            requests,
            capture,
            kernel_release: kernel_release(),
        }
    }
}

/// Locks a mutex; a poisoned one (a panic while held) becomes an `internal` error.
fn lock<T>(mutex: &Mutex<T>) -> Result<MutexGuard<'_, T>, tonic::Status> {
    mutex
        .lock()
        .map_err(|_| tonic::Status::internal("daemon state is poisoned by an earlier panic"))
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
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

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    daemon: Arc<Daemon>,
    listener: UnixListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    tonic::transport::Server::builder()
        .add_service(SystemServiceServer::new(system::SystemApi::new(
            Arc::clone(&daemon),
        )))
        .add_service(ObserveServiceServer::new(observe::ObserveApi::new(
            Arc::clone(&daemon),
        )))
        .add_service(RuleServiceServer::new(rules::RuleApi::new(daemon)))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}
