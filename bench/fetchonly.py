#!/usr/bin/env python3
"""The server-bound limit: fetch every mail of the inbox and do nothing with it.

One imaplib connection; UID SEARCH ALL, then UID FETCH <batch> (BODY.PEEK[]) in
batches of --batch UIDs (mpnd's default batch_size is 50). Prints
`<mails> <bytes> <client cpu seconds>`, so the run can tell whether the server or
this client was the bound.

    fetchonly.py --imap-port P --user U --password W [--batch 50]
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
    a = ap.parse_args()
    imap = imaplib.IMAP4("127.0.0.1", a.imap_port)
    imap.login(a.user, a.password)
    imap.select("INBOX", readonly=True)
    typ, data = imap.uid("SEARCH", None, "ALL")
    uids = data[0].split()
    mails = size = 0
    for i in range(0, len(uids), a.batch):
        typ, data = imap.uid("FETCH", b",".join(uids[i:i + a.batch]), "(BODY.PEEK[])")
        for item in data:
            if isinstance(item, tuple):
                mails += 1
                size += len(item[1])
    imap.logout()
    t = os.times()
    print(mails, size, f"{t.user + t.system:.3f}")


if __name__ == "__main__":
    main()
