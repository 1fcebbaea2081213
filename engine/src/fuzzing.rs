//! A one-shard node without sockets, for fuzzing the front ends (`fuzz/` target
//! `front_end`): the real object service on a scratch data dir, the real HTTP/1.1,
//! HTTP/2 and OAP/1 front ends, fed a client's bytes through
//! `ron_io::memory::MemoryStream`. Not part of
//! the node: compiled only with the `fuzzing` feature (`fuzz/` turns it on) and in the
//! engine's unit tests; hidden from the docs.

use std::collections::hash_map::RandomState;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use ron_io::memory::MemoryStream;
use ron_link::counters::{FrontCounters, ShardCounters};
use ron_shards::layout::{self, Routing};
use ron_shards::{Shard, ShardConfig, ShardIndex};

use crate::admission::buckets::ShardQuotas;
use crate::admission::Admission;
use crate::config::Config;
use crate::server::FrontEnds;
use crate::{http, limits, oap};

/// Which front end a connection is served by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontEnd {
    Http,
    /// HTTP/2 as a client that knows the server speaks it (what ALPN `h2` leads to).
    Http2,
    Oap,
}

/// How long an HTTP/2 client stays connected after its last byte: h2 ends every stream
/// when the client's side ends, so its answers must come before.
pub const H2_CLIENT_LINGER: Duration = Duration::from_millis(50);

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// The connection task returned within the bound.
    pub finished: bool,
    /// Afterwards, within the bound, no request was still admitted and no connection
    /// open (nothing leaked a ticket or a connection guard).
    pub settled: bool,
}

/// The executor and the shard, made once per process and reused by every connection.
pub struct Harness {
    executor: LocalExecutor,
    fronts: FrontEnds,
    admission: Rc<Admission>,
    metrics: Arc<FrontCounters>,
    data_dir: PathBuf,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// A node with the default configuration (open writes, no tokens) but small caches
    /// and a 1 MiB object limit, on a fresh data dir at `data_dir` (emptied first).
    /// On tmpfs, commits cost no real fsync.
    pub fn new(data_dir: &Path) -> Harness {
        let _ = std::fs::remove_dir_all(data_dir);
        std::fs::create_dir_all(data_dir).expect("create the data dir");
        let config = Config {
            data_dirs: vec![data_dir.to_path_buf()],
            shards: 1,
            cache_bytes: 8 << 20,
            meta_cache_bytes: 4 << 20,
            index_bytes_max: 1 << 30,
            object_bytes_max: 1 << 20,
            ..Config::default()
        };
        let executor = LocalExecutorBuilder::new(Placement::Unbound)
            .name("ron-fuzz")
            .make()
            .expect("a glommio executor (io_uring, locked memory)");
        let counters = ShardCounters::default();
        let metrics = Arc::clone(&counters.front);
        let (fronts, admission) = executor.run(async {
            let table = layout::open_data_dirs(&config.data_dirs(), 1, 0)
                .expect("open the data dir")
                .table;
            layout::clean_tmp(data_dir).expect("make the temp dir");
            let shard_config = ShardConfig {
                data_dirs: config.data_dirs(),
                cache_bytes_max: config.cache_bytes as usize,
                meta_bytes_max: config.meta_cache_bytes as usize,
                open_files_max: config.open_files_max,
                index_bytes_max: config.index_bytes_max as usize,
                commit_batch_max: limits::COMMIT_BATCH_RECORDS_MAX,
                ec: config.ec_params(),
                scrub_bytes_per_s: 0,
                dht: None,
                evictable_bytes_max: None,
                announce_filter: Default::default(),
            };
            let shard = Shard::start(
                ShardIndex(0),
                Routing::new(table, 1),
                shard_config,
                None,
                Arc::clone(&counters.storage),
            )
            .await
            .expect("start the shard");
            let quotas = ShardQuotas::new(
                config
                    .policy()
                    .expect("the default configuration has no denylist to read"),
                1,
                RandomState::new(),
                config.quota_tenants_max,
            );
            let admission = Rc::new(Admission::new(
                ShardIndex(0),
                counters,
                config.inflight_max,
                quotas,
            ));
            let draining = Rc::new(crate::drain::Drain::default());
            let fronts = FrontEnds::new(
                &config,
                shard,
                &admission,
                &draining,
                false,
                None,
                Rc::default(),
            )
            .expect("the default configuration's front ends");
            (fronts, admission)
        });
        Harness {
            executor,
            fronts,
            admission,
            metrics,
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// Serves one connection on `stream` to its end, waiting at most `bound` for it to
    /// finish and as long again for its requests to settle.
    pub fn serve(&self, front: FrontEnd, stream: MemoryStream, bound: Duration) -> Served {
        let (http, oap) = (Rc::clone(&self.fronts.http), Rc::clone(&self.fronts.oap));
        let (admission, metrics) = (Rc::clone(&self.admission), Arc::clone(&self.metrics));
        self.executor.run(async move {
            let connection = async move {
                match front {
                    FrontEnd::Http => http::serve_connection(http, stream, None).await,
                    FrontEnd::Http2 => http::http2::serve_connection(http, stream, None).await,
                    FrontEnd::Oap => oap::serve_connection(oap, stream, None).await,
                }
                true
            };
            let finished = within(bound, connection).await;
            let settled = within(bound, async {
                while admission.admitted() > 0
                    || metrics.connections_open.load(Ordering::Relaxed) > 0
                {
                    glommio::timer::sleep(Duration::from_micros(100)).await;
                }
                true
            })
            .await;
            Served { finished, settled }
        })
    }

    /// Serves `input` as one connection that must finish and settle within 10 s; what
    /// the connection wrote. For tests.
    #[cfg(test)]
    pub fn serve_to_end(&self, front: FrontEnd, input: Vec<u8>) -> ron_io::memory::Written {
        let stream = MemoryStream::new(input, 7, 1 << 21).with_linger(H2_CLIENT_LINGER);
        let written = stream.written();
        let served = self.serve(front, stream, Duration::from_secs(10));
        let all_done = Served {
            finished: true,
            settled: true,
        };
        assert_eq!(served, all_done);
        written
    }

    /// The scratch data dir (objects stored by earlier connections stay there).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// Runs `work` for at most `bound`: whether it finished (it is dropped otherwise).
async fn within(bound: Duration, work: impl std::future::Future<Output = bool>) -> bool {
    futures_lite::future::or(work, async {
        glommio::timer::sleep(bound).await;
        false
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_http_and_oap_over_memory_streams() {
        let dir = std::env::temp_dir().join(format!("ron-fuzzing-test-{}", std::process::id()));
        let harness = Harness::new(&dir);
        let serve = |front, input: &[u8]| harness.serve_to_end(front, input.to_vec()).bytes();
        let put = b"PUT /o HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello";
        assert!(serve(FrontEnd::Http, put).starts_with(b"HTTP/1.1 201 "));
        let addr = ron_codec::Address::of(b"hello");
        let get = format!(
            "GET /o/{} HTTP/1.1\r\nHost: t\r\nRange: bytes=1-3\r\n\r\n",
            std::str::from_utf8(&addr.text()).unwrap()
        );
        let out = serve(FrontEnd::Http, get.as_bytes());
        assert!(out.starts_with(b"HTTP/1.1 206 ") && out.ends_with(b"ell"));
        // HTTP/2: the preface, empty SETTINGS, and a GET of the object on stream 1 (HPACK:
        // static :method GET and :scheme https, literal :path and :authority).
        let path = format!("/o/{}", std::str::from_utf8(&addr.text()).unwrap());
        let mut block = vec![0x82, 0x87, 0x04, path.len() as u8];
        block.extend_from_slice(path.as_bytes());
        block.extend_from_slice(&[0x01, 1, b't']);
        let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        h2.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        h2.extend_from_slice(&[0, 0, block.len() as u8, 1, 0x5, 0, 0, 0, 1]);
        h2.extend_from_slice(&block);
        let out = serve(FrontEnd::Http2, &h2);
        assert_eq!(out.get(3), Some(&4), "the server's SETTINGS first: {out:?}");
        assert!(
            out.windows(5).any(|w| w == b"hello"),
            "the object's bytes in a DATA frame: {out:?}"
        );
        let hello = ron_codec::messages::HelloRequest::default().frame(1);
        let out = serve(FrontEnd::Oap, &hello.to_bytes());
        let mut decoder = ron_codec::FrameDecoder::new(ron_codec::frame::MAX_FRAME_BYTES);
        let reply = decoder.decode(&mut &out[..]).unwrap().unwrap();
        assert_eq!((reply.header.corr_id, reply.header.code), (1, 200));
        drop(harness);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
