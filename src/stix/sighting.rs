//! STIX 2.1 sightings built from matches.
//!
//! Ids are deterministic (UUIDv5 in Sightline's namespace over the
//! indicator id and the identities of the observations), so a replay of the
//! same input produces the same objects and consumers can deduplicate.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::matcher::Match;

/// The UUIDv5 namespace of the ids Sightline derives.
pub const SIGHTLINE_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_4c2e_93a0_4d57_8e1c_2f6a_9d3b_5e71);

/// A stable text naming an observation: its id when it has one, else its
/// content.
fn observation_identity(obs: &crate::stix::observation::Observation) -> String {
    match &obs.id {
        Some(id) => id.clone(),
        None => format!(
            "{}|{}|{}|{}",
            obs.first_observed,
            obs.last_observed,
            obs.number_observed,
            serde_json::to_string(&obs.objects).unwrap_or_default()
        ),
    }
}

/// The sighting id for `m`.
pub fn sighting_id(m: &Match) -> String {
    let mut name = String::from(&*m.indicator.id);
    for obs in &m.observations {
        name.push('\n');
        name.push_str(&observation_identity(obs));
    }
    format!(
        "sighting--{}",
        Uuid::new_v5(&SIGHTLINE_NAMESPACE, name.as_bytes())
    )
}

/// A minimal STIX 2.1 sighting of `m`'s indicator by its observations.
pub fn sighting(m: &Match) -> Value {
    let first = m.observations.iter().map(|o| o.first_observed).min();
    let last = m.observations.iter().map(|o| o.last_observed).max();
    let first = first.unwrap_or(crate::stix::timestamp::Timestamp::EPOCH);
    let last = last.unwrap_or(first);
    let refs: Vec<&str> = m
        .observations
        .iter()
        .filter_map(|o| o.id.as_deref())
        .collect();
    let mut object = json!({
        "type": "sighting",
        "spec_version": "2.1",
        "id": sighting_id(m),
        "created": last.to_stix_millis(),
        "modified": last.to_stix_millis(),
        "sighting_of_ref": &*m.indicator.id,
        "first_seen": first.to_stix_millis(),
        "last_seen": last.to_stix_millis(),
        "count": 1,
    });
    if !refs.is_empty() {
        object["observed_data_refs"] = json!(refs);
    }
    object
}
