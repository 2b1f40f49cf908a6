//! The gRPC layer: converts between the API types and the domain core, nothing more.

use std::{
    io,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use crate::{
    api::v1::{
        self as api,
        system_service_server::{SystemService, SystemServiceServer},
    },
    dataplane::{DataPlane, Hook},
};

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
    pub kernel_release: String,
}

impl Daemon {
    pub fn new(dataplane: DataPlane) -> Self {
        Self {
            dataplane: Mutex::new(dataplane),
            kernel_release: kernel_release(),
        }
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The system service: status, version, counters.
#[derive(Debug, Clone)]
pub struct SystemApi {
    daemon: Arc<Daemon>,
}

#[tonic::async_trait]
impl SystemService for SystemApi {
    async fn get_status(
        &self,
        _request: Request<api::GetStatusRequest>,
    ) -> Result<Response<api::GetStatusResponse>, Status> {
        let dataplane = self
            .daemon
            .dataplane
            .lock()
            .map_err(|_| Status::internal("data plane state is poisoned"))?;
        let counters = dataplane
            .counters()
            .map_err(|e| Status::internal(e.to_string()))?
            .into_iter()
            .map(|(counter, value)| api::Counter {
                name: counter.name().to_owned(),
                value,
            })
            .collect();
        let attachments = dataplane
            .attachments()
            .iter()
            .map(|a| api::Attachment {
                kind: match a.hook {
                    Hook::TcEgress => api::AttachKind::TcEgress,
                    Hook::TcIngress => api::AttachKind::TcIngress,
                    Hook::SockOps => api::AttachKind::SockOps,
                } as i32,
                target: a.target.clone(),
                program: a.program.to_owned(),
            })
            .collect();
        Ok(Response::new(api::GetStatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            kernel_release: self.daemon.kernel_release.clone(),
            attachments,
            counters,
            uptime_seconds: dataplane.loaded_at().elapsed().as_secs(),
        }))
    }
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
        .add_service(SystemServiceServer::new(SystemApi { daemon }))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}
