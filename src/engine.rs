//! The engine: the dispatcher that leads a queue, the worker processes it runs (oneshot and
//! server workers), `/proc` and process groups, waking on commits, and pruning.

pub mod acp;
pub mod activity;
pub mod dispatch;
pub mod hooks;
pub mod proc;
pub mod prune;
pub mod server;
pub mod worker;
