//! A shard's front ends: its listeners, the HTTP/1.1 and OAP/1 contexts over one object
//! service, the accept loops (bounded by `connections_max`, and each client by
//! `connections_per_client_max` across the node; failures logged without a storm) and
//! the TLS handshake that hands a stream to the front end ALPN names.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::net::{TcpListener, TcpStream};
use ron_io::stream::PolledTcp;
use ron_io::tls::AppProtocol;
use ron_link::counters::{AcceptedConnection, FrontCounters};
use ron_shards::Shard;

use crate::admission::Admission;
use crate::blocked::Blocked;
use crate::buffers::BufferPool;
use crate::client_addr::{self, TrustedProxies};
use crate::client_connections::{ClientConnection, ClientConnections};
use crate::config::{Config, ConfigError};
use crate::drain::Drain;
use crate::fetch::ReadThrough;
use crate::http::{self, HttpContext, HttpLimits, OperatorRule};
use crate::limits;
use crate::oap::{self, OapContext, OapLimits};
use crate::server::clock::Alarm;
use crate::server::error::StartError;
use crate::service::{CopyPolicy, Service};

/// What bounds a shard's connections: its own count, and each client's across the node.
pub(super) struct ConnectionLimits {
    pub connections_max: u32,
    /// `connections_per_client_max`'s table, shared by every shard (`None`: off).
    pub per_client: Option<Arc<ClientConnections>>,
}

/// The listeners a shard accepts on.
pub(super) struct Listeners {
    http: TcpListener,
    oap: TcpListener,
    tls: Option<TcpListener>,
}

pub(super) fn listen(config: &Config) -> Result<Listeners, StartError> {
    let bind = |addr: SocketAddr| {
        ron_io::listener::reuseport_listener(addr, limits::LISTEN_BACKLOG)
            .map_err(|source| StartError::Listen { addr, source })
    };
    Ok(Listeners {
        http: bind(config.http)?,
        oap: bind(config.oap)?,
        tls: config.tls.map(bind).transpose()?,
    })
}

/// The shard's two front ends over one object service.
pub(crate) struct FrontEnds {
    pub(crate) http: Rc<HttpContext>,
    pub(crate) oap: Rc<OapContext>,
}

impl FrontEnds {
    pub(crate) fn new(
        config: &Config,
        shard: Rc<Shard>,
        admission: &Rc<Admission>,
        draining: &Rc<Drain>,
        tls: bool,
        read_through: Option<Rc<ReadThrough>>,
        blocked: Rc<Blocked>,
    ) -> Result<FrontEnds, ConfigError> {
        let trusted_proxies = Rc::new(config.trusted_proxies()?);
        let shard_count = shard.routing().shard_count();
        let copies = CopyPolicy {
            dht: read_through.as_ref().and_then(|r| r.dht().cloned()),
            replicas: config.replicas_target(),
        };
        let service = Rc::new(Service::new(
            shard,
            config.object_bytes_max,
            read_through,
            copies,
            blocked,
            config.uploads_open_max,
        ));
        let http_limits = HttpLimits {
            head_bytes_max: config.head_bytes_max,
            header_timeout: Duration::from_millis(config.header_timeout_ms),
            idle_timeout: Duration::from_millis(config.idle_timeout_ms),
            body_timeout: Duration::from_millis(config.body_timeout_ms),
            body_rate_min_bytes_per_s: config.body_rate_min_bytes_per_s,
        };
        let mut transports = vec!["tcp".to_string()];
        if tls {
            transports.push("tls".into());
        }
        let oap_limits = OapLimits {
            max_frame: config.oap_max_frame,
            request_frame_bytes_max: limits::oap_request_frame_bytes_max(
                config.head_bytes_max,
                config.oap_max_frame,
            ),
            requests_per_connection_max: config.oap_max_inflight,
            inflate_ratio_max: config.inflate_ratio_max,
            idle_timeout: Duration::from_millis(config.idle_timeout_ms),
            header_timeout: Duration::from_millis(config.header_timeout_ms),
            body_timeout: Duration::from_millis(config.body_timeout_ms),
            body_rate_min_bytes_per_s: config.body_rate_min_bytes_per_s,
            transports,
        };
        let oap = Rc::new(OapContext {
            service: Rc::clone(&service),
            admission: Rc::clone(admission),
            limits: oap_limits,
            draining: Rc::clone(draining),
            shard_count,
            inflater: std::cell::RefCell::new(None),
            read_buffers: BufferPool::new(
                limits::OAP_READ_BUFFER_BYTES,
                limits::READ_BUFFERS_POOLED_MAX,
            ),
        });
        let http = Rc::new(HttpContext::new(
            service,
            Rc::clone(admission),
            http_limits,
            Rc::clone(draining),
            OperatorRule {
                admin_token: config.admin_token.as_deref(),
                admin_listener: config.admin,
            },
            trusted_proxies,
        ));
        Ok(FrontEnds { http, oap })
    }

    /// Starts the accept loops; dropping the returned tasks stops them.
    pub(super) fn accept(
        &self,
        listeners: Listeners,
        first_connection: &Rc<Alarm>,
        tls: Option<Arc<rustls::ServerConfig>>,
        metrics: &Arc<FrontCounters>,
        limits: ConnectionLimits,
    ) -> Vec<glommio::Task<()>> {
        let room = Rc::new(AcceptRoom {
            metrics: Arc::clone(metrics),
            connections_max: limits.connections_max,
            waiting: Cell::new(0),
        });
        let accept = |listener, serve: Serve| {
            let (room, alarm) = (Rc::clone(&room), Rc::clone(first_connection));
            glommio::spawn_local(accept_loop(listener, room, alarm, serve))
        };
        let (http, oap) = (Rc::clone(&self.http), Rc::clone(&self.oap));
        let who = self.client_reader(limits.per_client, metrics);
        let (http_who, tls_who) = (who.clone(), who.clone());
        let mut acceptors = vec![
            accept(
                listeners.http,
                Rc::new(move |mut s, counted| {
                    let (http, who) = (Rc::clone(&http), http_who.clone());
                    spawn(async move {
                        if let Ok((client, _counted)) = who.client_of(&mut s, counted).await {
                            let Some(s) = polled(s) else { return };
                            http::serve_connection(http, s, client).await;
                        }
                    })
                }),
            ),
            accept(
                listeners.oap,
                Rc::new(move |mut s, counted| {
                    let (oap, who) = (Rc::clone(&oap), who.clone());
                    spawn(async move {
                        if let Ok((client, _counted)) = who.client_of(&mut s, counted).await {
                            let Some(s) = polled(s) else { return };
                            oap::serve_connection(oap, s, client).await;
                        }
                    })
                }),
            ),
        ];
        if let (Some(listener), Some(tls)) = (listeners.tls, tls) {
            acceptors.push(accept(listener, self.tls_handler(tls, tls_who, metrics)));
        }
        acceptors
    }

    /// Completes the handshake, then hands the stream to the front end ALPN names.
    fn tls_handler(
        &self,
        tls: Arc<rustls::ServerConfig>,
        who: ClientReader,
        metrics: &Arc<FrontCounters>,
    ) -> Serve {
        let acceptor = Rc::new(ron_io::tls::acceptor(tls));
        let handshake_timeout = self.http.limits.header_timeout;
        let (http, oap, metrics) = (
            Rc::clone(&self.http),
            Rc::clone(&self.oap),
            Arc::clone(metrics),
        );
        Rc::new(move |mut s, counted| {
            let (http, oap, acceptor) = (Rc::clone(&http), Rc::clone(&oap), Rc::clone(&acceptor));
            let (metrics, who) = (Arc::clone(&metrics), who.clone());
            spawn(async move {
                // A balancer's PROXY header comes before the TLS handshake.
                let Ok((client, _counted)) = who.client_of(&mut s, counted).await else {
                    return;
                };
                let Some(s) = polled(s) else { return };
                let handshake = {
                    // A handshake holds a connection: counted against connections_max.
                    let _open = metrics.open_connection();
                    ron_io::tls::accept(&acceptor, s, handshake_timeout).await
                };
                let (stream, protocol) = match handshake {
                    Ok(accepted) => accepted,
                    // A probe or a balancer's health check that sent nothing: no TLS
                    // failed (it kept the failures counter climbing on every check).
                    Err(ron_io::tls::AcceptError::Silent(_)) => return,
                    Err(ron_io::tls::AcceptError::Failed(_)) => {
                        FrontCounters::add(&metrics.tls_handshake_failures, 1);
                        return;
                    }
                };
                match protocol {
                    AppProtocol::Oap => oap::serve_connection(oap, stream, client).await,
                    AppProtocol::Http => http::serve_connection(http, stream, client).await,
                    AppProtocol::Http2 => http::http2::serve_connection(http, stream, client).await,
                }
            })
        })
    }
}

/// Reads who a new connection is for, before its protocol starts, and holds its client
/// to `connections_per_client_max`.
#[derive(Clone)]
struct ClientReader {
    trusted: Rc<TrustedProxies>,
    deadline: Duration,
    per_client: Option<Arc<ClientConnections>>,
    metrics: Arc<FrontCounters>,
}

impl ClientReader {
    /// The client a connection speaks for. While a trusted peer's PROXY header is read
    /// (up to the header deadline) the connection counts against `connections_max`, as
    /// a TLS handshake does: uncounted, partial headers were accepted without limit.
    /// `counted` (the accept's count) ends here; what runs next counts the connection
    /// again before its first wait. With a per-client limit, the connection is counted
    /// for its client as long as the returned count lives; past the limit, `Err`: the
    /// connection is closed unanswered.
    async fn client_of(
        &self,
        stream: &mut TcpStream,
        counted: AcceptedConnection,
    ) -> Result<(Option<IpAddr>, Option<ClientConnection>), ()> {
        let client = client_addr::client_of(stream, &self.trusted, self.deadline).await;
        drop(counted);
        let client = client?;
        let (Some(table), Some(ip)) = (&self.per_client, client) else {
            return Ok((client, None));
        };
        // Asked only of a trusted client: no second getpeername per connection.
        let is_peer = || {
            stream
                .peer_addr()
                .is_ok_and(|a| client_addr::canonical(a.ip()) == ip)
        };
        if self.trusted.trusts(ip) && is_peer() {
            // A trusted proxy's own connection, without a PROXY header: it speaks for
            // many clients. (A client a header names is limited, whatever its address.)
            return Ok((client, None));
        }
        match table.enter(ip) {
            Some(counted) => Ok((client, Some(counted))),
            None => {
                FrontCounters::add(&self.metrics.connections_refused_per_client, 1);
                Err(())
            }
        }
    }
}

impl FrontEnds {
    fn client_reader(
        &self,
        per_client: Option<Arc<ClientConnections>>,
        metrics: &Arc<FrontCounters>,
    ) -> ClientReader {
        ClientReader {
            trusted: Rc::clone(&self.http.trusted_proxies),
            deadline: self.http.limits.header_timeout,
            per_client,
            metrics: Arc::clone(metrics),
        }
    }
}

/// The connection with its waits on the shard's epoll set (`ron_io::readiness`); `None`
/// (the connection closed unanswered) when the socket cannot be registered — the
/// kernel is out of memory for epoll entries, or the socket already failed.
fn polled(stream: TcpStream) -> Option<PolledTcp> {
    match PolledTcp::new(stream) {
        Ok(polled) => Some(polled),
        Err(e) => {
            tracing::warn!(reason = %e, "a connection could not be registered for readiness; closed");
            None
        }
    }
}

fn spawn(connection: impl std::future::Future<Output = ()> + 'static) {
    glommio::spawn_local(connection).detach();
}

/// What an accept loop hands a new connection to: the stream, counted from its accept.
type Serve = Rc<dyn Fn(TcpStream, AcceptedConnection)>;

/// The room the shard's accept loops share under `connections_max`: a loop waits in
/// accept only while the open connections and the loops already waiting there are
/// under it (each loop waiting in accept takes one connection when it wakes: with three
/// listeners, three past the limit).
struct AcceptRoom {
    metrics: Arc<FrontCounters>,
    connections_max: u32,
    waiting: Cell<u32>,
}

impl AcceptRoom {
    /// Takes a place to wait in accept, if there is room for one more connection.
    fn take(&self) -> bool {
        let open = self.metrics.connections_open.load(Ordering::Relaxed);
        let room = open + u64::from(self.waiting.get()) < u64::from(self.connections_max);
        if room {
            self.waiting.set(self.waiting.get() + 1);
        }
        room
    }

    /// Gives the place back once accept returned; the connection (if one came) is
    /// counted from now.
    fn accepted(&self) -> AcceptedConnection {
        self.waiting.set(self.waiting.get() - 1);
        self.metrics.accepted_connection()
    }
}

/// Accepts connections while the shard has room for them and hands each to `serve`.
async fn accept_loop(
    listener: TcpListener,
    room: Rc<AcceptRoom>,
    first_connection: Rc<Alarm>,
    serve: Serve,
) {
    let mut failures = AcceptFailures::default();
    let metrics = Arc::clone(&room.metrics);
    loop {
        if !room.take() {
            glommio::timer::sleep(limits::ACCEPT_FULL_BACKOFF).await;
            continue;
        }
        let accepted = listener.accept().await;
        let first = metrics.connections_open.load(Ordering::Relaxed) == 0;
        let counted = room.accepted();
        match accepted {
            Ok(stream) => {
                if first {
                    first_connection.ring();
                }
                serve(stream, counted)
            }
            Err(e) => {
                drop(counted);
                FrontCounters::add(&metrics.accept_failures, 1);
                failures.failed(&e);
                glommio::timer::sleep(limits::ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
}

/// Accept failures (e.g. out of file descriptors: the connection waits in the backlog)
/// logged without a storm: the first, then at most one line with the count per
/// [`limits::ACCEPT_ERROR_LOG_PERIOD`]. Every failure is counted in `accept_failures`.
#[derive(Default)]
struct AcceptFailures {
    /// Failures since the last line logged, and when that was.
    unlogged: u64,
    logged_at: Option<Instant>,
}

impl AcceptFailures {
    fn failed(&mut self, e: &glommio::GlommioError<()>) {
        let now = Instant::now();
        let due = self
            .logged_at
            .is_none_or(|at| now.duration_since(at) >= limits::ACCEPT_ERROR_LOG_PERIOD);
        if !due {
            self.unlogged += 1;
            return;
        }
        let failures = self.unlogged + 1;
        tracing::warn!(reason = %e, failures, "accept failing; new connections wait in the backlog");
        self.unlogged = 0;
        self.logged_at = Some(now);
    }
}
