//! A client for the daemon's API over its Unix socket, with errors that say what to do.

use std::{io, path::Path};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint, Uri},
};

use crate::v1::{
    observe_service_client::ObserveServiceClient, rule_service_client::RuleServiceClient,
    system_service_client::SystemServiceClient,
};

/// Why the daemon could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "fi-daemon is not running (nothing listens on {0}); start it with `sudo fi-daemon` \
         or `cargo xtask run`, or point --socket / FI_SOCKET at its socket"
    )]
    NotRunning(String),
    #[error(
        "permission denied on {0}: the daemon's socket is root-only, because whoever can \
         reach it can break the network of every container; run fictl as root (sudo)"
    )]
    PermissionDenied(String),
    #[error("connecting to {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("the token is not valid ASCII text")]
    BadToken,
    #[error("connecting to {path}: {source}")]
    Transport {
        path: String,
        #[source]
        source: tonic::transport::Error,
    },
}

impl ConnectError {
    fn from_io(path: &Path, source: io::Error) -> Self {
        let shown = path.display().to_string();
        match source.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => Self::NotRunning(shown),
            io::ErrorKind::PermissionDenied => Self::PermissionDenied(shown),
            _ => Self::Io {
                path: shown,
                source,
            },
        }
    }
}

/// Where the daemon is: its Unix socket, or a TCP address with a bearer token.
#[derive(Debug, Clone)]
pub enum Target {
    Unix(std::path::PathBuf),
    Tcp { url: String, token: Option<String> },
}

impl From<&Path> for Target {
    fn from(path: &Path) -> Self {
        Target::Unix(path.to_owned())
    }
}

impl From<&std::path::PathBuf> for Target {
    fn from(path: &std::path::PathBuf) -> Self {
        Target::Unix(path.clone())
    }
}

/// Adds `authorization: Bearer <token>` to every call (nothing without a token).
#[derive(Debug, Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A connection to the daemon.
pub type Connection = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

/// Connects to the daemon, over its Unix socket or TCP.
pub async fn connect_to(target: impl Into<Target>) -> Result<Connection, ConnectError> {
    match target.into() {
        Target::Unix(path) => Ok(InterceptedService::new(connect(&path).await?, Bearer(None))),
        Target::Tcp { url, token } => {
            let bearer = token
                .map(|t| format!("Bearer {t}").parse())
                .transpose()
                .map_err(|_| ConnectError::BadToken)?;
            let channel = Endpoint::from_shared(url.clone())
                .map_err(|source| ConnectError::Transport {
                    path: url.clone(),
                    source,
                })?
                .connect()
                .await
                .map_err(|source| ConnectError::Transport { path: url, source })?;
            Ok(InterceptedService::new(channel, Bearer(bearer)))
        }
    }
}

/// Opens a gRPC channel to the daemon listening on `socket`.
pub async fn connect(socket: &Path) -> Result<Channel, ConnectError> {
    // Probe once ourselves so that the common failures get a precise message rather than
    // a generic transport error.
    drop(
        UnixStream::connect(socket)
            .await
            .map_err(|e| ConnectError::from_io(socket, e))?,
    );
    let path = socket.to_owned();
    // The URI is required by the API but unused: the connector decides where to go.
    Endpoint::from_static("http://fi-daemon.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|source| ConnectError::Transport {
            path: socket.display().to_string(),
            source,
        })
}

/// A client of the system service.
pub async fn system(
    to: impl Into<Target>,
) -> Result<SystemServiceClient<Connection>, ConnectError> {
    Ok(SystemServiceClient::new(connect_to(to).await?))
}

/// A client of the observe service.
pub async fn observe(
    to: impl Into<Target>,
) -> Result<ObserveServiceClient<Connection>, ConnectError> {
    Ok(ObserveServiceClient::new(connect_to(to).await?))
}

/// A client of the rule service.
pub async fn rules(to: impl Into<Target>) -> Result<RuleServiceClient<Connection>, ConnectError> {
    Ok(RuleServiceClient::new(connect_to(to).await?))
}

/// A client of the explore service.
pub async fn explore(
    to: impl Into<Target>,
) -> Result<crate::v1::explore_service_client::ExploreServiceClient<Connection>, ConnectError> {
    Ok(
        crate::v1::explore_service_client::ExploreServiceClient::new(connect_to(to).await?)
            // Reports of long explorations are large.
            .max_decoding_message_size(crate::limits::MAX_REPORT_BYTES),
    )
}

/// What a broken stream (`watch`, `explore run`) means to a user. A stream that breaks at
/// the transport (the daemon died or was killed: "h2 protocol error") becomes
/// Unavailable with a message that says so; the daemon's own errors pass unchanged.
pub fn stream_error(status: tonic::Status) -> tonic::Status {
    let transport = matches!(
        status.code(),
        tonic::Code::Unknown | tonic::Code::Unavailable | tonic::Code::Internal
    ) && (status.message().contains("h2 protocol error")
        || status.message().contains("connection")
        || status.message().contains("transport"));
    if transport {
        tonic::Status::unavailable(
            "fi-daemon went away: the stream broke off without the daemon ending it (did it \
             stop or crash? `fictl status` tells)",
        )
    } else {
        status
    }
}
