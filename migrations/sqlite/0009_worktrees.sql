-- baton queue schema, version 9: a git worktree per task (or per workflow run, shared by its
-- steps in order), so that parallel agents never edit one checkout.
--
-- A worktree row is written with its task, before any git command runs ('planned'); the
-- dispatcher creates the directory and its branch before the first attempt's worker starts
-- ('ready'), and every later attempt reuses it. Merging it into the branch the task started from
-- makes it 'merged'; `baton task discard` removes directory and branch ('discarded'). Pruning
-- deletes a row with its task, and only after removing a clean, merged (or unchanged) worktree.
--
--   sqlite3 .baton/baton.db "select id, state, branch, path, base_commit from worktrees"

CREATE TABLE worktree_transitions (
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    PRIMARY KEY (from_state, to_state)
) WITHOUT ROWID;

INSERT INTO worktree_transitions (from_state, to_state) VALUES
    ('(new)',   'planned'),
    ('planned', 'ready'),
    ('planned', 'discarded'),
    ('ready',   'merged'),
    ('ready',   'discarded'),
    ('merged',  'discarded');

CREATE TABLE worktrees (
    -- The task's id, or the workflow run's.
    id           TEXT    PRIMARY KEY NOT NULL,
    state        TEXT    NOT NULL,
    -- The checkout the task was started from (its top level): where merges and applies land.
    repo         TEXT    NOT NULL,
    -- The worktree's top level (derived from the id, never from task text) and the project's
    -- place inside it ('' or a relative path with '/'): the worker runs in path/subdir.
    path         TEXT    NOT NULL UNIQUE,
    subdir       TEXT    NOT NULL DEFAULT '',
    branch       TEXT    NOT NULL UNIQUE CHECK (branch GLOB 'baton/*'),
    -- What it starts from, and the branch it merges back into.
    base_commit  TEXT    NOT NULL CHECK (length(base_commit) >= 40),
    target       TEXT    NOT NULL,
    -- Commit changes a worker leaves uncommitted to the branch when it ends.
    auto_commit  INTEGER NOT NULL CHECK (auto_commit IN (0, 1)),
    -- The setup command (JSON argv) run in a new worktree before the agent; NULL: none.
    setup        TEXT    CHECK (setup IS NULL OR json_valid(setup)),
    created_ms   INTEGER NOT NULL,
    ready_ms     INTEGER,
    -- 'merged': how ('merge', 'squash', 'rebase', or 'apply': staged in repo, not committed), the
    -- target's new commit (NULL for apply).
    merged_ms    INTEGER,
    merged_how   TEXT    CHECK (merged_how IS NULL OR merged_how IN ('merge', 'squash', 'rebase', 'apply')),
    merge_commit TEXT,
    -- The task branch's head when it was merged or applied.
    merged_head  TEXT,
    ended_ms     INTEGER
);

CREATE TRIGGER worktrees_insert_guard BEFORE INSERT ON worktrees
WHEN NOT EXISTS (SELECT 1 FROM worktree_transitions WHERE from_state = '(new)' AND to_state = NEW.state)
BEGIN
    SELECT RAISE(ABORT, 'baton: a worktree starts planned');
END;

CREATE TRIGGER worktrees_state_guard BEFORE UPDATE OF state ON worktrees
WHEN NEW.state IS NOT OLD.state
 AND NOT EXISTS (SELECT 1 FROM worktree_transitions WHERE from_state = OLD.state AND to_state = NEW.state)
BEGIN
    SELECT RAISE(ABORT, 'baton: illegal worktree transition');
END;

CREATE TRIGGER worktrees_id_guard BEFORE UPDATE OF id, repo, path, subdir, branch, base_commit, target, auto_commit, setup, created_ms ON worktrees
WHEN (NEW.id, NEW.repo, NEW.path, NEW.subdir, NEW.branch, NEW.base_commit, NEW.target, NEW.auto_commit,
      NEW.setup, NEW.created_ms)
     IS NOT
     (OLD.id, OLD.repo, OLD.path, OLD.subdir, OLD.branch, OLD.base_commit, OLD.target, OLD.auto_commit,
      OLD.setup, OLD.created_ms)
BEGIN
    SELECT RAISE(ABORT, 'baton: a worktree''s id, path, branch, base and target never change');
END;

-- A worktree that a queued or running job will use stays (pruning keeps unmerged work too).
CREATE TRIGGER worktrees_delete_guard BEFORE DELETE ON worktrees
WHEN EXISTS (SELECT 1 FROM jobs WHERE worktree_id = OLD.id AND state IN ('queued', 'running'))
BEGIN
    SELECT RAISE(ABORT, 'baton: a worktree of an unfinished task cannot be deleted');
END;

CREATE TRIGGER worktree_transitions_insert_guard BEFORE INSERT ON worktree_transitions
BEGIN
    SELECT RAISE(ABORT, 'baton: the transitions tables change only through migrations');
END;
CREATE TRIGGER worktree_transitions_update_guard BEFORE UPDATE ON worktree_transitions
BEGIN
    SELECT RAISE(ABORT, 'baton: the transitions tables change only through migrations');
END;
CREATE TRIGGER worktree_transitions_delete_guard BEFORE DELETE ON worktree_transitions
BEGIN
    SELECT RAISE(ABORT, 'baton: the transitions tables change only through migrations');
END;

-- A job and a workflow run name their worktree; a run's step jobs name the run's.
ALTER TABLE jobs ADD COLUMN worktree_id TEXT REFERENCES worktrees (id);
ALTER TABLE workflow_runs ADD COLUMN worktree_id TEXT REFERENCES worktrees (id);
CREATE INDEX jobs_worktree ON jobs (worktree_id) WHERE worktree_id IS NOT NULL;

DROP TRIGGER jobs_link_guard;
CREATE TRIGGER jobs_link_guard BEFORE UPDATE OF profile, workflow_run_id, workflow_step, worktree_id ON jobs
WHEN NEW.profile IS NOT OLD.profile OR NEW.workflow_run_id IS NOT OLD.workflow_run_id
  OR NEW.workflow_step IS NOT OLD.workflow_step OR NEW.worktree_id IS NOT OLD.worktree_id
BEGIN
    SELECT RAISE(ABORT, 'baton: a job''s worker profile, workflow run, step and worktree never change');
END;

DROP TRIGGER workflow_runs_id_guard;
CREATE TRIGGER workflow_runs_id_guard BEFORE UPDATE OF id, seq, workflow_id, worktree_id ON workflow_runs
WHEN NEW.id IS NOT OLD.id OR NEW.seq IS NOT OLD.seq OR NEW.workflow_id IS NOT OLD.workflow_id
  OR NEW.worktree_id IS NOT OLD.worktree_id
BEGIN
    SELECT RAISE(ABORT, 'baton: a workflow run''s id, workflow and worktree never change');
END;

PRAGMA user_version = 9;
