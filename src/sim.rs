//! `Simulator`: builds the hub and starts every endpoint on listeners it is given, under one
//! shutdown signal. The library API that the CLI and the tests both use.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use apns_sim::{pki::Pki, sim::{Listeners, Simulator, SimulatorConfig}};
//!
//! let pki = Pki::generate()?;                       // in-memory CA and certificates
//! let listeners = Listeners::bind_local().await?;   // 127.0.0.1, port 0 for each endpoint
//! let sim = Simulator::start(SimulatorConfig::new(pki), listeners)?;
//! println!("gateway on {}", sim.addrs().gateway);
//! // … connect providers and devices, or subscribe to sim.hub().subscribe() …
//! sim.shutdown().await;                             // providers get status 10, then close
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::actors::{Actors, ActorsConfig};
use crate::clock::Clock;
use crate::hub::{fleet_key, Hub, VirtualSpec, VIRTUAL_KEY_FILE};
use crate::pki::jwt;
use crate::pki::Pki;
use crate::server::accept::{self, Endpoint};
use crate::server::{control, devices, feedback, gateway, http2};
use crate::settings::{Settings, VIRTUAL_TICK};
use crate::store::Store;
use crate::tls;

/// Everything a simulator needs besides its listeners.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// Certificates and keys (CA, server, providers, auth keys).
    pub pki: Arc<Pki>,
    /// Limits and defaults.
    pub settings: Settings,
    /// The clock (a test may hold a clone to move time).
    pub clock: Clock,
    /// The folder `pki` was loaded from, if any: a provider token naming an unknown key
    /// makes the HTTP/2 API re-read its auth keys from there (at most once per
    /// [`Settings::pki_reread_interval`]), so keys minted while the simulator runs work
    /// without a restart. `None` for an in-memory PKI.
    pub pki_dir: Option<PathBuf>,
    /// `(bundle, team)` pairs beyond what the PKI says (a scenario file's `[teams]`): a
    /// token-auth push to a bundle of another team is refused with `TopicDisallowed`.
    pub bundle_owners: Vec<(String, String)>,
    /// The control API's bearer token (`serve --control-token`): with one, every control
    /// request must carry it, and the API may listen on any address; without one it must
    /// listen on a loopback address ([`StartError::ControlNotLoopback`]).
    pub control_token: Option<String>,
    /// The state directory (`serve --state`): devices, tokens, unregistered tokens,
    /// unread feedback and stored notifications survive a restart there, even one after
    /// kill -9. `None` keeps everything in memory (tests, scenario runs, the tour, bench).
    pub state_dir: Option<PathBuf>,
}

impl SimulatorConfig {
    /// Default settings and the system clock.
    pub fn new(pki: Pki) -> Self {
        SimulatorConfig {
            pki: Arc::new(pki),
            settings: Settings::default(),
            clock: Clock::system(),
            pki_dir: None,
            bundle_owners: Vec::new(),
            control_token: None,
            state_dir: None,
        }
    }
}

/// Bound listeners, one per endpoint.
#[derive(Debug)]
pub struct Listeners {
    /// Binary gateway (2195).
    pub gateway: TcpListener,
    /// Feedback service (2196).
    pub feedback: TcpListener,
    /// HTTP/2 provider API (2197).
    pub http2: TcpListener,
    /// Device endpoint (5223).
    pub devices: TcpListener,
    /// Control API (8080). Without [`SimulatorConfig::control_token`] it must be on a
    /// loopback address: [`Simulator::start`] refuses any other.
    pub control: TcpListener,
}

impl Listeners {
    /// Binds every endpoint on 127.0.0.1 with a port chosen by the system (for tests).
    pub async fn bind_local() -> std::io::Result<Self> {
        Ok(Listeners {
            gateway: TcpListener::bind("127.0.0.1:0").await?,
            feedback: TcpListener::bind("127.0.0.1:0").await?,
            http2: TcpListener::bind("127.0.0.1:0").await?,
            devices: TcpListener::bind("127.0.0.1:0").await?,
            control: TcpListener::bind("127.0.0.1:0").await?,
        })
    }
}

/// Where each endpoint listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addrs {
    /// Binary gateway.
    pub gateway: SocketAddr,
    /// Feedback service.
    pub feedback: SocketAddr,
    /// HTTP/2 provider API.
    pub http2: SocketAddr,
    /// Device endpoint.
    pub devices: SocketAddr,
    /// Control API (HTTP/1.1, plain TCP).
    pub control: SocketAddr,
}

/// Why the simulator could not start. Each variant prints the inner error in its message
/// rather than chaining it as a `source`, so the CLI's `{:#}` says it once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// rustls refused a configuration built from the PKI's CA, server certificate or server
    /// key (a `certs/` directory edited by hand: mint a fresh one).
    #[error("TLS configuration: {0}")]
    Tls(tls::TlsError),
    /// An auth key of the PKI cannot verify provider tokens; the message names the key and
    /// its `.p8` file, which has to be replaced.
    #[error("HTTP/2 token auth: {0}")]
    AuthKey(jwt::JwtError),
    /// The control API's listener is not on a loopback address and no control token is
    /// set. Unauthenticated, anyone who could reach it could read every token and
    /// notification and reset the simulator.
    #[error(
        "the control API binds to a non-loopback address only with a token; {0} is not \
         loopback: set --control-token (or APNS_SIM_CONTROL_TOKEN), or bind to 127.0.0.1 or ::1"
    )]
    ControlNotLoopback(SocketAddr),
    /// The control token is empty or has characters an `Authorization` header cannot
    /// carry.
    #[error("the control token must be 1 to 256 visible ASCII characters (no spaces)")]
    BadControlToken,
    /// A listener has no local address.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// The state directory cannot be used: written by a newer version, corrupt, or not
    /// writable. The message names the file.
    #[error("state: {0}")]
    State(crate::store::StoreError),
    /// The virtual fleet the settings ask for is out of bounds, or its key cannot be read
    /// or written in the state directory; the message says which.
    #[error("virtual fleet: {0}")]
    VirtualFleet(String),
}

/// A running simulator.
#[derive(Debug)]
pub struct Simulator {
    hub: Hub,
    actors: Actors,
    addrs: Addrs,
    pki: Arc<Pki>,
    shutdown: CancellationToken,
    /// Fired at [`Settings::shutdown_timeout`] into shutdown: every task still running is
    /// dropped.
    abort: CancellationToken,
    /// [`Settings::shutdown_timeout`].
    shutdown_timeout: std::time::Duration,
    tracker: TaskTracker,
}

impl Simulator {
    /// Starts every endpoint on its listener. Must be called inside a tokio runtime.
    pub fn start(config: SimulatorConfig, listeners: Listeners) -> Result<Self, StartError> {
        let addrs = Addrs {
            gateway: listeners.gateway.local_addr()?,
            feedback: listeners.feedback.local_addr()?,
            http2: listeners.http2.local_addr()?,
            devices: listeners.devices.local_addr()?,
            control: listeners.control.local_addr()?,
        };
        if let Some(token) = &config.control_token {
            if !valid_control_token(token) {
                return Err(StartError::BadControlToken);
            }
        } else if !addrs.control.ip().is_loopback() {
            return Err(StartError::ControlNotLoopback(addrs.control));
        }
        let provider_tls = TlsAcceptor::from(
            tls::provider_server_config(&config.pki, &[]).map_err(StartError::Tls)?,
        );
        let device_tls =
            TlsAcceptor::from(tls::device_server_config(&config.pki).map_err(StartError::Tls)?);
        let http2_tls =
            TlsAcceptor::from(tls::http2_server_config(&config.pki).map_err(StartError::Tls)?);
        let auth_keys = jwt::KeyStore::from_pki(&config.pki).map_err(StartError::AuthKey)?;
        let auth_keys = http2::auth::TokenKeys::new(auth_keys, &config.settings)
            .with_folder(config.pki_dir.clone())
            .with_bundle_owners(config.bundle_owners.clone());

        let hub = match &config.state_dir {
            Some(dir) => {
                let full = config.settings.state_sync == crate::settings::StateSync::Full;
                let (store, snapshot) = Store::open(dir, full).map_err(StartError::State)?;
                Hub::with_store(config.clock.clone(), &config.settings, store, snapshot)
                    .map_err(StartError::State)?
            }
            None => Hub::with_settings(config.clock.clone(), &config.settings),
        };
        let fleet = start_virtual_fleet(&hub, &config)?;
        let settings = Arc::new(config.settings.clone());
        let shutdown = CancellationToken::new();
        let abort = CancellationToken::new();
        let tracker = TaskTracker::new();
        let endpoint = |name, acceptor: &TlsAcceptor, max_connections| Endpoint {
            name,
            acceptor: acceptor.clone(),
            max_connections,
            max_handshaking: settings.max_handshaking,
            listen_backlog: settings.listen_backlog,
            max_unauthenticated: settings.max_unauthenticated(max_connections),
            handshake_timeout: settings.handshake_timeout,
            write_timeout: settings.write_timeout,
            shutdown: shutdown.clone(),
            abort: abort.clone(),
            tracker: tracker.clone(),
            metrics: hub.metrics().clone(),
        };
        let max_providers = settings.max_provider_connections;
        // Under the abort, so that shutdown can always end it.
        spawn_abortable(
            &tracker,
            &abort,
            gateway::run(
                listeners.gateway,
                endpoint("gateway", &provider_tls, max_providers),
                hub.clone(),
                settings.clone(),
            ),
        );
        spawn_abortable(
            &tracker,
            &abort,
            feedback::run(
                listeners.feedback,
                endpoint("feedback", &provider_tls, max_providers),
                hub.clone(),
                settings.clone(),
            ),
        );
        spawn_abortable(
            &tracker,
            &abort,
            http2::run(
                listeners.http2,
                endpoint("http2", &http2_tls, max_providers),
                hub.clone(),
                settings.clone(),
                auth_keys,
            ),
        );
        spawn_abortable(
            &tracker,
            &abort,
            devices::run(
                listeners.devices,
                endpoint("devices", &device_tls, settings.max_device_connections),
                hub.clone(),
                settings.clone(),
            ),
        );
        if fleet {
            spawn_abortable(
                &tracker,
                &abort,
                virtual_churn(hub.clone(), shutdown.clone()),
            );
        }
        let actors = Actors::new(ActorsConfig {
            devices: addrs.devices,
            gateway: addrs.gateway,
            http2: addrs.http2,
            pki: config.pki.clone(),
            hub: hub.clone(),
            shutdown: shutdown.clone(),
        })
        .map_err(StartError::Tls)?;
        let control_actors: Arc<dyn control::devices::Actors> = Arc::new(actors.clone());
        spawn_abortable(
            &tracker,
            &abort,
            control::run(
                listeners.control,
                hub.clone(),
                control::Endpoints {
                    gateway: addrs.gateway,
                    feedback: addrs.feedback,
                    http2: addrs.http2,
                    devices: addrs.devices,
                    control: addrs.control,
                },
                shutdown.clone(),
                control::ControlConfig {
                    token: config.control_token.clone(),
                    max_connections: settings.max_control_connections,
                    actors: Some(control_actors),
                    write_timeout: settings.write_timeout,
                },
            ),
        );
        info!(
            gateway = %addrs.gateway,
            feedback = %addrs.feedback,
            http2 = %addrs.http2,
            devices = %addrs.devices,
            control = %addrs.control,
            "simulator started"
        );
        Ok(Simulator {
            hub,
            actors,
            addrs,
            pki: config.pki,
            shutdown,
            abort,
            shutdown_timeout: settings.shutdown_timeout,
            tracker,
        })
    }

    /// The routing core (subscribe to its events, inspect feedback and tokens).
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The in-process devices the control API drives, and its test provider (the demo
    /// fleet of `serve` is created through them).
    pub fn actors(&self) -> &Actors {
        &self.actors
    }

    /// Where each endpoint listens.
    pub fn addrs(&self) -> &Addrs {
        &self.addrs
    }

    /// The certificates the simulator serves with (clients build their TLS from these).
    pub fn pki(&self) -> &Arc<Pki> {
        &self.pki
    }

    /// A token that fires when shutdown starts (to tie other tasks to the simulator).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, tells every connection (binary providers get status 10, HTTP/2
    /// providers GOAWAY, devices Error SHUTDOWN), and waits for every task to finish, for
    /// [`Settings::shutdown_timeout`] at most: then whatever is left is aborted. It never
    /// waits for ever.
    pub async fn shutdown(self) {
        // 1. Tell everyone: accept loops stop, connections say goodbye and end.
        self.shutdown.cancel();
        self.tracker.close();
        // 2. Wait for them, within the deadline.
        if tokio::time::timeout(self.shutdown_timeout, self.tracker.wait())
            .await
            .is_err()
        {
            // 3. Abort what is left: every task runs under `abort` (`accept::abortable`),
            //    and drops its connection where it stands. Dropping is immediate, so this
            //    wait only lets the tasks be polled once more; its bound is a safety net.
            warn!(
                deadline = ?self.shutdown_timeout,
                left = self.tracker.len(),
                "shutdown deadline passed: aborting the connections still open"
            );
            self.abort.cancel();
            if tokio::time::timeout(ABORT_WAIT, self.tracker.wait())
                .await
                .is_err()
            {
                warn!(
                    left = self.tracker.len(),
                    "tasks still running after the abort"
                );
            }
        }
        // 4. Every endpoint task has ended or been aborted, so nothing can change the durable
        //    state any more: it is written out last. An aborted device session has taken its
        //    device offline and routed what it had not acknowledged again as it was dropped
        //    (its drop guard, `server::devices`), so that state is complete.
        self.hub.close_store().await;
        info!("simulator stopped");
    }
}

/// Starts the virtual fleet `config`'s settings ask for, if any, its key kept in the state
/// directory (so its tokens survive a restart); whether one was started.
fn start_virtual_fleet(hub: &Hub, config: &SimulatorConfig) -> Result<bool, StartError> {
    let Some(spec) =
        VirtualSpec::from_settings(&config.settings).map_err(StartError::VirtualFleet)?
    else {
        return Ok(false);
    };
    let key = fleet_key(config.state_dir.as_deref()).map_err(|e| {
        StartError::VirtualFleet(format!("the fleet key ({VIRTUAL_KEY_FILE}): {e}"))
    })?;
    hub.start_virtual_fleet(&spec, &key);
    Ok(true)
}

/// The virtual fleet's churn: a tick every [`VIRTUAL_TICK`] (its rates apply to the time
/// the hub's clock says passed), until shutdown.
async fn virtual_churn(hub: Hub, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(VIRTUAL_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => hub.virtual_tick(),
        }
    }
}

/// How long shutdown waits for tasks to notice the abort (they are dropped at their next
/// poll, so a healthy runtime needs microseconds).
const ABORT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Spawns `task` on `tracker`, dropped where it stands when `abort` fires.
fn spawn_abortable(
    tracker: &TaskTracker,
    abort: &CancellationToken,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) {
    tracker.spawn(accept::abortable(abort.clone(), task));
}

/// The longest control token accepted: a generous password, short enough for any header.
pub const MAX_CONTROL_TOKEN_LEN: usize = 256;

/// Whether `token` can be a control token: 1 to [`MAX_CONTROL_TOKEN_LEN`] visible ASCII
/// characters, which an `Authorization: Bearer` header and a query string both carry.
pub fn valid_control_token(token: &str) -> bool {
    (1..=MAX_CONTROL_TOKEN_LEN).contains(&token.len())
        && token.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{AuthKey, DEFAULT_TEAM_ID};

    #[tokio::test]
    async fn a_corrupt_auth_key_is_named_not_blamed_on_tls() {
        let mut pki = Pki::generate().unwrap();
        pki.insert_auth_key_unchecked(AuthKey {
            key_id: "BROKEN0001".to_owned(),
            team_id: DEFAULT_TEAM_ID.to_owned(),
            topics: Vec::new(),
            p8_pem: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_owned(),
        });
        let listeners = Listeners::bind_local().await.unwrap();
        let err = Simulator::start(SimulatorConfig::new(pki), listeners).unwrap_err();
        assert!(matches!(err, StartError::AuthKey(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "HTTP/2 token auth: auth key BROKEN0001 (AuthKey_BROKEN0001.p8): \
             not a P-256 private key in PKCS#8 PEM form"
        );
        assert!(!err.to_string().contains("TLS"), "{err}");
    }
}
