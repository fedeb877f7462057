-- mpnd schema, version 4: what a backlog of 1,000 mails showed under perf
-- (bench/run.sh --attach 'perf record …'): two per-mail queries whose cost grew
-- with the store's history.

-- newer_case asks, for every apply, whether the reseller has a case from a later
-- mail; it read the date out of each earlier case's triage JSON. The Date of a
-- case's mail is now a column of its own.
ALTER TABLE cases ADD COLUMN mail_date INTEGER;
UPDATE cases SET mail_date = json_extract(triage, '$.headers.date');

-- queue_mail numbers a case's confirmations (their Message-IDs) by counting the
-- case's outbox rows: a scan of the whole outbox without this.
CREATE INDEX outbox_by_case ON outbox(case_id);

-- seen_in finds the case of a mail seen before (a rescan after a restart sees
-- every mail still in the inbox again): a scan of all cases per mail without this.
CREATE INDEX cases_by_message ON cases(message_id);
