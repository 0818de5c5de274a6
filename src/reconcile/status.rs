//! Status: conditions that only change when something real changed, and a minimal patch from
//! the old status to the new one.

use crate::model::PreviewEnvironmentStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::{Map, Value};

pub const APPROVED: &str = "Approved";
pub const RENDERED: &str = "Rendered";
pub const APPLIED: &str = "Applied";
pub const READY: &str = "Ready";
pub const CLEANED_UP: &str = "CleanedUp";
pub const REPORTED: &str = "Reported";

/// Set condition `type_` in `conditions`, keeping its transition time when its status did not
/// change, so that writing the same state twice writes nothing.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let status = if ok { "True" } else { "False" };
    let existing = conditions.iter_mut().find(|c| c.type_ == type_);
    match existing {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now();
            }
            c.status = status.to_string();
            c.reason = reason.to_string();
            c.message = message.to_string();
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            observed_generation: generation,
            last_transition_time: now(),
        }),
    }
    conditions.sort_by_key(|c| order(&c.type_));
}

/// Drop condition `type_`.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

fn order(type_: &str) -> usize {
    [APPROVED, RENDERED, APPLIED, READY, REPORTED, CLEANED_UP]
        .iter()
        .position(|t| *t == type_)
        .unwrap_or(usize::MAX)
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// A JSON merge patch turning `old` into `new`: only changed top-level fields, `null` for
/// removed ones. `None` when nothing changed. Fields other writers own are left alone.
pub fn patch(old: &PreviewEnvironmentStatus, new: &PreviewEnvironmentStatus) -> Option<Value> {
    let (Ok(Value::Object(old)), Ok(Value::Object(new))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return None;
    };
    let mut diff = Map::new();
    for (key, value) in &new {
        if old.get(key) != Some(value) {
            diff.insert(key.clone(), value.clone());
        }
    }
    for key in old.keys() {
        if !new.contains_key(key) {
            diff.insert(key.clone(), Value::Null);
        }
    }
    (!diff.is_empty()).then(|| serde_json::json!({ "status": diff }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Phase;

    #[test]
    fn unchanged_condition_keeps_its_time() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            READY,
            false,
            "Deploying",
            "waiting",
            Some(1),
        );
        let first = conditions[0].last_transition_time.clone();
        std::thread::sleep(std::time::Duration::from_millis(5));
        set_condition(
            &mut conditions,
            READY,
            false,
            "Deploying",
            "still waiting",
            Some(1),
        );
        assert_eq!(conditions[0].last_transition_time, first);
        set_condition(&mut conditions, READY, true, "Available", "", Some(1));
        assert_ne!(conditions[0].last_transition_time, first);
    }

    #[test]
    fn conditions_are_ordered() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, READY, true, "A", "", None);
        set_condition(&mut conditions, RENDERED, true, "B", "", None);
        let types: Vec<_> = conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [RENDERED, READY]);
    }

    #[test]
    fn patch_has_only_changes_and_nulls_for_removed() {
        let old = PreviewEnvironmentStatus {
            phase: Some(Phase::Deploying),
            message: Some("waiting".into()),
            comment_id: Some(7),
            ..Default::default()
        };
        assert_eq!(patch(&old, &old), None);
        let new = PreviewEnvironmentStatus {
            phase: Some(Phase::Ready),
            message: None,
            comment_id: Some(7),
            ..Default::default()
        };
        assert_eq!(
            patch(&old, &new),
            Some(serde_json::json!({"status": {"phase": "Ready", "message": null}}))
        );
    }
}
