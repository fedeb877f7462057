#!/usr/bin/env python3
"""The server-bound limit: fetch every mail of the inbox and do nothing with it.

One imaplib connection; UID SEARCH ALL, then UID FETCH <batch> (BODY.PEEK[]) in
batches of --batch UIDs (mpnd's default batch_size is 50). Prints
`<mails> <bytes> <client cpu seconds>`, so the run can tell whether the server or
this client was the bound.

With --move FOLDER, each batch is also moved there (UID MOVE) once fetched: the
server's side of mpnd's whole mailbox job, which moves every mail out of the inbox.

    fetchonly.py --imap-port P --user U --password W [--batch 50] [--move FOLDER]
"""

import argparse
import imaplib
import os


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--imap-port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--move", metavar="FOLDER")
    a = ap.parse_args()
    imap = imaplib.IMAP4("127.0.0.1", a.imap_port)
    imap.login(a.user, a.password)
    if a.move:
        imap.create(a.move)
    imap.select("INBOX", readonly=not a.move)
    typ, data = imap.uid("SEARCH", None, "ALL")
    uids = data[0].split()
    mails = size = 0
    for i in range(0, len(uids), a.batch):
        batch = b",".join(uids[i:i + a.batch])
        typ, data = imap.uid("FETCH", batch, "(BODY.PEEK[])")
        for item in data:
            if isinstance(item, tuple):
                mails += 1
                size += len(item[1])
        if a.move:
            typ, data = imap.uid("MOVE", batch, a.move)
            if typ != "OK":
                raise SystemExit(f"UID MOVE failed: {data}")
    imap.logout()
    t = os.times()
    print(mails, size, f"{t.user + t.system:.3f}")


if __name__ == "__main__":
    main()
