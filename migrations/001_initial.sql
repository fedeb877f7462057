-- mpnd schema, version 1. Migrations are append-only: never edit a released file,
-- add the next one. Tables are STRICT, columns NOT NULL with defaults where a value
-- always exists, times are unix seconds (UTC).

-- Resellers: the distributor's accounts. `mpn_id` is the ID on record;
-- `mpn_id_applied` says whether mpnd put it there (1) or it came from an import
-- (0: an old, revoked ID for resellers who must re-register).
CREATE TABLE resellers (
    account         TEXT PRIMARY KEY,
    company         TEXT NOT NULL,
    contact_emails  TEXT NOT NULL DEFAULT '',   -- ';'-separated, lower-case
    domains         TEXT NOT NULL DEFAULT '',   -- ';'-separated, lower-case
    mpn_id          TEXT,
    mpn_id_applied  INTEGER NOT NULL DEFAULT 0,
    pending_mpn_id  TEXT,                       -- the ID being applied (state updating)
    locale          TEXT NOT NULL DEFAULT 'de',
    state           TEXT NOT NULL DEFAULT 'awaiting_id'
                    CHECK (state IN ('active', 'awaiting_id', 'updating')),
    updated_at      INTEGER NOT NULL
) STRICT;

-- Every ID a reseller ever had; 'revoked' ones may never be applied again, to
-- anyone.
CREATE TABLE reseller_ids (
    account     TEXT NOT NULL REFERENCES resellers(account),
    mpn_id      TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('current', 'revoked')),
    since       INTEGER NOT NULL,
    PRIMARY KEY (account, mpn_id)
) STRICT;
CREATE INDEX reseller_ids_by_id ON reseller_ids(mpn_id);

CREATE TABLE subscriptions (
    subscription_id TEXT PRIMARY KEY,
    account         TEXT NOT NULL REFERENCES resellers(account),
    customer_id     TEXT NOT NULL,
    offer           TEXT NOT NULL DEFAULT '',
    partner_id      TEXT NOT NULL DEFAULT '',
    updated_at      INTEGER NOT NULL
) STRICT;
CREATE INDEX subscriptions_by_account ON subscriptions(account);

-- Inbound mail. A message is recognised again by its Message-ID (or a hash of
-- its bytes when it has none) and by its place in the mailbox.
CREATE TABLE messages (
    id          INTEGER PRIMARY KEY,
    message_key TEXT NOT NULL UNIQUE,
    mailbox     TEXT NOT NULL,                  -- 'maildir:<dir>' or 'imap:<folder>'
    uidvalidity INTEGER NOT NULL DEFAULT 0,     -- 0 for Maildir
    position    TEXT NOT NULL,                  -- IMAP UID or Maildir unique name
    size        INTEGER NOT NULL,
    raw         BLOB,                           -- NULL when too large to keep
    received_at INTEGER NOT NULL,
    destination TEXT NOT NULL,                  -- processed | review | ignored
    UNIQUE (mailbox, uidvalidity, position)
) STRICT;

CREATE TABLE cases (
    id          INTEGER PRIMARY KEY,
    message_id  INTEGER REFERENCES messages(id),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    sender      TEXT NOT NULL DEFAULT '',
    subject     TEXT NOT NULL DEFAULT '',
    account     TEXT,                           -- the reseller, when known
    outcome     TEXT NOT NULL,
    decision    TEXT NOT NULL,
    mpn_id      TEXT,
    state       TEXT NOT NULL CHECK (state IN
                ('review', 'updating', 'done', 'rejected', 'ignored', 'superseded')),
    reasons     TEXT NOT NULL DEFAULT '[]',     -- JSON array of strings
    triage      TEXT NOT NULL DEFAULT '{}',     -- JSON: the whole triage result
    decided_by  TEXT NOT NULL DEFAULT 'mpnd'
) STRICT;
CREATE INDEX cases_by_state ON cases(state);
CREATE INDEX cases_by_account ON cases(account);

-- One update to make for a case. Attempts are counted before each try.
CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY,
    case_id         INTEGER NOT NULL REFERENCES cases(id),
    account         TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('account', 'subscription')),
    subscription_id TEXT,
    customer_id     TEXT,
    mpn_id          TEXT NOT NULL,
    old_mpn_id      TEXT,
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN
                    ('pending', 'running', 'done', 'failed', 'dead', 'cancelled')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT NOT NULL DEFAULT '',
    idempotency_key TEXT NOT NULL UNIQUE,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) STRICT;
CREATE INDEX jobs_by_case ON jobs(case_id);
CREATE INDEX jobs_due ON jobs(state, next_attempt_at);

-- Confirmations to send, rendered when queued so a resend is byte-identical and
-- carries the same Message-ID.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    case_id         INTEGER REFERENCES cases(id),
    account         TEXT,
    kind            TEXT NOT NULL CHECK (kind IN ('received', 'applied', 'rejected')),
    recipient       TEXT NOT NULL,
    message_id      TEXT NOT NULL UNIQUE,
    raw             BLOB NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN
                    ('pending', 'sent', 'failed', 'suppressed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL,
    sent_at         INTEGER
) STRICT;
CREATE INDEX outbox_due ON outbox(state, next_attempt_at);
CREATE INDEX outbox_by_recipient ON outbox(recipient, created_at);

CREATE TABLE audit (
    id      INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,                      -- 'mpnd' or 'operator:<name>'
    action  TEXT NOT NULL,
    case_id INTEGER,
    account TEXT,
    job_id  INTEGER,
    detail  TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX audit_by_case ON audit(case_id);
CREATE INDEX audit_by_account ON audit(account);

-- Per-folder IMAP cursor and whatever the daemon reports about itself
-- (`mpnd status` reads it from here, so it works without the daemon's help).
CREATE TABLE mailbox_cursor (
    folder      TEXT PRIMARY KEY,
    uidvalidity INTEGER NOT NULL,
    next_uid    INTEGER NOT NULL
) STRICT;

CREATE TABLE status (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;
