//! The records gateshift stores beside a checkpoint's weights (safetensors metadata, JSON or
//! TOML text under fixed keys), read and written in one place: a record that does not parse
//! is an error naming it, never a silent default.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The model configuration (`ModelConfig`, JSON).
pub const MODEL: &str = "gateshift.model";
/// The trainer's state after the last finished epoch (`RunState`, JSON).
pub const RUN: &str = "gateshift.run";
/// Class names, in label order (JSON list).
pub const CLASSES: &str = "gateshift.classes";
/// The run's whole configuration (`TrainConfig`, TOML).
pub const TRAIN_CONFIG: &str = "gateshift.train_config";
/// What [`MODEL`] says in the Kinetics-400 I3D asset, which is no recognizer.
pub const I3D_MODEL: &str = "i3d-kinetics400";

/// The JSON record `key`, if present.
pub fn get<T: DeserializeOwned>(metadata: &BTreeMap<String, String>, key: &str) -> Result<Option<T>> {
    metadata
        .get(key)
        .map(|json| serde_json::from_str(json).map_err(|e| anyhow!("its {key} metadata does not parse: {e}")))
        .transpose()
}

/// Stores `value` as the JSON record `key`.
pub fn set<T: Serialize>(metadata: &mut BTreeMap<String, String>, key: &str, value: &T) -> Result<()> {
    metadata.insert(key.to_string(), serde_json::to_string(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_ones_are_named() {
        let mut m = BTreeMap::new();
        set(&mut m, CLASSES, &vec!["a".to_string(), "b".to_string()]).unwrap();
        assert_eq!(get::<Vec<String>>(&m, CLASSES).unwrap().unwrap(), ["a", "b"]);
        assert!(get::<Vec<String>>(&m, RUN).unwrap().is_none());
        m.insert(RUN.into(), "{\"epochs".into());
        let e = get::<serde_json::Value>(&m, RUN).unwrap_err().to_string();
        assert!(e.contains("gateshift.run metadata does not parse"), "{e}");
    }
}
