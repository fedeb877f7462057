-- mpnd schema, version 3: indexes for the queries every mail runs, measured with
-- bench/run.sh. Without them a reseller's earlier cases and a recipient's earlier
-- confirmations were scanned row by row, so the cost per mail grew with history.

-- cancel_updates, newer_case, the gate's progress count: a reseller's cases in a state.
CREATE INDEX cases_by_account_state ON cases(account, state);
-- queue_mail's daily cap per recipient.
CREATE INDEX outbox_by_recipient_time ON outbox(recipient, created_at, state);
DROP INDEX outbox_by_recipient;
