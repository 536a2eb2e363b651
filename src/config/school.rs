//! `[school]`: who the school is and who is responsible for filtering and
//! monitoring (the DfE standards name a senior leader, a governor, the DSL
//! and the IT lead). The annual review shows them; nothing else uses them.

use serde::{Deserialize, Serialize};

/// The school and the people responsible, as written (each may be empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchoolSettings {
    /// The school's name ("Example Primary School").
    pub name: String,
    /// The senior leader responsible for filtering and monitoring.
    pub senior_leader: String,
    /// The governor responsible.
    pub governor: String,
    /// The Designated Safeguarding Lead.
    pub dsl: String,
    /// Who runs the filter day to day (IT lead or support).
    pub it_lead: String,
}

/// `[school]` as written.
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchool {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    senior_leader: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    governor: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    dsl: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    it_lead: String,
}

/// `[school]` checked: every value is free text, trimmed.
pub(super) fn compile(raw: RawSchool) -> SchoolSettings {
    SchoolSettings {
        name: raw.name.trim().to_string(),
        senior_leader: raw.senior_leader.trim().to_string(),
        governor: raw.governor.trim().to_string(),
        dsl: raw.dsl.trim().to_string(),
        it_lead: raw.it_lead.trim().to_string(),
    }
}

pub(super) fn render(settings: &SchoolSettings) -> RawSchool {
    RawSchool {
        name: settings.name.clone(),
        senior_leader: settings.senior_leader.clone(),
        governor: settings.governor.clone(),
        dsl: settings.dsl.clone(),
        it_lead: settings.it_lead.clone(),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const NETWORK: &str = "[[networks]]\nname = \"n\"\ncidrs = [\"10.0.0.0/24\"]\ngroup = \"pupil\"\n";

    #[test]
    fn empty_unless_written_round_trips_and_refuses_unknown_keys() {
        assert_eq!(Config::parse(NETWORK, "school.toml").unwrap().school, Default::default());
        let text = format!(
            "{NETWORK}[school]\nname = \"Example Primary\"\nsenior_leader = \"Pat Head\"\ngovernor = \"Gill Gov\"\n\
             dsl = \"Dee Lead\"\nit_lead = \"Ian Tech\"\n"
        );
        let config = Config::parse(&text, "school.toml").unwrap();
        assert_eq!(config.school.name, "Example Primary");
        assert_eq!(config.school.it_lead, "Ian Tech");
        assert_eq!(Config::parse(&config.to_toml(), "rendered").unwrap().school, config.school);
        let error = Config::parse(&format!("{NETWORK}[school]\nheadteacher = \"x\"\n"), "school.toml").unwrap_err();
        assert!(error.to_string().contains("headteacher"), "{error}");
    }
}
