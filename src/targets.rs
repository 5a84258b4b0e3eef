//! The Prometheus `file_sd` document: target groups rendered to JSON.

use serde::Serialize;

use crate::config::Config;

/// One `file_sd` target group. Several groups with their own labels are how
/// per-target labels or more inventory sources will be expressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetGroup {
    pub targets: Vec<String>,
    /// In output order; names are unique.
    pub labels: Vec<(String, String)>,
}

impl TargetGroup {
    /// The single group of the seed: every target with `__metrics_path__`
    /// and the configured labels.
    pub fn from_config(targets: Vec<String>, config: &Config) -> TargetGroup {
        let mut labels = Vec::with_capacity(config.target_labels.len() + 1);
        labels.push(("__metrics_path__".to_string(), config.metrics_path.clone()));
        labels.extend(config.target_labels.iter().cloned());
        TargetGroup { targets, labels }
    }
}

/// Labels as a JSON object that keeps their order (serde_json's own map
/// would sort them).
struct OrderedLabels<'a>(&'a [(String, String)]);

impl Serialize for OrderedLabels<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct GroupOut<'a> {
    targets: &'a [String],
    labels: OrderedLabels<'a>,
}

/// Renders groups as the seed did: pretty JSON, two-space indent, with a
/// trailing newline.
pub fn render(groups: &[TargetGroup]) -> Vec<u8> {
    let out: Vec<GroupOut> = groups
        .iter()
        .map(|g| GroupOut {
            targets: &g.targets,
            labels: OrderedLabels(&g.labels),
        })
        .collect();
    let size: usize = groups
        .iter()
        .flat_map(|g| &g.targets)
        .map(|t| t.len() + 8)
        .sum();
    let mut buf = Vec::with_capacity(size + 256);
    // Strings and maps of strings cannot fail to serialize.
    if serde_json::to_writer_pretty(&mut buf, &out).is_err() {
        buf.clear();
        buf.extend_from_slice(b"[]");
    }
    buf.push(b'\n');
    buf
}

/// Reads back the target addresses of a `file_sd` document, for the start-up
/// summary and for counting what a change added and removed.
pub fn parse_targets(content: &[u8]) -> Option<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct GroupIn {
        targets: Vec<String>,
    }
    let groups: Vec<GroupIn> = serde_json::from_slice(content).ok()?;
    let mut all: Vec<String> = groups.into_iter().flat_map(|g| g.targets).collect();
    all.sort_unstable();
    all.dedup();
    Some(all)
}

/// How many entries of sorted `new` are missing from sorted `old`, and the
/// other way round.
pub fn diff(old: &[String], new: &[String]) -> (usize, usize) {
    let (mut i, mut j, mut added, mut removed) = (0, 0, 0, 0);
    while i < old.len() && j < new.len() {
        match old[i].cmp(&new[j]) {
            std::cmp::Ordering::Less => {
                removed += 1;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                added += 1;
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
        }
    }
    (added + new.len() - j, removed + old.len() - i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(targets: &[&str]) -> TargetGroup {
        TargetGroup {
            targets: targets.iter().map(|s| s.to_string()).collect(),
            labels: vec![
                ("__metrics_path__".into(), "/metrics".into()),
                ("job".into(), "sensors".into()),
                ("environment".into(), "production".into()),
            ],
        }
    }

    #[test]
    fn renders_the_seed_format_exactly() {
        let out = render(&[group(&["sensor_0:9100", "sensor_1:9100"])]);
        let expected = r#"[
  {
    "targets": [
      "sensor_0:9100",
      "sensor_1:9100"
    ],
    "labels": {
      "__metrics_path__": "/metrics",
      "job": "sensors",
      "environment": "production"
    }
  }
]
"#;
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn empty_group_and_escaping() {
        let mut g = group(&[]);
        g.labels
            .push(("note".into(), "a \"quoted\" \\ value".into()));
        let out = render(&[g]);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[0]["targets"], serde_json::json!([]));
        assert_eq!(v[0]["labels"]["note"], "a \"quoted\" \\ value");
        assert_eq!(parse_targets(&out), Some(vec![]));
    }

    #[test]
    fn reads_back_what_it_writes() {
        let out = render(&[group(&["b:1", "a:1"])]);
        assert_eq!(parse_targets(&out), Some(vec!["a:1".into(), "b:1".into()]));
        assert_eq!(parse_targets(b"{}"), None);
        assert_eq!(parse_targets(b"[{\"targets\": [\"x"), None);
    }

    #[test]
    fn diff_counts() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(diff(&s(&[]), &s(&["a"])), (1, 0));
        assert_eq!(diff(&s(&["a", "b", "c"]), &s(&["b", "d"])), (1, 2));
        assert_eq!(diff(&s(&["a"]), &s(&["a"])), (0, 0));
        assert_eq!(diff(&s(&["a", "b"]), &s(&[])), (0, 2));
    }
}
