//! A git worktree per task: planned when the task starts (checks on the requester's checkout,
//! a derived path and branch), created by the dispatcher before the first attempt, its
//! leftovers committed when a worker ends, and reviewed afterwards: diff, merge back into the
//! branch it started from, apply (staged), discard. git always runs with an argv, never a
//! shell line, and with the caller's `GIT_DIR`-style variables removed.

use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::state::WorktreeState;
pub use baton_rows::worktrees::{NewWorktree, WorktreeRow, workdir};

/// What a task's record shows of its worktree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Info {
    pub path: String,
    pub branch: String,
    pub base: String,
    pub target: String,
    pub state: WorktreeState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged_how: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merge_commit: Option<String>,
}

impl From<&WorktreeRow> for Info {
    fn from(r: &WorktreeRow) -> Info {
        Info {
            path: r.workdir().display().to_string(),
            branch: r.branch.clone(),
            base: r.base_commit.clone(),
            target: r.target.clone(),
            state: r.state,
            merged_how: r.merged_how.clone(),
            merge_commit: r.merge_commit.clone(),
        }
    }
}

/// A planned worktree and what the requester should hear about their checkout.
#[derive(Debug, Clone)]
pub struct Plan {
    pub new: NewWorktree,
    pub warning: Option<String>,
}

impl Plan {
    pub fn info(&self) -> Info {
        let n = &self.new;
        Info {
            path: n.workdir().display().to_string(),
            branch: n.branch.clone(),
            base: n.base_commit.clone(),
            target: n.target.clone(),
            state: WorktreeState::Planned,
            merged_how: None,
            merge_commit: None,
        }
    }
}

/// What a task asks for.
pub struct Request<'a> {
    pub id: &'a str,
    /// The requester's project directory.
    pub project_dir: &'a Path,
    /// Where worktrees go (`worktrees.dir`, resolved against the project, or `.baton/worktrees`).
    pub root: PathBuf,
    /// `--base REF`; `None`: the requester's `HEAD`.
    pub base: Option<&'a str>,
    pub auto_commit: bool,
    pub setup: Option<&'a [String]>,
    pub now: i64,
}

// --- running git -----------------------------------------------------------------------------

/// Variables that would point git at another repository, index or work tree than the one
/// named with `-C` (a worker, a hook or a test may have them set).
const GIT_ENV: [&str; 6] =
    ["GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY", "GIT_NAMESPACE"];

/// The finished git process.
struct Ran {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

impl Ran {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).trim_end().to_string()
    }
}

async fn run_git(dir: &Path, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Result<Ran> {
    use tokio::io::AsyncWriteExt;
    let mut c = tokio::process::Command::new("git");
    c.arg("-C").arg(dir).args(args);
    for v in GIT_ENV {
        c.env_remove(v);
    }
    c.env("LC_ALL", "C").env("GIT_TERMINAL_PROMPT", "0").env("GIT_EDITOR", "true");
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = c.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::NotFound { program: "git".into(), path: std::env::var("PATH").unwrap_or_default() }
        }
        _ => Error::io("running git", e),
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).await.map_err(|e| Error::io("writing to git", e))?;
    }
    let out = child.wait_with_output().await.map_err(|e| Error::io("running git", e))?;
    Ok(Ran { code: out.status.code(), stdout: out.stdout, stderr: String::from_utf8_lossy(&out.stderr).into() })
}

/// Run git and require success; the error says what baton was doing and what git said.
async fn git(dir: &Path, args: &[&str], doing: &str) -> Result<String> {
    let ran = run_git(dir, args, &[], None).await?;
    check(ran, doing).map(|r| r.text())
}

fn check(ran: Ran, doing: &str) -> Result<Ran> {
    if ran.ok() { Ok(ran) } else { Err(failure(&ran, doing)) }
}

/// A failed git run as an error: what baton was doing and the end of what git said.
fn failure(ran: &Ran, doing: &str) -> Error {
    let said = ran.stderr.trim();
    let detail = match (said.is_empty(), ran.code) {
        (false, _) => said.lines().rev().take(6).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n"),
        (true, Some(c)) => format!("exit code {c}"),
        (true, None) => "killed by a signal".into(),
    };
    Error::Git { doing: doing.to_string(), detail }
}

/// Whether git answers yes (exit 0) or no (exit 1); anything else is an error.
async fn git_yes(dir: &Path, args: &[&str], doing: &str) -> Result<bool> {
    let ran = run_git(dir, args, &[], None).await?;
    match ran.code {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => Err(failure(&ran, doing)),
    }
}

/// `-c` settings giving commits an author when the user has configured none (a fresh machine,
/// a CI box): baton's own name, so the commit is still made.
async fn identity(dir: &Path) -> Vec<&'static str> {
    let known = run_git(dir, &["var", "GIT_COMMITTER_IDENT"], &[], None).await.is_ok_and(|r| r.ok())
        && run_git(dir, &["var", "GIT_AUTHOR_IDENT"], &[], None).await.is_ok_and(|r| r.ok());
    if known { Vec::new() } else { vec!["-c", "user.name=baton", "-c", "user.email=baton@localhost"] }
}

async fn resolve_commit(dir: &Path, rev: &str) -> Result<Option<String>> {
    let spec = format!("{rev}^{{commit}}");
    let ran = run_git(dir, &["rev-parse", "-q", "--verify", "--end-of-options", &spec], &[], None).await?;
    Ok(ran.ok().then(|| ran.text()))
}

async fn branch_exists(dir: &Path, branch: &str) -> Result<bool> {
    git_yes(dir, &["show-ref", "--verify", "-q", &format!("refs/heads/{branch}")], "looking up a branch").await
}

/// Paths `git status` reports in `dir` (modified, staged, untracked; ignored files excluded).
async fn changed_files(dir: &Path) -> Result<Vec<String>> {
    let ran = check(
        run_git(dir, &["status", "--porcelain", "-z", "--untracked-files=all"], &[], None).await?,
        "reading the worktree's status",
    )?;
    let mut files = Vec::new();
    let mut parts = ran.stdout.split(|b| *b == 0).filter(|p| !p.is_empty());
    while let Some(entry) = parts.next() {
        let entry = String::from_utf8_lossy(entry);
        if let Some(path) = entry.get(3..).filter(|p| !p.is_empty()) {
            files.push(path.to_string());
        }
        // A rename's entry is followed by its old name.
        if entry.starts_with('R') || entry.starts_with('C') {
            parts.next();
        }
    }
    Ok(files)
}

// --- planning at start -------------------------------------------------------------------------

/// Check the requester's checkout and derive the worktree: its path (from the id only), its
/// branch, its base commit and the branch it merges back into. Writes nothing but the root
/// directory of worktrees.
pub async fn plan(r: Request<'_>) -> Result<Plan> {
    let project = r.project_dir;
    let shown = project.display();
    let ran = run_git(project, &["rev-parse", "--is-bare-repository"], &[], None).await?;
    if !ran.ok() {
        if ran.stderr.contains("not a git repository") {
            return Err(Error::Invalid(format!(
                "isolation \"worktree\" needs a git repository: {shown} is not inside one (git init, commit, and \
                 start the task again)"
            )));
        }
        return Err(failure(&ran, "reading the repository"));
    }
    if ran.text() == "true" {
        return Err(Error::Invalid(format!(
            "isolation \"worktree\" needs a checkout: {shown} is a bare repository, with no working tree to merge \
             the task's work back into"
        )));
    }
    let ran = run_git(project, &["rev-parse", "--show-toplevel", "--show-prefix"], &[], None).await?;
    let text = ran.text();
    let mut lines = text.lines();
    let (true, Some(top), prefix) = (ran.ok(), lines.next(), lines.next().unwrap_or("")) else {
        return Err(Error::Invalid(format!(
            "isolation \"worktree\" needs a checkout: {shown} is inside a git directory, not a working tree"
        )));
    };
    let repo = PathBuf::from(top);
    let subdir = prefix.trim_end_matches('/').to_string();
    let Some(head) = resolve_commit(&repo, "HEAD").await? else {
        return Err(Error::Invalid(format!(
            "The repository {} has no commits yet: a worktree starts from a commit. Commit something first.",
            repo.display()
        )));
    };
    let current = run_git(&repo, &["symbolic-ref", "-q", "--short", "HEAD"], &[], None).await?;
    let current = current.ok().then(|| current.text());
    let (base_commit, target) = match r.base {
        Some(b) if b.is_empty() || b.starts_with('-') || b.contains(['\0', '\n']) => {
            return Err(Error::Invalid(format!("--base \"{b}\" is not a git revision")));
        }
        Some(b) => {
            let commit = resolve_commit(&repo, b)
                .await?
                .ok_or_else(|| Error::Invalid(format!("--base \"{b}\" names no commit in {}", repo.display())))?;
            let target = if branch_exists(&repo, b).await? { Some(b.to_string()) } else { current.clone() };
            (commit, target)
        }
        None => (head.clone(), current.clone()),
    };
    let Some(target) = target else {
        return Err(Error::Invalid(format!(
            "HEAD of {} is detached: a task's worktree merges back into the branch it started from. Check out a \
             branch, or give --base BRANCH.",
            repo.display()
        )));
    };
    let dirty = changed_files(&repo).await?;
    let warning = (!dirty.is_empty() && base_commit == head).then(|| {
        format!(
            "{} has uncommitted changes ({}): the worktree starts from {} without them",
            repo.display(),
            list_files(&dirty),
            &base_commit[..12.min(base_commit.len())]
        )
    });
    let root = &r.root;
    std::fs::create_dir_all(root).map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
    let root = std::fs::canonicalize(root).map_err(|e| Error::io(format!("resolving {}", root.display()), e))?;
    if root.starts_with(&repo) {
        let rel = root.strip_prefix(&repo).unwrap_or(&root).display().to_string();
        let tracked =
            rel.is_empty() || !git_yes(&repo, &["check-ignore", "-q", "--", &rel], "checking .gitignore").await?;
        if tracked {
            return Err(Error::Invalid(format!(
                "Worktrees would go to {}, inside the tracked tree of {}: git would see every worktree as untracked \
                 files. Set worktrees.dir to a directory outside it, or ignore that directory in .gitignore.",
                root.display(),
                repo.display()
            )));
        }
    }
    let path = root.join(r.id);
    let short = format!("baton/{}", &r.id[..8.min(r.id.len())]);
    let branch = if branch_exists(&repo, &short).await? { format!("baton/{}", r.id) } else { short };
    check_branch_name(&branch)?;
    Ok(Plan {
        new: NewWorktree {
            id: r.id.to_string(),
            repo: repo.display().to_string(),
            path: path.display().to_string(),
            subdir,
            branch,
            base_commit,
            target,
            auto_commit: r.auto_commit,
            setup: r.setup.filter(|s| !s.is_empty()).map(serde_json::to_string).transpose()?,
            created_ms: r.now,
        },
        warning,
    })
}

/// A commit subject from a task's text: its first non-empty line, at most 72 chars.
pub fn subject(task: &str) -> String {
    let line = task.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("baton task");
    let (cut, more) = crate::job::cap_chars(line, 72);
    if more { format!("{}...", cut.trim_end()) } else { cut.to_string() }
}

/// Branch names are derived from ids; this keeps them to what a ref may hold, whatever an id is.
fn check_branch_name(b: &str) -> Result<()> {
    let ok = b.starts_with("baton/")
        && b.len() > 6
        && b[6..].chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !b.ends_with(".lock");
    if ok { Ok(()) } else { Err(Error::Invalid(format!("\"{b}\" cannot be a task branch name"))) }
}

fn list_files(files: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = files.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if files.len() > SHOWN {
        s.push_str(&format!(" and {} more", files.len() - SHOWN));
    }
    s
}

// --- the dispatcher's side ---------------------------------------------------------------------

/// `git worktree add` takes locks in the common git directory: one at a time per dispatcher.
static ADDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Make the worktree ready for an attempt: create it (or find it again after a crash), copy
/// the `.worktreeinclude` files and run the setup command in a new one. `fresh`: the row is
/// still `planned` (setup has not succeeded yet).
pub async fn prepare(row: &WorktreeRow, setup_timeout: Duration) -> Result<()> {
    let repo = Path::new(&row.repo);
    let path = Path::new(&row.path);
    let fresh = row.state == WorktreeState::Planned;
    if !fresh && path.join(".git").exists() {
        return Ok(());
    }
    if !fresh {
        return Err(Error::Invalid(format!(
            "The worktree {} of this task is gone ({}): nothing was run. Its branch {} still holds what was committed.",
            row.path, row.state, row.branch
        )));
    }
    if !repo.is_dir() {
        return Err(Error::Invalid(format!("The repository {} the task started from is gone", row.repo)));
    }
    {
        let _one = ADDING.lock().await;
        if !path.join(".git").exists() {
            git(repo, &["worktree", "prune"], "pruning stale worktrees").await?;
            let p = row.path.as_str();
            if branch_exists(repo, &row.branch).await? {
                git(repo, &["worktree", "add", "--quiet", p, &row.branch], "creating the worktree").await?;
            } else {
                let args = ["worktree", "add", "--quiet", "-b", &row.branch, p, &row.base_commit];
                git(repo, &args, "creating the worktree").await?;
            }
        }
    }
    copy_included(repo, path).await?;
    if let Some(argv) = row.setup_argv() {
        run_setup(&argv, &row.workdir(), setup_timeout).await?;
    }
    Ok(())
}

/// Copy the files `.worktreeinclude` names (gitignore syntax) that git ignores in the main
/// checkout (`.env`, local config): a new worktree lacks them.
async fn copy_included(repo: &Path, wt: &Path) -> Result<()> {
    if !repo.join(".worktreeinclude").is_file() {
        return Ok(());
    }
    let list = |args: &'static [&'static str]| async move {
        let ran = check(run_git(repo, args, &[], None).await?, "reading .worktreeinclude")?;
        Ok::<_, Error>(
            ran.stdout
                .split(|b| *b == 0)
                .filter(|p| !p.is_empty())
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect::<std::collections::HashSet<String>>(),
        )
    };
    let named = list(&["ls-files", "-z", "--others", "--ignored", "--exclude-from=.worktreeinclude"]).await?;
    let ignored = list(&["ls-files", "-z", "--others", "--ignored", "--exclude-standard"]).await?;
    let (repo, wt) = (repo.to_path_buf(), wt.to_path_buf());
    tokio::task::spawn_blocking(move || {
        for rel in named.intersection(&ignored) {
            let p = Path::new(rel);
            // Derived from git's listing, but never outside the two trees whatever it says; and
            // never the worktrees themselves (they live in an ignored directory too).
            if !p.components().all(|c| matches!(c, Component::Normal(_))) || wt.starts_with(repo.join(p)) {
                continue;
            }
            let (from, to) = (repo.join(p), wt.join(p));
            if from.starts_with(wt.parent().unwrap_or(&wt)) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&from).map_err(|e| Error::io(format!("reading {rel}"), e))?;
            if let Some(dir) = to.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            }
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&from).map_err(|e| Error::io(format!("reading {rel}"), e))?;
                let _ = std::os::unix::fs::symlink(target, &to);
            } else if meta.is_file() {
                std::fs::copy(&from, &to).map_err(|e| Error::io(format!("copying {rel} into the worktree"), e))?;
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| Error::io("copying .worktreeinclude files", std::io::Error::other(e)))?
}

/// How much of a failed setup command's output its task's error quotes (the end).
const SETUP_TAIL_CHARS: usize = 2000;

/// Run the setup argv in the new worktree; its failure (or its time running out) is the task's,
/// with the end of what it printed.
async fn run_setup(argv: &[String], dir: &Path, timeout: Duration) -> Result<()> {
    let shown = argv.join(" ");
    let Some((program, args)) = argv.split_first() else { return Ok(()) };
    let mut c = tokio::process::Command::new(program);
    c.args(args)
        .current_dir(dir)
        .env("PWD", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for v in GIT_ENV {
        c.env_remove(v);
    }
    let child = c.spawn().map_err(|e| Error::Worktree(format!("Setup command `{shown}` could not start: {e}")))?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => {
            return Err(Error::Worktree(format!("Setup command `{shown}` timed out after {} ms", timeout.as_millis())));
        }
        Ok(r) => r.map_err(|e| Error::io("running the setup command", e))?,
    };
    if out.status.success() {
        return Ok(());
    }
    let mut said = String::from_utf8_lossy(&out.stdout).into_owned();
    said.push_str(&String::from_utf8_lossy(&out.stderr));
    let skip = said.chars().count().saturating_sub(SETUP_TAIL_CHARS);
    let tail: String = said.chars().skip(skip).collect();
    let how = match out.status.code() {
        Some(c) => format!("exit code {c}"),
        None => "a signal".into(),
    };
    Err(Error::Worktree(format!("Setup command `{shown}` failed in the worktree ({how}):\n{}", tail.trim_end())))
}

/// Commit what a worker left uncommitted in the worktree to its branch, so nothing lives only
/// in a directory. Returns the new commit, or `None` when there was nothing to commit.
pub async fn commit_leftovers(row: &WorktreeRow, message: &str) -> Result<Option<String>> {
    let path = Path::new(&row.path);
    if !path.join(".git").exists() || changed_files(path).await?.is_empty() {
        return Ok(None);
    }
    git(path, &["add", "-A"], "staging the worker's changes").await?;
    if git_yes(path, &["diff", "--cached", "--quiet"], "reading the staged changes").await? {
        return Ok(None);
    }
    let mut args = identity(path).await;
    args.extend(["commit", "-q", "--no-verify", "-F", "-"]);
    check(run_git(path, &args, &[], Some(message)).await?, "committing the worker's changes")?;
    Ok(Some(git(path, &["rev-parse", "HEAD"], "reading the new commit").await?))
}

// --- review --------------------------------------------------------------------------------------

/// What a worktree holds that its target branch lacks.
#[derive(Debug, Clone, Default)]
pub struct Holdings {
    /// The directory is there.
    pub exists: bool,
    /// Uncommitted or untracked files in it.
    pub dirty: Vec<String>,
    /// Commits on the task branch that the target branch lacks.
    pub ahead: u64,
    /// The task branch's head, if the branch exists.
    pub head: Option<String>,
}

impl Holdings {
    /// Whether removing directory and branch would lose nothing: no uncommitted files, and every
    /// commit on the target or merged (squashed or applied) as it stands.
    pub fn removable(&self, row: &WorktreeRow) -> bool {
        let merged_as_is = row.state == WorktreeState::Merged && self.head.is_some() && self.head == row.merged_head;
        self.dirty.is_empty() && (self.ahead == 0 || merged_as_is)
    }

    /// In words, for refusals.
    pub fn describe(&self, row: &WorktreeRow) -> String {
        let mut parts = Vec::new();
        if !self.dirty.is_empty() {
            parts.push(format!("uncommitted changes in {} ({})", row.path, list_files(&self.dirty)));
        }
        if self.ahead > 0 {
            let s = if self.ahead == 1 { "" } else { "s" };
            parts.push(format!("{} commit{s} on {} that {} lacks", self.ahead, row.branch, row.target));
        }
        parts.join(" and ")
    }
}

pub async fn holdings(row: &WorktreeRow) -> Result<Holdings> {
    let (repo, path) = (Path::new(&row.repo), Path::new(&row.path));
    let exists = path.join(".git").exists();
    let dirty = if exists { changed_files(path).await? } else { Vec::new() };
    let head = resolve_commit(repo, &format!("refs/heads/{}", row.branch)).await?;
    let ahead = match &head {
        None => 0,
        Some(h) => {
            let target = format!("refs/heads/{}", row.target);
            let range = if resolve_commit(repo, &target).await?.is_some() {
                vec![h.as_str(), "--not", &target]
            } else {
                vec![h.as_str(), "--not", row.base_commit.as_str()]
            };
            let mut args = vec!["rev-list", "--count"];
            args.extend(range);
            git(repo, &args, "counting the task's commits").await?.trim().parse().unwrap_or(0)
        }
    };
    Ok(Holdings { exists, dirty, ahead, head })
}

/// The task's changes against its base: committed and, while the directory is there,
/// uncommitted ones, with untracked files named at the end.
pub async fn diff(row: &WorktreeRow, stat: bool) -> Result<String> {
    let (repo, path) = (Path::new(&row.repo), Path::new(&row.path));
    let mut args = vec!["diff", "--no-color", "--no-ext-diff"];
    if stat {
        args.push("--stat");
    }
    if path.join(".git").exists() {
        args.push(&row.base_commit);
        let mut out = git(path, &args, "diffing the worktree").await?;
        let untracked = git(path, &["ls-files", "--others", "--exclude-standard"], "listing untracked files").await?;
        if !untracked.is_empty() {
            out.push_str(&format!("\n# untracked (not in the diff):\n{untracked}"));
        }
        Ok(out)
    } else {
        let range = format!("{}..refs/heads/{}", row.base_commit, row.branch);
        args.push(&range);
        git(repo, &args, "diffing the task branch").await
    }
}

/// How a task's branch goes back into its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum How {
    /// A merge commit with both parents.
    Merge,
    /// One commit with the branch's changes.
    Squash,
    /// The branch's commits replayed onto the target.
    Rebase,
}

impl How {
    pub fn as_str(self) -> &'static str {
        match self {
            How::Merge => "merge",
            How::Squash => "squash",
            How::Rebase => "rebase",
        }
    }
}

/// A merge that landed.
#[derive(Debug, Clone)]
pub struct Landed {
    /// The target's new head.
    pub commit: String,
    /// The task branch's head that went in.
    pub head: String,
}

/// Files that conflict: nothing was changed.
fn conflict(row: &WorktreeRow, files: &[String], at: Option<&str>) -> Error {
    let at = at.map(|s| format!(" (replaying \"{s}\")")).unwrap_or_default();
    Error::Invalid(format!(
        "Merge conflict: {} and {} both change {}{at}. Nothing was changed: the worktree and {} are as they were. \
         Resolve it in the worktree ({}), for instance by merging {} there, and merge again.",
        row.branch,
        row.target,
        files.join(", "),
        row.target,
        row.path,
        row.target
    ))
}

/// `git merge-tree --write-tree` of `ours` and `theirs` (optionally from an explicit base):
/// the merged tree, or the conflicting files.
async fn merge_tree(repo: &Path, ours: &str, theirs: &str, base: Option<&str>) -> Result<Result<String, Vec<String>>> {
    let mb = base.map(|b| format!("--merge-base={b}"));
    let mut args = vec!["merge-tree", "--write-tree", "-z", "--name-only", "--no-messages"];
    if let Some(mb) = &mb {
        args.push(mb);
    }
    args.extend([ours, theirs]);
    let ran = run_git(repo, &args, &[], None).await?;
    let mut parts =
        ran.stdout.split(|b| *b == 0).filter(|p| !p.is_empty()).map(|p| String::from_utf8_lossy(p).into_owned());
    match ran.code {
        Some(0) => Ok(Ok(parts.next().unwrap_or_default())),
        Some(1) => {
            let _tree = parts.next();
            let mut files: Vec<String> = parts.collect();
            files.dedup();
            Ok(Err(files))
        }
        _ => Err(failure(&ran, "merging")),
    }
}

async fn commit_tree(repo: &Path, tree: &str, parents: &[&str], message: &str, env: &[(&str, &str)]) -> Result<String> {
    let mut args = identity(repo).await;
    args.extend(["commit-tree", tree]);
    for p in parents {
        args.extend(["-p", p]);
    }
    args.extend(["-F", "-"]);
    Ok(check(run_git(repo, &args, env, Some(message)).await?, "writing the merge commit")?.text())
}

/// Merge the task branch into its target. The caller holds the merge lock. A conflict changes
/// nothing; the target moves only by fast-forward to the new commit (in the worktree that has
/// it checked out, or as a ref update guarded by its old value).
pub async fn merge(row: &WorktreeRow, how: How, subject: &str) -> Result<Landed> {
    let repo = Path::new(&row.repo);
    let held = holdings(row).await?;
    if !held.dirty.is_empty() {
        return Err(Error::Invalid(format!(
            "The worktree has uncommitted changes ({}): commit them there (or discard the task), then merge.",
            list_files(&held.dirty)
        )));
    }
    let Some(head) = held.head.clone() else {
        return Err(Error::Invalid(format!("The task branch {} is gone: nothing to merge", row.branch)));
    };
    let target_ref = format!("refs/heads/{}", row.target);
    let Some(target) = resolve_commit(repo, &target_ref).await? else {
        return Err(Error::Invalid(format!(
            "The branch {} the task started from is gone from {}: nothing was changed",
            row.target, row.repo
        )));
    };
    if held.ahead == 0 {
        return Err(Error::Invalid(format!(
            "Nothing to merge: {} has no commits that {} lacks",
            row.branch, row.target
        )));
    }
    let short = &row.id[..8.min(row.id.len())];
    let new = match how {
        How::Merge | How::Squash => {
            let tree = merge_tree(repo, &target, &head, None).await?.map_err(|f| conflict(row, &f, None))?;
            if how == How::Merge {
                let msg = format!("Merge {} (baton task {short}): {subject}\n", row.branch);
                commit_tree(repo, &tree, &[&target, &head], &msg, &[]).await?
            } else {
                let msg = format!(
                    "{subject}\n\nSquashed from {} commits of {} (baton task {}).\n",
                    held.ahead, row.branch, row.id
                );
                commit_tree(repo, &tree, &[&target], &msg, &[]).await?
            }
        }
        How::Rebase => {
            let list = git(
                repo,
                &["rev-list", "--reverse", "--topo-order", "--parents", &head, "--not", &target],
                "listing the task's commits",
            )
            .await?;
            let mut onto = target.clone();
            for line in list.lines() {
                let ids: Vec<&str> = line.split(' ').collect();
                if ids.len() != 2 {
                    return Err(Error::Invalid(format!(
                        "{} holds a merge commit ({}): rebase replays plain commits only; use --merge or --squash",
                        row.branch,
                        &ids[0][..12.min(ids[0].len())]
                    )));
                }
                let (c, parent) = (ids[0], ids[1]);
                let meta =
                    git(repo, &["log", "-1", "--format=%an%x00%ae%x00%ad%x00%B", "--date=raw", c], "reading a commit")
                        .await?;
                let mut f = meta.splitn(4, '\0');
                let (name, email, date, msg) =
                    (f.next().unwrap_or(""), f.next().unwrap_or(""), f.next().unwrap_or(""), f.next().unwrap_or(""));
                let tree = merge_tree(repo, &onto, c, Some(parent))
                    .await?
                    .map_err(|files| conflict(row, &files, msg.lines().next()))?;
                let env = [("GIT_AUTHOR_NAME", name), ("GIT_AUTHOR_EMAIL", email), ("GIT_AUTHOR_DATE", date)];
                onto = commit_tree(repo, &tree, &[&onto], &format!("{}\n", msg.trim_end()), &env).await?;
            }
            onto
        }
    };
    land(repo, &row.target, &target, &new).await?;
    Ok(Landed { commit: new, head })
}

/// Move `branch` from `old` to `new` (a descendant): in the worktree that has it checked out by
/// a fast-forward merge, which keeps unrelated local changes and refuses to overwrite any; else
/// by a ref update that fails if the branch moved meanwhile.
async fn land(repo: &Path, branch: &str, old: &str, new: &str) -> Result<()> {
    let list = git(repo, &["worktree", "list", "--porcelain"], "listing worktrees").await?;
    let full = format!("branch refs/heads/{branch}");
    let mut checked_out = None;
    for entry in list.split("\n\n") {
        if entry.lines().any(|l| l == full) {
            checked_out = entry.lines().find_map(|l| l.strip_prefix("worktree ")).map(PathBuf::from);
        }
    }
    match checked_out {
        Some(dir) => {
            let ran = run_git(&dir, &["merge", "--ff-only", "-q", new], &[], None).await?;
            if !ran.ok() {
                return Err(Error::Invalid(format!(
                    "{branch} is checked out in {} and git would not move it there: {}. Nothing was merged; \
                     commit or stash the changes there, and merge again.",
                    dir.display(),
                    ran.stderr.trim().lines().next().unwrap_or("it refused")
                )));
            }
            Ok(())
        }
        None => {
            let r = format!("refs/heads/{branch}");
            git(repo, &["update-ref", "-m", "baton: merge a task", &r, new, old], "moving the target branch").await?;
            Ok(())
        }
    }
}

/// Apply the task's changes to the requester's checkout, staged and not committed. Returns the
/// task branch's head that was applied.
pub async fn apply(row: &WorktreeRow) -> Result<String> {
    let repo = Path::new(&row.repo);
    let held = holdings(row).await?;
    if !held.dirty.is_empty() {
        return Err(Error::Invalid(format!(
            "The worktree has uncommitted changes ({}): commit them there first, then apply.",
            list_files(&held.dirty)
        )));
    }
    let Some(head) = held.head else {
        return Err(Error::Invalid(format!("The task branch {} is gone: nothing to apply", row.branch)));
    };
    let Some(current) = resolve_commit(repo, "HEAD").await? else {
        return Err(Error::Invalid(format!("{} has no commits to apply onto", row.repo)));
    };
    let tree = merge_tree(repo, &current, &head, None).await?.map_err(|f| conflict(row, &f, None))?;
    let ran = run_git(repo, &["read-tree", "-m", "-u", "HEAD", &tree], &[], None).await?;
    if !ran.ok() {
        return Err(Error::Invalid(format!(
            "git would not apply the task's changes to {}: {}. Nothing was changed.",
            row.repo,
            ran.stderr.trim().lines().next().unwrap_or("it refused")
        )));
    }
    Ok(head)
}

/// Remove the worktree's directory and branch. The caller decided that nothing is lost (or
/// was told to force).
pub async fn remove(row: &WorktreeRow) -> Result<()> {
    let repo = Path::new(&row.repo);
    if !repo.is_dir() {
        let _ = std::fs::remove_dir_all(&row.path);
        return Ok(());
    }
    if Path::new(&row.path).exists() {
        let ran = run_git(repo, &["worktree", "remove", "--force", "--force", &row.path], &[], None).await?;
        if !ran.ok() && Path::new(&row.path).exists() {
            check(ran, "removing the worktree")?;
        }
    }
    git(repo, &["worktree", "prune"], "pruning stale worktrees").await?;
    if branch_exists(repo, &row.branch).await? {
        git(repo, &["branch", "-D", "-q", &row.branch], "deleting the task branch").await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_names_are_checked() {
        assert!(check_branch_name("baton/0f3a9c1e").is_ok());
        assert!(check_branch_name("baton/").is_err());
        assert!(check_branch_name("baton/../x").is_err());
        assert!(check_branch_name("main").is_err());
        assert!(check_branch_name("baton/a b").is_err());
    }

    #[test]
    fn file_lists_are_cut() {
        let files: Vec<String> = (0..8).map(|i| format!("f{i}")).collect();
        assert_eq!(list_files(&files[..2]), "f0, f1");
        assert_eq!(list_files(&files), "f0, f1, f2, f3, f4 and 3 more");
    }
}
