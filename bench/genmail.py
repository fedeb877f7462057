#!/usr/bin/env python3
"""Generates N realistic reseller mails for the mpnd benchmark (stdlib only).

Every mail comes from a registered contact of resellers.csv (so most are `apply`),
German or English after the reseller's locale, 2-30 KB: plain text, HTML only, or
multipart/alternative (Outlook style, quoted-printable), with signatures full of
distractor numbers (phone, HRB, VAT, postcode) and quoted history (our notice with
the old ID and the example 1234567). Every apply mail carries its own fresh 7-digit
ID, so no two mails collide. About 5 % are out-of-office replies (ignore) and 5 %
questions without an ID (review).

    genmail.py --resellers resellers.csv --count 1000 --out DIR [--seed 1]

Writes DIR/00000001.eml ... with LF line ends (as a Maildir stores them) and
DIR/manifest.tsv: file, intent (apply|ignore|review), sender, new ID.
"""

import argparse
import csv
import os
import quopri
import email.utils
import random
import sys

OWN = "cloud@nordwind-dist.example"
MX = "mx.nordwind-dist.example"

DE_NAMES = ["Jan Meyer", "Katrin Bergmann", "Markus Huber", "Sandra Wagner", "Thomas Petersen",
            "Anna Becker", "Ralf Schulze", "Lena Hansen", "Stefan Wimmer", "Nina Graf"]
EN_NAMES = ["David Carter", "Emma Hughes", "Julia Ramirez", "Oliver Grant", "Sophie Turner",
            "Liam Walsh", "Grace Chen", "Noah Price"]

DE_STATEMENTS = [
    "wie in Ihrer Mail vom 10.11. angekündigt, haben wir uns bei Microsoft neu als indirekter "
    "Reseller registriert und die Partnerschaftsanfrage der Nordwind Distribution AG im Partner "
    "Center angenommen.\n\nUnsere neue MPN-ID lautet: {id}\n\nBitte hinterlegen Sie die neue ID an "
    "unserem Kundenkonto und an allen bestehenden Subscriptions unserer Endkunden.",
    "unsere neue Standort-ID (PLA) lautet {id}. Die Partnerschaftsanfrage haben wir heute Morgen "
    "im Partner Center angenommen.",
    "anbei wie gewünscht unsere neue Partner-ID: {id}\n\nDie Registrierung als indirekter "
    "Reseller ist abgeschlossen, die Anfrage von Nordwind haben wir bestätigt. Bitte stellen Sie "
    "die Abonnements unserer Kunden um, damit wir wieder bestellen können.",
]
EN_STATEMENTS = [
    "Following your notice about our indirect reseller authorisation, we have re-enrolled with "
    "Microsoft under a new location and accepted your reseller relationship request.\n\nOur new "
    "Partner ID (PLA) is {id}.\n\nPlease update our account and all existing subscriptions so that "
    "we can place orders again.",
    "Our new MPN ID is {id}. We accepted the reseller relationship in Partner Center this morning.",
    "as requested, here is our new PLA ID: {id}\n\nRegistration as an indirect reseller is complete "
    "and we have accepted Nordwind's partner request.",
]
DE_QUESTIONS = [
    "wir haben Ihre Mail zur Reseller-Autorisierung erhalten. Wie lange dauert die Umstellung, "
    "und müssen wir für die Registrierung im Partner Center etwas Besonderes beachten?",
    "kurze Frage: Wo genau finde ich im Partner Center die neue Standort-ID? Wir sind noch dabei, "
    "die Registrierung abzuschließen, und melden uns dann.",
]
EN_QUESTIONS = [
    "we received your notice. How long will the change take, and is there anything special we "
    "need to do in Partner Center?",
    "quick question: where exactly do we find the new location ID in Partner Center? We are still "
    "completing the enrolment and will get back to you.",
]

NOTICE_DE = (
    "Sehr geehrte Damen und Herren,\n\nMicrosoft hat uns mitgeteilt, dass die Autorisierung der "
    "{company} als indirekter CSP-Reseller beendet wurde. Ihre bisherige MPN-ID {old} ist damit "
    "ungültig und kann auch künftig nicht wieder verwendet werden. Bis eine neue ID hinterlegt ist, "
    "können wir keine Bestellungen für Ihr Konto ({account}) annehmen.\n\nSo geht es weiter:\n"
    "1. Registrieren Sie sich im Partner Center mit einem neuen Standort erneut als indirekter "
    "Reseller.\n2. Akzeptieren Sie das Microsoft Partner Agreement und unsere Partnerschaftsanfrage.\n"
    "3. Senden Sie uns Ihre neue Standort-ID (PLA-ID, in der Regel 7-stellig, z. B. 1234567) an "
    "cloud@nordwind-dist.example.\n\nWir stellen die neue ID dann an Ihrem Konto und an allen "
    "bestehenden Abonnements Ihrer Kunden um.\n\nMit freundlichen Grüßen\n\nJulia Kraus\n"
    "Cloud Solutions Team\n\nNordwind Distribution AG\nHafenstraße 21 · 20457 Hamburg\n"
    "Tel. +49 40 5557021-0\ncloud@nordwind-dist.example\n"
    "Amtsgericht Hamburg HRB 165432 · USt-IdNr. DE 318 765 432\n"
)
NOTICE_EN = (
    "Dear partner,\n\nMicrosoft has informed us that the authorisation of {company} as an "
    "indirect CSP reseller has ended. Your previous MPN ID {old} is therefore no longer valid and "
    "cannot be used again. Until a new ID is on file we cannot accept orders for your account "
    "({account}).\n\nNext steps:\n1. Re-enrol in Partner Center with a new location as an indirect "
    "reseller.\n2. Accept the Microsoft Partner Agreement and our reseller relationship request.\n"
    "3. Send us your new location ID (PLA ID, usually 7 digits, e.g. 1234567) at "
    "cloud@nordwind-dist.example.\n\nWe will then update your account and every existing "
    "subscription of your customers.\n\nKind regards\n\nJulia Kraus\nCloud Solutions Team\n\n"
    "Nordwind Distribution AG\nHafenstrasse 21, 20457 Hamburg, Germany\nTel. +49 40 5557021-0\n"
)
# Older thread history, quoted below the notice to reach realistic sizes.
HISTORY_DE = (
    "vielen Dank für die Bestellung 4711-{n}. Die Lizenzen für Microsoft 365 Business Standard "
    "(25 Stück) sind bereitgestellt, die Rechnung Nr. 2025-{n}8 folgt separat. Bei Fragen zur "
    "Laufzeit (P1Y, monatliche Zahlung) oder zur Kündigungsfrist von 7 Tagen melden Sie sich gern. "
    "Ihre Kundennummer 10{n}4 bleibt unverändert.\n"
)
HISTORY_EN = (
    "thank you for order 4711-{n}. The licences for Microsoft 365 Business Standard (25 seats) "
    "are provisioned; invoice no. 2025-{n}8 follows separately. If you have questions about the "
    "term (P1Y, monthly billing) or the 7-day cancellation window, let us know. Your customer "
    "number 10{n}4 stays the same.\n"
)

OUTLOOK_CSS = """<style><!--
/* Font Definitions */
@font-face
	{font-family:"Cambria Math";
	panose-1:2 4 5 3 5 4 6 3 2 4;}
@font-face
	{font-family:Aptos;}
/* Style Definitions */
p.MsoNormal, li.MsoNormal, div.MsoNormal
	{margin:0cm;
	font-size:11.0pt;
	font-family:"Aptos",sans-serif;
	mso-ligatures:standardcontextual;
	mso-fareast-language:EN-US;}
a:link, span.MsoHyperlink
	{mso-style-priority:99;
	color:#467886;
	text-decoration:underline;}
.MsoChpDefault
	{mso-style-type:export-only;
	font-size:10.0pt;
	mso-ligatures:none;}
@page WordSection1
	{size:612.0pt 792.0pt;
	margin:70.85pt 70.85pt 2.0cm 70.85pt;}
div.WordSection1
	{page:WordSection1;}
--></style>"""


def load_resellers(path):
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            contacts = [c.strip() for c in row["contact_emails"].split(";") if c.strip()]
            if contacts:
                out.append({
                    "account": row["account"], "company": row["company"], "contacts": contacts,
                    "old": row["old_mpn_id"], "locale": row["locale"] or "de",
                })
    return out


def signature(r, name, rng):
    de = r["locale"] == "de"
    city = rng.choice(["28217 Bremen", "55118 Mainz", "80331 München", "20457 Hamburg"]) if de \
        else rng.choice(["Leeds LS1 4DL", "London EC1A 1BB", "Austin, TX 78701"])
    lines = [name, "Leiter Vertrieb" if de else "Operations Manager", "", r["company"],
             f"Musterstraße {rng.randint(1, 200)} | {city}" if de else f"Unit {rng.randint(1, 40)}, {city}",
             f"Tel. +49 {rng.randint(200, 999)} {rng.randint(1000, 9999)}-{rng.randint(100, 999)}"
             if de else f"Tel. +44 {rng.randint(100, 999)} {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
             r["contacts"][0]]
    if de:
        lines += [f"Sitz: Bremen, Amtsgericht Bremen HRB {rng.randint(10000, 99999)} HB",
                  f"USt-IdNr.: DE {rng.randint(100, 999)} {rng.randint(100, 999)} {rng.randint(100, 999)}"]
    else:
        lines += [f"Company No. {rng.randint(10000000, 99999999)} | VAT GB {rng.randint(100, 999)} "
                  f"{rng.randint(1000, 9999)} {rng.randint(10, 99)}"]
    return "\n".join(lines) + "\n"


def quoted_history(r, contact, target, rng):
    """Outlook-style quoted thread (our notice, then older mails) of about `target` chars."""
    de = r["locale"] == "de"
    parts = []
    notice = (NOTICE_DE if de else NOTICE_EN).format(company=r["company"], old=r["old"], account=r["account"])
    hdr = ("Von: Nordwind Cloud Team <{own}>\nGesendet: Montag, 10. November 2025 15:02\nAn: {c}\n"
           "Betreff: Wichtig: Ihr CSP-Reseller-Status bei Microsoft - neue MPN-ID erforderlich\n\n") if de else \
          ("From: Nordwind Cloud Team <{own}>\nSent: Monday, 10 November 2025 15:02\nTo: {c}\n"
           "Subject: Important: your CSP reseller status at Microsoft - new MPN ID required\n\n")
    parts.append(hdr.format(own=OWN, c=contact) + notice)
    size = len(parts[0])
    k = 0
    while size < target:
        k += 1
        h = (HISTORY_DE if de else HISTORY_EN).format(n=rng.randint(100, 999))
        block = (("Von: Nordwind Auftragsservice <orders@nordwind-dist.example>\nGesendet: {d}. Oktober 2025\n"
                  "Betreff: AW: Bestellung\n\nGuten Tag,\n\n") if de else
                 ("From: Nordwind Order Desk <orders@nordwind-dist.example>\nSent: {d} October 2025\n"
                  "Subject: RE: Order\n\nHello,\n\n")).format(d=28 - (k % 27)) + h * 3 + "\n"
        parts.append(block)
        size += len(block)
    sep = "\n________________________________\n"
    return sep + sep.join(parts)


def qp(text):
    return quopri.encodestring(text.encode("utf-8")).decode("ascii")


def html_of(text):
    esc = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    paras = "".join(f"<p class=MsoNormal>{line or '<o:p>&nbsp;</o:p>'}<o:p></o:p></p>\n" for line in esc.split("\n"))
    return ("<html xmlns:o=\"urn:schemas-microsoft-com:office:office\"><head>"
            "<meta http-equiv=Content-Type content=\"text/html; charset=utf-8\">"
            f"{OUTLOOK_CSS}</head><body lang=DE link=\"#467886\"><div class=WordSection1>\n"
            f"{paras}</div></body></html>\n")


def make_mail(i, r, seed, new_id, intent, quote=None):
    """One mail; `quote` is the size of the quoted history in characters (None: as
    the drawn target size asks, found by two probes)."""
    if quote is None:
        target = random.Random(seed).randint(2048, 30 * 1024)
        base, _ = make_mail(i, r, seed, new_id, intent, 0)
        if intent == "ignore" or len(base) >= target:
            return base, _
        probe, _ = make_mail(i, r, seed, new_id, intent, 8000)
        per_char = max((len(probe) - len(base)) / 8000, 0.1)
        return make_mail(i, r, seed, new_id, intent, max(int((target - len(base)) / per_char), 0))
    rng = random.Random(seed)
    rng.randint(0, 1)
    de = r["locale"] == "de"
    contact = rng.choice(r["contacts"])
    name = rng.choice(DE_NAMES if de else EN_NAMES)
    domain = contact.split("@", 1)[1]
    mid = f"<bench-{i:08d}.{rng.getrandbits(40):x}@{domain}>"
    # Dates rise with i (one mail a minute from 10 Nov 2025): mails arrive in the
    # order they were written, as in a real backlog. mpnd holds an apply whose mail
    # is older than the one that set the reseller's current ID for review.
    date = email.utils.formatdate(1762761600 + i * 61)
    extra = []
    if intent == "ignore":
        subject = ("Automatische Antwort: " if de else "Automatic reply: ") + "Reseller-Status"
        body = ("Vielen Dank für Ihre Nachricht. Ich bin bis einschließlich 28.11. nicht im Büro und "
                "habe keinen Zugriff auf meine E-Mails. In dringenden Fällen wenden Sie sich bitte an "
                "unsere Zentrale unter +49 421 3398-0.\n") if de else \
               ("Thank you for your message. I am out of the office until 28 November with no access "
                "to e-mail. For urgent matters please call +44 113 496 0000.\n")
        extra = ["Auto-Submitted: auto-replied", "X-Auto-Response-Suppress: All"]
        text = body + "\n" + signature(r, name, rng) + "\n" * 2 + (
            "Diese E-Mail enthält vertrauliche Informationen. " if de else
            "This e-mail may contain confidential information. ") * 20
    else:
        greet = rng.choice(["Sehr geehrte Damen und Herren,", "Hallo Frau Kraus,", "Guten Tag,"]) if de else \
            rng.choice(["Hello Nordwind Cloud team,", "Dear Julia,", "Hi,"])
        if intent == "apply":
            stmt = rng.choice(DE_STATEMENTS if de else EN_STATEMENTS).format(id=new_id)
            subject = rng.choice([f"Neue MPN-ID {r['company']}", "Neue PLA-ID", "AW: Wichtig: Ihr CSP-Reseller-Status bei Microsoft"]) if de \
                else rng.choice([f"New MPN ID - {r['company']}", "New PLA ID", "RE: Important: your CSP reseller status at Microsoft"])
        else:
            stmt = rng.choice(DE_QUESTIONS if de else EN_QUESTIONS)
            subject = "Frage zur Reseller-Autorisierung" if de else "Question about the reseller authorisation"
        closing = rng.choice(["Mit freundlichen Grüßen", "Viele Grüße"]) if de else rng.choice(["Kind regards,", "Best regards,"])
        text = f"{greet}\n\n{stmt}\n\n{closing}\n\n" + signature(r, name, rng)
    fmt = rng.choice(["plain", "html", "alt", "alt"])
    if quote:
        text += quoted_history(r, contact, quote, rng)
    headers = [
        f"Return-Path: <{contact}>",
        f"Delivered-To: {OWN}",
        f"Received: from {MX}\n\tby imap.nordwind-dist.example with LMTP\n\tfor <{OWN}>; {date}",
        f"Authentication-Results: {MX};\n\tdkim=pass header.d={domain} header.s=mail;\n"
        f"\tspf=pass smtp.mailfrom={contact};\n\tdmarc=pass (policy=quarantine) header.from={domain}",
        f"Received: from mail.{domain} (mail.{domain} [198.51.100.{i % 250 + 1}])\n\tby {MX} (Postfix) "
        f"with ESMTPS id {rng.getrandbits(48):x}\n\tfor <{OWN}>; {date}",
        f"From: \"{name}\" <{contact}>",
        f"To: <{OWN}>",
        f"Subject: {subject}",
        f"Date: {date}",
        f"Message-ID: {mid}",
        "MIME-Version: 1.0",
    ] + extra
    if fmt == "plain":
        headers += ["Content-Type: text/plain; charset=utf-8; format=flowed", "Content-Transfer-Encoding: 8bit",
                    "User-Agent: Mozilla Thunderbird"]
        body = text
    elif fmt == "html":
        headers += ["Content-Type: text/html; charset=utf-8", "Content-Transfer-Encoding: quoted-printable",
                    "X-Mailer: Microsoft Outlook 16.0"]
        body = qp(html_of(text))
    else:
        b = f"----=_NextPart_000_{i:04X}_01DCB497.{rng.getrandbits(32):08X}"
        headers += [f"Content-Type: multipart/alternative;\n\tboundary=\"{b}\"", "X-Mailer: Microsoft Outlook 16.0",
                    "Content-Language: " + ("de" if de else "en-GB")]
        body = (f"This is a multipart message in MIME format.\n\n--{b}\n"
                "Content-Type: text/plain;\n\tcharset=\"utf-8\"\nContent-Transfer-Encoding: quoted-printable\n\n"
                f"{qp(text)}\n--{b}\nContent-Type: text/html;\n\tcharset=\"utf-8\"\n"
                "Content-Transfer-Encoding: quoted-printable\n\n"
                f"{qp(html_of(text))}\n--{b}--\n")
    return ("\n".join(headers) + "\n\n" + body).encode("utf-8"), contact


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resellers", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--first-id", type=int, default=7100000,
                    help="new IDs are first-id, first-id+1, ... skipping every registered old ID")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    resellers = load_resellers(a.resellers)
    taken = {r["old"] for r in resellers} | {"1234567"}
    os.makedirs(a.out, exist_ok=True)
    next_id = a.first_id
    total = 0
    with open(os.path.join(a.out, "manifest.tsv"), "w") as man:
        for i in range(1, a.count + 1):
            r = resellers[rng.randrange(len(resellers))]
            x = rng.random()
            intent = "ignore" if x < 0.05 else "review" if x < 0.10 else "apply"
            new_id = ""
            if intent == "apply":
                while str(next_id) in taken:
                    next_id += 1
                new_id = str(next_id)
                next_id += 1
            raw, contact = make_mail(i, r, rng.getrandbits(64), new_id, intent)
            name = f"{i:08d}.eml"
            with open(os.path.join(a.out, name), "wb") as f:
                f.write(raw)
            total += len(raw)
            man.write(f"{name}\t{intent}\t{contact}\t{new_id}\n")
    print(f"genmail: {a.count} mails, {total / 1e6:.1f} MB, mean {total / max(a.count, 1) / 1024:.1f} KB",
          file=sys.stderr)


if __name__ == "__main__":
    main()
