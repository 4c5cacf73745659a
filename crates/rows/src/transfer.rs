//! Moving a queue between stores (`baton export`, `baton import`): its tables, in the order an
//! import restores them (each row's references before it), and where a page of rows ends.
//! A row travels as a JSON object of its columns, as the database itself renders it.

/// A table whose rows move with a queue. Workers and nodes stay behind: they are processes of
/// the machine that ran them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Worktrees,
    WorkflowRuns,
    Jobs,
    JobEvents,
    WorkflowSteps,
    FinishHooks,
    Pauses,
    Hooks,
}

impl Table {
    /// Every table, in restore order.
    pub const ALL: [Table; 8] = [
        Table::Worktrees,
        Table::WorkflowRuns,
        Table::Jobs,
        Table::JobEvents,
        Table::WorkflowSteps,
        Table::FinishHooks,
        Table::Pauses,
        Table::Hooks,
    ];

    /// The table's name in both schemas.
    pub fn name(self) -> &'static str {
        match self {
            Table::Worktrees => "worktrees",
            Table::WorkflowRuns => "workflow_runs",
            Table::Jobs => "jobs",
            Table::JobEvents => "job_events",
            Table::WorkflowSteps => "workflow_steps",
            Table::FinishHooks => "finish_hooks",
            Table::Pauses => "pauses",
            Table::Hooks => "hooks",
        }
    }

    pub fn parse(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// A row's place in its table's export order: its key, a text part and a number part (a job's
/// seq; an event's job id and seq; a worktree's id).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Key {
    pub text: String,
    pub num: i64,
}

/// A row as exported: its key and its columns as a JSON object.
#[derive(Debug, Clone)]
pub struct Exported {
    pub key: Key,
    pub row: String,
}

/// What an import restored, recorded with it in `imports`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    pub jobs: i64,
    pub runs: i64,
    pub events: i64,
}
