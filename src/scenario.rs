//! Declarative device fleets (`scenarios/*.toml`): which devices exist, in which
//! environment, with which apps installed and which kinds of token each app registers. `apns-sim serve` starts its demo fleet from
//! `scenarios/demo.toml` (embedded), and tests load the same files.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

use crate::protocol::token::AppToken;
use crate::protocol::Environment;

/// The embedded default fleet.
pub const DEMO: &str = include_str!("../scenarios/demo.toml");

/// Most devices one scenario may start in-process (each holds a connection and a task).
pub const MAX_DEVICES: usize = 10_000;

/// A fleet of simulated devices.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The devices, in start order.
    #[serde(rename = "device", default)]
    pub devices: Vec<DeviceSpec>,
    /// Which team owns which bundle ids (`[teams]`, team id → bundle ids). A token-auth push
    /// to a bundle owned by another team than the token's is refused, as APNs refuses it
    /// (400 `TopicDisallowed`); a bundle no team claims is open to every team.
    #[serde(default)]
    pub teams: BTreeMap<String, Vec<String>>,
}

/// One device of a fleet.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    /// Serial number, unique in the fleet.
    pub serial: String,
    /// Environment of its tokens.
    #[serde(default = "sandbox")]
    pub environment: Environment,
    /// Tokens registered at start: `APP` for an app's ordinary token, `APP:KIND` for another
    /// kind (`com.x.app:voip`, `com.x.app:liveactivity-start`, `com.x.app:liveactivity:ID`).
    pub apps: Vec<AppToken>,
}

fn sandbox() -> Environment {
    Environment::Sandbox
}

/// A scenario file that cannot be used, with the reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScenarioError {
    /// Not valid TOML for this format.
    #[error("scenario is not valid: {0}")]
    Parse(String),
    /// A rule of the format is broken.
    #[error("scenario device {serial:?}: {why}")]
    Invalid {
        /// The device concerned.
        serial: String,
        /// The broken rule.
        why: String,
    },
    /// Too many devices.
    #[error("scenario has {0} devices; at most {MAX_DEVICES} run in one process")]
    TooMany(usize),
    /// A `[teams]` entry breaks a rule.
    #[error("scenario team {team:?}: {why}")]
    InvalidTeam {
        /// The team concerned.
        team: String,
        /// The broken rule.
        why: String,
    },
}

/// Longest team id a scenario may name (Apple's are 10 characters).
const MAX_TEAM_ID_LEN: usize = 32;

/// Longest bundle id a scenario may name (the certificate minting limit).
const MAX_BUNDLE_LEN: usize = 200;

impl Scenario {
    /// Parses and validates a scenario.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let scenario: Scenario =
            toml::from_str(text).map_err(|e| ScenarioError::Parse(e.to_string()))?;
        if scenario.devices.len() > MAX_DEVICES {
            return Err(ScenarioError::TooMany(scenario.devices.len()));
        }
        let mut serials = HashSet::new();
        for d in &scenario.devices {
            let invalid = |why: String| ScenarioError::Invalid {
                serial: d.serial.clone(),
                why,
            };
            if d.serial.is_empty() || d.serial.len() > 64 {
                return Err(invalid("serial must be 1 to 64 bytes".into()));
            }
            if !serials.insert(d.serial.clone()) {
                return Err(invalid("serial appears twice".into()));
            }
            if d.apps.is_empty() {
                return Err(invalid("needs at least one app".into()));
            }
            let mut tokens = HashSet::new();
            if let Some(twice) = d.apps.iter().find(|a| !tokens.insert(*a)) {
                return Err(invalid(format!("app token {twice} appears twice")));
            }
        }
        let mut owned = HashSet::new();
        for (team, bundles) in &scenario.teams {
            let invalid = |why: String| ScenarioError::InvalidTeam {
                team: team.clone(),
                why,
            };
            if team.is_empty()
                || team.len() > MAX_TEAM_ID_LEN
                || !team.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return Err(invalid(format!(
                    "a team id is 1 to {MAX_TEAM_ID_LEN} letters and digits"
                )));
            }
            for bundle in bundles {
                if bundle.is_empty() || bundle.len() > MAX_BUNDLE_LEN {
                    return Err(invalid(format!(
                        "bundle id {bundle:?} must be 1 to {MAX_BUNDLE_LEN} bytes"
                    )));
                }
                if !owned.insert(bundle.as_str()) {
                    return Err(invalid(format!(
                        "bundle {bundle} is claimed by two teams (or twice)"
                    )));
                }
            }
        }
        Ok(scenario)
    }

    /// The `[teams]` table as `(bundle, team)` pairs, for
    /// [`crate::sim::SimulatorConfig::bundle_owners`].
    pub fn bundle_owners(&self) -> Vec<(String, String)> {
        self.teams
            .iter()
            .flat_map(|(team, bundles)| bundles.iter().map(|b| (b.clone(), team.clone())))
            .collect()
    }

    /// `count` sandbox devices `DEMO-0001`… each with `app` installed.
    pub fn uniform(count: usize, app: &str) -> Result<Self, ScenarioError> {
        if count > MAX_DEVICES {
            return Err(ScenarioError::TooMany(count));
        }
        Ok(Scenario {
            devices: (1..=count)
                .map(|i| DeviceSpec {
                    serial: format!("DEMO-{i:04}"),
                    environment: Environment::Sandbox,
                    apps: vec![app.into()],
                })
                .collect(),
            teams: BTreeMap::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::token::TokenKind;

    #[test]
    fn embedded_demo_is_valid() {
        let s = Scenario::parse(DEMO).unwrap();
        assert_eq!(s.devices.len(), 3);
        assert_eq!(s.devices[2].environment, Environment::Production);
        let apps: Vec<String> = s.devices[1].apps.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            apps,
            [
                "com.example.app",
                "com.example.app:voip",
                "com.example.app:liveactivity-start",
                "com.example.app:liveactivity:DEMO-RIDE-1",
                "com.example.other",
            ]
        );
    }

    #[test]
    fn teams_claim_bundles_once() {
        let text = "[teams]\nTEAMA00001 = ['com.a', 'com.a2']\nTEAMB00001 = ['com.b']\n";
        let s = Scenario::parse(text).unwrap();
        let mut owners = s.bundle_owners();
        owners.sort();
        assert_eq!(
            owners,
            [
                ("com.a".to_owned(), "TEAMA00001".to_owned()),
                ("com.a2".to_owned(), "TEAMA00001".to_owned()),
                ("com.b".to_owned(), "TEAMB00001".to_owned()),
            ]
        );
        let twice = "[teams]\nTEAMA00001 = ['com.a']\nTEAMB00001 = ['com.a']\n";
        assert_eq!(
            Scenario::parse(twice).unwrap_err().to_string(),
            "scenario team \"TEAMB00001\": bundle com.a is claimed by two teams (or twice)"
        );
        let bad_team = "[teams]\n'TEAM-1' = ['com.a']\n";
        assert!(matches!(
            Scenario::parse(bad_team),
            Err(ScenarioError::InvalidTeam { .. })
        ));
        let empty_bundle = "[teams]\nTEAMA00001 = ['']\n";
        assert!(Scenario::parse(empty_bundle).is_err());
        assert!(Scenario::parse(DEMO).unwrap().teams.is_empty());
    }

    #[test]
    fn apps_may_name_kinds_of_token() {
        let text = "[[device]]\nserial='A'\napps=['x', 'x:voip', 'x:pushtotalk']\n";
        let s = Scenario::parse(text).unwrap();
        assert_eq!(s.devices[0].apps[1].kind, TokenKind::Voip);
        let bad = "[[device]]\nserial='A'\napps=['x:pushkit']\n";
        let err = Scenario::parse(bad).unwrap_err().to_string();
        assert!(err.contains("pushkit"), "{err}");
        let twice = "[[device]]\nserial='A'\napps=['x:voip', 'x:voip']\n";
        let err = Scenario::parse(twice).unwrap_err().to_string();
        assert!(err.contains("x:voip appears twice"), "{err}");
        let empty = "[[device]]\nserial='A'\napps=['']\n";
        assert!(Scenario::parse(empty).is_err());
    }

    #[test]
    fn rejections_name_the_problem() {
        let dup = "[[device]]\nserial='A'\napps=['x']\n[[device]]\nserial='A'\napps=['y']\n";
        assert!(Scenario::parse(dup)
            .unwrap_err()
            .to_string()
            .contains("twice"));
        let none = "[[device]]\nserial='A'\napps=[]\n";
        assert!(Scenario::parse(none)
            .unwrap_err()
            .to_string()
            .contains("at least one app"));
        let typo = "[[device]]\nserail='A'\napps=['x']\n";
        assert!(matches!(
            Scenario::parse(typo),
            Err(ScenarioError::Parse(_))
        ));
        let env = "[[device]]\nserial='A'\nenvironment='staging'\napps=['x']\n";
        assert!(matches!(Scenario::parse(env), Err(ScenarioError::Parse(_))));
    }

    #[test]
    fn uniform_fleet() {
        let s = Scenario::uniform(2, "com.a").unwrap();
        assert_eq!(s.devices[1].serial, "DEMO-0002");
        assert!(Scenario::uniform(MAX_DEVICES + 1, "com.a").is_err());
    }
}
