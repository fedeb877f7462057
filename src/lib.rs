//! mpnd: takes resellers' new MPN/PLA IDs from a mailbox and applies them.
pub mod mailbox;
pub mod oauth;
pub mod triage;
