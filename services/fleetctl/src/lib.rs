//! The operator CLI's commands, as a library so tests can run them in-process.

pub mod certs;
pub mod readings;
pub mod receiver;
pub mod registry;
pub mod stack;
pub mod users;
