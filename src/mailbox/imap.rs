//! The production IMAP client: one logged-in connection to the `cloud@` mailbox
//! (Microsoft 365 or Dovecot), with the inbox selected.
//!
//! [`ImapMailbox`] owns that connection and the four operations the daemon needs:
//! list new messages ([`ImapMailbox::fetch`], never setting `\Seen`), move one out
//! of the inbox once its case is committed ([`ImapMailbox::settle`]), wait for new
//! mail ([`ImapMailbox::wait`], IDLE or polling) and log out. Every command runs
//! under `command_timeout`. Nothing is retried here: a timeout, an I/O error or the
//! server's `BYE` marks the connection dead and every later call fails at once, so
//! the daemon drops it, waits [`backoff`] and calls [`ImapMailbox::connect`] again
//! (which also fetches a fresh OAuth2 token after "access token expired"). A `NO`
//! or `BAD` answer fails only that call and leaves the connection usable.
//!
//! async-imap frames and parses the protocol and does LOGIN/AUTHENTICATE; the
//! commands after login go through [`ImapMailbox::run`], which reads to the tagged
//! reply itself, because async-imap's streamed `UID FETCH` ends quietly on a `NO`
//! or a dropped connection and would hand back a short batch as if it were whole.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use async_imap::imap_proto::{
    AttributeValue, Capability, MailboxDatum, RequestId, Response, ResponseCode, Status,
};
use async_imap::{Authenticator, Client, Session};
use futures::FutureExt as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::TlsConnector;

use super::Destination;
use crate::oauth::TokenSource;

/// Servers end an IDLE after 30 minutes (RFC 2177; Dovecot and Exchange both do),
/// so it is re-issued well before, whatever the configuration says.
const MAX_IDLE: Duration = Duration::from_secs(10 * 60);

/// How long the server may take to answer DONE before the link counts as dead.
const DONE_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest [`backoff`] between reconnects.
const MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);

/// How the connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS from the first byte (port 993).
    Implicit,
    /// Plain greeting, then `STARTTLS` before anything else is said (port 143).
    Starttls,
    /// No TLS at all: only allowed to a loopback address (tests, a local proxy).
    None,
}

/// How to log in.
#[derive(Clone)]
pub enum ImapAuth {
    /// `LOGIN` with this password.
    Password(String),
    /// SASL XOAUTH2 with an access token from this source (Microsoft 365).
    XOAuth2(Arc<TokenSource>),
}

impl fmt::Debug for ImapAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImapAuth::Password(_) => f.write_str("Password(<redacted>)"),
            ImapAuth::XOAuth2(ts) => f.debug_tuple("XOAuth2").field(ts).finish(),
        }
    }
}

/// Everything [`ImapMailbox::connect`] needs; built from `[mailbox]` in the config.
#[derive(Clone, Debug)]
pub struct ImapSettings {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub username: String,
    pub auth: ImapAuth,
    /// The folder to watch, usually `INBOX`.
    pub inbox: String,
    /// Where settled mails go; created at connect when missing.
    pub processed: String,
    pub review: String,
    pub ignored: String,
    /// An extra trust root (tests, private CAs), in addition to the webpki roots.
    pub ca_file: Option<PathBuf>,
    /// How long one command may take on the socket, e.g. 60 s.
    pub command_timeout: Duration,
    /// IDLE is re-issued at most this often (capped at 10 minutes).
    pub idle_timeout: Duration,
    /// Larger mails are not downloaded: [`Fetched::raw`] is `None`.
    pub max_message_size: u64,
    /// UIDs fetched per FETCH command.
    pub batch_size: usize,
    /// Bytes of mail one batch may hold (always at least one mail): the daemon
    /// keeps two batches in memory, and 50 mails near `max_message_size` would be
    /// over a gigabyte. [`BATCH_BYTES`] unless a test wants less.
    pub batch_bytes: u64,
}

/// The default of [`ImapSettings::batch_bytes`].
pub const BATCH_BYTES: u64 = 64 << 20;

/// How far the daemon has looked into the inbox. It is only meaningful within one
/// UIDVALIDITY: when the server reports another one, every UID is new again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub uidvalidity: u32,
    /// The lowest UID not yet returned by [`ImapMailbox::fetch`].
    pub next_uid: u32,
}

/// One message from the inbox.
#[derive(Clone, PartialEq, Eq)]
pub struct Fetched {
    pub uid: u32,
    /// RFC822.SIZE as the server reports it.
    pub size: u64,
    /// The whole message, or `None` when it is larger than `max_message_size`.
    pub raw: Option<Vec<u8>>,
}

impl fmt::Debug for Fetched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body can be megabytes: show its length, not its bytes.
        f.debug_struct("Fetched")
            .field("uid", &self.uid)
            .field("size", &self.size)
            .field("raw_len", &self.raw.as_ref().map(Vec::len))
            .finish()
    }
}

/// What the server offers after login that changes how we work.
#[derive(Clone, Copy, Debug, Default)]
struct Caps {
    idle: bool,
    move_: bool,
    uidplus: bool,
}

/// A logged-in IMAP connection with the inbox selected.
pub struct ImapMailbox {
    session: Session<Transport>,
    /// `host:port`, for error context.
    server: String,
    /// Set once the connection can't be trusted any more (a timeout mid-command, an
    /// I/O error, the server's BYE): every later call fails with this reason.
    dead: Option<String>,
    caps: Caps,
    /// The inbox's UIDVALIDITY from SELECT; fixed for the life of the connection.
    uidvalidity: u32,
    /// Folder names already encoded as modified UTF-7 and quoted for commands.
    inbox: String,
    processed: String,
    review: String,
    ignored: String,
    command_timeout: Duration,
    idle_timeout: Duration,
    max_message_size: u64,
    batch_size: usize,
    batch_bytes: u64,
    /// UIDs found by the last SEARCH and not yet handed out, lowest first, with the
    /// UID that search started from. One SEARCH serves a whole backlog: searching
    /// again for every batch listed the entire inbox each time, which made a
    /// 10,000-mail backlog quadratic (bench/run.sh).
    pending: Vec<u32>,
    pending_from: u32,
    /// An `* n EXISTS` arrived during some command: new mail may be waiting, so the
    /// next [`ImapMailbox::wait`] returns at once instead of idling past it.
    changed: bool,
    /// Told to forget its token when the server ends the session for an expired one.
    tokens: Option<Arc<TokenSource>>,
}

impl fmt::Debug for ImapMailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImapMailbox")
            .field("server", &self.server)
            .field("dead", &self.dead)
            .field("caps", &self.caps)
            .field("uidvalidity", &self.uidvalidity)
            .finish_non_exhaustive()
    }
}

/// How an IDLE ended: the server reported a change (or time ran out, or the server
/// ended it), or a push woke us and the server has not said anything yet.
enum Idled {
    Changed,
    Woken,
}

/// Why a command failed: a refusal leaves the connection usable, the rest don't.
enum Failure {
    /// The server answered `NO` or `BAD`.
    Refused(String),
    /// The connection is gone or in an unknown state.
    Lost(String),
}

impl ImapMailbox {
    /// TCP connect, TLS per mode, read the greeting, authenticate, create the
    /// processed/review/ignored folders if missing, SELECT the inbox. Every step
    /// runs under `command_timeout`; errors name the step, never a secret.
    pub async fn connect(s: &ImapSettings) -> anyhow::Result<ImapMailbox> {
        let server = format!("{}:{}", s.host, s.port);
        let t = s.command_timeout;
        if s.tls == TlsMode::None && !is_loopback(&s.host) {
            bail!(
                "imap server {server}: tls = \"none\" is only allowed to a loopback address; \
                 use \"implicit\" or \"starttls\""
            );
        }
        // Bad folder names are a configuration error: say so before any network.
        let folders = [&s.inbox, &s.processed, &s.review, &s.ignored].map(|f| quote(f));
        let [inbox, processed, review, ignored] = folders;
        let (inbox, processed, review, ignored) = (inbox?, processed?, review?, ignored?);
        let tls = match s.tls {
            TlsMode::None => None,
            TlsMode::Implicit | TlsMode::Starttls => Some(tls_connector(s.ca_file.as_deref())?),
        };

        let tcp = timeout(t, TcpStream::connect((s.host.as_str(), s.port)))
            .await
            .map_err(|_| anyhow!("connecting to imap server {server}: no answer within {t:?}"))?
            .with_context(|| format!("connecting to imap server {server}"))?;
        // Commands are small and we wait for each reply: don't let Nagle delay them.
        tcp.set_nodelay(true).ok();

        let transport = match (&tls, s.tls) {
            (Some(tls), TlsMode::Implicit) => {
                Transport::Tls(Box::new(handshake(tls, &s.host, tcp, t, &server).await?))
            }
            _ => Transport::Plain(tcp),
        };
        let mut client = Client::new(transport);
        read_greeting(&mut client, t, &server).await?;

        if let (Some(tls), TlsMode::Starttls) = (&tls, s.tls) {
            timeout(t, client.run_command_and_check_ok("STARTTLS", None))
                .await
                .map_err(|_| anyhow!("imap server {server}: no answer to STARTTLS within {t:?}"))?
                .map_err(|e| anyhow!("imap server {server} refused STARTTLS: {e}"))?;
            // into_inner drops anything the server sent after its OK in plain text;
            // RFC 3501 §6.2.1 requires exactly that (it could be injected).
            let Transport::Plain(tcp) = client.into_inner() else {
                bail!("imap server {server}: STARTTLS on a connection that is already TLS");
            };
            let tls_stream = handshake(tls, &s.host, tcp, t, &server).await?;
            client = Client::new(Transport::Tls(Box::new(tls_stream)));
        }

        let (session, tokens) = authenticate(client, s, &server).await?;
        let limit_idle = s.idle_timeout.clamp(Duration::from_secs(1), MAX_IDLE);
        let mut mb = ImapMailbox {
            session,
            server,
            dead: None,
            caps: Caps::default(),
            uidvalidity: 0,
            inbox,
            processed,
            review,
            ignored,
            command_timeout: t,
            idle_timeout: limit_idle,
            max_message_size: s.max_message_size,
            batch_size: s.batch_size.max(1),
            batch_bytes: s.batch_bytes,
            changed: false,
            tokens,
            pending: Vec::new(),
            pending_from: 0,
        };
        mb.read_capabilities().await?;
        for folder in [&s.processed, &s.review, &s.ignored] {
            mb.ensure_folder(folder).await?;
        }
        mb.select().await?;
        tracing::info!(
            server = %mb.server,
            idle = mb.caps.idle,
            r#move = mb.caps.move_,
            uidplus = mb.caps.uidplus,
            uidvalidity = mb.uidvalidity,
            "imap connected"
        );
        Ok(mb)
    }

    /// Whether the server offers IDLE (else [`ImapMailbox::wait`] polls).
    pub fn has_idle(&self) -> bool {
        self.caps.idle
    }

    /// Most messages per fetched batch (`mailbox.batch_size`).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Whether the server offers MOVE (else [`ImapMailbox::settle`] copies and expunges).
    pub fn has_move(&self) -> bool {
        self.caps.move_
    }

    /// Messages in the inbox to look at, at most `batch_size`, lowest UIDs first.
    ///
    /// `cursor: None`, or one from another UIDVALIDITY, rescans every UID in the
    /// inbox (the daemon dedupes by Message-ID); otherwise only UIDs >= `next_uid`.
    /// The returned cursor points past the last message returned (and never before
    /// the given one within a UIDVALIDITY). Call repeatedly until the Vec is empty.
    ///
    /// Messages flagged `\Deleted` are left out: they are either our own settled
    /// copies on a server without UIDPLUS (see [`ImapMailbox::settle`]) or mails a
    /// person already threw away; fetching them would re-settle them on every rescan.
    pub async fn fetch(
        &mut self,
        cursor: Option<&Cursor>,
    ) -> anyhow::Result<(Cursor, Vec<Fetched>)> {
        let from = match cursor {
            Some(c) if c.uidvalidity == self.uidvalidity => c.next_uid.max(1),
            _ => 1,
        };
        // The UIDs of the last search serve while the caller continues where the
        // last batch ended; any other cursor (a rescan, a held mail) searches anew,
        // and so does an exhausted list, which is how new mail is found.
        if self.pending.is_empty() || self.pending_from != from {
            self.pending = self.search_from(from).await?;
        }
        let take = self.pending.len().min(self.batch_size);
        let mut uids: Vec<u32> = self.pending.drain(..take).collect();
        if uids.is_empty() {
            self.pending_from = from;
            return Ok((
                Cursor {
                    uidvalidity: self.uidvalidity,
                    next_uid: from,
                },
                Vec::new(),
            ));
        }

        // Sizes first, so an oversize mail is never downloaded.
        let reply = self
            .run(
                "reading message sizes",
                &format!("UID FETCH {} (UID RFC822.SIZE FLAGS)", uid_set(&uids)),
            )
            .await?;
        // A mail flagged \Deleted since the search is left out as the search
        // would have left it out.
        let mut sizes: HashMap<u32, u64> = HashMap::new();
        for item in reply {
            if let Item::Fetch {
                uid,
                size: Some(size),
                deleted: false,
                ..
            } = item
            {
                sizes.insert(uid, size);
            }
        }

        // Within the byte budget, lowest UIDs first; the rest go back to the list
        // for the next batch. Oversize mails are not downloaded, so cost nothing.
        let mut budget = self.batch_bytes;
        let cut = uids
            .iter()
            .enumerate()
            .position(|(i, uid)| {
                let size = sizes
                    .get(uid)
                    .copied()
                    .filter(|&n| n <= self.max_message_size)
                    .unwrap_or(0);
                let over = i > 0 && size > budget;
                budget = budget.saturating_sub(size);
                over
            })
            .unwrap_or(uids.len());
        let rest = uids.split_off(cut);
        self.pending.splice(0..0, rest);
        // The first mail is always taken, so `uids` is not empty here.
        let cursor = Cursor {
            uidvalidity: self.uidvalidity,
            next_uid: uids.last().map_or(from, |l| l.saturating_add(1).max(from)),
        };
        self.pending_from = cursor.next_uid;

        let wanted: Vec<u32> = uids
            .iter()
            .copied()
            .filter(|uid| sizes.get(uid).is_some_and(|&n| n <= self.max_message_size))
            .collect();
        let mut bodies: HashMap<u32, Vec<u8>> = HashMap::new();
        if !wanted.is_empty() {
            // BODY.PEEK, not BODY: reading must not set \Seen, so a person looking
            // at the mailbox still sees which mails nobody has read.
            let reply = self
                .run(
                    "downloading messages",
                    &format!("UID FETCH {} (UID BODY.PEEK[])", uid_set(&wanted)),
                )
                .await?;
            for item in reply {
                if let Item::Fetch {
                    uid,
                    body: Some(body),
                    ..
                } = item
                {
                    bodies.insert(uid, body);
                }
            }
        }

        let mut out = Vec::with_capacity(uids.len());
        for uid in uids {
            // A UID missing from the replies was expunged meanwhile (someone else
            // moved it): there is nothing to hand out, and the cursor passes it.
            let Some(&size) = sizes.get(&uid) else {
                continue;
            };
            if size > self.max_message_size {
                out.push(Fetched {
                    uid,
                    size,
                    raw: None,
                });
                continue;
            }
            match bodies.remove(&uid) {
                Some(raw) => out.push(Fetched {
                    uid,
                    size,
                    raw: Some(raw),
                }),
                None => tracing::debug!(uid, "message vanished between size and body fetch"),
            }
        }
        Ok((cursor, out))
    }

    /// Every undeleted UID >= `from` in the inbox, lowest first.
    async fn search_from(&mut self, from: u32) -> anyhow::Result<Vec<u32>> {
        // `UID n:*` always matches the highest UID even when it is below n
        // (RFC 3501 §6.4.8: `*` is the largest UID in use), so the range only
        // narrows the search; the filter below is what excludes old UIDs.
        let reply = self
            .run(
                "searching the inbox",
                &format!("UID SEARCH UNDELETED UID {from}:*"),
            )
            .await?;
        let mut uids: Vec<u32> = reply
            .into_iter()
            .filter_map(|item| match item {
                Item::Search(found) => Some(found),
                _ => None,
            })
            .flatten()
            .filter(|&uid| uid >= from)
            .collect();
        uids.sort_unstable();
        uids.dedup();
        Ok(uids)
    }

    /// Move one message out of the inbox into the folder for `dest`.
    ///
    /// With MOVE this is one `UID MOVE`. Without it: `UID COPY`, `UID STORE
    /// +FLAGS (\Deleted)` and `UID EXPUNGE` of exactly that UID (UIDPLUS), so no
    /// other message a person flagged `\Deleted` is expunged with it. Without
    /// UIDPLUS too, the copy is made and the original flagged `\Deleted` but NOT
    /// expunged: a plain EXPUNGE would remove every `\Deleted` mail in the inbox,
    /// and [`ImapMailbox::fetch`] skips `\Deleted` mails, so leaving it is safe.
    /// Moving a UID that is already gone is not an error (IMAP treats it as no-op).
    pub async fn settle(&mut self, uid: u32, dest: Destination) -> anyhow::Result<()> {
        self.settle_many(&[uid], dest).await
    }

    /// [`ImapMailbox::settle`] for several messages going to the same folder, as
    /// one UID set: one round trip for a whole batch instead of one per mail.
    pub async fn settle_many(&mut self, uids: &[u32], dest: Destination) -> anyhow::Result<()> {
        if uids.is_empty() {
            return Ok(());
        }
        let folder = match dest {
            Destination::Processed => self.processed.clone(),
            Destination::Review => self.review.clone(),
            Destination::Ignored => self.ignored.clone(),
        };
        // Ranges: mails held over several batches make long runs of UIDs.
        let set = uid_set(uids);
        if self.caps.move_ {
            self.run(
                &format!("moving uid {set} to {folder}"),
                &format!("UID MOVE {set} {folder}"),
            )
            .await?;
            return Ok(());
        }
        self.run(
            &format!("copying uid {set} to {folder}"),
            &format!("UID COPY {set} {folder}"),
        )
        .await?;
        self.run(
            &format!("flagging uid {set} deleted"),
            &format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"),
        )
        .await?;
        if self.caps.uidplus {
            self.run(
                &format!("expunging uid {set}"),
                &format!("UID EXPUNGE {set}"),
            )
            .await?;
        }
        Ok(())
    }

    /// Wait until the server reports new mail, `wake` is notified (a push from the
    /// mail server: new mail is there), or `max` passes.
    ///
    /// With IDLE the wait ends on `* n EXISTS` or a wake (or after `idle_timeout`
    /// at most), and `DONE` is sent under `command_timeout`. Without IDLE it
    /// sleeps `max` (the caller's poll interval, at most `idle_timeout`) or until a
    /// wake, then sends NOOP. A wake that came while the caller was busy ends the
    /// next wait at once. An error means the connection is dead.
    ///
    /// After a wake NOOP is always sent: a server shows a session new mail only
    /// when it syncs the session's view (Dovecot does at the end of a command), and
    /// a SEARCH alone would run on the old view.
    pub async fn wait(&mut self, max: Duration, wake: &Notify) -> anyhow::Result<()> {
        self.alive()?;
        if std::mem::take(&mut self.changed) {
            return Ok(());
        }
        if wake.notified().now_or_never().is_some() {
            return self.sync_view().await;
        }
        let limit = max.min(self.idle_timeout);
        if !self.caps.idle {
            tokio::select! {
                _ = tokio::time::sleep(limit) => {}
                _ = wake.notified() => {}
            }
            return self.sync_view().await;
        }
        let deadline = Instant::now() + limit;
        match self.idle(deadline, wake).await {
            Ok(Idled::Changed) => Ok(()),
            Ok(Idled::Woken) => self.sync_view().await,
            Err(Failure::Refused(text)) => {
                Err(anyhow!("imap server {} refused IDLE: {text}", self.server))
            }
            Err(Failure::Lost(text)) => Err(self.lost("idling", text)),
        }
    }

    /// NOOP, so the server brings this session's view up to date.
    async fn sync_view(&mut self) -> anyhow::Result<()> {
        self.run("polling (NOOP)", "NOOP").await?;
        self.changed = false;
        Ok(())
    }

    /// Say LOGOUT (briefly: the connection is going away either way).
    pub async fn logout(mut self) {
        if self.dead.is_some() {
            return;
        }
        let t = self.command_timeout.min(Duration::from_secs(5));
        let _ = timeout(t, exchange(&mut self.session, "LOGOUT")).await;
    }

    /// IDLE until EXISTS or `deadline`, then DONE. The whole exchange is ours (not
    /// async-imap's idle handle) so a BYE and a closed socket are told apart from
    /// a timeout, and the session is never moved out of `self`.
    async fn idle(&mut self, deadline: Instant, wake: &Notify) -> Result<Idled, Failure> {
        let t = self.command_timeout;
        let id = match timeout(t, self.session.run_command("IDLE")).await {
            Ok(Ok(id)) => id,
            Ok(Err(e)) => return Err(Failure::Lost(format!("sending IDLE: {e}"))),
            Err(_) => {
                return Err(Failure::Lost(format!(
                    "sending IDLE: no progress within {t:?}"
                )))
            }
        };
        // The server confirms with a continuation; it may send untagged data first.
        let started = timeout(t, async {
            loop {
                match next(&mut self.session).await? {
                    Item::Continue => return Ok(true),
                    Item::Tagged {
                        tag, status, text, ..
                    } if tag == id => {
                        // Completed (or refused) without ever idling.
                        return tagged_result(status, text).map(|()| false);
                    }
                    Item::Bye(text) => return Err(bye(text)),
                    Item::Exists => self.changed = true,
                    _ => {}
                }
            }
        })
        .await
        .map_err(|_| Failure::Lost(format!("no IDLE continuation within {t:?}")))??;
        if !started {
            return Ok(Idled::Changed);
        }

        // Idle. `* OK Still here` keep-alives and flag changes keep us waiting;
        // only new mail, a wake, the deadline, or the end of the connection stop it.
        let mut woken = false;
        while !self.changed {
            let item = tokio::select! {
                r = timeout_at(deadline, next(&mut self.session)) => match r {
                    Err(_) => break,
                    Ok(item) => item?,
                },
                _ = wake.notified() => {
                    woken = true;
                    break;
                }
            };
            match item {
                Item::Bye(text) => return Err(bye(text)),
                // Ended by the server (e.g. its own IDLE time limit).
                Item::Tagged {
                    tag, status, text, ..
                } if tag == id => return tagged_result(status, text).map(|()| Idled::Changed),
                Item::Exists => self.changed = true,
                _ => {}
            }
        }

        // End IDLE. A server that doesn't answer DONE is as dead as one that
        // doesn't answer a command.
        // A live server answers DONE at once; waiting the full command timeout
        // would delay noticing a silently dead link by that much.
        let done = timeout(t.min(DONE_TIMEOUT), async {
            self.session
                .run_command_untagged("DONE")
                .await
                .map_err(|e| Failure::Lost(format!("sending DONE: {e}")))?;
            loop {
                match next(&mut self.session).await? {
                    Item::Tagged {
                        tag, status, text, ..
                    } if tag == id => return tagged_result(status, text),
                    Item::Bye(text) => return Err(bye(text)),
                    Item::Exists => self.changed = true,
                    _ => {}
                }
            }
        })
        .await
        .map_err(|_| Failure::Lost(format!("no answer to DONE within {t:?}")))?;
        done?;
        // Returning tells the caller about the change; don't report it twice.
        self.changed = false;
        Ok(if woken { Idled::Woken } else { Idled::Changed })
    }

    /// Run one command to its tagged reply under `command_timeout`, returning what
    /// the server said on the way (the tagged reply last). `what` names the step.
    async fn run(&mut self, what: &str, command: &str) -> anyhow::Result<Vec<Item>> {
        self.alive()?;
        let t = self.command_timeout;
        let result = match timeout(t, exchange(&mut self.session, command)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Lost(format!("no answer within {t:?}"))),
        };
        match result {
            Ok(reply) => {
                self.changed |= reply.iter().any(|i| matches!(i, Item::Exists));
                Ok(reply)
            }
            Err(Failure::Refused(text)) => Err(anyhow!(
                "imap server {} refused {what}: {text}",
                self.server
            )),
            Err(Failure::Lost(text)) => Err(self.lost(what, text)),
        }
    }

    /// Mark the connection dead and build the error; an Exchange "AccessTokenExpired"
    /// BYE also makes the token source forget its token for the next connect.
    fn lost(&mut self, what: &str, text: String) -> anyhow::Error {
        let expired = text.to_ascii_lowercase().contains("accesstokenexpired");
        let reason = if expired {
            if let Some(ts) = &self.tokens {
                ts.invalidate();
            }
            format!(
                "imap server {} ended the session while {what}: access token expired ({text})",
                self.server
            )
        } else {
            format!(
                "imap connection to {} lost while {what}: {text}",
                self.server
            )
        };
        self.dead = Some(reason.clone());
        anyhow!(reason)
    }

    fn alive(&self) -> anyhow::Result<()> {
        match &self.dead {
            Some(reason) => Err(anyhow!(
                "imap connection is unusable after an earlier error: {reason}"
            )),
            None => Ok(()),
        }
    }

    async fn read_capabilities(&mut self) -> anyhow::Result<()> {
        let reply = self.run("reading capabilities", "CAPABILITY").await?;
        let mut caps = Caps::default();
        for item in reply {
            if let Item::Capabilities(list) = item {
                for c in list {
                    caps.idle |= c.eq_ignore_ascii_case("IDLE");
                    caps.move_ |= c.eq_ignore_ascii_case("MOVE");
                    caps.uidplus |= c.eq_ignore_ascii_case("UIDPLUS");
                }
            }
        }
        self.caps = caps;
        Ok(())
    }

    /// Create `folder` unless LIST shows it. Dovecot's auto-created folders and
    /// Exchange both answer CREATE of an existing folder with a plain NO, so
    /// asking first is the only reliable way to tell "exists" from "can't".
    async fn ensure_folder(&mut self, folder: &str) -> anyhow::Result<()> {
        let quoted = quote(folder)?;
        let list = format!("LIST \"\" {quoted}");
        let listed = |reply: Vec<Item>| reply.iter().any(|i| matches!(i, Item::Listed));
        if listed(self.run(&format!("listing folder {quoted}"), &list).await?) {
            return Ok(());
        }
        if let Err(e) = self
            .run(
                &format!("creating folder {quoted}"),
                &format!("CREATE {quoted}"),
            )
            .await
        {
            // Someone may have created it meanwhile; only fail if it is still missing.
            if !listed(self.run(&format!("listing folder {quoted}"), &list).await?) {
                return Err(e);
            }
            return Ok(());
        }
        tracing::info!(folder, "created imap folder");
        // So that mail clients (Outlook, Thunderbird) show it; we don't need it.
        if let Err(e) = self
            .run(
                &format!("subscribing {quoted}"),
                &format!("SUBSCRIBE {quoted}"),
            )
            .await
        {
            tracing::debug!("{e:#}");
            self.alive()?;
        }
        Ok(())
    }

    async fn select(&mut self) -> anyhow::Result<()> {
        let inbox = self.inbox.clone();
        let reply = self
            .run(&format!("selecting {inbox}"), &format!("SELECT {inbox}"))
            .await?;
        let mut uidvalidity = None;
        for item in reply {
            match item {
                Item::UidValidity(v) => uidvalidity = Some(v),
                Item::Tagged {
                    read_only: true, ..
                } => {
                    bail!(
                        "imap server {}: {inbox} is read-only, so mails can't be moved out of it",
                        self.server
                    )
                }
                _ => {}
            }
        }
        self.uidvalidity = uidvalidity.ok_or_else(|| {
            anyhow!(
                "imap server {} sent no UIDVALIDITY for {inbox}",
                self.server
            )
        })?;
        // SELECT reports EXISTS as a matter of course; that is not news.
        self.changed = false;
        Ok(())
    }
}

/// What we keep of one server response. async-imap's own response type can't be
/// named outside the crate, so each one is boiled down to this as it is read.
enum Item {
    /// The tagged end of a command.
    Tagged {
        tag: RequestId,
        status: Status,
        text: String,
        read_only: bool,
    },
    Continue,
    /// `* BYE`: the server is closing the connection, and says why.
    Bye(String),
    /// `* n EXISTS`: the mailbox grew (or SELECT reports its size).
    Exists,
    Search(Vec<u32>),
    /// An untagged FETCH that carried a UID.
    Fetch {
        uid: u32,
        size: Option<u64>,
        body: Option<Vec<u8>>,
        /// FLAGS was in the reply and holds `\Deleted`.
        deleted: bool,
    },
    /// A LIST line: the folder asked about exists.
    Listed,
    Capabilities(Vec<String>),
    /// `* OK [UIDVALIDITY n]`.
    UidValidity(u32),
    Other,
}

fn digest(r: &Response<'_>) -> Item {
    match r {
        Response::Done {
            tag,
            status,
            outcome,
        } => Item::Tagged {
            tag: tag.clone(),
            status: match status {
                Status::Ok => Status::Ok,
                Status::No => Status::No,
                Status::Bad => Status::Bad,
                Status::PreAuth => Status::PreAuth,
                Status::Bye => Status::Bye,
            },
            text: outcome_text(outcome.information.as_deref()),
            read_only: matches!(outcome.code, Some(ResponseCode::ReadOnly)),
        },
        Response::Continue(_) => Item::Continue,
        Response::Data {
            status: Status::Bye,
            outcome,
        } => Item::Bye(outcome_text(outcome.information.as_deref())),
        Response::Data {
            status: Status::Ok,
            outcome,
        } => match outcome.code {
            Some(ResponseCode::UidValidity(v)) => Item::UidValidity(v),
            _ => Item::Other,
        },
        Response::MailboxData(MailboxDatum::Exists(_)) => Item::Exists,
        Response::MailboxData(MailboxDatum::Search(uids)) => Item::Search(uids.clone()),
        Response::MailboxData(MailboxDatum::List(_)) => Item::Listed,
        Response::Capabilities(caps) => Item::Capabilities(
            caps.iter()
                .filter_map(|c| match c {
                    Capability::Atom(a) => Some(a.to_string()),
                    _ => None,
                })
                .collect(),
        ),
        Response::Fetch(_, attrs) => {
            let mut uid = None;
            let mut size = None;
            let mut body = None;
            let mut deleted = false;
            for a in attrs {
                match a {
                    AttributeValue::Uid(u) => uid = Some(*u),
                    AttributeValue::Flags(flags) => {
                        deleted = flags.iter().any(|f| f.eq_ignore_ascii_case("\\Deleted"))
                    }
                    AttributeValue::Rfc822Size(n) => size = Some(u64::from(*n)),
                    AttributeValue::BodySection {
                        section: None,
                        data: Some(d),
                        ..
                    } => body = Some(d.to_vec()),
                    AttributeValue::Rfc822(Some(d)) => body = Some(d.to_vec()),
                    _ => {}
                }
            }
            // A FETCH without UID is an unsolicited flag update for some other
            // message; nothing we asked for.
            match uid {
                Some(uid) => Item::Fetch {
                    uid,
                    size,
                    body,
                    deleted,
                },
                None => Item::Other,
            }
        }
        _ => Item::Other,
    }
}

fn tagged_result(status: Status, text: String) -> Result<(), Failure> {
    match status {
        Status::Ok => Ok(()),
        Status::No | Status::Bad => Err(Failure::Refused(text)),
        other => Err(Failure::Lost(format!(
            "unexpected tagged status {other:?}: {text}"
        ))),
    }
}

/// Send `command` and read to its tagged reply. A BYE ends it as `Lost` with the
/// server's reason, so Exchange's `* BYE ... AccessTokenExpired` in the middle of
/// a session becomes an error that says so.
async fn exchange(session: &mut Session<Transport>, command: &str) -> Result<Vec<Item>, Failure> {
    let id: RequestId = session
        .run_command(command)
        .await
        .map_err(|e| Failure::Lost(format!("sending: {e}")))?;
    let logout = command.eq_ignore_ascii_case("LOGOUT");
    let mut out = Vec::new();
    loop {
        match next(session).await? {
            Item::Tagged {
                tag,
                status,
                text,
                read_only,
            } if tag == id => {
                tagged_result(status, text.clone())?;
                out.push(Item::Tagged {
                    tag,
                    status: Status::Ok,
                    text,
                    read_only,
                });
                return Ok(out);
            }
            // LOGOUT is answered with BYE and then OK; anywhere else BYE ends it.
            Item::Bye(text) if !logout => return Err(bye(text)),
            item => out.push(item),
        }
    }
}

/// The next response, boiled down; EOF and read errors are `Lost`.
async fn next(session: &mut Session<Transport>) -> Result<Item, Failure> {
    match session.read_response().await {
        Ok(Some(r)) => Ok(digest(r.parsed())),
        Ok(None) => Err(Failure::Lost("server closed the connection".into())),
        Err(e) => Err(Failure::Lost(format!("reading: {e}"))),
    }
}

fn bye(text: String) -> Failure {
    Failure::Lost(format!("server said BYE: {text}"))
}

fn outcome_text(information: Option<&str>) -> String {
    information.unwrap_or("(no text)").to_string()
}

async fn read_greeting(
    client: &mut Client<Transport>,
    t: Duration,
    server: &str,
) -> anyhow::Result<()> {
    let greeting = timeout(t, client.read_response())
        .await
        .map_err(|_| anyhow!("imap server {server}: no greeting within {t:?}"))?
        .with_context(|| format!("reading the greeting of imap server {server}"))?
        .ok_or_else(|| anyhow!("imap server {server} closed the connection before its greeting"))?;
    match greeting.parsed() {
        Response::Data {
            status: Status::Ok, ..
        } => Ok(()),
        Response::Data {
            status: Status::PreAuth,
            ..
        } => {
            // We must authenticate as the configured user; a pre-authenticated
            // session could be anyone's mailbox.
            bail!("imap server {server} greeted with PREAUTH; refusing an unauthenticated session")
        }
        Response::Data {
            status: Status::Bye,
            outcome,
        } => {
            bail!(
                "imap server {server} refused the connection: {}",
                outcome_text(outcome.information.as_deref())
            )
        }
        other => bail!("imap server {server} sent an unexpected greeting: {other:?}"),
    }
}

async fn authenticate(
    client: Client<Transport>,
    s: &ImapSettings,
    server: &str,
) -> anyhow::Result<(Session<Transport>, Option<Arc<TokenSource>>)> {
    let t = s.command_timeout;
    let user = &s.username;
    match &s.auth {
        ImapAuth::Password(password) => {
            // async-imap's errors quote the server's answer, never the password.
            let session = timeout(t, client.login(user, password))
                .await
                .map_err(|_| anyhow!("imap server {server}: no answer to LOGIN within {t:?}"))?
                .map_err(|(e, _)| anyhow!("imap login as {user} at {server} failed: {e}"))?;
            Ok((session, None))
        }
        ImapAuth::XOAuth2(tokens) => {
            let token = tokens
                .token()
                .await
                .with_context(|| format!("getting an oauth2 token for imap login as {user}"))?;
            let mut sasl = XOAuth2 {
                user: user.clone(),
                token,
                rounds: 0,
                status: None,
            };
            let result = timeout(t, client.authenticate("XOAUTH2", &mut sasl))
                .await
                .map_err(|_| {
                    anyhow!("imap server {server}: no answer to AUTHENTICATE XOAUTH2 within {t:?}")
                })?;
            match result {
                Ok(session) => Ok((session, Some(tokens.clone()))),
                Err((e, _)) => {
                    // The next connect must not offer the same token again.
                    tokens.invalidate();
                    match sasl.status {
                        Some(status) => bail!(
                            "imap xoauth2 login as {user} at {server} was rejected: server status {status}: {e}"
                        ),
                        None => bail!("imap xoauth2 login as {user} at {server} failed: {e}"),
                    }
                }
            }
        }
    }
}

/// SASL XOAUTH2 (Google's and Microsoft's dialect of OAuth bearer tokens).
struct XOAuth2 {
    user: String,
    token: String,
    rounds: u32,
    /// The server's decoded JSON error status, when it sent one.
    status: Option<String>,
}

impl XOAuth2 {
    fn initial_response(&self) -> String {
        format!("user={}\x01auth=Bearer {}\x01\x01", self.user, self.token)
    }
}

impl Authenticator for &mut XOAuth2 {
    type Response = String;

    fn process(&mut self, challenge: &[u8]) -> String {
        self.rounds += 1;
        if self.rounds == 1 {
            return self.initial_response();
        }
        // A second challenge is the server's JSON error status (e.g.
        // {"status":"401","schemes":"bearer","scope":"..."}). The protocol wants an
        // empty response to it, after which the server sends its tagged NO.
        let text = String::from_utf8_lossy(challenge);
        let text: String = text.chars().filter(|c| !c.is_control()).take(300).collect();
        self.status = Some(text);
        String::new()
    }
}

/// The connection under the IMAP session: plain TCP (loopback, or before STARTTLS)
/// or TLS.
enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Plain(_) => "Transport::Plain",
            Transport::Tls(_) => "Transport::Tls",
        })
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A TLS client trusting the webpki roots plus `ca_file`'s certificates.
fn tls_connector(ca_file: Option<&Path>) -> anyhow::Result<TlsConnector> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::CertificateDer;

    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let mut added = 0;
        let certs = CertificateDer::pem_file_iter(path)
            .with_context(|| format!("reading ca_file {}", path.display()))?;
        for cert in certs {
            let cert = cert.with_context(|| format!("parsing ca_file {}", path.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("adding a certificate from ca_file {}", path.display()))?;
            added += 1;
        }
        if added == 0 {
            bail!("ca_file {} holds no PEM certificate", path.display());
        }
    }
    // Name the provider explicitly: with more than one rustls provider in the
    // build, the process-wide default would panic instead of choosing.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("setting up tls")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

async fn handshake(
    tls: &TlsConnector,
    host: &str,
    tcp: TcpStream,
    t: Duration,
    server: &str,
) -> anyhow::Result<TlsStream<TcpStream>> {
    let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
        .with_context(|| format!("{host:?} is not a valid tls server name"))?;
    timeout(t, tls.connect(name, tcp))
        .await
        .map_err(|_| anyhow!("tls handshake with imap server {server}: no answer within {t:?}"))?
        .with_context(|| format!("tls handshake with imap server {server}"))
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A folder name as an IMAP quoted string, in modified UTF-7 (RFC 3501 §5.1.3), so
/// names like "Geprüft" work on every server.
fn quote(name: &str) -> anyhow::Result<String> {
    if name.is_empty() || name.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
        bail!("folder name {name:?} is empty or holds a line break");
    }
    let encoded = mutf7(name);
    Ok(format!(
        "\"{}\"",
        encoded.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// Modified UTF-7: printable ASCII stays, `&` becomes `&-`, anything else is
/// UTF-16 in base64 (with `,` for `/`) between `&` and `-`.
fn mutf7(s: &str) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";
    fn flush(out: &mut String, units: &mut Vec<u16>) {
        if units.is_empty() {
            return;
        }
        let bytes: Vec<u8> = units.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            let chars = chunk.len() + 1;
            for i in 0..chars {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        out.push('-');
        units.clear();
    }
    let mut out = String::with_capacity(s.len());
    let mut pending: Vec<u16> = Vec::new();
    for c in s.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut out, &mut pending);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut out, &mut pending);
    out
}

/// A sorted UID list as an IMAP sequence set with ranges: `1:3,7,9:12`.
fn uid_set(uids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end.wrapping_add(1) {
            i += 1;
            end = uids[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// How long to wait before reconnect attempt `attempt` (0-based): 1 s doubling up
/// to 5 minutes, each drawn at random from the upper half of its step so many
/// daemons (or one daemon's two connections) don't hammer a server in step.
pub fn backoff(attempt: u32) -> Duration {
    let step = Duration::from_secs(1)
        .saturating_mul(1u32 << attempt.min(16))
        .min(MAX_BACKOFF);
    let half = step / 2;
    // RandomState is seeded randomly per process and advances per instance: enough
    // randomness for jitter without another dependency.
    let r = RandomState::new().hash_one(attempt);
    let fraction = (r >> 11) as f64 / (1u64 << 53) as f64;
    half + half.mul_f64(fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_sets_use_ranges() {
        assert_eq!(uid_set(&[1, 2, 3, 7, 9, 10, 11, 12]), "1:3,7,9:12");
        assert_eq!(uid_set(&[5]), "5");
        assert_eq!(uid_set(&[]), "");
        assert_eq!(uid_set(&[4, 6, u32::MAX]), "4,6,4294967295");
    }

    #[test]
    fn folder_names_are_modified_utf7() {
        assert_eq!(mutf7("Processed"), "Processed");
        assert_eq!(mutf7("Geprüft"), "Gepr&APw-ft");
        assert_eq!(mutf7("Entwürfe"), "Entw&APw-rfe");
        assert_eq!(mutf7("A&B"), "A&-B");
        assert_eq!(mutf7("日本語"), "&ZeVnLIqe-");
        assert_eq!(quote("INBOX/Re \"x\"").unwrap(), r#""INBOX/Re \"x\"""#);
        assert!(quote("a\r\nb").is_err());
    }

    #[test]
    fn loopback_only_for_plaintext() {
        for h in ["localhost", "127.0.0.1", "127.3.4.5", "::1", "[::1]"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "outlook.office365.com",
            "10.0.0.1",
            "localhost.evil.example",
            "",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn backoff_grows_jitters_and_caps() {
        for attempt in 0..40 {
            let d = backoff(attempt);
            let step = Duration::from_secs(1u64 << attempt.min(16)).min(MAX_BACKOFF);
            assert!(d >= step / 2 && d <= step, "attempt {attempt}: {d:?}");
        }
        assert!(backoff(100) <= MAX_BACKOFF);
        let draws: std::collections::HashSet<Duration> = (0..20).map(|_| backoff(8)).collect();
        assert!(draws.len() > 1, "no jitter");
    }

    #[test]
    fn xoauth2_initial_response_format() {
        let mut a = XOAuth2 {
            user: "cloud@x.example".into(),
            token: "tok".into(),
            rounds: 0,
            status: None,
        };
        let mut auth = &mut a;
        assert_eq!(
            auth.process(b""),
            "user=cloud@x.example\x01auth=Bearer tok\x01\x01"
        );
        assert_eq!(auth.process(br#"{"status":"401"}"#), "");
        assert_eq!(a.status.as_deref(), Some(r#"{"status":"401"}"#));
    }

    #[test]
    fn debug_never_shows_the_password() {
        let a = ImapAuth::Password("hunter2".into());
        assert!(!format!("{a:?}").contains("hunter2"));
    }
}
