//! One shard's counters, in two groups by who writes them: [`StorageCounters`] (written
//! by the shard's storage, ron-shards) and [`FrontCounters`] (written by the front ends,
//! admission and read-through, ron-engine). Each counter is declared once, below, with
//! its Prometheus family if it has one; the atomic structs, their snapshots
//! ([`StorageSnapshot`], [`FrontSnapshot`]) and the families ([`STORAGE`], [`FRONT`]) are
//! made from that (`crate::families`). Relaxed atomics: each shard writes only its own,
//! so no cross-core lock and no contended line while serving; the control thread reads
//! and sums them at scrape time. [`ShardCounters`] is one shard's set, with its
//! [`RequestCounters`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::families::declare_counters;
use crate::labels::label_enum;
use crate::requests::RequestCounters;

declare_counters! {
    /// What the shard's storage counts: the verified-group and metadata caches, the
    /// stores, erasure coding and repair, the scrubber, eviction, the mesh. Written only
    /// by ron-shards.
    pub struct StorageCounters;
    /// Plain values read from one shard's [`StorageCounters`].
    pub struct StorageSnapshot;
    /// The family of each exported counter of [`StorageCounters`], by field.
    pub struct StorageFamilies = STORAGE;
    {
        verify_failures: AtomicU64 => Counter "ron_verify_failures_total", Sum,
            "64 KiB groups that failed verification (never sent).",
        cache_hits: AtomicU64 => Counter "ron_cache_hits_total", Sum,
            "Verified-group cache hits.",
        cache_misses: AtomicU64 => Counter "ron_cache_misses_total", Sum,
            "Verified-group cache misses.",
        /// Bytes of groups a miss read beyond those asked for, to bring the rest of
        /// their aligned window into the cache (`CACHE_WINDOW_GROUPS`).
        cache_window_bytes: AtomicU64 => Counter "ron_cache_window_bytes_total", Sum,
            "Bytes of groups read beyond those a cache miss asked for, to cache the rest of their 512 KiB window end to end while the cache has room.",
        /// Index records read and checked against their address (metadata cache misses).
        meta_loads: AtomicU64 => Counter "ron_meta_loads_total", Sum,
            "Object index records read and checked against their address (metadata cache misses).",
        /// Requests that waited for a load of the same record already running.
        meta_load_waits: AtomicU64 => Counter "ron_meta_load_waits_total", Sum,
            "Requests that waited for a load of the same object's metadata already running instead of loading it again.",
        mesh_requests: AtomicU64 => Counter "ron_mesh_requests_total", Sum,
            "Calls to an owner shard over the shard mesh: metadata, each run of up to 32 groups, commits, removals.",
        objects_created: AtomicU64 => Counter "ron_objects_created_total", Sum,
            "Objects made durable and visible.",
        /// Objects in the stores this shard owns (the stores' stats at start-up, then
        /// counted at each commit and eviction).
        objects_stored: AtomicU64 => Gauge "ron_objects_stored", Sum,
            "Objects in the node's stores.",
        /// Bytes of those objects.
        bytes_stored: AtomicU64 => Gauge "ron_bytes_stored", Sum,
            "Bytes of objects in the node's stores.",
        /// Bytes held by the verified-group cache.
        cache_bytes: AtomicU64 => Gauge "ron_cache_bytes", Sum,
            "Bytes held by the verified-group caches.",
        /// The verified-group cache's budget (shown in `/admin/stats`).
        cache_bytes_max: AtomicU64,
        /// Groups held by the verified-group cache.
        cache_entries: AtomicU64 => Gauge "ron_cache_entries", Sum,
            "Groups held by the verified-group caches.",
        /// Bytes of the shard's read-ahead budget streams hold.
        read_ahead_bytes: AtomicU64 => Gauge "ron_read_ahead_bytes", Sum,
            "Bytes of read-ahead batches streams hold (each shard's budget is 256 MiB): batches read or being read ahead of what their stream has sent.",
        /// Read-ahead batches a stream asked for and found the budget held.
        read_ahead_refused: AtomicU64 => Counter "ron_read_ahead_refused_total", Sum,
            "Times a stream found its shard's read-ahead budget held and read on one group at a time (slow or stalled clients holding the budget show here).",
        /// Groups served rebuilt from their stripe (their block missing, unreadable or bad).
        ec_degraded_reads: AtomicU64 => Counter "ron_ec_degraded_reads_total", Sum,
            "64 KiB groups served rebuilt from their stripe's other blocks (their own block missing, unreadable or failing its check).",
        /// Reads of a stripe with more bad blocks than its parity covers (clean failures).
        ec_unrecoverable: AtomicU64 => Counter "ron_ec_unrecoverable_total", Sum,
            "Reads that met a stripe with more bad blocks than its parity covers (answered with a clean failure).",
        /// Bad blocks of the stripes queued for repair (or being repaired).
        ec_missing_blocks: AtomicU64 => Gauge "ron_ec_missing_shards", Sum,
            "Blocks (data or parity) found missing or bad, in stripes queued for repair or being repaired.",
        /// Repairs that could not rebuild or write back their stripe.
        ec_repair_failures: AtomicU64 => Counter "ron_ec_repair_failures_total", Sum,
            "Repairs that could not rebuild a queued stripe or write it back (the next read or scrub finds it again).",
        /// Bytes of rebuilt blocks written back by repair.
        ec_repair_bytes: AtomicU64 => Counter "ron_ec_repair_bytes_total", Sum,
            "Bytes of rebuilt blocks written back to disk by repair.",
        /// Stripes not queued for repair because the queue was full.
        ec_repairs_dropped: AtomicU64 => Counter "ron_ec_repairs_dropped_total", Sum,
            "Stripes found damaged but not queued for repair because the repair queue was full.",
        /// Bytes the scrubber read and checked (data, parity, packed needles).
        scrub_bytes: AtomicU64 => Counter "ron_scrub_bytes_total", Sum,
            "Bytes the scrubber read and checked (data and parity blocks, packed objects).",
        scrub_objects: AtomicU64 => Counter "ron_scrub_objects_total", Sum,
            "Objects the scrubber checked whole.",
        scrub_bad_blocks: AtomicU64 => Counter "ron_scrub_bad_blocks_total", Sum,
            "Bad blocks (missing, unreadable or failing their check) the scrubber found; each is rebuilt when its stripe allows.",
        /// Bad blocks the scrubber found but could not rebuild: the object has no parity
        /// (packed, version 1, `--ec off`) or its stripe has more bad blocks than parity.
        scrub_unrepairable: AtomicU64 => Counter "ron_scrub_unrepairable_blocks_total", Sum,
            "Bad blocks the scrubber found and could not rebuild (an object without parity, or a stripe with more bad blocks than parity).",
        scrub_passes: AtomicU64 => Counter "ron_scrub_passes_total", PerShard,
            "Full scrub passes over every store of the shard.",
        /// How far the pass under way is, millionths.
        scrub_progress_ppm: AtomicU64 => Gauge "ron_scrub_progress_ratio", PerShardMillionths,
            "How far the shard's scrub pass under way is, 0 to 1.",
        scrub_paused: AtomicU64 => Gauge "ron_scrub_paused", PerShard,
            "1 while an operator has the shard's scrubber paused.",
        /// The scrubber's configured pace (`scrub_bytes_per_s`); 0: no scrubber.
        scrub_rate: AtomicU64 => Gauge "ron_scrub_rate_bytes_per_second", PerShard,
            "The shard scrubber's configured pace, bytes per second (0: no scrubber runs).",
        /// Fetched copies held (evictable).
        evictable_objects: AtomicU64 => Gauge "ron_fetched_objects", Sum,
            "Fetched copies held as a cache (evictable).",
        evictable_bytes: AtomicU64 => Gauge "ron_fetched_bytes", Sum,
            "Bytes of fetched copies held as a cache (evictable).",
        /// This shard's budget for fetched copies.
        fetched_bytes_max: AtomicU64 => Gauge "ron_fetched_bytes_max", Sum,
            "Budget of fetched copies (fetched_bytes_max); past it the oldest are evicted.",
        evictions: AtomicU64 => Counter "ron_evictions_total", Sum,
            "Fetched copies evicted to keep within fetched_bytes_max.",
        evicted_bytes: AtomicU64 => Counter "ron_evicted_bytes_total", Sum,
            "Bytes of fetched copies evicted.",
        /// Copies found damaged beyond their parity when a holder asked this node to
        /// hold them, removed to be fetched again verified.
        damaged_copies_discarded: AtomicU64 => Counter "ron_replication_damaged_copies_total", Sum,
            "Copies found damaged beyond their parity when the placement asked for them, removed and fetched again.",
    }
}

declare_counters! {
    /// What the shard's front counts: connections and their bytes, the in-flight gate,
    /// transfer deadlines, accept and TLS failures, the reactor's heartbeat, read-through
    /// fetches, readiness. Written only by ron-engine.
    pub struct FrontCounters;
    /// Plain values read from one shard's [`FrontCounters`].
    pub struct FrontSnapshot;
    /// The family of each exported counter of [`FrontCounters`], by field.
    pub struct FrontFamilies = FRONT;
    {
        bytes_in: AtomicU64 => Counter "ron_bytes_received_total", Sum,
            "Bytes read from clients (heads, frames and bodies).",
        bytes_out: AtomicU64 => Counter "ron_bytes_sent_total", Sum,
            "Bytes written to clients.",
        /// Open connections and TLS handshakes ([`FrontCounters::open_connection`]).
        connections_open: AtomicU64 => Gauge "ron_connections_open", Sum,
            "Open client connections.",
        connections_total: AtomicU64 => Counter "ron_connections_total", Sum,
            "Connections accepted.",
        /// The in-flight gate's count.
        inflight: AtomicU64 => Gauge "ron_inflight_requests", Sum,
            "Requests being worked on now (the in-flight gate's count).",
        /// The in-flight gate's limit; the shard is saturated while `inflight` reaches it.
        inflight_max: AtomicU64,
        /// Admitted requests waiting on their peer (a full socket, an upload's next bytes)
        /// with their in-flight slot given back.
        parked: AtomicU64 => Gauge "ron_parked_requests", Sum,
            "Admitted requests waiting on a slow peer, their in-flight slot given back.",
        /// Connections ended, and OAP/1 uploads cut, because a body fell behind its
        /// transfer deadline (not a head's or a frame header's deadline).
        transfer_deadline_drops: AtomicU64 => Counter "ron_transfer_deadline_drops_total", Sum,
            "Connections ended, and OAP/1 uploads cut, because a body fell behind its transfer deadline (body_timeout_ms + bytes / body_rate_min).",
        overload_rejections: AtomicU64 => Counter "ron_overload_rejections_total", Sum,
            "Requests answered 503 overloaded by the in-flight gate.",
        /// Accepts that failed (e.g. out of file descriptors).
        accept_failures: AtomicU64 => Counter "ron_accept_failures_total", Sum,
            "Accepts that failed (e.g. out of file descriptors); the connection waits in the kernel backlog.",
        tls_handshake_failures: AtomicU64 => Counter "ron_tls_handshake_failures_total", Sum,
            "TLS handshakes that failed or timed out after the client sent a byte (a connection closed before any is a probe, not counted).",
        /// Connections closed at once: their client had `connections_per_client_max` open.
        connections_refused_per_client: AtomicU64 => Counter "ron_connections_refused_total", Sum,
            "Connections closed unanswered because their client had connections_per_client_max open across the node.",
        /// Times the shard's heartbeat woke late by more than the stall threshold.
        reactor_stalls: AtomicU64 => Counter "ron_reactor_stalls_total", PerShard,
            "Times the shard's 10 ms heartbeat woke more than 20 ms late (a task held the reactor).",
        /// The total lateness of those wakes, microseconds (shown in seconds).
        reactor_stall_us: AtomicU64 => Counter "ron_reactor_stall_seconds_total", PerShardMillionths,
            "Total lateness of those stalled heartbeats, seconds.",
        /// Read-through: upstream fetches started.
        fetches: AtomicU64 => Counter "ron_fetches_total", Sum,
            "Read-through fetches started (one per object missed, however many requests wait on it).",
        /// Read-through fetches finished with the object verified and stored.
        fetches_stored: AtomicU64 => Counter "ron_fetches_stored_total", Sum,
            "Read-through fetches that ended with the object verified and stored.",
        /// Verified bytes received from providers and origins.
        fetch_bytes: AtomicU64 => Counter "ron_fetch_bytes_total", Sum,
            "Verified bytes read through from providers and origins.",
        /// Origin fetches verified group by group against the origin's outboard.
        fetch_origin_streamed: AtomicU64 => Counter "ron_fetch_origin_streamed_total", Sum,
            "Origin fetches verified group by group against the origin's bao outboard and streamed to waiters as they arrived.",
        /// Outboards an origin served that did not check out against the address.
        fetch_outboards_refused: AtomicU64 => Counter "ron_fetch_origin_outboards_refused_total", Sum,
            "Outboards an origin served that did not check out against the address (that body was verified whole).",
        /// Outboards an origin offered that were not read: the node's origin fetches held
        /// their share of outboard bytes already.
        fetch_outboards_unbuffered: AtomicU64 => Counter "ron_fetch_origin_outboards_unbuffered_total", Sum,
            "Outboards an origin offered that were not read because the node's fetches held 256 MiB of outboards already (that body was verified whole).",
        /// Upstream attempts that failed, by [`FetchFailure`] ([`FrontCounters::fetch_failed`]).
        fetch_failures: [AtomicU64; FetchFailure::ALL.len()] => Counter "ron_fetch_failures_total", Labelled("reason", &FetchFailure::LABELS),
            "Read-through upstream attempts that failed, by reason (a fetch may go on from the next provider).",
        /// Read-through requests answered from a remembered "no such object".
        fetch_misses_remembered: AtomicU64 => Counter "ron_fetch_misses_remembered_total", Sum,
            "Read-through requests answered from an origin's answer remembered for fetch_miss_ms (its 404, or bytes that did not hash to the address), without asking it again.",
        /// Second providers asked because the first was slow to its first group.
        fetch_hedges: AtomicU64 => Counter "ron_fetch_hedges_total", Sum,
            "Second providers asked because the first was slow to its first verified group.",
        /// Bundle entries answered (200, 206, 304), by the content coding sent
        /// ([`FrontCounters::bundle_entry_served`]).
        bundle_entries_served: [AtomicU64; BUNDLE_CODINGS.len()] => Counter "ron_bundle_entries_served_total", Labelled("encoding", &BUNDLE_CODINGS),
            "Bundle entries answered (200, 206 or 304), by the content coding of the representation sent (identity or a precompressed variant).",
        /// Object and bundle-entry answers that were a range (206).
        range_answers: AtomicU64 => Counter "ron_http_range_answers_total", Sum,
            "GET answers of objects and bundle entries that sent a byte range (206).",
        /// Object and bundle-entry answers that were 304 (a conditional hit).
        not_modified_answers: AtomicU64 => Counter "ron_http_not_modified_total", Sum,
            "GET and HEAD answers of objects and bundle entries that were 304 Not Modified (the client's copy is current).",
        /// Requests that joined a fetch already under way instead of starting one.
        fetch_coalesced_waiters: AtomicU64 => Counter "ron_fetch_coalesced_waiters_total", Sum,
            "Requests that joined a read-through already under way instead of starting their own.",
        /// Copies the placement asked this node to hold, fetched and now held kept and
        /// durable (one held already made none).
        replica_pulls_held: AtomicU64 => Counter "ron_replication_pulls_total", Sum,
            "Copies other nodes asked this node to hold for the placement, fetched and held kept and durable (a copy held already is not counted).",
        /// Copies the placement asked of this node refused: a data dir below the floor.
        replica_pulls_no_room: AtomicU64 => Counter "ron_replication_pulls_no_room_total", Sum,
            "Copies other nodes asked this node to hold, refused because a data dir's filesystem was below copies_disk_free_percent_min.",
        /// Whole checks of copies held that another node asked this node to hold.
        replica_held_checks: AtomicU64 => Counter "ron_replication_held_checks_total", Sum,
            "Copies this node holds that another node asked it to hold, read back and checked whole (one at a time per shard, at the pace of placement copies; one found whole within 10 min is not checked again).",
        /// Verified bytes fetched to make placement copies.
        replication_bytes: AtomicU64 => Counter "ron_replication_bytes_total", Sum,
            "Verified bytes fetched from other nodes to make the copies the placement asks this node to hold.",
        /// Kept objects the repair sweep checked (placement looked up, holders audited).
        replication_checks: AtomicU64 => Counter "ron_replication_checks_total", Sum,
            "Kept objects the repair sweep checked: placement looked up, holders audited, missing copies asked for.",
        /// Objects the last sweep pass found with fewer verified copies than replicas.
        under_replicated: AtomicU64 => Gauge "ron_objects_under_replicated", Sum,
            "Objects the last repair sweep pass found with fewer verified copies than replicas (copies were asked for).",
        /// Objects the last sweep pass could not check: placement or metadata not had.
        replication_unchecked: AtomicU64 => Gauge "ron_objects_unchecked", Sum,
            "Objects the last repair sweep pass could not check: their placement could not be had (the DHT busy, slow or unreachable) or their metadata not read; they are tried again next pass.",
        /// Kept copies made evictable: the placement no longer names this node, and every
        /// holder it names proved its copy.
        replication_demoted: AtomicU64 => Counter "ron_replication_demoted_total", Sum,
            "Kept copies made evictable by the repair sweep: the placement no longer names this node and every holder it names proved its copy.",
        /// Evictable copies the sweep made kept: no holder the placement names proved a
        /// copy, so this one may have been the last.
        replication_rescues: AtomicU64 => Counter "ron_replication_rescues_total", Sum,
            "Evictable copies (read-through or displaced) the repair sweep made kept because no holder the placement names proved a copy; the holders were asked to take one from it.",
        /// Repair sweep passes finished.
        replication_sweeps: AtomicU64 => Counter "ron_replication_sweeps_total", PerShard,
            "Passes of the repair sweep over the kept objects this shard owns.",
        /// When the last pass finished, Unix seconds (0: none yet).
        replication_sweep_at: AtomicU64 => Gauge "ron_replication_last_sweep_timestamp_seconds", PerShard,
            "When this shard's last repair sweep pass finished, Unix time (0: none yet).",
        /// Set once the shard's listeners accept.
        ready: AtomicBool => Gauge "ron_shard_ready", PerShard,
            "1 when the shard accepts connections.",
    }
}

impl FrontCounters {
    /// Counts one open connection (a TLS handshake, a served connection) in
    /// `connections_open` for as long as the guard lives.
    pub fn open_connection(&self) -> OpenConnection<'_> {
        self.connections_open.fetch_add(1, Relaxed);
        OpenConnection(self)
    }

    /// Counts one connection just accepted in `connections_open`, until the guard is
    /// dropped: owned, so it travels with the connection into its task (a connection
    /// counted only once its task first ran let an accept loop take the backlog whole).
    pub fn accepted_connection(self: &Arc<Self>) -> AcceptedConnection {
        self.connections_open.fetch_add(1, Relaxed);
        AcceptedConnection(Arc::clone(self))
    }

    /// Counts one bundle entry answered in `coding` (an index of [`BUNDLE_CODINGS`]).
    pub fn bundle_entry_served(&self, coding: usize) {
        self.bundle_entries_served[coding].fetch_add(1, Relaxed);
    }

    /// Counts one failed upstream attempt of a read-through.
    pub fn fetch_failed(&self, reason: FetchFailure) {
        self.fetch_failures[reason as usize].fetch_add(1, Relaxed);
    }
}

impl FrontSnapshot {
    /// Whether the in-flight gate is full (the shard refuses new requests).
    pub fn saturated(&self) -> bool {
        self.inflight_max > 0 && self.inflight >= self.inflight_max
    }
}

/// One connection in `connections_open`; dropping it takes it out.
#[derive(Debug)]
pub struct OpenConnection<'a>(&'a FrontCounters);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Relaxed);
    }
}

/// One connection in `connections_open` from its accept on ([`FrontCounters::accepted_connection`]).
#[derive(Debug)]
pub struct AcceptedConnection(Arc<FrontCounters>);

impl Drop for AcceptedConnection {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Relaxed);
    }
}

label_enum! {
    /// Why an upstream attempt of a read-through failed: the `reason` label of
    /// `ron_fetch_failures_total`, and the index of its counter in
    /// [`FrontCounters::fetch_failures`].
    pub enum FetchFailure {
        NoProvider = "no_provider",
        Connect = "connect",
        Refused = "refused",
        BadGroup = "bad_group",
        Protocol = "protocol",
        Timeout = "timeout",
        TooLarge = "too_large",
        Storage = "storage",
        NotFound = "not_found",
        NoRoom = "no_room",
    }
}

/// The `encoding` labels of `ron_bundle_entries_served_total`: identity, then the
/// content codings a bundle's variants may be stored in (`ron_codec::bundle::Encoding`).
pub const BUNDLE_CODINGS: [&str; 4] = ["identity", "br", "zstd", "gzip"];

/// One shard's counters: shared (`Arc`) by the shard, which writes them, and the
/// control thread, which reads them at scrape time.
#[derive(Debug, Clone, Default)]
pub struct ShardCounters {
    pub storage: Arc<StorageCounters>,
    pub front: Arc<FrontCounters>,
    pub requests: Arc<RequestCounters>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::{Across, Kind};

    #[test]
    fn each_reason_counts_under_its_own_label() {
        let front = FrontCounters::default();
        for (i, reason) in FetchFailure::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, i, "{reason:?} is at its index in ALL");
            for _ in 0..=i {
                front.fetch_failed(reason);
            }
        }
        let family = &FRONT.fetch_failures;
        assert_eq!(
            family.across,
            Across::Labelled("reason", &FetchFailure::LABELS)
        );
        let snapshot = front.snapshot();
        for (i, label) in FetchFailure::LABELS.iter().enumerate() {
            assert_eq!(*label, FetchFailure::ALL[i].as_str());
            assert_eq!(family.value_at(&snapshot, i), i as u64 + 1);
        }
    }

    #[test]
    fn snapshots_copy_every_counter_and_families_read_them() {
        let (storage, front) = (StorageCounters::default(), FrontCounters::default());
        StorageCounters::add(&storage.verify_failures, 3);
        storage.scrub_progress_ppm.store(250_000, Relaxed);
        front.ready.store(true, Relaxed);
        front.inflight_max.store(2, Relaxed);
        front.inflight.store(2, Relaxed);
        {
            let _open = front.open_connection();
            assert_eq!(front.snapshot().connections_open, 1);
        }
        let (s, f) = (storage.snapshot(), front.snapshot());
        assert_eq!((s.verify_failures, s.scrub_progress_ppm), (3, 250_000));
        assert_eq!(STORAGE.verify_failures.value(&s), 3);
        assert_eq!(
            STORAGE.scrub_progress_ppm.across,
            Across::PerShardMillionths
        );
        assert_eq!(FRONT.ready.value(&f), 1);
        assert_eq!(f.connections_open, 0);
        assert!(f.saturated());
    }

    #[test]
    fn every_family_is_named_and_typed_by_the_conventions() {
        let names = STORAGE.all().into_iter().map(|f| (f.name, f.kind, f.help));
        let names = names.chain(FRONT.all().into_iter().map(|f| (f.name, f.kind, f.help)));
        let mut seen = std::collections::HashSet::new();
        for (name, kind, help) in names {
            assert!(name.starts_with("ron_") && !help.is_empty(), "{name}");
            assert_eq!(name.ends_with("_total"), kind == Kind::Counter, "{name}");
            assert!(seen.insert(name), "{name} declared twice");
        }
        assert_eq!(seen.len(), 34 + 38);
    }
}
