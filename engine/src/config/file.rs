//! The TOML file layer. Top-level keys go through the key table's parsers, like flags
//! and `RON_*` variables (`cache_bytes = "256MiB"` and `cache_bytes = 268435456` are the
//! same); the tables `quota_default` and `[tenants.NAME]` are read by serde, their byte
//! limits through the same size parser.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use ron_link::policy::QuotaLimits;
use serde::{Deserialize, Deserializer, Serialize};

use crate::config::keys::{self, Value, ValueError, FILE_ONLY_KEYS};
use crate::config::{Config, ConfigError};

/// Limits of a tenant; 0 means unlimited. Byte limits accept sizes (`"10MiB"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    pub requests_per_s: f64,
    pub requests_burst: f64,
    #[serde(deserialize_with = "size_field")]
    pub bytes_per_s: u64,
    #[serde(deserialize_with = "size_field")]
    pub bytes_burst: u64,
}

impl QuotaConfig {
    /// The limits the policy enforces.
    pub fn limits(&self) -> QuotaLimits {
        QuotaLimits {
            requests_per_s: self.requests_per_s,
            requests_burst: self.requests_burst,
            bytes_per_s: self.bytes_per_s,
            bytes_burst: self.bytes_burst,
        }
    }
}

/// One configured tenant (`[tenants.NAME]`): the bearer tokens that identify it (and
/// may write) and its limits; 0 means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantConfig {
    pub tokens: Vec<String>,
    pub requests_per_s: f64,
    pub requests_burst: f64,
    #[serde(deserialize_with = "size_field")]
    pub bytes_per_s: u64,
    #[serde(deserialize_with = "size_field")]
    pub bytes_burst: u64,
}

impl TenantConfig {
    /// The tenant's limits.
    pub fn quota(&self) -> QuotaConfig {
        QuotaConfig {
            requests_per_s: self.requests_per_s,
            requests_burst: self.requests_burst,
            bytes_per_s: self.bytes_per_s,
            bytes_burst: self.bytes_burst,
        }
    }
}

/// A byte count as a TOML integer or a size string, through the key table's parser.
fn size_field<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct Size;
    impl serde::de::Visitor<'_> for Size {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte count or a size such as \"10MiB\"")
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<u64, E> {
            Ok(n)
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<u64, E> {
            u64::try_from(n).map_err(|_| E::custom(format!("invalid size {n} (negative)")))
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<u64, E> {
            keys::size(text).map_err(E::custom)
        }
    }
    d.deserialize_any(Size)
}

/// The file's tables, read by serde (their keys are not in the key table).
#[derive(Deserialize)]
struct Tables {
    quota_default: Option<QuotaConfig>,
    tenants: Option<BTreeMap<String, TenantConfig>>,
}

/// Applies the file at `path` to `config`; returns the keys it set.
pub(super) fn apply(config: &mut Config, path: &Path) -> Result<Vec<&'static str>, ConfigError> {
    let not_toml = |source| ConfigError::Toml {
        path: path.to_path_buf(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(not_toml)?;
    let mut set = Vec::new();
    for (name, value) in &table {
        if let Some(table_key) = FILE_ONLY_KEYS.iter().find(|k| *k == name) {
            set.push(*table_key);
            continue;
        }
        let key = keys::find(name).ok_or_else(|| ConfigError::UnknownKey {
            path: path.to_path_buf(),
            key: name.clone(),
        })?;
        apply_value(config, key, value).map_err(|reason| ConfigError::Key {
            path: path.to_path_buf(),
            key: key.key,
            reason,
        })?;
        set.push(key.key);
    }
    let tables: Tables = toml::from_str(&text).map_err(not_toml)?;
    if let Some(quota) = tables.quota_default {
        config.quota_default = quota;
    }
    if let Some(tenants) = tables.tenants {
        config.tenants = tenants;
    }
    Ok(set)
}

/// A TOML value as the key's parser takes it: strings as they are, other scalars as
/// text, arrays of strings as lists.
fn apply_value(
    config: &mut Config,
    key: &keys::Key,
    value: &toml::Value,
) -> Result<(), ValueError> {
    match value {
        toml::Value::String(text) => (key.apply)(config, Value::Text(text)),
        toml::Value::Array(items) => {
            let list: Vec<String> = items
                .iter()
                .map(|item| item.as_str().map(String::from))
                .collect::<Option<_>>()
                .ok_or(ValueError::NotAList)?;
            (key.apply)(config, Value::List(&list))
        }
        toml::Value::Table(_) => Err(ValueError::Table),
        scalar => (key.apply)(config, Value::Text(&scalar.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(name: &str, text: &str) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!("ron-config-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let mut config = Config::default();
        let result = apply(&mut config, &path).map(|_| config);
        std::fs::remove_file(&path).unwrap();
        result
    }

    #[test]
    fn sizes_work_as_strings_and_integers() {
        let c = load(
            "sizes.toml",
            "cache_bytes = \"256MiB\"\nmeta_cache_bytes = 1024\n",
        )
        .unwrap();
        assert_eq!((c.cache_bytes, c.meta_cache_bytes), (256 << 20, 1024));
        let c = load(
            "int.toml",
            "cache_bytes = 268435456\nallow_open_writes = true\n",
        )
        .unwrap();
        assert_eq!(c.cache_bytes, 256 << 20);
        assert!(c.allow_open_writes);
    }

    #[test]
    fn bad_values_name_the_key_and_the_file() {
        let e = load("bad.toml", "shards = \"x\"\n").unwrap_err();
        assert!(
            matches!(&e, ConfigError::Key { path, key: "shards", reason: ValueError::Number(given) }
                if path.ends_with("bad.toml") && given == "x"),
            "{e:?}"
        );
        let e = e.to_string();
        assert!(e.starts_with("config file "), "{e}");
        assert!(
            e.ends_with("bad.toml (key shards): invalid number \"x\""),
            "{e}"
        );
        let e = load("list.toml", "http = [\"a\"]\n").unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::Key {
                    key: "http",
                    reason: ValueError::NotOneValue,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = e.to_string();
        assert!(
            e.ends_with("(key http): expected one value, not a list"),
            "{e}"
        );
        let e = load("unknown.toml", "shardz = 3\n").unwrap_err();
        assert!(
            matches!(&e, ConfigError::UnknownKey { key, .. } if key == "shardz"),
            "{e:?}"
        );
        let e = e.to_string();
        assert!(e.ends_with("unknown.toml: unknown key \"shardz\""), "{e}");
        let e = load("broken.toml", "shards = \n").unwrap_err();
        assert!(matches!(e, ConfigError::Toml { .. }), "{e:?}");
        assert!(e.to_string().starts_with("config file "), "{e}");
        let gone = Path::new("/nonexistent/ron.toml");
        let e = apply(&mut Config::default(), gone).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Read { path, .. } if path == gone),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with("config file /nonexistent/ron.toml: "),
            "{e}"
        );
    }

    #[test]
    fn lists_replace_and_tables_take_sizes() {
        let text = "tokens = [\"a,b\", \"c\"]\n\
                    [quota_default]\nbytes_per_s = \"10MiB\"\nrequests_per_s = 2.5\n\
                    [tenants.edge]\ntokens = [\"t\"]\nbytes_burst = 4096\n";
        let c = load("tables.toml", text).unwrap();
        assert_eq!(c.tokens, vec!["a,b", "c"]);
        assert_eq!(c.quota_default.bytes_per_s, 10 << 20);
        assert_eq!(c.quota_default.requests_per_s, 2.5);
        assert_eq!(c.tenants["edge"].bytes_burst, 4096);
        assert_eq!(c.tenants["edge"].tokens, vec!["t"]);
        let e = load("lots.toml", "[quota_default]\nbytes_per_s = \"lots\"\n").unwrap_err();
        assert!(matches!(e, ConfigError::Toml { .. }), "{e:?}");
        let e = e.to_string();
        assert!(
            e.contains("bytes_per_s") && e.contains("invalid size \"lots\""),
            "{e}"
        );
        let e = load("field.toml", "[tenants.a]\nrequests_per_sec = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `requests_per_sec`"), "{e}");
    }
}
