//! `ron config sample`: a configuration file listing every key of the key table with
//! its meaning, flag, variable and default. Keys whose effective value is not the
//! default (given by flags, `RON_*` or a file) are written out; the rest stay commented
//! with their default. The packaged `/etc/ron/ron.toml` is this output (a test holds
//! them equal).

use super::keys::{Key, KEYS};
use super::Config;

const HEAD: &str = "\
# ron.toml — the configuration of `ron serve` (`ron serve --config FILE`).
# Every key is listed with its meaning, flag and RON_* variable; a commented key has
# its default. Precedence, lowest first: defaults, this file, RON_* variables, flags.
# Sizes take KiB/MiB/GiB/TiB suffixes (\"256MiB\"). `ron config print --config FILE`
# shows the effective values and where each came from; `ron doctor --config FILE`
# checks this host for them.
";

const QUOTAS: &str = "
# Quotas and tenants: applied live on SIGHUP (`systemctl reload ron`) and when this
# file changes. 0 means unlimited. A tenant is identified by one of its tokens, which
# also allow it to write.
#[quota_default]
#requests_per_s = 0.0
#requests_burst = 0.0
#bytes_per_s = 0
#bytes_burst = 0
#
#[tenants.example]
#tokens = [\"a-long-random-token\"]
#requests_per_s = 100.0
#requests_burst = 200.0
#bytes_per_s = \"100MiB\"
#bytes_burst = \"200MiB\"
";

/// The sample for `config`; `is_set(key)` says whether a key's value is not its default.
pub fn render(config: &Config, is_set: impl Fn(&str) -> bool) -> String {
    let values = top_level_values(config);
    let mut out = String::from(HEAD);
    for key in KEYS {
        let set = is_set(key.key);
        let value = match key.default {
            // Sized for the machine at start: the sample says so, not this machine's size.
            Some("auto") if !set => Some("\"auto\""),
            _ => values
                .iter()
                .find(|(k, _)| k == key.key)
                .map(|(_, v)| v.as_str()),
        };
        out.push_str(&entry(key, value, set));
    }
    out.push_str(QUOTAS);
    out
}

fn entry(key: &Key, value: Option<&str>, set: bool) -> String {
    let default = match key.default {
        Some(d) => format!(" [default {d}]"),
        None => " [unset by default]".into(),
    };
    let comment = format!(
        "\n# {}{default}\n# flag --{}, variable RON_{}\n",
        key.help,
        key.flag,
        key.key.to_uppercase()
    );
    let line = match (value, set) {
        (Some(v), true) => format!("{} = {v}\n", key.key),
        (Some(v), false) => format!("#{} = {v}\n", key.key),
        (None, _) => format!("#{} = \"\"\n", key.key),
    };
    comment + &line
}

/// `(key, TOML value)` of every top-level scalar or list the configuration serializes
/// (optional keys that are unset are absent).
fn top_level_values(config: &Config) -> Vec<(String, String)> {
    let text = toml::to_string(config).unwrap_or_default();
    text.lines()
        .take_while(|line| !line.starts_with('['))
        .filter_map(|line| line.split_once(" = "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
