-- mpnd schema, version 2: what the automatic backends need.

-- Gate changes to tell the distributor's platform about (backend "http"): every
-- change of a reseller's state is recorded here by a trigger, in the same
-- transaction as the change itself, so no path that moves a reseller (apply,
-- completion, revoke, supersede) can forget to queue one and a crash cannot lose
-- one. The worker delivers them in order per reseller; a newer change of the same
-- reseller supersedes an undelivered older one (the platform needs the latest
-- truth, not the history). With other backends the rows stay pending, harmless.
-- A separate table rather than a job kind: a gate change belongs to a reseller,
-- not to a case (a revoke has none), and must never count towards a case's jobs.
CREATE TABLE gate_events (
    id              INTEGER PRIMARY KEY,
    account         TEXT NOT NULL,
    state           TEXT NOT NULL,              -- the reseller's new state
    allowed         INTEGER NOT NULL,           -- 1 when orders are allowed (state active)
    mpn_id          TEXT,                       -- the ID on record
    pending_mpn_id  TEXT,                       -- the ID being applied, when updating
    delivery        TEXT NOT NULL DEFAULT 'pending' CHECK (delivery IN
                    ('pending', 'running', 'done', 'superseded')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) STRICT;
CREATE INDEX gate_events_due ON gate_events(delivery, next_attempt_at);
CREATE INDEX gate_events_by_account ON gate_events(account, id);

CREATE TRIGGER resellers_gate_change AFTER UPDATE OF state ON resellers
WHEN OLD.state IS NOT NEW.state
BEGIN
    INSERT INTO gate_events (account, state, allowed, mpn_id, pending_mpn_id, created_at, updated_at)
    VALUES (NEW.account, NEW.state, NEW.state = 'active', NEW.mpn_id, NEW.pending_mpn_id,
            NEW.updated_at, NEW.updated_at);
END;
