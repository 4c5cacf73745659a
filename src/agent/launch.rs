//! Runner resolution and the one builder of a job's row: how a profile runs for a project (its
//! own command or the configured runner, a preset expanded for its access, with its model), and
//! from that and a task the `NewJob` to insert. Task start, workflow steps (resolved when the
//! run starts, stored on the step, built into a job when the step's turn comes) and the
//! dispatcher's configured server workers all go through here.

use std::path::Path;

use crate::agent::permission::Policy;
use crate::agent::profile::{self, Placeholders, Profile, ProfileKind, PromptVia, Resolved, Runner};
use crate::config::Config;
use crate::engine::server::ServerSpec;
use crate::error::{Error, Result};
use crate::job::NewJob;

/// How a profile runs: its own `command`, else the configured `runner` (an argv template or a
/// preset such as `"claude"`, expanded for the profile's access), with its model resolved.
pub fn resolve(cfg: &Config, pr: &Profile) -> Result<Resolved> {
    let configured =
        profile::RunnerSpec::parse(&cfg.runner).map_err(|e| Error::Invalid(format!("config runner: {e}")))?;
    Ok(pr.resolve(&configured, &cfg.models))
}

/// A resolved output spec as stored on a job or step row.
pub fn output_json(r: &Resolved) -> Result<Option<String>> {
    Ok(r.output.as_ref().map(serde_json::to_string).transpose()?)
}

/// How the dispatcher starts a server profile's worker on its own (config `workers`): its
/// command resolved like a job's, without the job's values.
pub fn server_spec(cfg: &Config, project_dir: &Path, pr: &Profile) -> Result<ServerSpec> {
    let r = resolve(cfg, pr)?;
    let cwd = project_dir.display().to_string();
    let ph = Placeholders {
        model: r.model.clone(),
        system_prompt: pr.system_prompt.clone(),
        profile: pr.id.clone(),
        cwd: cwd.clone(),
        ..Default::default()
    };
    Ok(ServerSpec {
        profile: pr.id.clone(),
        argv: r.runner.expand_for(pr.kind, &ph, PromptVia::Arg).0,
        env: r.env,
        model: r.model,
        cwd,
        session: None,
        sessions: pr.job_limit().unwrap_or(1),
    })
}

/// What a job runs, resolved: its runner template and how the prompt reaches it, with what the
/// row keeps of its profile.
#[derive(Debug, Clone)]
pub struct Launch {
    pub profile: String,
    pub kind: ProfileKind,
    pub runner: Runner,
    pub prompt_via: PromptVia,
    pub model: Option<String>,
    pub system_prompt: Option<String>,
    /// JSON object: the environment the worker gets.
    pub env: String,
    /// JSON output spec.
    pub output: Option<String>,
    pub timeout_ms: i64,
    pub profile_limit: Option<i64>,
    /// JSON tool policy of an agent worker (`permission::Policy`).
    pub permissions: Option<String>,
}

impl Launch {
    /// A profile's launch as the config resolves it now, with the job's timeout.
    pub fn of_profile(cfg: &Config, pr: &Profile, timeout_ms: i64) -> Result<Launch> {
        let r = resolve(cfg, pr)?;
        Ok(Launch {
            profile: pr.id.clone(),
            kind: pr.kind,
            output: output_json(&r)?,
            env: serde_json::to_string(&r.env)?,
            runner: r.runner,
            prompt_via: r.prompt_via,
            model: r.model,
            system_prompt: pr.system_prompt.clone(),
            timeout_ms,
            profile_limit: pr.job_limit(),
            permissions: Policy::json_for(pr),
        })
    }

    /// No profile of that name: a row that records the request and fails at once.
    pub fn unknown(profile: &str, timeout_ms: i64) -> Launch {
        Launch {
            profile: profile.to_string(),
            kind: ProfileKind::Oneshot,
            runner: Runner::from_items(Vec::new()),
            prompt_via: PromptVia::Arg,
            model: None,
            system_prompt: None,
            env: "{}".into(),
            output: None,
            timeout_ms,
            profile_limit: None,
            permissions: None,
        }
    }

    /// The row of one job of this launch: the argv expanded with the job's values.
    pub fn job(&self, j: Job<'_>) -> Result<NewJob> {
        let ph = Placeholders {
            prompt: j.task.to_string(),
            model: self.model.clone(),
            system_prompt: self.system_prompt.clone(),
            profile: self.profile.clone(),
            task_id: j.id.to_string(),
            cwd: j.project_dir.to_string(),
            attachments: j.attachments.to_vec(),
        };
        let (argv, prompt_stdin) = self.runner.expand_for(self.kind, &ph, self.prompt_via);
        Ok(NewJob {
            id: j.id.to_string(),
            kind: "worker".into(),
            profile: self.profile.clone(),
            task: j.task.to_string(),
            session: j.session.map(str::to_string),
            requested_by: j.requested_by.to_string(),
            project_dir: j.project_dir.to_string(),
            argv: serde_json::to_string(&argv)?,
            prompt_stdin,
            model: self.model.clone(),
            env: self.env.clone(),
            attachments: serde_json::to_string(j.attachments)?,
            priority: j.priority,
            max_attempts: j.max_attempts,
            run_after_ms: j.run_after_ms,
            timeout_ms: self.timeout_ms,
            profile_limit: self.profile_limit,
            created_ms: j.now,
            dedup_key: j.dedup_key.map(str::to_string),
            workflow_run_id: j.workflow.map(|(run, _)| run.to_string()),
            workflow_step: j.workflow.map(|(_, step)| step),
            output: self.output.clone(),
            worker_kind: self.kind,
            system_prompt: self.system_prompt.clone(),
            permissions: self.permissions.clone(),
            worktree_id: j.worktree.map(str::to_string),
            labels: None,
            after: None,
            after_any: false,
            node: None,
        })
    }
}

/// The job's own values.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    pub id: &'a str,
    pub task: &'a str,
    pub session: Option<&'a str>,
    pub requested_by: &'a str,
    pub project_dir: &'a str,
    /// Absolute paths.
    pub attachments: &'a [String],
    pub priority: i64,
    pub max_attempts: i64,
    pub run_after_ms: i64,
    pub now: i64,
    pub dedup_key: Option<&'a str>,
    /// The workflow run and step index it belongs to.
    pub workflow: Option<(&'a str, i64)>,
    /// The worktree it runs in (`project_dir` is then the worktree's).
    pub worktree: Option<&'a str>,
}
