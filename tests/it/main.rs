//! baton's integration tests, one binary: each module drives the built `baton` binary or the
//! public library API against queues of its own (`common::TestQueue`). Process-heavy tests
//! take `common::heavy()`, so they run one at a time across all the modules.

mod common;

mod acp;
mod acp_agents;
mod acp_sessions;
mod agents;
mod claim;
mod cli;
mod conformance;
mod deps;
mod durability;
mod guards;
mod hooks;
mod inputs;
mod leadership;
mod mcp;
mod mcp_malformed;
mod nodes;
mod pg_schema;
mod presets;
mod reaping;
mod schema;
mod servers;
mod streaming;
mod terminal;
mod transfer;
mod watch;
mod workflow;
mod worktrees;
