//! How a group of counters is declared once and shown at `/metrics`. `declare_counters!`
//! takes one line per counter — its field, its atomic type and, for an exported one, its
//! Prometheus family — and makes from it the atomic struct a shard writes, the plain
//! snapshot the control thread reads, `snapshot()`, and one [`Family`] per exported
//! counter (name, [`Kind`], help, how the shards' values are shown ([`Across`]) and how
//! to read it from a snapshot). `crate::counters` declares the shard's two groups with it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// A family's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// How a family shows the shards' values of its counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Across {
    /// One unlabelled sample: the sum over shards.
    Sum,
    /// One sample per shard, labelled `shard`.
    PerShard,
    /// One sample per shard, labelled `shard`: millionths (a ratio in ppm, seconds in
    /// µs), shown in the whole unit, as Prometheus names ask (base units).
    PerShardMillionths,
    /// One sample per value of the label (name, values; the counter is an array in the
    /// same order), each summed over shards.
    Labelled(&'static str, &'static [&'static str]),
}

/// The Prometheus family of one counter of a group whose snapshot is `S`.
#[derive(Debug)]
pub struct Family<S> {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub across: Across,
    /// The counter's value in a snapshot (of a labelled family: at the label's index).
    pub read: fn(&S, usize) -> u64,
}

impl<S> Family<S> {
    /// The value of an unlabelled family in one shard's snapshot.
    pub fn value(&self, snapshot: &S) -> u64 {
        (self.read)(snapshot, 0)
    }

    /// The value of a labelled family at the `label`-th value of its label.
    pub fn value_at(&self, snapshot: &S, label: usize) -> u64 {
        (self.read)(snapshot, label)
    }
}

/// An atomic counter's plain value, read relaxed.
pub trait Load {
    type Value;
    fn load(&self) -> Self::Value;
}

impl Load for AtomicU64 {
    type Value = u64;
    fn load(&self) -> u64 {
        AtomicU64::load(self, Relaxed)
    }
}

impl Load for AtomicBool {
    type Value = bool;
    fn load(&self) -> bool {
        AtomicBool::load(self, Relaxed)
    }
}

impl<T: Load, const N: usize> Load for [T; N] {
    type Value = [T::Value; N];
    fn load(&self) -> Self::Value {
        std::array::from_fn(|i| self[i].load())
    }
}

/// A plain value as a sample (a flag is 0 or 1; an array is read at the label's index).
pub trait Sample {
    fn sample(&self, label: usize) -> u64;
}

impl Sample for u64 {
    fn sample(&self, _: usize) -> u64 {
        *self
    }
}

impl Sample for bool {
    fn sample(&self, _: usize) -> u64 {
        u64::from(*self)
    }
}

impl<const N: usize> Sample for [u64; N] {
    fn sample(&self, label: usize) -> u64 {
        self[label]
    }
}

/// Declares a group of counters, one line each:
///
/// ```text
/// /// Rust doc of the field.
/// field: AtomicType => Kind "prometheus_name", Across, "help text",
/// field: AtomicType,                      // a counter no family shows
/// ```
///
/// and makes `$atomic` (the relaxed atomics, `Default`), `$snapshot` (their plain values,
/// [`Load::Value`]), `$atomic::snapshot()`, `$atomic::add()`, and `$families`, one
/// [`Family`] per exported counter under the counter's field name, whose one value is the
/// const `$FAMILIES`; `$families::all()` lists them in declaration order.
macro_rules! declare_counters {
    (
        $(#[$group_meta:meta])*
        pub struct $atomic:ident;
        $(#[$snapshot_meta:meta])*
        pub struct $snapshot:ident;
        $(#[$families_meta:meta])*
        pub struct $families:ident = $FAMILIES:ident;
        {
            $(
                $(#[$meta:meta])*
                $field:ident: $ty:ty $(=> $kind:ident $name:literal, $across:expr, $help:literal)?,
            )*
        }
    ) => {
        $(#[$group_meta])*
        #[derive(Debug, Default)]
        pub struct $atomic {
            $(
                $(#[$meta])*
                $(#[doc = concat!("\n\n`", $name, "`: ", $help)])?
                pub $field: $ty,
            )*
        }

        $(#[$snapshot_meta])*
        #[derive(Debug, Clone, Default)]
        pub struct $snapshot {
            $(
                $(#[$meta])*
                pub $field: <$ty as $crate::families::Load>::Value,
            )*
        }

        impl $atomic {
            /// Adds `n` to one of the counters (relaxed).
            pub fn add(counter: &std::sync::atomic::AtomicU64, n: u64) {
                counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }

            /// A consistent-enough copy for the scraper.
            pub fn snapshot(&self) -> $snapshot {
                $snapshot {
                    $($field: $crate::families::Load::load(&self.$field),)*
                }
            }
        }

        $(#[$families_meta])*
        #[derive(Debug)]
        pub struct $families {
            $($(
                #[doc = $help]
                pub $field: $crate::families::Family<$snapshot>,
            )?)*
        }

        impl $families {
            /// Every family of the group, in declaration order.
            pub fn all(&self) -> Vec<&$crate::families::Family<$snapshot>> {
                vec![$($(declare_counters!(@second $name, &self.$field),)?)*]
            }
        }

        #[doc = concat!("The families of [`", stringify!($atomic), "`].")]
        pub const $FAMILIES: $families = $families {
            $($(
                $field: $crate::families::Family {
                    name: $name,
                    kind: $crate::families::Kind::$kind,
                    help: $help,
                    across: {
                        #[allow(unused_imports)]
                        use $crate::families::Across::*;
                        $across
                    },
                    read: |s, label| $crate::families::Sample::sample(&s.$field, label),
                },
            )?)*
        };
    };
    (@second $ignored:tt, $($kept:tt)*) => { $($kept)* };
}

pub(crate) use declare_counters;
