//! The on-disk layout of the provider store's two databases (see [`crate::store`]):
//! how a key we provide and a record of others become LMDB keys and values and back,
//! and the invariants a stored record of others keeps ([`record_flaw`]), checked before
//! it is committed and after it is read back.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::kad::{KBucketKey, ProviderRecord, RecordKey};
use libp2p::{Multiaddr, PeerId};

use super::sources::{Source, SOURCE_BYTES};

/// The longest record key stored (ron's keys are 34 B: a BLAKE3 multihash).
pub const RECORD_KEY_BYTES_MAX: usize = 64;
/// Addresses kept per provider record; the rest of a claim is dropped.
pub const PROVIDER_ADDRS_MAX: usize = 4;
/// The longest address kept in a provider record.
pub const PROVIDER_ADDR_BYTES_MAX: usize = 96;
/// No record of others expires later than this after it is committed: the DHT gives
/// them 24 h (`node::PROVIDER_TTL`, also the TTL libp2p-kad sets on the records it
/// receives; peers send no expiry). A later one is a bug of this node, not a claim.
pub const PROVIDER_TTL_MAX: Duration = Duration::from_secs(7 * 24 * 3_600);
pub(super) const DISTANCE_KEY_BYTES: usize = 32;
pub(super) const PUBLISHED_NEVER_MS: u64 = 0;
/// The layout written by this build, kept in the `meta` database: a store written in
/// another is emptied at open (all of it soft state; see [`crate::store`]). 2: a record
/// of others' value holds its [`Source`] and its [`SourceSeq`], and the `by_source` and
/// `sources` databases exist.
pub(super) const LAYOUT_VERSION: u32 = 2;
pub(super) const LAYOUT_KEY: &[u8] = b"layout";
/// The `meta` key of the next [`SourceSeq`] to give (u64, big-endian).
pub(super) const NEXT_SEQ_KEY: &[u8] = b"next_seq";
/// Where a record's value holds its source, its sequence number and its addresses.
const SOURCE_AT: usize = 8;
const SEQ_AT: usize = SOURCE_AT + SOURCE_BYTES;
const ADDRS_AT: usize = SEQ_AT + 8;

/// A record of others' place in its source's `by_source` range: given from one counter
/// as the record is first stored (kept while its provider republishes it from the same
/// source), so a source's records sit in the order they came, oldest first, and a new
/// one is written at the end of its source's range (a few pages a batch, not one per
/// record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct SourceSeq(pub u64);

/// A key this node provides, as the sweep sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvidedKey {
    pub key: RecordKey,
    /// `sha256(key)`: its place in the Kademlia key space.
    pub distance_key: [u8; DISTANCE_KEY_BYTES],
    /// When it was last published (ms since the epoch), `None` if never.
    pub published_ms: Option<u64>,
}

/// Milliseconds since the epoch.
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `sha256(key)`: the key's place in the Kademlia key space.
pub fn distance_key(key: &RecordKey) -> [u8; DISTANCE_KEY_BYTES] {
    let mut out = [0; DISTANCE_KEY_BYTES];
    out.copy_from_slice(KBucketKey::new(key.clone()).hashed_bytes());
    out
}

pub(super) fn provided_db_key(key: &RecordKey) -> Vec<u8> {
    let mut db_key = Vec::with_capacity(DISTANCE_KEY_BYTES + key.as_ref().len());
    db_key.extend_from_slice(&distance_key(key));
    db_key.extend_from_slice(key.as_ref());
    db_key
}

pub(super) fn decode_provided(db_key: &[u8], value: &[u8]) -> Option<ProvidedKey> {
    let (distance, key) = db_key.split_at_checked(DISTANCE_KEY_BYTES)?;
    let published = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    Some(ProvidedKey {
        key: RecordKey::new(&key),
        distance_key: distance.try_into().ok()?,
        published_ms: (published != PUBLISHED_NEVER_MS).then_some(published),
    })
}

pub(super) fn providers_db_prefix(key: &RecordKey) -> Vec<u8> {
    let bytes = key.as_ref();
    let mut prefix = Vec::with_capacity(1 + bytes.len() + 40);
    // Callers keep keys within RECORD_KEY_BYTES_MAX (< 256).
    prefix.push(u8::try_from(bytes.len()).unwrap_or(u8::MAX));
    prefix.extend_from_slice(bytes);
    prefix
}

pub(super) fn providers_db_key(key: &RecordKey, provider: &PeerId) -> Vec<u8> {
    let mut db_key = providers_db_prefix(key);
    db_key.extend_from_slice(&provider.to_bytes());
    db_key
}

pub(super) fn encode_provider_value(
    record: &ProviderRecord,
    (source, seq): (Source, SourceSeq),
) -> Vec<u8> {
    let expires_ms = record.expires.map_or(u64::MAX, |at| {
        let left = at.saturating_duration_since(Instant::now());
        unix_ms(SystemTime::now() + left)
    });
    let addrs: Vec<Vec<u8>> = record
        .addresses
        .iter()
        .map(Multiaddr::to_vec)
        .filter(|a| a.len() <= PROVIDER_ADDR_BYTES_MAX)
        .take(PROVIDER_ADDRS_MAX)
        .collect();
    let mut value =
        Vec::with_capacity(ADDRS_AT + 1 + addrs.iter().map(|a| a.len() + 1).sum::<usize>());
    value.extend_from_slice(&expires_ms.to_be_bytes());
    value.extend_from_slice(&source.0);
    value.extend_from_slice(&seq.0.to_be_bytes());
    value.push(addrs.len() as u8);
    for addr in addrs {
        value.push(addr.len() as u8);
        value.extend_from_slice(&addr);
    }
    value
}

pub(super) fn expiry_ms(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.get(..8)?.try_into().ok()?))
}

/// The host a stored record of others came from, and its place among that host's.
pub(super) fn source_of_value(value: &[u8]) -> Option<(Source, SourceSeq)> {
    let source = Source::from_bytes(value.get(SOURCE_AT..SEQ_AT)?)?;
    let seq = u64::from_be_bytes(value.get(SEQ_AT..ADDRS_AT)?.try_into().ok()?);
    Some((source, SourceSeq(seq)))
}

/// The `by_source` database's key for a record: its source ‖ its sequence number
/// (big-endian), so a source's records are one contiguous range, oldest first; the
/// value is the record's `providers` key.
pub(super) fn by_source_db_key((source, seq): (Source, SourceSeq)) -> Vec<u8> {
    [&source.0[..], &seq.0.to_be_bytes()].concat()
}

fn decode_addrs(rest: &[u8]) -> Option<Vec<Multiaddr>> {
    let (addrs, _) = split_addrs(rest)?;
    addrs
        .into_iter()
        .map(|addr| Multiaddr::try_from(addr.to_vec()).ok())
        .collect()
}

/// The addresses of a stored value (after its expiry): a count, then per address its
/// length and bytes. Returns them and what follows them.
fn split_addrs(mut rest: &[u8]) -> Option<(Vec<&[u8]>, &[u8])> {
    let (&count, tail) = rest.split_first()?;
    rest = tail;
    let mut addrs = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let (&len, tail) = rest.split_first()?;
        let (addr, tail) = tail.split_at_checked(usize::from(len))?;
        addrs.push(addr);
        rest = tail;
    }
    Some((addrs, rest))
}

pub(super) fn decode_provider(
    key: &RecordKey,
    db_key: &[u8],
    value: &[u8],
    (now, now_wall): (Instant, SystemTime),
) -> Option<ProviderRecord> {
    let peer = db_key.get(1 + key.as_ref().len()..)?;
    let provider = PeerId::from_bytes(peer).ok()?;
    let expires_ms = expiry_ms(value)?;
    let expires = match expires_ms {
        u64::MAX => None,
        at => {
            // A wall clock stepped back since the record was written would stretch it
            // past the longest life a record of others has.
            let left = Duration::from_millis(at.saturating_sub(unix_ms(now_wall)));
            Some(now + left.min(PROVIDER_TTL_MAX))
        }
    };
    Some(ProviderRecord {
        key: key.clone(),
        provider,
        expires,
        addresses: decode_addrs(value.get(ADDRS_AT..)?)?,
    })
}

/// Which invariant of a stored record of others — its `providers` key and value — is
/// broken, `None` if none is: the key's length byte is at most
/// [`RECORD_KEY_BYTES_MAX`] and a provider id follows the key; the expiry is never
/// (`u64::MAX`) or at most [`PROVIDER_TTL_MAX`] after `now_ms`; a source and a sequence
/// number follow; the value holds at most [`PROVIDER_ADDRS_MAX`] addresses of at most [`PROVIDER_ADDR_BYTES_MAX`] bytes
/// each, and nothing after them. Asserted before a record is committed
/// (`ProviderStore::commit_pending`, `now_ms` given: it was just encoded) and after it
/// is read back (`ProviderStore::others`, `now_ms` none: the wall clock may have stepped
/// back since it was written, by days; [`decode_provider`] caps its life instead).
pub(super) fn record_flaw(
    db_key: &[u8],
    value: &[u8],
    now_ms: Option<u64>,
) -> Option<&'static str> {
    let key_ok = db_key.split_first().is_some_and(|(&len, rest)| {
        usize::from(len) <= RECORD_KEY_BYTES_MAX && rest.len() > usize::from(len)
    });
    if !key_ok {
        return Some("key length (at most RECORD_KEY_BYTES_MAX, then a provider id)");
    }
    let ttl_max_ms = u64::try_from(PROVIDER_TTL_MAX.as_millis()).unwrap_or(u64::MAX);
    let expiry_ok = expiry_ms(value).is_some_and(|at| {
        at == u64::MAX || now_ms.is_none_or(|now_ms| at <= now_ms.saturating_add(ttl_max_ms))
    });
    if !expiry_ok {
        return Some("expiry (never, or within PROVIDER_TTL_MAX of now)");
    }
    if source_of_value(value).is_none() {
        return Some("source (16 bytes and a sequence number after the expiry)");
    }
    let addrs_ok = split_addrs(&value[ADDRS_AT..]).is_some_and(|(addrs, rest)| {
        rest.is_empty()
            && addrs.len() <= PROVIDER_ADDRS_MAX
            && addrs.iter().all(|a| a.len() <= PROVIDER_ADDR_BYTES_MAX)
    });
    if !addrs_ok {
        return Some("addresses (at most PROVIDER_ADDRS_MAX of PROVIDER_ADDR_BYTES_MAX bytes)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &[u8], expires: Option<Instant>, addrs: usize) -> ProviderRecord {
        ProviderRecord {
            key: RecordKey::new(&key),
            provider: PeerId::random(),
            expires,
            addresses: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap(); addrs],
        }
    }

    fn flaw_of(record: &ProviderRecord) -> Option<&'static str> {
        let db_key = providers_db_key(&record.key, &record.provider);
        let value = encode_provider_value(record, (Source::of(None), SourceSeq(7)));
        record_flaw(&db_key, &value, Some(unix_ms(SystemTime::now())))
    }

    #[test]
    fn encoded_records_keep_their_invariants() {
        let day = Some(Instant::now() + Duration::from_secs(24 * 3_600));
        assert_eq!(flaw_of(&record(&[1; 34], day, 1)), None);
        assert_eq!(flaw_of(&record(&[1; 34], None, 0)), None, "never expires");
        assert_eq!(
            flaw_of(&record(&[], Some(Instant::now()), 9)),
            None,
            "cut to 4"
        );
        assert_eq!(flaw_of(&record(&[1; RECORD_KEY_BYTES_MAX], day, 4)), None);
    }

    #[test]
    fn each_broken_invariant_is_named() {
        let good = record(&[1; 34], None, 1);
        let db_key = providers_db_key(&good.key, &good.provider);
        let value = encode_provider_value(&good, (Source::of(None), SourceSeq(7)));
        let now = unix_ms(SystemTime::now());
        let named = |db_key: &[u8], value: &[u8]| record_flaw(db_key, value, Some(now)).unwrap();
        assert!(
            named(&db_key[..35], &value).starts_with("key length"),
            "no provider"
        );
        let mut long = db_key.clone();
        long[0] = RECORD_KEY_BYTES_MAX as u8 + 1;
        long.resize(200, 0);
        assert!(named(&long, &value).starts_with("key length"));
        let mut late = value.clone();
        let too_far = now + PROVIDER_TTL_MAX.as_millis() as u64 + 1;
        late[..8].copy_from_slice(&too_far.to_be_bytes());
        assert!(named(&db_key, &late).starts_with("expiry"));
        // Read back after the wall clock stepped back by days: no flaw (a panic of the
        // DHT thread before), and its life is capped where it is decoded.
        assert_eq!(record_flaw(&db_key, &late, None), None);
        let wall = SystemTime::UNIX_EPOCH + Duration::from_millis(now);
        let at = Instant::now();
        let decoded = decode_provider(&good.key, &db_key, &late, (at, wall)).unwrap();
        assert!(decoded.expires.unwrap() <= at + PROVIDER_TTL_MAX);
        assert!(
            named(&db_key, &value[..7]).starts_with("expiry"),
            "short value"
        );
        let mut trailing = value.clone();
        trailing.push(0);
        assert!(named(&db_key, &trailing).starts_with("addresses"));
        assert!(named(&db_key, &value[..30]).starts_with("source"));
        assert_eq!(
            source_of_value(&value),
            Some((Source::of(None), SourceSeq(7)))
        );
        let mut many = now.to_be_bytes().to_vec();
        many.extend_from_slice(&[0; SOURCE_BYTES + 8]);
        many.push(PROVIDER_ADDRS_MAX as u8 + 1);
        for _ in 0..=PROVIDER_ADDRS_MAX {
            many.extend_from_slice(&[1, 0]);
        }
        assert!(named(&db_key, &many).starts_with("addresses"));
    }
}
