//! Live reload of the policy (tokens, tenants, limits, the denylist). The engine hands
//! the control thread a [`Reloader`]: a way to load the configuration again
//! ([`LoadPolicy`]), the file and the denylist directory to watch, and the flag its
//! SIGHUP handler sets. When the flag is set, or what is watched changed (the file's
//! modification time; the directory's `*.deny` files, their names, times and sizes) and
//! then held still for a whole watch period (a file written in place is never read
//! half-written), the control thread loads the policy once; a good one that differs from the running one
//! gets the next version and goes to every shard, a bad one is logged with its reason
//! and the running policy stays.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ron_link::link::{ControlLink, ToShard};
use ron_link::policy::Policy;
use rustls::sign::CertifiedKey;

use crate::view::View;

/// How often the configuration file's modification time is looked at.
pub const WATCH_PERIOD_MS: u64 = 1_000;

/// The longest a SIGHUP waits for a watched file written in the last
/// [`WATCH_PERIOD_MS`] to hold still (a file written for ever does not hold it back).
pub const HANGUP_WAIT_MS_MAX: u64 = 5_000;

/// Why a reload was refused; the running policy stays. The loader (the engine) says
/// which part of the configuration is at fault; the message is what the log shows.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The configuration file at `path` could not be read or parsed, or sets a key the
    /// node does not have (`reason` says which).
    #[error("config file {}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    /// `key`'s value does not parse, as given `at` (`config file PATH`, `environment
    /// RON_…` or `--flag`); `reason` names the value given and what was expected.
    #[error("{at} (key {key}): {reason}")]
    Value {
        at: String,
        key: &'static str,
        reason: String,
    },
    /// Every value parsed but the configuration as a whole was refused; the reason
    /// names the key at fault.
    #[error("{0}")]
    Refused(String),
}

/// What a reload loaded.
#[derive(Debug, Clone)]
pub struct Reloaded {
    /// The new policy (its `version` is assigned by the control thread).
    pub policy: Policy,
    /// Keys that changed but only take effect at a restart (named in the log).
    pub restart_keys: Vec<String>,
}

/// Loads the reloadable configuration again.
pub type LoadPolicy = Box<dyn Fn() -> Result<Reloaded, ReloadError> + Send>;

/// Reads the TLS certificate and key again; `Err` names why the pair was refused (the
/// running one stays). Apart from the policy: a configuration file broken at the
/// moment an ACME client renews the certificate must not keep the renewal out.
pub type LoadCertificate = Box<dyn Fn() -> Result<Arc<CertifiedKey>, String> + Send>;

/// How the policy is reloaded.
pub struct Reloader {
    /// Files watched for changes: the configuration file, the TLS certificate and key
    /// (none: SIGHUP only).
    pub watch: Vec<PathBuf>,
    /// The denylist directory, whose `*.deny` files are watched.
    pub watch_dir: Option<PathBuf>,
    pub load: LoadPolicy,
    /// The TLS pair's loader (none without TLS).
    pub load_certificate: Option<LoadCertificate>,
    /// The pair the shards present from the start: a reload that loads the same chain
    /// sends nothing and logs no rotation.
    pub running_certificate: Option<Arc<CertifiedKey>>,
    /// Set by the SIGHUP handler.
    pub hangup: Arc<AtomicBool>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("watch", &self.watch)
            .finish_non_exhaustive()
    }
}

/// What the watched files looked like: each one's path, modification time and size.
type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

/// The control thread's side of a [`Reloader`]: what was last seen of what it watches,
/// and the certificate last sent to the shards.
#[derive(Debug)]
pub(crate) struct Reloads {
    reloader: Reloader,
    /// What the last reload read.
    watched: Fingerprint,
    /// A change seen at the last look that has not yet held still for a whole period:
    /// a file being written (a denylist downloaded in place, a certificate and then its
    /// key) is read once it has stopped changing, never half-written.
    settling: Option<Fingerprint>,
    next_watch: Instant,
    certificate: Option<Arc<CertifiedKey>>,
    /// Shards whose inbox was full when the certificate was sent: sent again at every
    /// poll until each took it (a rotation is never lost on one shard).
    certificate_owed: Vec<usize>,
    /// Why the certificate on disk was last refused, while it stays refused: it is loaded
    /// again every [`CERTIFICATE_RETRY_MS`], and rotated in once it is accepted. A pair
    /// installed before its notBefore (a host whose clock is behind its CA's) becomes
    /// valid with no change to its files, and stayed refused until the running one
    /// expired. The same refusal is not logged or counted again.
    certificate_refused: Option<String>,
    next_certificate_retry: Instant,
    /// A SIGHUP waiting for the files written in the last second to hold still: one sent
    /// right after a denylist was downloaded in place read it half-written (a truncated
    /// list unblocked what its lost lines named, until the watcher read it whole).
    hangup_since: Option<Instant>,
}

/// Between two loads of a refused certificate.
const CERTIFICATE_RETRY_MS: u64 = 2_000;

impl Reloads {
    pub(crate) fn new(reloader: Reloader) -> Reloads {
        Reloads {
            watched: fingerprint(&reloader),
            settling: None,
            certificate: reloader.running_certificate.clone(),
            reloader,
            next_watch: Instant::now(),
            certificate_owed: Vec::new(),
            certificate_refused: None,
            next_certificate_retry: Instant::now(),
            hangup_since: None,
        }
    }

    /// Reloads if SIGHUP came or the file changed; true when it did (well or not).
    pub(crate) fn poll(&mut self, now: Instant, link: &ControlLink, view: &mut View) -> bool {
        self.send_owed_certificate(link);
        if !self.due(now) {
            self.retry_refused_certificate(now, link, view);
            return false;
        }
        // One reload per change, whether a signal or the watcher saw it first.
        self.watched = fingerprint(&self.reloader);
        match (self.reloader.load)() {
            Ok(reloaded) => apply(reloaded, link, view),
            Err(error) => {
                view.reload_failed();
                tracing::error!(
                    version = view.policy().version,
                    reason = %Chain(&error),
                    "configuration reload failed; keeping the running configuration"
                );
            }
        }
        let certificate = self.reloader.load_certificate.as_ref().map(|load| load());
        self.rotate(certificate, link, view);
        true
    }

    /// Sends a changed certificate to every shard; a refused pair is logged and counted
    /// as a failed reload, and the running certificate stays.
    fn rotate(
        &mut self,
        loaded: Option<Result<Arc<CertifiedKey>, String>>,
        link: &ControlLink,
        view: &mut View,
    ) {
        match loaded {
            None => {}
            Some(Err(reason)) => {
                // Logged before it is counted: whoever sees the count finds the reason.
                tracing::error!(%reason, "TLS certificate reload refused; new handshakes keep the running certificate");
                view.reload_failed();
                self.certificate_refused = Some(reason);
                self.next_certificate_retry =
                    Instant::now() + Duration::from_millis(CERTIFICATE_RETRY_MS);
            }
            Some(Ok(identity)) => {
                self.certificate_refused = None;
                let unchanged = self
                    .certificate
                    .as_ref()
                    .is_some_and(|c| c.cert == identity.cert);
                if unchanged {
                    return;
                }
                self.certificate = Some(identity);
                self.certificate_owed = (0..link.shard_count()).collect();
                self.send_owed_certificate(link);
                tracing::info!("TLS certificate reloaded; new handshakes present it");
            }
        }
    }

    /// Sends the certificate to the shards that have not taken it yet.
    fn send_owed_certificate(&mut self, link: &ControlLink) {
        let Some(identity) = &self.certificate else {
            return;
        };
        self.certificate_owed
            .retain(|&shard| !link.send(shard, ToShard::Certificate(Arc::clone(identity))));
    }

    /// SIGHUP, or a change of what is watched that has held still since the last look.
    /// Loads a refused certificate again when its retry is due: rotated in once it is
    /// accepted; a refusal for another reason is logged and counted as a reload's.
    fn retry_refused_certificate(&mut self, now: Instant, link: &ControlLink, view: &mut View) {
        let (Some(refused), Some(load)) =
            (&self.certificate_refused, &self.reloader.load_certificate)
        else {
            return;
        };
        if now < self.next_certificate_retry {
            return;
        }
        self.next_certificate_retry = now + Duration::from_millis(CERTIFICATE_RETRY_MS);
        match load() {
            Err(reason) if &reason == refused => {}
            loaded => self.rotate(Some(loaded), link, view),
        }
    }

    fn due(&mut self, now: Instant) -> bool {
        if self.reloader.hangup.swap(false, Ordering::Relaxed) {
            self.hangup_since.get_or_insert(now);
        }
        let waited_enough = |since: Instant| {
            now.saturating_duration_since(since) >= Duration::from_millis(HANGUP_WAIT_MS_MAX)
        };
        let mut due = self
            .hangup_since
            .is_some_and(|since| waited_enough(since) || files_still(&self.reloader));
        if now >= self.next_watch {
            self.next_watch = now + Duration::from_millis(WATCH_PERIOD_MS);
            let seen = fingerprint(&self.reloader);
            if seen == self.watched {
                self.settling = None;
            } else if self.settling.as_ref() == Some(&seen) {
                self.settling = None;
                self.watched = seen;
                due = true;
            } else {
                self.settling = Some(seen);
            }
        }
        if due {
            // One reload answers the signal and the watcher both.
            self.hangup_since = None;
        }
        due
    }
}

/// Sends a changed policy to every shard under the next version.
fn apply(reloaded: Reloaded, link: &ControlLink, view: &mut View) {
    let Reloaded {
        mut policy,
        restart_keys,
    } = reloaded;
    if !restart_keys.is_empty() {
        tracing::warn!(
            keys = %restart_keys.join(", "),
            "changed keys take effect only at a restart"
        );
    }
    policy.version = view.policy().version;
    // An unchanged denylist keeps the running list's `Arc`: one copy in memory, and no
    // walk of every rule for what the "new" list blocks (a reload of tokens alone, with
    // millions of rules: see `withdrawals`).
    if policy.denylist == view.policy().denylist {
        policy.denylist = Arc::clone(&view.policy().denylist);
    }
    if policy == **view.policy() {
        tracing::info!(version = policy.version, "configuration unchanged");
        return;
    }
    policy.version += 1;
    let policy = Arc::new(policy);
    for shard in 0..link.shard_count() {
        link.send(shard, ToShard::Policy(Arc::clone(&policy)));
    }
    tracing::info!(
        version = policy.version,
        tenants = policy.tenants.len(),
        denylist_rules = policy.denylist.len(),
        "configuration reloaded (tokens, tenants, quotas and the denylist)"
    );
    view.reloaded(policy);
}

/// The configuration file and the denylist's files as they are now (a file that
/// cannot be read is seen without a time: its return is a change too).
fn fingerprint(reloader: &Reloader) -> Fingerprint {
    let denylists = reloader
        .watch_dir
        .as_deref()
        .and_then(|dir| deny_files(dir).ok())
        .unwrap_or_default();
    reloader
        .watch
        .iter()
        .cloned()
        .chain(denylists)
        .map(|path| {
            let meta = std::fs::metadata(&path).ok();
            let modified = meta.as_ref().and_then(|m| m.modified().ok());
            let len = meta.map_or(0, |m| m.len());
            (path, modified, len)
        })
        .collect()
}

/// Whether no watched file was written in the last [`WATCH_PERIOD_MS`] by the wall
/// clock (a modification time in the future counts as still: a clock stepped back must
/// not hold a reload).
fn files_still(reloader: &Reloader) -> bool {
    let now = SystemTime::now();
    let period = Duration::from_millis(WATCH_PERIOD_MS);
    fingerprint(reloader).iter().all(|(_, modified, _)| {
        modified.is_none_or(|m| match now.duration_since(m) {
            Ok(age) => age >= period,
            Err(_in_the_future) => true,
        })
    })
}

/// An error and its sources, `outer: inner: …`.
struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

/// The files a denylist directory's list is made of: its `*.deny` files, in name order
/// (IPIP-383: a later list overrides an earlier one). The one place that says so, for
/// the reader of the list and the watcher of the directory.
pub fn deny_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "deny") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ron_link::link::links;
    use ron_link::policy::QuotaLimits;

    fn policy(tokens: &[&str]) -> Policy {
        let tokens: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
        Policy::new(&tokens, vec![], QuotaLimits::default())
    }

    fn reloads(load: LoadPolicy) -> (Reloads, Arc<AtomicBool>) {
        let hangup = Arc::new(AtomicBool::new(false));
        let reloader = Reloader {
            watch: Vec::new(),
            watch_dir: None,
            load,
            load_certificate: None,
            running_certificate: None,
            hangup: Arc::clone(&hangup),
        };
        (Reloads::new(reloader), hangup)
    }

    #[test]
    fn a_changed_policy_goes_to_every_shard_under_the_next_version() {
        let (control, shards) = links(2);
        let mut view = View::new(policy(&[]), 2);
        let load: LoadPolicy = Box::new(|| {
            Ok(Reloaded {
                policy: policy(&["t"]),
                restart_keys: vec!["idle_timeout_ms".into()],
            })
        });
        let (mut reloads, hangup) = reloads(load);
        let now = Instant::now();
        assert!(!reloads.poll(now, &control, &mut view), "nothing asked");
        hangup.store(true, Ordering::Relaxed);
        assert!(reloads.poll(now, &control, &mut view));
        assert!(!hangup.load(Ordering::Relaxed), "the signal is consumed");
        for end in &shards {
            assert!(matches!(end.poll(), Some(ToShard::Policy(p)) if p.version == 2));
        }
        // The same file again: no new version, nothing sent.
        hangup.store(true, Ordering::Relaxed);
        assert!(reloads.poll(now, &control, &mut view));
        assert!(shards.iter().all(|s| s.poll().is_none()));
        let extra = view.publish().extra;
        assert_eq!((extra.config_version, extra.reloads_ok), (2, 1));
    }

    #[test]
    fn a_reload_that_leaves_the_denylist_as_it_was_sends_the_running_list() {
        let (control, shards) = links(1);
        let mut view = View::new(policy(&[]), 1);
        let running = Arc::clone(&view.policy().denylist);
        // The loader reads the lists again: an equal list, a new allocation.
        let load: LoadPolicy = Box::new(|| {
            Ok(Reloaded {
                policy: policy(&["t"]).with_denylist(Default::default()),
                restart_keys: Vec::new(),
            })
        });
        let (mut reloads, hangup) = reloads(load);
        hangup.store(true, Ordering::Relaxed);
        assert!(reloads.poll(Instant::now(), &control, &mut view));
        let Some(ToShard::Policy(sent)) = shards[0].poll() else {
            panic!("the new tokens are sent");
        };
        assert!(Arc::ptr_eq(&sent.denylist, &running));
    }

    #[test]
    fn a_refused_reload_keeps_the_policy_and_is_counted() {
        let (control, shards) = links(1);
        let mut view = View::new(policy(&["t"]), 1);
        let load: LoadPolicy = Box::new(|| {
            Err(ReloadError::Refused(
                "tenants.a.requests_per_s must be ≥ 0".into(),
            ))
        });
        let (mut reloads, hangup) = reloads(load);
        hangup.store(true, Ordering::Relaxed);
        assert!(reloads.poll(Instant::now(), &control, &mut view));
        assert!(shards[0].poll().is_none());
        let extra = view.publish().extra;
        assert_eq!((extra.config_version, extra.reloads_failed), (1, 1));
    }

    /// A SIGHUP right after a watched file was written waits for it to hold still for
    /// a second (a list downloaded in place is not read half-written), at most
    /// [`HANGUP_WAIT_MS_MAX`]; one after it held still is at once.
    #[test]
    fn a_hangup_waits_for_a_file_being_written_to_hold_still() {
        let dir = std::env::temp_dir().join(format!("ron-control-hup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("list.deny");
        std::fs::write(&path, "b3:").unwrap();
        let (mut reloads, hangup) =
            reloads(Box::new(|| Err(ReloadError::Refused("unused".into()))));
        reloads.reloader.watch_dir = Some(dir.clone());
        reloads.watched = fingerprint(&reloads.reloader);
        let now = Instant::now();
        hangup.store(true, Ordering::Relaxed);
        assert!(!reloads.due(now), "written just now: it waits");
        assert!(!reloads.due(now + Duration::from_millis(500)));
        let held_still = SystemTime::now() - Duration::from_secs(2);
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(held_still).unwrap();
        assert!(
            reloads.due(now + Duration::from_millis(600)),
            "held still: read"
        );
        // Written again and again: read at the wait's end all the same.
        file.set_modified(SystemTime::now()).unwrap();
        hangup.store(true, Ordering::Relaxed);
        let later = now + Duration::from_secs(10);
        assert!(!reloads.due(later));
        file.set_modified(SystemTime::now() - Duration::from_millis(1))
            .unwrap();
        let wait = Duration::from_millis(HANGUP_WAIT_MS_MAX);
        assert!(reloads.due(later + wait), "at most HANGUP_WAIT_MS_MAX");
        // In the future (a clock stepped back): still.
        file.set_modified(SystemTime::now() + Duration::from_secs(3600))
            .unwrap();
        hangup.store(true, Ordering::Relaxed);
        assert!(reloads.due(later + wait * 2));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_change_is_noticed_by_the_watcher() {
        let dir = std::env::temp_dir().join(format!("ron-control-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ron.toml");
        std::fs::write(&path, "").unwrap();
        let (mut reloads, _) = reloads(Box::new(|| Err(ReloadError::Refused("unused".into()))));
        reloads.reloader.watch = vec![path.clone()];
        reloads.reloader.watch_dir = Some(dir.clone());
        reloads.watched = fingerprint(&reloads.reloader);
        let now = Instant::now();
        assert!(!reloads.due(now), "unchanged");
        let earlier = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(earlier)
            .unwrap();
        assert!(!reloads.due(now), "looked at once per period");
        let period = Duration::from_millis(WATCH_PERIOD_MS);
        assert!(
            !reloads.due(now + period),
            "seen changed: it must hold still first"
        );
        assert!(reloads.due(now + 2 * period), "held still for a period");
        // The denylist directory: a new `*.deny` file is a change, another file is not.
        std::fs::write(dir.join("notes.txt"), "x").unwrap();
        assert!(!reloads.due(now + 3 * period), "not a denylist");
        assert!(!reloads.due(now + 4 * period), "not a denylist");
        std::fs::write(dir.join("a.deny"), "b3:00").unwrap();
        assert!(!reloads.due(now + 5 * period));
        assert!(reloads.due(now + 6 * period), "a new list");
        // A list written in place, growing at every look, is read once it stops.
        for (i, text) in ["b3:0000", "b3:000000", "b3:00000000"].iter().enumerate() {
            std::fs::write(dir.join("a.deny"), text).unwrap();
            assert!(
                !reloads.due(now + (7 + i as u32) * period),
                "still being written"
            );
        }
        assert!(reloads.due(now + 10 * period), "a list that grew, whole");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A signing key that signs nothing: a certificate's identity for the tests.
    #[derive(Debug)]
    struct NoSigner;

    impl rustls::sign::SigningKey for NoSigner {
        fn choose_scheme(
            &self,
            _: &[rustls::SignatureScheme],
        ) -> Option<Box<dyn rustls::sign::Signer>> {
            None
        }

        fn algorithm(&self) -> rustls::SignatureAlgorithm {
            rustls::SignatureAlgorithm::ED25519
        }
    }

    #[test]
    fn a_rotated_certificate_reaches_a_shard_whose_inbox_was_full() {
        let (control, shards) = links(2);
        let mut view = View::new(policy(&[]), 2);
        let cert = rustls::pki_types::CertificateDer::from(vec![1u8, 2, 3]);
        let identity = Arc::new(CertifiedKey::new(vec![cert], Arc::new(NoSigner)));
        let loaded = Arc::clone(&identity);
        // The configuration file is broken at that moment: the certificate still rotates.
        let load: LoadPolicy = Box::new(|| Err(ReloadError::Refused("broken".into())));
        let (mut reloads, hangup) = reloads(load);
        reloads.reloader.load_certificate = Some(Box::new(move || Ok(Arc::clone(&loaded))));
        // Shard 1's inbox is full (a stalled shard).
        let mut filled = 0;
        while control.send(1, ToShard::PauseScrub(true)) {
            filled += 1;
        }
        let now = Instant::now();
        hangup.store(true, Ordering::Relaxed);
        assert!(reloads.poll(now, &control, &mut view));
        assert!(matches!(shards[0].poll(), Some(ToShard::Certificate(_))));
        assert_eq!(reloads.certificate_owed, [1]);
        // Still full at the next poll: still owed. Once it drains, sent.
        assert!(!reloads.poll(now, &control, &mut view));
        assert_eq!(reloads.certificate_owed, [1]);
        for _ in 0..filled {
            assert!(matches!(shards[1].poll(), Some(ToShard::PauseScrub(true))));
        }
        assert!(!reloads.poll(now, &control, &mut view));
        assert!(reloads.certificate_owed.is_empty());
        assert!(
            matches!(shards[1].poll(), Some(ToShard::Certificate(c)) if Arc::ptr_eq(&c, &identity))
        );
    }

    /// A reload for another reason (a SIGHUP for tokens, a denylist edit) that loads the
    /// pair the node started with sends no certificate to the shards. Before, the first
    /// reload of anything sent it to every shard and logged a rotation.
    #[test]
    fn the_pair_the_node_started_with_is_not_sent_again() {
        let (control, shards) = links(1);
        let mut view = View::new(policy(&[]), 1);
        let cert = rustls::pki_types::CertificateDer::from(vec![1u8, 2, 3]);
        let running = Arc::new(CertifiedKey::new(vec![cert.clone()], Arc::new(NoSigner)));
        let load: LoadPolicy = Box::new(|| {
            Ok(Reloaded {
                policy: policy(&["t"]),
                restart_keys: vec![],
            })
        });
        let hangup = Arc::new(AtomicBool::new(true));
        let mut reloads = Reloads::new(Reloader {
            watch: Vec::new(),
            watch_dir: None,
            load,
            // Loaded from the same files again: another Arc, the same chain.
            load_certificate: Some(Box::new(move || {
                Ok(Arc::new(CertifiedKey::new(
                    vec![cert.clone()],
                    Arc::new(NoSigner),
                )))
            })),
            running_certificate: Some(running),
            hangup: Arc::clone(&hangup),
        });
        assert!(reloads.poll(Instant::now(), &control, &mut view));
        let mut certificates = 0;
        while let Some(message) = shards[0].poll() {
            certificates += usize::from(matches!(message, ToShard::Certificate(_)));
        }
        assert_eq!(certificates, 0);
    }

    #[test]
    fn an_error_is_logged_with_its_sources() {
        let inner = std::io::Error::other("permission denied");
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("cannot read ron.toml")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        assert_eq!(
            Chain(&Outer(inner)).to_string(),
            "cannot read ron.toml: permission denied"
        );
    }

    #[test]
    fn a_reload_error_names_the_file_or_the_key() {
        let file = ReloadError::File {
            path: PathBuf::from("/etc/ron.toml"),
            reason: "unknown key \"shardz\"".into(),
        };
        assert_eq!(
            file.to_string(),
            "config file /etc/ron.toml: unknown key \"shardz\""
        );
        let value = ReloadError::Value {
            at: "environment RON_SHARDS".into(),
            key: "shards",
            reason: "invalid number \"x\"".into(),
        };
        assert_eq!(
            value.to_string(),
            "environment RON_SHARDS (key shards): invalid number \"x\""
        );
    }
}
