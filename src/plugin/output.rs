//! What the plugin prints: kubectl-like tables with human durations, JSON
//! and YAML. Pure: `now` is an input.

use jiff::Timestamp;
use serde::Serialize;

use super::error::PluginError;
use super::{Credentials, Namespace};

/// Columns of `list` and `get`.
pub const HEADER: [&str; 6] = ["NAME", "TENANT", "PARENT", "AGE", "EXPIRES-IN", "PHASE"];

/// Shown for a value the server did not send, as kubectl does.
const NONE: &str = "<none>";

/// A duration the way kubectl shows ages (`HumanDuration` in apimachinery):
/// `45s`, `5m30s`, `65m`, `3h20m`, `30h`, `5d4h`, `40d`, `2y30d`, `9y`.
pub fn human_duration(secs: i64) -> String {
    if secs < 0 {
        return "0s".to_owned();
    }
    let minutes = secs / 60;
    let hours = minutes / 60;
    let days = hours / 24;
    let years = days / 365;
    if secs < 60 * 2 {
        format!("{secs}s")
    } else if minutes < 10 {
        match secs % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        }
    } else if minutes < 60 * 3 {
        format!("{minutes}m")
    } else if hours < 8 {
        match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        }
    } else if days < 365 * 2 {
        format!("{days}d")
    } else if days < 365 * 8 {
        match days % 365 {
            0 => format!("{years}y"),
            d => format!("{years}y{d}d"),
        }
    } else {
        format!("{years}y")
    }
}

fn parse_time(text: Option<&str>) -> Option<Timestamp> {
    text.and_then(|t| t.parse::<Timestamp>().ok())
}

/// Time left until an RFC 3339 instant: `12m`, `expired`, or `<none>`.
pub fn expires_in(expires_at: Option<&str>, now: Timestamp) -> String {
    match parse_time(expires_at) {
        None => NONE.to_owned(),
        Some(at) => {
            let left = at.as_second() - now.as_second();
            if left <= 0 {
                "expired".to_owned()
            } else {
                human_duration(left)
            }
        }
    }
}

/// Time since an RFC 3339 instant, or `<none>`.
pub fn age(created: Option<&str>, now: Timestamp) -> String {
    parse_time(created)
        .map(|at| human_duration(now.as_second() - at.as_second()))
        .unwrap_or_else(|| NONE.to_owned())
}

/// One table row per namespace.
pub fn row(ns: &Namespace, now: Timestamp) -> [String; 6] {
    [
        ns.name.clone(),
        ns.tenant.clone(),
        ns.parent.clone().unwrap_or_else(|| NONE.to_owned()),
        age(ns.created.as_deref(), now),
        expires_in(ns.expires_at.as_deref(), now),
        ns.phase.clone(),
    ]
}

/// Columns padded to the widest cell, three spaces apart, like kubectl.
pub fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i + 1 == N {
                text.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count() + 3;
                text.push_str(cell);
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// The `list`/`get` table; an empty list says so, as kubectl does.
pub fn namespaces_table(items: &[Namespace], now: Timestamp) -> String {
    if items.is_empty() {
        return "No namespaces found.\n".to_owned();
    }
    let rows: Vec<_> = items.iter().map(|ns| row(ns, now)).collect();
    table(HEADER, &rows)
}

/// A summary of fresh credentials, for humans: `namespace/np-abc created, expires in 30m`.
pub fn credentials_line(creds: &Credentials, verb: &str, now: Timestamp) -> String {
    format!(
        "namespace/{} {verb}, expires in {} ({})",
        creds.name,
        expires_in(Some(&creds.expires_at), now),
        creds.expires_at
    )
}

pub fn json<T: Serialize>(value: &T) -> Result<String, PluginError> {
    serde_json::to_string_pretty(value)
        .map(|mut s| {
            s.push('\n');
            s
        })
        .map_err(|e| PluginError::Encode(e.to_string()))
}

pub fn yaml<T: Serialize>(value: &T) -> Result<String, PluginError> {
    serde_yaml_ng::to_string(value).map_err(|e| PluginError::Encode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        for (secs, shown) in [
            (-5, "0s"),
            (0, "0s"),
            (45, "45s"),
            (119, "119s"),
            (120, "2m"),
            (330, "5m30s"),
            (600, "10m"),
            (3900, "65m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 20 * 60, "3h20m"),
            (30 * 3600, "30h"),
            (5 * 86400 + 4 * 3600, "5d4h"),
            (40 * 86400, "40d"),
            (2 * 365 * 86400 + 30 * 86400, "2y30d"),
            (9 * 365 * 86400, "9y"),
        ] {
            assert_eq!(human_duration(secs), shown, "{secs}");
        }
    }

    fn ns(name: &str, parent: Option<&str>, expires_at: Option<&str>, phase: &str) -> Namespace {
        Namespace {
            name: name.into(),
            tenant: "alice".into(),
            parent: parent.map(Into::into),
            created: Some("2026-11-30T17:00:00Z".into()),
            expires_at: expires_at.map(Into::into),
            phase: phase.into(),
            other: Default::default(),
        }
    }

    #[test]
    fn tables_are_aligned_and_show_missing_values() {
        let now: Timestamp = "2026-11-30T18:00:00Z".parse().unwrap();
        let items = [
            ns("np-abcdef", None, Some("2026-11-30T18:30:00Z"), "Active"),
            ns("np-x", Some("team"), Some("2026-11-30T17:59:00Z"), "Terminating"),
            ns("np-y", None, Some("not a time"), "Active"),
        ];
        assert_eq!(
            namespaces_table(&items, now),
            "\
NAME        TENANT   PARENT   AGE   EXPIRES-IN   PHASE
np-abcdef   alice    <none>   60m   30m          Active
np-x        alice    team     60m   expired      Terminating
np-y        alice    <none>   60m   <none>       Active
"
        );
        assert_eq!(namespaces_table(&[], now), "No namespaces found.\n");
    }

    #[test]
    fn unknown_fields_survive_json_and_yaml() {
        let wire =
            r#"{"name":"np-a","tenant":"t","phase":"Active","expiresAt":"2026-11-30T18:30:00Z","depth":2}"#;
        let ns: Namespace = serde_json::from_str(wire).unwrap();
        assert_eq!(ns.created, None);
        let back: serde_json::Value = serde_json::from_str(&json(&ns).unwrap()).unwrap();
        assert_eq!(back, serde_json::from_str::<serde_json::Value>(wire).unwrap());
        let yaml = yaml(&ns).unwrap();
        assert!(yaml.contains("depth: 2") && yaml.contains("expiresAt:"), "{yaml}");
    }

    #[test]
    fn credentials_summary_names_the_expiry() {
        let now: Timestamp = "2026-11-30T18:00:00Z".parse().unwrap();
        let creds = Credentials {
            name: "np-a".into(),
            expires_at: "2026-11-30T18:30:00Z".into(),
            token_expires_at: "2026-11-30T18:30:00Z".into(),
            kubeconfig: "apiVersion: v1".into(),
            other: Default::default(),
        };
        assert_eq!(
            credentials_line(&creds, "created", now),
            "namespace/np-a created, expires in 30m (2026-11-30T18:30:00Z)"
        );
    }
}
