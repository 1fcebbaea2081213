//! Enums whose values are a Prometheus label's: [`label_enum!`] declares one with its
//! `ALL` (every value, in declaration order; a value's index is its discriminant, so it
//! indexes an array of counters), `LABELS` (their texts, in that order: a labelled
//! family's values) and `as_str` (one value's text), written once.

/// Declares `enum $name { $Variant = "label", … }` with `ALL`, `LABELS` and `as_str`.
macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident = $label:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            $( $(#[$variant_meta])* $variant ),+
        }

        impl $name {
            /// Every value, in declaration order (a value's index is its discriminant).
            pub const ALL: [$name; [$($label),+].len()] = [$($name::$variant),+];

            /// Every value's label text, in declaration order.
            pub const LABELS: [&'static str; [$($label),+].len()] = [$($label),+];

            /// Its label text.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $label ),+
                }
            }
        }
    };
}

pub(crate) use label_enum;
