pub mod imap;

/// Where a mail goes once its case is committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    Processed,
    Review,
    Ignored,
}
