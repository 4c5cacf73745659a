//! Which tool calls an agent worker may make: a profile's `tools` switches become a policy over
//! the tool kinds agents report (ACP's `read`, `edit`, `delete`, `move`, `search`, `execute`,
//! `think`, `fetch`, `switch_mode`, `other`). The policy is captured on the job when the task
//! starts, answers the agent's permission requests, and judges tool calls that arrive without
//! one.

use serde::{Deserialize, Serialize};

use crate::agent::preset::Access;
use crate::agent::profile::{Profile, ProfileKind};

/// How a profile answers permission requests (`permissions`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Answering {
    /// From the policy: allowed kinds are granted, denied kinds rejected.
    #[default]
    Auto,
    /// Never guessed: a permission request fails the task, with the request shown.
    Ask,
}

/// The tool kinds that change files.
const EDITING: [&str; 3] = ["edit", "delete", "move"];

/// A job's tool policy, as stored in `jobs.permissions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Tool kinds never granted.
    pub deny: Vec<String>,
    /// `permissions: "ask"`.
    #[serde(default)]
    pub ask: bool,
    /// The ACP session mode set on each session (`sessionMode`, e.g. codex's `auto`, whose
    /// default mode is read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

impl Policy {
    /// The policy of a profile's tool switches: a profile that may not edit gets neither the
    /// editing kinds nor `execute` (a shell writes as well as anything); one that may edit but
    /// not run commands loses `execute`.
    pub fn of_access(access: Access, answering: Answering) -> Policy {
        let mut deny: Vec<String> = Vec::new();
        if !access.edit {
            deny.extend(EDITING.iter().map(|k| k.to_string()));
        }
        if !access.edit || !access.bash {
            deny.push("execute".into());
        }
        Policy { deny, ask: answering == Answering::Ask, mode: None }
    }

    /// The JSON a job row keeps: only agent workers (server profiles) are asked.
    pub fn json_for(pr: &Profile) -> Option<String> {
        (pr.kind == ProfileKind::Server)
            .then(|| {
                let policy = Policy { mode: pr.session_mode.clone(), ..Policy::of_access(pr.access(), pr.permissions) };
                serde_json::to_string(&policy).ok()
            })
            .flatten()
    }

    /// Read a row's policy; an unreadable one denies every kind that changes anything.
    pub fn parse(json: Option<&str>) -> Policy {
        match json {
            None => Policy::default(),
            Some(s) => {
                serde_json::from_str(s).unwrap_or_else(|_| Policy::of_access(Access::READ_ONLY, Answering::Auto))
            }
        }
    }

    /// May a tool call of this kind run?
    pub fn allows(&self, kind: &str) -> bool {
        !self.deny.iter().any(|d| d == kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_denies_editing_and_execute() {
        let p = Policy::of_access(Access::READ_ONLY, Answering::Auto);
        for k in ["edit", "delete", "move", "execute"] {
            assert!(!p.allows(k), "{k}");
        }
        for k in ["read", "search", "think", "fetch", "other"] {
            assert!(p.allows(k), "{k}");
        }
        let coder = Policy::of_access(Access::FULL, Answering::Auto);
        assert!(coder.deny.is_empty() && !coder.ask);
        let no_shell = Policy::of_access(Access { edit: true, bash: false }, Answering::Ask);
        assert_eq!(no_shell.deny, ["execute"]);
        assert!(no_shell.ask);
        assert_eq!(Policy::parse(Some("garbage")).deny.len(), 4);
    }

    #[test]
    fn agent_presets_ask_and_codex_gets_a_writing_mode() {
        use crate::agent::preset::acp;
        let oc = acp("opencode-acp", Access::FULL).unwrap();
        assert!(oc.env["OPENCODE_PERMISSION"].contains("\"edit\":\"ask\""));
        assert_eq!(acp("codex-acp", Access::FULL).unwrap().session_mode.as_deref(), Some("auto"));
        assert_eq!(acp("codex-acp", Access::READ_ONLY).unwrap().session_mode, None);
        assert!(acp("opencode", Access::FULL).is_none());
    }
}
