//! Every state word of the schema, one enum each (and the two words an answer gives instead of
//! a state). The words are the SQL text (lowercase); the
//! legal changes between them live in the `*_transitions` tables, enforced by triggers. Rows
//! decode them with sqlx (an unknown word in the file is a decode error, never a panic), JSON
//! gets the same words.

macro_rules! state_words {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, sqlx::Type)]
        // Stored as text on PostgreSQL too (not as an enum type of its own).
        #[sqlx(type_name = "text")]
        pub enum $name {
            $(
                #[serde(rename = $word)]
                #[sqlx(rename = $word)]
                $variant
            ),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word as stored and as shown.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }

            pub fn parse(word: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|s| s.as_str() == word)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

state_words! {
    /// A job's state (SPEC 3).
    JobState { Waiting => "waiting", Queued => "queued", Running => "running", Succeeded => "succeeded", Failed => "failed", Canceled => "canceled" }
}

impl JobState {
    /// Terminal states never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Canceled)
    }
}

state_words! {
    /// A workflow run's state: a run starts running and ends like a job.
    RunState { Running => "running", Succeeded => "succeeded", Failed => "failed", Canceled => "canceled" }
}

impl RunState {
    pub fn is_terminal(self) -> bool {
        self != RunState::Running
    }
}

/// A run's record shows its state as a job's (the run's words are a subset).
impl From<RunState> for JobState {
    fn from(s: RunState) -> JobState {
        match s {
            RunState::Running => JobState::Running,
            RunState::Succeeded => JobState::Succeeded,
            RunState::Failed => JobState::Failed,
            RunState::Canceled => JobState::Canceled,
        }
    }
}

state_words! {
    /// A workflow step's state.
    StepState {
        Pending => "pending", Running => "running", Succeeded => "succeeded", Failed => "failed",
        Canceled => "canceled", Skipped => "skipped",
    }
}

state_words! {
    /// A worker process's state. Oneshot workers go busy → stopped (or error); server workers
    /// starting → ready ⇄ busy → stopped (or error).
    WorkerState { Starting => "starting", Ready => "ready", Busy => "busy", Error => "error", Stopped => "stopped" }
}

state_words! {
    /// Which kind of worker runs a job: one process per attempt, or a long-lived server.
    WorkerKind { Oneshot => "oneshot", Server => "server" }
}

state_words! {
    /// What an activity event of a job tells (the `job_events.kind` words).
    EventKind {
        Message => "message", Thought => "thought", Tool => "tool", ToolUpdate => "tool_update", Plan => "plan",
        Usage => "usage", Permission => "permission", Other => "other",
    }
}

state_words! {
    /// A task's git worktree: planned with the task, ready once created, merged back (or
    /// applied), discarded once its directory and branch are gone.
    WorktreeState { Planned => "planned", Ready => "ready", Merged => "merged", Discarded => "discarded" }
}

state_words! {
    /// Where a task's worker runs: in the requester's checkout, or in a worktree of its own.
    Isolation { None => "none", Worktree => "worktree" }
}

state_words! {
    /// Why an id has no record: no such job or run, or one of another session.
    Absent { Unknown => "unknown", Forbidden => "forbidden" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_match_serde() {
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), serde_json::json!(s.as_str()));
        }
        for s in StepState::ALL {
            assert_eq!(StepState::parse(&s.to_string()), Some(*s));
        }
        // Serde and the schema use the same words, multi-word ones included.
        for s in EventKind::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), serde_json::json!(s.as_str()));
        }
        assert_eq!(serde_json::to_value(EventKind::ToolUpdate).unwrap(), "tool_update");
        assert_eq!(JobState::parse("bogus"), None);
        assert!(JobState::Canceled.is_terminal() && !JobState::Queued.is_terminal());
        assert!(RunState::Failed.is_terminal() && !RunState::Running.is_terminal());
        assert_eq!(WorkerKind::parse("server"), Some(WorkerKind::Server));
    }
}
