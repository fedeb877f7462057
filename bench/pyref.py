#!/usr/bin/env python3
"""The plain-Python reference: the script an operations engineer would otherwise
write for mpnd's job, with nothing but the standard library.

imaplib (one connection; SEARCH, then per mail UID FETCH BODY.PEEK[] and UID MOVE),
email (parse, pick the text or HTML body), re (drop the quoted part, find a 6-7
digit ID near a keyword), sqlite3 (one INSERT and a commit per mail), smtplib (one
connection, one confirmation per apply). It drains the inbox until it is empty.

    pyref.py --imap-port P --user U --password W --smtp-port S --db FILE --resellers CSV
"""

import argparse
import csv
import email
import email.policy
import email.utils
import imaplib
import re
import smtplib
import sqlite3
import time

ID_RE = re.compile(
    r"(?:MPN|PLA|Partner|Standort)[- ]?(?:ID)?[^0-9\n]{0,40}?\b(\d{6,7})\b", re.IGNORECASE)
QUOTE_RE = re.compile(r"^(?:>|_{10,}|-{3,} ?Original|Von: |From: |Am .* schrieb|On .* wrote)", re.M)
TAG_RE = re.compile(r"<[^>]+>")
STYLE_RE = re.compile(r"<(style|head)[^>]*>.*?</\1>", re.S | re.I)


def load(path):
    contacts, old = {}, set()
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            for c in row["contact_emails"].split(";"):
                if c.strip():
                    contacts[c.strip().lower()] = (row["account"], row["locale"])
            old.add(row["old_mpn_id"])
    return contacts, old


def text_of(msg):
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    text = part.get_content()
    if part.get_content_subtype() == "html":
        text = TAG_RE.sub(" ", STYLE_RE.sub(" ", text)).replace("&nbsp;", " ")
    return text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--imap-port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--smtp-port", type=int, required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--resellers", required=True)
    a = ap.parse_args()
    contacts, old_ids = load(a.resellers)
    db = sqlite3.connect(a.db)
    db.execute("CREATE TABLE IF NOT EXISTS cases (id INTEGER PRIMARY KEY, message_id TEXT UNIQUE, sender TEXT,"
               " account TEXT, mpn_id TEXT, decision TEXT, raw BLOB, created REAL)")
    db.commit()
    imap = imaplib.IMAP4("127.0.0.1", a.imap_port)
    imap.login(a.user, a.password)
    imap.select("INBOX")
    smtp = smtplib.SMTP("127.0.0.1", a.smtp_port)
    n = 0
    while True:
        typ, data = imap.uid("SEARCH", None, "ALL")
        uids = data[0].split()
        if not uids:
            break
        for uid in uids:
            typ, data = imap.uid("FETCH", uid, "(BODY.PEEK[])")
            raw = data[0][1]
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            sender = email.utils.parseaddr(str(msg.get("From", "")))[1].lower()
            mid = str(msg.get("Message-ID", "")) or f"uid-{uid.decode()}"
            auto = str(msg.get("Auto-Submitted", "no")).lower() != "no" or msg.get("List-Id")
            text = text_of(msg)
            cut = QUOTE_RE.search(text)
            top = text[: cut.start()] if cut else text
            ids = {m for m in ID_RE.findall(str(msg.get("Subject", "")) + "\n" + top) if m not in old_ids}
            account = contacts.get(sender, (None, None))[0]
            if auto:
                decision, folder = "ignore", "Ignored"
            elif account and len(ids) == 1:
                decision, folder = "apply", "Processed"
            else:
                decision, folder = "review", "Review"
            mpn = ids.pop() if decision == "apply" else None
            db.execute("INSERT OR IGNORE INTO cases (message_id, sender, account, mpn_id, decision, raw, created)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?)", (mid, sender, account, mpn, decision, raw, time.time()))
            db.commit()
            imap.uid("MOVE", uid, folder)
            if decision == "apply":
                subject = "Re: " + str(msg.get("Subject", ""))
                body = (f"From: Nordwind Cloud <cloud@nordwind-dist.example>\r\nTo: {sender}\r\n"
                        f"Subject: {subject}\r\nIn-Reply-To: {mid}\r\nAuto-Submitted: auto-replied\r\n"
                        f"Message-ID: {email.utils.make_msgid(domain='nordwind-dist.example')}\r\n"
                        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
                        f"We received your new ID {mpn} for account {account}; we are updating it now.\r\n")
                smtp.sendmail("cloud@nordwind-dist.example", [sender], body.encode("utf-8"))
            n += 1
    smtp.quit()
    imap.logout()
    print(n)


if __name__ == "__main__":
    main()
