//! `baton watch`: a full-screen live view of one queue (ratatui on crossterm). It reads the
//! queue only when a commit wakes it ([`api::Changes`]), redraws once a second for the clocks,
//! and talks to the queue only through [`api`], like the other faces. The terminal is restored on
//! every way out: `q`, Ctrl-C, SIGTERM/SIGHUP, an error, and a panic (ratatui's hook).

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row, Table, TableState, Wrap};
use ratatui::{DefaultTerminal, Frame};
use tokio::sync::mpsc;

use crate::api::{self, Caller, ListData, ListParams, Queue, Status, WorkerShown};
use crate::error::{Error, ExitCode, Result};
use crate::job::Record;
use crate::state::JobState;

/// Tasks read per refresh (running, waiting and queued first; the rest are the newest finished).
const TASKS_READ: i64 = 200;
/// Finished tasks shown below the unfinished ones.
const FINISHED_SHOWN: usize = 30;
/// Workflow runs shown.
const RUNS_SHOWN: i64 = 6;
/// How much of a log the log view reads (its end).
const LOG_TAIL_BYTES: u64 = 256 * 1024;
/// Redraw at least this often (elapsed times), without reading the queue unless it changed.
const TICK: Duration = Duration::from_secs(1);
/// Commits closer together than this are read as one: a busy queue commits thousands of times a
/// second, and a screen needs no more than a few pictures of it.
const READ_GAP: Duration = Duration::from_millis(150);

/// What the view shows: tasks whose status, profile, labels and session match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub status: Option<String>,
    pub profile: Option<String>,
    pub labels: Vec<String>,
    pub session: Option<String>,
}

impl Filter {
    /// Parse the filter line: `status:running profile:coder label:team=web session:ID` (any
    /// order, each optional, `label:` repeatable); an empty line shows everything.
    pub fn parse(text: &str) -> std::result::Result<Filter, String> {
        let mut f = Filter::default();
        for word in text.split_whitespace() {
            let Some((key, value)) = word.split_once(':').filter(|(_, v)| !v.is_empty()) else {
                return Err(format!("\"{word}\": use status:STATE, profile:ID, label:KEY[=VALUE] or session:ID"));
            };
            match key {
                "status" | "s" => f.status = Some(check_status(value)?),
                "profile" | "worker" | "p" => f.profile = Some(value.to_string()),
                "label" | "l" => f.labels.push(value.to_string()),
                "session" => f.session = Some(value.to_string()),
                other => return Err(format!("Unknown filter \"{other}\": use status, profile, label or session")),
            }
        }
        Ok(f)
    }

    /// A filter from the command line's flags.
    pub fn new(
        status: Option<String>,
        profile: Option<String>,
        labels: Vec<String>,
        session: Option<String>,
    ) -> std::result::Result<Filter, String> {
        let status = status.as_deref().map(check_status).transpose()?;
        Ok(Filter { status, profile, labels, session })
    }

    /// The filter as the line that parses back to it.
    pub fn text(&self) -> String {
        let mut words = Vec::new();
        words.extend(self.status.iter().map(|s| format!("status:{s}")));
        words.extend(self.profile.iter().map(|p| format!("profile:{p}")));
        words.extend(self.labels.iter().map(|l| format!("label:{l}")));
        words.extend(self.session.iter().map(|s| format!("session:{s}")));
        words.join(" ")
    }

    fn params(&self) -> ListParams {
        ListParams {
            worker_id: self.profile.clone(),
            status: self.status.clone(),
            scope: Some("all".into()),
            session_id: self.session.clone(),
            label: (!self.labels.is_empty()).then(|| self.labels.clone()),
            limit: Some(TASKS_READ),
            ..ListParams::default()
        }
    }
}

fn check_status(value: &str) -> std::result::Result<String, String> {
    match JobState::parse(value) {
        Some(s) => Ok(s.as_str().to_string()),
        None => {
            let words: Vec<&str> = JobState::ALL.iter().map(|w| w.as_str()).collect();
            Err(format!("Unknown status \"{value}\": use {}", words.join(", ")))
        }
    }
}

/// One read of the queue.
struct Snapshot {
    status: Status,
    /// Running, then waiting and queued (in claim order), then the newest finished.
    tasks: Vec<Record>,
    runs: Vec<Record>,
    workers: Vec<WorkerShown>,
    read_at: Instant,
}

async fn snapshot(q: &Queue, caller: &Caller, filter: &Filter) -> Result<Snapshot> {
    let status = api::status(q).await?;
    let tasks = |p: ListParams| async move {
        Ok::<_, crate::error::Error>(match api::list(q, caller, &p, "all").await?.data {
            ListData::Tasks(t) => t,
            _ => Vec::new(),
        })
    };
    let mut listed = tasks(filter.params()).await?;
    // Behind a backlog deeper than TASKS_READ the running tasks are not among the newest:
    // they are read on their own (by their index, however deep the queue).
    if filter.status.is_none() {
        let seen: std::collections::HashSet<String> = listed.iter().map(|r| r.id.clone()).collect();
        let running = tasks(ListParams { status: Some("running".into()), ..filter.params() }).await?;
        listed.extend(running.into_iter().filter(|r| !seen.contains(&r.id)));
    }
    let rank = |s: JobState| match s {
        JobState::Running => 0,
        JobState::Waiting | JobState::Queued => 1,
        _ => 2,
    };
    let (mut open, finished): (Vec<Record>, Vec<Record>) = listed.into_iter().partition(|r| rank(r.status) < 2);
    open.sort_by(|a, b| {
        rank(a.status).cmp(&rank(b.status)).then(b.priority.cmp(&a.priority)).then(a.created_at.cmp(&b.created_at))
    });
    open.extend(finished.into_iter().take(FINISHED_SHOWN));
    let runs = api::workflow_runs(q, caller, RUNS_SHOWN).await?;
    let workers =
        match api::list(q, caller, &ListParams { view: Some("workers".into()), ..ListParams::default() }, "all")
            .await?
            .data
        {
            ListData::Workers(w) => w,
            _ => Vec::new(),
        };
    Ok(Snapshot { status, tasks: open, runs, workers, read_at: Instant::now() })
}

/// A text view over the main screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pane {
    Log,
    Events,
}

/// What the keyboard is talking to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Main,
    Confirm(String),
    Filter(String),
    Text { pane: Pane, id: String, scroll: u16, lines: Vec<String> },
}

/// What a key asks the loop to do.
enum Action {
    None,
    Quit,
    Refresh,
    Cancel(String),
    Retry(String),
    Open(Pane, String),
    #[cfg(feature = "test-hooks")]
    Panic,
}

struct App {
    filter: Filter,
    snap: Option<Snapshot>,
    /// The selected task, by id, so a refresh keeps it.
    selected: Option<String>,
    mode: Mode,
    /// The last action's outcome, or why the queue could not be read.
    message: Option<(String, bool)>,
    db: String,
}

impl App {
    fn tasks(&self) -> &[Record] {
        self.snap.as_ref().map_or(&[], |s| &s.tasks)
    }

    fn index(&self) -> Option<usize> {
        let tasks = self.tasks();
        if tasks.is_empty() {
            return None;
        }
        Some(self.selected.as_ref().and_then(|id| tasks.iter().position(|t| &t.id == id)).unwrap_or(0))
    }

    fn current(&self) -> Option<&Record> {
        self.index().map(|i| &self.tasks()[i])
    }

    fn select(&mut self, delta: isize) {
        let n = self.tasks().len();
        let Some(i) = self.index() else { return };
        let to = (i as isize + delta).clamp(0, n as isize - 1) as usize;
        self.selected = Some(self.tasks()[to].id.clone());
    }

    fn say(&mut self, text: impl Into<String>, bad: bool) {
        self.message = Some((text.into(), bad));
    }

    fn on_key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        match std::mem::replace(&mut self.mode, Mode::Main) {
            Mode::Main => self.on_main_key(key),
            Mode::Confirm(id) => match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => Action::Cancel(id),
                _ => {
                    self.say("Not canceled", false);
                    Action::None
                }
            },
            Mode::Filter(mut line) => match key.code {
                KeyCode::Enter => match Filter::parse(&line) {
                    Ok(f) => {
                        self.filter = f;
                        self.message = None;
                        Action::Refresh
                    }
                    Err(e) => {
                        self.say(e, true);
                        self.mode = Mode::Filter(line);
                        Action::None
                    }
                },
                KeyCode::Esc => Action::None,
                KeyCode::Backspace => {
                    line.pop();
                    self.mode = Mode::Filter(line);
                    Action::None
                }
                KeyCode::Char(c) => {
                    line.push(c);
                    self.mode = Mode::Filter(line);
                    Action::None
                }
                _ => {
                    self.mode = Mode::Filter(line);
                    Action::None
                }
            },
            Mode::Text { pane, id, scroll, lines } => {
                let page = 20u16;
                let last = lines.len().saturating_sub(1).min(u16::MAX as usize) as u16;
                let scroll = match key.code {
                    KeyCode::Char('q') | KeyCode::Esc | KeyCode::Left | KeyCode::Char('h') => return Action::None,
                    KeyCode::Char('e') if pane == Pane::Log => return Action::Open(Pane::Events, id),
                    KeyCode::Char('l') | KeyCode::Enter if pane == Pane::Events => return Action::Open(Pane::Log, id),
                    KeyCode::Up | KeyCode::Char('k') => scroll.saturating_sub(1),
                    KeyCode::Down | KeyCode::Char('j') => scroll.saturating_add(1).min(last),
                    KeyCode::PageUp => scroll.saturating_sub(page),
                    KeyCode::PageDown | KeyCode::Char(' ') => scroll.saturating_add(page).min(last),
                    KeyCode::Home | KeyCode::Char('g') => 0,
                    KeyCode::End | KeyCode::Char('G') => last,
                    _ => scroll,
                };
                self.mode = Mode::Text { pane, id, scroll, lines };
                Action::None
            }
        }
    }

    fn on_main_key(&mut self, key: KeyEvent) -> Action {
        let current = self.current().map(|r| (r.id.clone(), r.status));
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Up | KeyCode::Char('k') => self.select(-1),
            KeyCode::Down | KeyCode::Char('j') => self.select(1),
            KeyCode::PageUp => self.select(-10),
            KeyCode::PageDown => self.select(10),
            KeyCode::Home | KeyCode::Char('g') => self.select(isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.select(isize::MAX / 2),
            KeyCode::Enter | KeyCode::Char('l') => {
                if let Some((id, _)) = current {
                    return Action::Open(Pane::Log, id);
                }
            }
            KeyCode::Char('e') => {
                if let Some((id, _)) = current {
                    return Action::Open(Pane::Events, id);
                }
            }
            KeyCode::Char('c') => match current {
                Some((id, state)) if !state.is_terminal() => self.mode = Mode::Confirm(id),
                Some((id, state)) => self.say(format!("{} already {state}", short(&id)), true),
                None => {}
            },
            KeyCode::Char('r') => match current {
                Some((id, state)) if state.is_terminal() => return Action::Retry(id),
                Some((id, state)) => {
                    self.say(format!("{} is {state}: only a finished task is retried", short(&id)), true)
                }
                None => {}
            },
            KeyCode::Char('f') | KeyCode::Char('/') => self.mode = Mode::Filter(self.filter.text()),
            KeyCode::Esc if self.filter != Filter::default() => {
                self.filter = Filter::default();
                return Action::Refresh;
            }
            #[cfg(feature = "test-hooks")]
            KeyCode::Char('!') if std::env::var_os("BATON_TEST_WATCH_PANIC").is_some() => return Action::Panic,
            _ => {}
        }
        Action::None
    }

    fn draw(&self, f: &mut Frame) {
        let [head, body, foot] =
            Layout::vertical([Constraint::Length(2), Constraint::Min(6), Constraint::Length(1)]).areas(f.area());
        self.draw_head(f, head);
        match &self.mode {
            Mode::Text { pane, id, scroll, lines } => draw_text(f, body, *pane, id, *scroll, lines),
            _ => self.draw_main(f, body),
        }
        self.draw_foot(f, foot);
        match &self.mode {
            Mode::Confirm(id) => {
                let task =
                    self.tasks().iter().find(|t| &t.id == id).map(|t| first_line(&t.message)).unwrap_or_default();
                let text = format!("Cancel task {} ({task})?  y: cancel it   any other key: keep it", short(id));
                popup(f, body, "Cancel", &text, Color::Red);
            }
            Mode::Filter(line) => {
                let text = format!(
                    "{line}\u{2588}\n\nstatus:STATE profile:ID label:KEY[=VALUE] session:ID   Enter: apply   Esc: keep"
                );
                popup(f, body, "Filter", &text, Color::Cyan);
            }
            _ => {}
        }
    }

    fn draw_head(&self, f: &mut Frame, area: Rect) {
        let bold = Style::new().add_modifier(Modifier::BOLD);
        let mut top = vec![Span::styled("baton watch ", bold), Span::raw(self.db.clone())];
        let mut counts = Vec::new();
        if let Some(s) = &self.snap {
            top.push(Span::raw("   "));
            top.push(if s.status.dispatcher.alive {
                Span::styled(
                    format!(
                        "dispatcher pid {} epoch {}",
                        s.status.dispatcher.pid.unwrap_or_default(),
                        s.status.dispatcher.epoch.unwrap_or_default()
                    ),
                    Style::new().fg(Color::Green),
                )
            } else {
                Span::styled("no dispatcher", Style::new().fg(Color::Yellow))
            });
            if !s.status.paused.is_empty() {
                let what: Vec<&str> = s.status.paused.iter().map(|p| p.profile.as_str()).collect();
                top.push(Span::styled(format!("   paused: {}", what.join(", ")), Style::new().fg(Color::Yellow)));
            }
            for state in JobState::ALL {
                let n = s.status.jobs.get(state.as_str()).copied().unwrap_or(0);
                counts.push(Span::styled(format!("{state} {n}"), state_style(*state)));
                counts.push(Span::raw("  "));
            }
        }
        if self.filter != Filter::default() {
            counts.push(Span::styled(format!("  filter: {}", self.filter.text()), Style::new().fg(Color::Cyan)));
        }
        f.render_widget(Paragraph::new(vec![Line::from(top), Line::from(counts)]), area);
    }

    fn draw_main(&self, f: &mut Frame, area: Rect) {
        let side = if area.width >= 110 { 42 } else { 0 };
        let [left, right] = Layout::horizontal([Constraint::Min(40), Constraint::Length(side)]).areas(area);
        let [list, detail] = Layout::vertical([Constraint::Min(5), Constraint::Length(8)]).areas(left);
        self.draw_tasks(f, list);
        self.draw_detail(f, detail);
        if side > 0 {
            self.draw_side(f, right);
        }
    }

    fn draw_tasks(&self, f: &mut Frame, area: Rect) {
        let since = self.snap.as_ref().map_or(0, |s| s.read_at.elapsed().as_millis() as i64);
        let rows = self.tasks().iter().map(|t| {
            let time = match (t.status, t.elapsed_ms, t.duration_ms) {
                (JobState::Running, Some(e), _) => clock(e + since),
                (_, _, Some(d)) => clock(d),
                _ => String::new(),
            };
            let what = match (&t.activity, &t.output_tail) {
                (Some(a), _) => match &a.plan {
                    Some(plan) => format!("{} \u{b7} {plan}", a.doing),
                    None => a.doing.clone(),
                },
                (None, Some(tail)) if t.status == JobState::Running => last_line(tail).to_string(),
                _ => match (&t.error, t.status) {
                    (Some(e), JobState::Failed | JobState::Canceled) => first_line(e).to_string(),
                    _ => String::new(),
                },
            };
            let labels = t
                .labels
                .as_ref()
                .map(|l| l.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>())
                .unwrap_or_default()
                .join(",");
            Row::new(vec![
                Cell::from(short(&t.id).to_string()),
                Cell::from(Span::styled(t.status.to_string(), state_style(t.status))),
                Cell::from(t.worker_id.clone()),
                Cell::from(time),
                Cell::from(labels),
                Cell::from(first_line(&t.message).to_string()),
                Cell::from(Span::styled(what, Style::new().fg(Color::DarkGray))),
            ])
        });
        let widths = [
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(10),
            Constraint::Length(8),
            Constraint::Length(12),
            Constraint::Fill(3),
            Constraint::Fill(2),
        ];
        let header = Row::new(["ID", "STATUS", "PROFILE", "TIME", "LABELS", "TASK", "ACTIVITY"])
            .style(Style::new().add_modifier(Modifier::BOLD));
        let title = format!(" Tasks ({}) ", self.tasks().len());
        let table = Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(title))
            .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
            .highlight_symbol("> ");
        let mut state = TableState::default().with_selected(self.index());
        f.render_stateful_widget(table, area, &mut state);
        if self.tasks().is_empty() {
            let inner = Rect { x: area.x + 2, y: area.y + 2, width: area.width.saturating_sub(4), height: 1 };
            let empty = if self.filter == Filter::default() {
                "No tasks yet: baton task start \"...\""
            } else {
                "No task matches the filter (Esc clears it)"
            };
            f.render_widget(Paragraph::new(empty).style(Style::new().fg(Color::DarkGray)), inner);
        }
    }

    fn draw_detail(&self, f: &mut Frame, area: Rect) {
        let Some(t) = self.current() else {
            f.render_widget(Block::bordered().title(" Task "), area);
            return;
        };
        let mut lines = vec![Line::from(vec![
            Span::styled(t.id.clone(), Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(format!(
                "  {}  session {}  attempt {}/{}",
                t.worker_id,
                t.session_id.as_deref().unwrap_or("-"),
                t.attempt,
                t.max_attempts
            )),
        ])];
        lines.push(Line::raw(first_line(&t.message).to_string()));
        if let Some(e) = &t.error {
            lines.push(Line::styled(first_line(e).to_string(), Style::new().fg(Color::Red)));
        }
        let tail = t.output_tail.as_deref().or(t.response_text.as_deref()).unwrap_or_default();
        let room = (area.height as usize).saturating_sub(2 + lines.len());
        let tail_lines: Vec<&str> = tail.lines().collect();
        for l in &tail_lines[tail_lines.len().saturating_sub(room)..] {
            lines.push(Line::styled(l.to_string(), Style::new().fg(Color::DarkGray)));
        }
        f.render_widget(Paragraph::new(lines).block(Block::bordered().title(" Task ")), area);
    }

    fn draw_side(&self, f: &mut Frame, area: Rect) {
        let [runs, workers] = Layout::vertical([Constraint::Fill(3), Constraint::Fill(2)]).areas(area);
        let mut lines = Vec::new();
        for r in self.snap.iter().flat_map(|s| &s.runs) {
            lines.push(Line::from(vec![
                Span::raw(format!("{} ", short(&r.id))),
                Span::raw(format!("{} ", r.worker_id.trim_start_matches("workflow:"))),
                Span::styled(r.status.to_string(), state_style(r.status)),
            ]));
            let steps = r.report.as_ref().and_then(|v| v.get("steps")).and_then(|v| v.as_array());
            for (i, s) in steps.into_iter().flatten().enumerate() {
                let state = s.get("status").and_then(|v| v.as_str()).unwrap_or("?");
                let id = s.get("id").and_then(|v| v.as_str()).unwrap_or("?");
                let style = JobState::parse(state).map_or(Style::new(), state_style);
                lines.push(Line::from(vec![
                    Span::raw(format!("  {} {id:<10} ", i + 1)),
                    Span::styled(state.to_string(), style),
                ]));
            }
        }
        if lines.is_empty() {
            lines.push(Line::styled("none", Style::new().fg(Color::DarkGray)));
        }
        f.render_widget(Paragraph::new(lines).block(Block::bordered().title(" Workflow runs ")), runs);
        let mut lines = Vec::new();
        for w in self.snap.iter().flat_map(|s| &s.workers) {
            let serving = if w.job_ids.is_empty() {
                String::new()
            } else {
                let ids: Vec<&str> = w.job_ids.iter().map(|j| short(j)).collect();
                format!(" {}", ids.join(","))
            };
            lines.push(Line::raw(format!(
                "{} {} {} pid {}{serving}",
                w.profile,
                w.kind,
                w.status,
                w.pid.map_or("-".to_string(), |p| p.to_string())
            )));
        }
        if lines.is_empty() {
            lines.push(Line::styled("none", Style::new().fg(Color::DarkGray)));
        }
        f.render_widget(Paragraph::new(lines).block(Block::bordered().title(" Workers ")), workers);
    }

    fn draw_foot(&self, f: &mut Frame, area: Rect) {
        let line = match &self.message {
            Some((m, bad)) => {
                Line::styled(m.clone(), if *bad { Style::new().fg(Color::Red) } else { Style::new().fg(Color::Green) })
            }
            None => Line::styled(
                match self.mode {
                    Mode::Text { .. } => "\u{2191}\u{2193} PgUp PgDn scroll  l log  e events  q back",
                    _ => "\u{2191}\u{2193} move  enter log  e events  c cancel  r retry  f filter  esc clear  q quit",
                },
                Style::new().fg(Color::DarkGray),
            ),
        };
        f.render_widget(Paragraph::new(line), area);
    }
}

fn draw_text(f: &mut Frame, area: Rect, pane: Pane, id: &str, scroll: u16, lines: &[String]) {
    let title = match pane {
        Pane::Log => format!(" Log of {id} "),
        Pane::Events => format!(" Events of {id} "),
    };
    let text = Text::from(lines.iter().map(|l| Line::raw(l.clone())).collect::<Vec<_>>());
    f.render_widget(Paragraph::new(text).block(Block::bordered().title(title)).scroll((scroll, 0)), area);
}

fn popup(f: &mut Frame, over: Rect, title: &str, text: &str, color: Color) {
    let width = over.width.saturating_sub(8).min(90);
    let area = Rect { x: over.x + (over.width - width) / 2, y: over.y + over.height / 3, width, height: 5 };
    f.render_widget(Clear, area);
    f.render_widget(
        Paragraph::new(text.to_string())
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(format!(" {title} ")).border_style(Style::new().fg(color))),
        area,
    );
}

fn state_style(s: JobState) -> Style {
    match s {
        JobState::Running => Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
        JobState::Queued | JobState::Waiting => Style::new().fg(Color::Yellow),
        JobState::Succeeded => Style::new().fg(Color::Green),
        JobState::Failed => Style::new().fg(Color::Red),
        JobState::Canceled => Style::new().fg(Color::Magenta),
    }
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or_default().trim()
}

fn last_line(s: &str) -> &str {
    s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default().trim()
}

/// `m:ss`, or `h:mm:ss` past an hour.
fn clock(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// The end of a file, as lines (the first, cut, line dropped when the read started mid-file).
fn tail_lines(path: &Path) -> Option<Vec<String>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let from = len.saturating_sub(LOG_TAIL_BYTES);
    file.seek(SeekFrom::Start(from)).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<String> = text.lines().map(|l| l.replace('\t', "    ")).collect();
    if from > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    Some(lines)
}

/// The lines of a task's log (stdout, then stderr) or its events.
async fn pane_lines(q: &Queue, caller: &Caller, pane: Pane, id: &str) -> Result<Vec<String>> {
    match pane {
        Pane::Log => {
            let (out, err, _) = api::log_paths(q, caller, id, None).await?;
            let mut lines = tail_lines(&out).unwrap_or_else(|| vec![format!("(no log at {})", out.display())]);
            if let Some(e) = tail_lines(&err).filter(|e| !e.is_empty()) {
                lines.push(String::new());
                lines.push("--- stderr ---".into());
                lines.extend(e);
            }
            Ok(lines)
        }
        Pane::Events => {
            let (events, _) = api::events(q, caller, id, 0, 10_000).await?;
            let mut lines: Vec<String> = events.iter().map(api::EventShown::line).collect();
            if lines.is_empty() {
                lines.push("(no events: the agent reported no activity, or the task has not run)".into());
            }
            Ok(lines)
        }
    }
}

/// The terminal in raw mode on the alternate screen, given back when dropped (and by ratatui's
/// panic hook when a panic unwinds past it).
struct Screen(DefaultTerminal);

impl Screen {
    fn enter() -> Result<Screen> {
        ratatui::try_init().map(Screen).map_err(|e| Error::io("setting up the terminal", e))
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = self.0.show_cursor();
        ratatui::restore();
    }
}

/// `baton watch`.
pub async fn run(q: Queue, caller: Caller, filter: Filter) -> Result<ExitCode> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(Error::Invalid(
            "baton watch needs a terminal; on a pipe use `baton task list`, `baton status` or `baton task await`"
                .into(),
        ));
    }
    let q = Arc::new(q);
    let mut changes = api::Changes::new(&q).await?;
    let db = q.store.describe();
    let mut app = App { filter, snap: None, selected: None, mode: Mode::Main, message: None, db };
    match snapshot(&q, &caller, &app.filter).await {
        Ok(s) => app.snap = Some(s),
        Err(e) => app.say(e.to_string(), true),
    }
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::io("installing the SIGTERM handler", e))?;
    let mut sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| Error::io("installing the SIGHUP handler", e))?;
    let mut screen = Screen::enter()?;
    // crossterm's reads block: a thread of their own feeds them in.
    let (keys_tx, mut keys) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while let Ok(ev) = event::read() {
            if keys_tx.send(ev).is_err() {
                break;
            }
        }
    });
    let (done_tx, mut done) = mpsc::unbounded_channel::<(String, bool)>();
    let mut last_read = Instant::now();
    loop {
        screen.0.draw(|f| app.draw(f)).map_err(|e| Error::io("drawing the screen", e))?;
        let mut reread = false;
        tokio::select! {
            ev = keys.recv() => {
                let Some(ev) = ev else { break };
                let Event::Key(key) = ev else { continue };
                if !matches!(app.mode, Mode::Filter(_)) {
                    app.message = None;
                }
                match app.on_key(key) {
                    Action::None => {}
                    Action::Quit => break,
                    Action::Refresh => reread = true,
                    Action::Open(pane, id) => match pane_lines(&q, &caller, pane, &id).await {
                        Ok(lines) => {
                            let scroll = lines.len().saturating_sub(10).min(u16::MAX as usize) as u16;
                            app.mode = Mode::Text { pane, id, scroll, lines };
                        }
                        Err(e) => app.say(e.to_string(), true),
                    },
                    Action::Cancel(id) => {
                        app.say(format!("Canceling {}...", short(&id)), false);
                        let (q, caller, tx) = (q.clone(), caller.clone(), done_tx.clone());
                        tokio::spawn(async move {
                            let said = match api::cancel(&q, &caller, std::slice::from_ref(&id), Some("canceled from baton watch")).await {
                                Ok(answers) => match answers.first() {
                                    Some(api::Answer::Record(r)) => (format!("{} {}", short(&id), r.status), false),
                                    _ => (format!("{}: unknown task", short(&id)), true),
                                },
                                Err(e) => (e.to_string(), true),
                            };
                            let _ = tx.send(said);
                        });
                    }
                    Action::Retry(id) => match api::retry(&q, &caller, &id).await {
                        Ok(started) => {
                            app.say(format!("Retried {} as {}", short(&id), short(&started.task_id)), false);
                            app.selected = Some(started.task_id);
                            reread = true;
                        }
                        Err(e) => app.say(e.to_string(), true),
                    },
                    #[cfg(feature = "test-hooks")]
                    Action::Panic => panic!("baton watch: a panic asked for by the test hook"),
                }
            }
            changed = changes.next(TICK) => {
                reread = changed?;
                if reread {
                    tokio::time::sleep(READ_GAP.saturating_sub(last_read.elapsed())).await;
                }
                // A dispatcher that dies or starts commits nothing at that moment: its lease and
                // lock are looked at on the clock's tick (one row, no job read).
                if !reread
                    && let (Some(snap), Ok(now)) = (app.snap.as_mut(), api::dispatcher_status(&q).await)
                {
                    reread = snap.status.dispatcher != now;
                }
                // A running task's log grows without a commit: the open log follows it anyway.
                if let Mode::Text { pane: Pane::Log, id, .. } = &app.mode
                    && app.tasks().iter().any(|t| &t.id == id && t.status == JobState::Running)
                {
                    reread = true;
                }
            }
            said = done.recv() => {
                if let Some((text, bad)) = said {
                    app.say(text, bad);
                }
                reread = true;
            }
            _ = sigterm.recv() => break,
            _ = sighup.recv() => break,
        }
        if reread {
            last_read = Instant::now();
            match snapshot(&q, &caller, &app.filter).await {
                Ok(s) => app.snap = Some(s),
                // The queue busy or briefly unreadable: say so and keep the last picture.
                Err(e) => app.say(e.to_string(), true),
            }
            if let Mode::Text { pane, id, scroll, lines } = &app.mode {
                let (pane, id) = (*pane, id.clone());
                let at_end = *scroll as usize + 10 >= lines.len();
                if let Ok(new) = pane_lines(&q, &caller, pane, &id).await {
                    let scroll =
                        if at_end { new.len().saturating_sub(10).min(u16::MAX as usize) as u16 } else { *scroll };
                    app.mode = Mode::Text { pane, id, scroll, lines: new };
                }
            }
        }
    }
    drop(screen);
    Ok(ExitCode::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_line_parses_and_prints_back() {
        let f = Filter::parse("status:running  profile:coder label:team=web label:urgent session:s1").unwrap();
        assert_eq!(f.status.as_deref(), Some("running"));
        assert_eq!(f.profile.as_deref(), Some("coder"));
        assert_eq!(f.labels, ["team=web", "urgent"]);
        assert_eq!(f.session.as_deref(), Some("s1"));
        assert_eq!(Filter::parse(&f.text()).unwrap(), f);
        assert_eq!(Filter::parse("").unwrap(), Filter::default());
        assert!(Filter::parse("status:runing").unwrap_err().starts_with("Unknown status \"runing\": use waiting"));
        assert!(Filter::parse("coder").unwrap_err().contains("use status:STATE"));
        assert!(Filter::parse("colour:red").unwrap_err().starts_with("Unknown filter \"colour\""));
    }

    #[test]
    fn clocks_and_lines() {
        assert_eq!(clock(61_500), "1:01");
        assert_eq!(clock(3_723_000), "1:02:03");
        assert_eq!(first_line("\n  hello\nworld"), "hello");
        assert_eq!(last_line("a\nb\n\n"), "b");
        assert_eq!(short("abc"), "abc");
    }
}
