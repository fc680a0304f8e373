//! `[thresholds]` entries in either form, and the abort gates of the extended one.
//!
//! An entry is a condition, `"lobby.me.p99" = "< 50ms"`, or a table that adds when the
//! run stops early because the condition failed while running (k6's `abortOnFail` with
//! `delayAbortEval`, over a rolling window):
//!
//! ```toml
//! "lobby.me.p99" = { limit = "< 50ms", abort_on_fail = true, delay_abort_eval_s = 10, window_s = 5 }
//! ```
//!
//! Every threshold, gated or not, is also judged over the whole run at the end.

use super::{ScenarioError, DURATION_S_MAX};
use crate::threshold::{Metric, Threshold};
use std::collections::BTreeMap;

/// One bad second is noise on a shared machine; five in a window is a trend worth
/// stopping for, and still stops a doomed hour-long run within seconds.
pub const ABORT_WINDOW_S_DEFAULT: u64 = 5;
/// The coordinator keeps the window's merged histograms (~20 KiB per step and second);
/// five minutes of them stay a few MiB per gated step.
const ABORT_WINDOW_S_MAX: u64 = 300;

/// A threshold that stops the run when it fails over a rolling window while running.
#[derive(Clone, Debug, PartialEq)]
pub struct AbortGate {
    /// The threshold, as judged at the end too.
    pub threshold: Threshold,
    /// Seconds from the start before the gate is first evaluated, so that warm-up
    /// (connections, caches, the first logins) does not stop the run.
    pub delay_abort_eval_s: u64,
    /// Seconds of merged figures the condition is evaluated over, each second.
    pub window_s: u64,
}

/// The table form of a `[thresholds]` entry, read by hand so that every bad key and
/// value names its field.
#[derive(Debug, Default)]
pub(super) struct GateFields {
    limit: Option<String>,
    abort_on_fail: bool,
    delay_abort_eval_s: Option<u64>,
    window_s: Option<u64>,
}

/// `[thresholds]` split: every entry's condition, and the table entries' gate fields.
type Split = (BTreeMap<String, String>, BTreeMap<String, GateFields>);

/// Splits `[thresholds]` into its conditions (both forms) and the table entries'
/// gate fields, naming the field of any value of the wrong shape.
pub(super) fn split_entries(
    entries: &BTreeMap<String, toml::Value>,
) -> Result<Split, ScenarioError> {
    let mut conditions = BTreeMap::new();
    let mut gates = BTreeMap::new();
    for (name, value) in entries {
        let field = format!("thresholds.\"{name}\"");
        match value {
            toml::Value::String(condition) => {
                conditions.insert(name.clone(), condition.clone());
            }
            toml::Value::Table(table) => {
                let fields = gate_fields(&field, table)?;
                let limit = fields.limit.clone().ok_or_else(|| {
                    ScenarioError::invalid(
                        format!("{field}.limit"),
                        "is required: the condition, such as \"< 50ms\"",
                    )
                })?;
                conditions.insert(name.clone(), limit);
                gates.insert(name.clone(), fields);
            }
            _ => {
                return Err(ScenarioError::invalid(
                    field,
                    "must be a condition such as \"< 50ms\", or a table such as { limit = \
                     \"< 50ms\", abort_on_fail = true, delay_abort_eval_s = 10, window_s = 5 }",
                ))
            }
        }
    }
    Ok((conditions, gates))
}

fn gate_fields(field: &str, table: &toml::Table) -> Result<GateFields, ScenarioError> {
    let mut fields = GateFields::default();
    for (key, value) in table {
        let key_field = format!("{field}.{key}");
        let wrong =
            |what: &str| ScenarioError::invalid(key_field.clone(), format!("must be {what}"));
        match key.as_str() {
            "limit" => {
                let text = value
                    .as_str()
                    .ok_or_else(|| wrong("a condition string such as \"< 50ms\""))?;
                fields.limit = Some(text.to_string());
            }
            "abort_on_fail" => {
                fields.abort_on_fail = value.as_bool().ok_or_else(|| wrong("true or false"))?;
            }
            "delay_abort_eval_s" => {
                let s = seconds(value, 0, DURATION_S_MAX)
                    .ok_or_else(|| wrong(&format!("whole seconds from 0 to {DURATION_S_MAX}")))?;
                fields.delay_abort_eval_s = Some(s);
            }
            "window_s" => {
                let s = seconds(value, 1, ABORT_WINDOW_S_MAX).ok_or_else(|| {
                    wrong(&format!("whole seconds from 1 to {ABORT_WINDOW_S_MAX}"))
                })?;
                fields.window_s = Some(s);
            }
            _ => {
                return Err(ScenarioError::invalid(
                    key_field,
                    "unknown field; known are limit, abort_on_fail, delay_abort_eval_s, window_s",
                ))
            }
        }
    }
    Ok(fields)
}

fn seconds(value: &toml::Value, min: u64, max: u64) -> Option<u64> {
    let n = u64::try_from(value.as_integer()?).ok()?;
    (min..=max).contains(&n).then_some(n)
}

/// The abort gates among `thresholds`: the table entries with `abort_on_fail = true`.
/// Only figures that exist second by second can be judged while running.
pub(super) fn abort_gates(
    thresholds: &[Threshold],
    mut fields: BTreeMap<String, GateFields>,
) -> Result<Vec<AbortGate>, ScenarioError> {
    let mut gates = Vec::new();
    for threshold in thresholds {
        let Some(fields) = fields.remove(&threshold.name) else {
            continue;
        };
        let field = format!("thresholds.\"{}\"", threshold.name);
        if !fields.abort_on_fail {
            if fields.delay_abort_eval_s.is_some() || fields.window_s.is_some() {
                return Err(ScenarioError::invalid(
                    field,
                    "delay_abort_eval_s and window_s only apply with abort_on_fail = true",
                ));
            }
            continue;
        }
        if !windowed(threshold.metric) {
            return Err(ScenarioError::invalid(
                format!("{field}.abort_on_fail"),
                "only figures measured second by second can stop a run: STEP.<p50|p90|p99|\
                 p99.9|max|count|errors|errors.rate>, errors.rate and arrivals.dropped",
            ));
        }
        gates.push(AbortGate {
            threshold: threshold.clone(),
            delay_abort_eval_s: fields.delay_abort_eval_s.unwrap_or(0),
            window_s: fields.window_s.unwrap_or(ABORT_WINDOW_S_DEFAULT),
        });
    }
    Ok(gates)
}

/// Whether a window of merged seconds holds `metric`.
fn windowed(metric: Metric) -> bool {
    matches!(
        metric,
        Metric::Step { .. } | Metric::ErrorsRate | Metric::ArrivalsDropped
    )
}

#[cfg(test)]
mod tests {
    use crate::scenario::{Scenario, ScenarioError, ABORT_WINDOW_S_DEFAULT};

    const HEAD: &str = "[scenario]\nname = \"x\"\n[thresholds]\n";

    fn invalid_field(thresholds: &str) -> String {
        match Scenario::parse(&format!("{HEAD}{thresholds}")) {
            Err(ScenarioError::Invalid { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn both_forms_parse_and_only_abort_on_fail_makes_a_gate() {
        let text = format!(
            "{HEAD}\"lobby.me.p99\" = {{ limit = \"< 50ms\", abort_on_fail = true, \
             delay_abort_eval_s = 10, window_s = 3 }}\n\
             \"errors.rate\" = {{ limit = \"< 1%\", abort_on_fail = true }}\n\
             \"login.p99\" = {{ limit = \"< 2s\" }}\n\
             \"tokens.collisions\" = \"== 0\"\n"
        );
        let scenario = Scenario::parse(&text).unwrap();
        let names: Vec<&str> = scenario
            .thresholds
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "errors.rate",
                "lobby.me.p99",
                "login.p99",
                "tokens.collisions"
            ]
        );
        assert_eq!(scenario.abort_gates.len(), 2);
        let rate = &scenario.abort_gates[0];
        assert_eq!(rate.threshold.name, "errors.rate");
        assert_eq!(rate.delay_abort_eval_s, 0);
        assert_eq!(rate.window_s, ABORT_WINDOW_S_DEFAULT);
        let me = &scenario.abort_gates[1];
        assert_eq!(me.threshold.condition, "< 50ms");
        assert_eq!((me.delay_abort_eval_s, me.window_s), (10, 3));
    }

    #[test]
    fn bad_gate_fields_are_named() {
        let cases = [
            ("\"lobby.me.p99\" = { abort_on_fail = true }", "thresholds.\"lobby.me.p99\".limit"),
            (
                "\"lobby.me.p99\" = { limit = \"< 5ms\", abort_on_fail = \"yes\" }",
                "thresholds.\"lobby.me.p99\".abort_on_fail",
            ),
            (
                "\"lobby.me.p99\" = { limit = \"< 5ms\", abort_on_fail = true, window_s = 0 }",
                "thresholds.\"lobby.me.p99\".window_s",
            ),
            (
                "\"lobby.me.p99\" = { limit = \"< 5ms\", abort_on_fail = true, window_s = 301 }",
                "thresholds.\"lobby.me.p99\".window_s",
            ),
            (
                "\"lobby.me.p99\" = { limit = \"< 5ms\", abort_on_fail = true, delay_abort_eval_s = -1 }",
                "thresholds.\"lobby.me.p99\".delay_abort_eval_s",
            ),
            (
                "\"lobby.me.p99\" = { limit = \"< 5ms\", abort = true }",
                "thresholds.\"lobby.me.p99\".abort",
            ),
            ("\"lobby.me.p99\" = { limit = \"< 5\" }", "thresholds.\"lobby.me.p99\""),
            ("\"lobby.me.p99\" = 5", "thresholds.\"lobby.me.p99\""),
            (
                "\"lobby.me.p99\" = { limit = \"< 5ms\", window_s = 5 }",
                "thresholds.\"lobby.me.p99\"",
            ),
            (
                "\"invariants.violations\" = { limit = \"== 0\", abort_on_fail = true }",
                "thresholds.\"invariants.violations\".abort_on_fail",
            ),
        ];
        for (entry, field) in cases {
            assert_eq!(invalid_field(&format!("{entry}\n")), field, "{entry}");
        }
    }
}
