//! The agent side: profiles and their runners, the presets for the agent CLIs, how a profile
//! and a task become a job (`launch`), and reading an agent's output back (`extract`, `output`,
//! and `stream`, its activity while it runs).

pub mod extract;
pub mod launch;
pub mod output;
pub mod permission;
pub mod preset;
pub mod profile;
pub mod stream;
