//! The vocabulary of the extractor: which words name the ID, which name other numbers,
//! and which words say "new", "old", "example", "global account" or "location".
//!
//! Policy: every pattern here is about language, never about one mail of the corpus.
//! German and English are covered, formal and sloppy (compounds such as
//! "Kundennummer" or "Bestellnr." included). All regexes are compiled once; they run
//! on short context windows around a number, never on a whole mail, except
//! [`mentions_id_topic`], which is one linear scan.

use std::sync::LazyLock;

use regex::Regex;

/// One match of a cue inside a context window: byte range and the matched text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cue {
    pub start: usize,
    pub end: usize,
    pub text: String,
}

/// Compiles a built-in pattern with ASCII word boundaries.
///
/// Why: a Unicode `\b` makes the regex engine leave its fast DFA for the slow PikeVM
/// on any non-ASCII text (every German mail), which made triage several times
/// slower than parsing. An ASCII boundary differs only next to a non-ASCII letter
/// ("für" + keyword without space), which no cue relies on. The patterns are
/// constants; a typo fails the unit tests, never a mail, so `expect` is fine here.
/// Likewise `\w` becomes a small explicit class of the letters German and English
/// (and a few neighbours) write: the full Unicode class in many alternatives blew the
/// lazy DFA's cache and again fell back to the PikeVM.
pub(crate) fn regex(pattern: &str) -> Regex {
    let pattern = pattern
        .replace(r"\b", r"(?-u:\b)")
        .replace(r"\w", WORD_CHAR);
    regex::RegexBuilder::new(&pattern)
        .dfa_size_limit(DFA_CACHE_BYTES)
        .build()
        .expect("built-in pattern must compile")
}

/// The lazy DFA's cache per pattern and per thread that runs it (the regex crate's
/// default is 2 MiB). The caches live as long as the daemon, one set per triage
/// thread: at 256 KiB the daemon idles ~3 MB lower after a backlog (29-30 ->
/// 26-27 MB) for ~5 % more triage CPU (`mpnd extract` on 3,000 generated mails:
/// 1.21 s instead of 1.15 s); 64 KiB cost 50 %.
const DFA_CACHE_BYTES: usize = 256 << 10;

const WORD_CHAR: &str = "[0-9A-Za-z_äöüÄÖÜßàáâèéêëìíîïòóôùúûçñåæøÅÆØ]";

fn compile(pattern: &str) -> Regex {
    regex(pattern)
}

/// Names of the ID that are specific enough on their own ("MPN-ID", "Standort-ID",
/// "Partner Location Account", "Microsoft AI Cloud Partner Program ID", ...).
static STRONG_KEYWORD: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)
        \b(?:
            (?:microsoft[\s-]+)?(?:ai[\s-]+)?cloud[\s-]+partner[\s-]+program(?:me)?(?:[\s-]*(?:id|nummer|number|no\.?|nr\.?))?
          | (?:microsoft[\s-]+)?partner[\s-]+program(?:me)?[\s-]+id
          | (?:microsoft[\s-]+)?partner[\s-]+network[\s-]+id
          | (?:microsoft[\s-]+)?partner[\s-]+location[\s-]+account(?:[\s-]*id)?
          | (?:microsoft[\s-]+)?partner[\s-]+global[\s-]+account(?:[\s-]*id)?
          | global[\s-]+account[\s-]*id
          | location[\s-]+account(?:[\s-]*id)?
          | location[\s-]*mpn[\s-]*id
          | (?:microsoft[\s-]*)?(?:mpn|mnp|pla|pga|csp|reseller|partner|parnter|patner|standort|location|mcpp)[\s-]*(?:ids?|nummer|nr\.?|number|no\.?|kennung|kennnummer)
          | (?:microsoft[\s-]*)?partner[\s-]*center[\s-]*id
          | partnerid | partnernummer | partnerkennung | standortnummer | standortkennung
          | mpn | mnp | pla | pga | mcpp
        )(?:\b|$)",
    )
});

/// Words that may name the ID but also many other things ("ID", "Kennung"): they
/// count only in a mail that is about the ID at all.
static WEAK_KEYWORD: LazyLock<Regex> =
    LazyLock::new(|| compile(r"(?i)\b(?:ids?|kennung|kennnummer)\b"));

/// Labels of numbers that are not the ID. German compounds are matched by their
/// first word ("Kundennummer", "Bestellnr", "Rechnungs-Nr."), and a trailing
/// "-ID"/"Nr."/"number" is swallowed so that "Tenant-ID" is one distractor, not a
/// distractor followed by the keyword "ID".
static DISTRACTOR: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)
        (?:\b|^)(?:
            kunden?\w* | kd\.?[\s-]*nr\.? | customer\w* | client\w* | debitor\w* | kreditor\w* | lieferant\w* | supplier\w* | vendor\w*
          | konto\w* | account[\s-]*(?:no\.?|number|\#) | antrag\w* | antrags\w* | application\w*
          | bestell\w* | order\w* | auftrag\w* | auftrags\w* | purchase | po | lieferschein\w* | lieferung\w* | delivery | sendung\w* | tracking
          | angebot\w* | quote | quotation | vertrag\w* | vertrags\w* | contract\w*
          | (?:rahmen|wartungs|service|händler|haendler|reseller|partner|liefer|miet|leasing|dienstleistungs|kauf|support|pflege)vertrag\w* | rahmenvereinbarung\w* | (?:framework|master|service|reseller)[\s-]+agreement | subscription\w* | abonnement\w* | abo | lizenz\w* | licen[cs]e\w*
          | serial | serien\w* | artikel\w* | sku | produkt\w* | product\w*
          | rechnung\w* | rechnungs\w* | invoice\w* | beleg\w* | gutschrift\w* | zahlung\w* | payment\w* | betrag | amount | eur | euro | usd | gbp | chf
          | ticket\w* | case | fallnummer | servicefall\w* | service[\s-]*(?:ticket|case) | vorgang\w* | vorgangs\w* | incident\w* | request\w* | anfrage\w* | support\w* | service[\s-]*request
          | aktenzeichen | az\.? | referenz\w* | reference\w* | ref\.? | message[\s-]*id
          | tel\.? | telefon\w* | telephone | phone\w* | fon | fax\w* | telefax | mobil\w* | mobile | handy | cell | durchwahl | hotline | whatsapp | reach\s+me | erreichbar\w* | call | anrufen | rückruf\w* | ruf
          | hrb | hra | handelsregister\w* | registergericht\w* | amtsgericht\w* | register(?:nummer|nr)? | registered\s+(?:in|no\.?|number|office|company) | reg\.?\s*no\.?
          | company[\s-]*(?:no\.?|number|reg\w*) | companies[\s-]+house | crn | kvk | abn | acn | cvr | eori | chamber | handelskammer | ihk | registration[\s-]*(?:no\.?|number|nr\.?) | org\.?[\s-]*nr\.? | organisasjonsnummer | siret | siren | kbo | btw | duns | gln
          | ust\w* | vat\w* | steuer\w* | st\.?[\s-]*nr\.? | tax\w* | uid | mwst\w*
          | iban | bic | swift | blz | bank\w* | sort[\s-]*code | routing
          | plz | postleitzahl | zip | postal\w* | postcode | post[\s-]+code | postfach | p\.?\s*o\.?\s*box
          | tenant\w* | mandant\w* | guid | domain\w* | verzeichnis\w* | directory | object[\s-]*id
          | version | build | pin | tan | otp | imei
          | besprechung\w* | meeting\w* | konferenz\w* | conference | einwahl\w* | dial[\s-]*in | passcode | kenncode | webinar\w*
          | (?:reseller|händler|haendler|partner)[\s-]*(?:nummer|nr\.?|number|no\.?|konto|account)\s+(?:bei|with|at)\s+(?:ihnen|euch|you|nordwind|dir)
          | (?:ihre|eure|your)\s+(?:reseller|händler|haendler)[\s-]*(?:nummer|nr\.?|number|no\.?)
          | (?:post|zip|bestätigungs|verifizierungs|sicherheits|freischalt|aktivierungs|verification|security|confirmation|activation|auth|promo|gutschein|voucher|rabatt|qr|bar)?[\s-]?code
        )(?:[\s-]*(?:ids?|nr\.?|nummer|number|no\.?|\#))?\b",
    )
});

/// Words that say the number next to them is the new one ("neue", "richtig",
/// "ab sofort", "→").
static NEW: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)
        (?:\bersetzt\s+durch\b | \breplaced\s+(?:by|with)\b | -> | → | => )
      | \b(?:neu|neue|neuen|neuer|neues|new|newly|richtig\w* | korrekt\w* | correct(?:ed)? | korrektur | correction
           | right | berichtigt\w* | aktualisiert\w* | updated | künftig\w* | zukünftig\w* | nunmehr
           | ab\s+sofort | from\s+now\s+on | going\s+forward
           | (?:verwenden|nutzen|nehmen|hinterlegen|tragen)\s+sie(?:\s+(?:bitte|ab\s+sofort|die|künftig|nun))* | please\s+use | use)\b",
    )
});

/// Words that say the number next to them is an old, revoked or wrong one.
static OLD: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)
        \b(?:alt|alte|alten|alter|altes|bisher\w* | vorher\w* | ehemalig\w* | früher\w* | frueher\w* | old|older
           | previous\w* | former\w* | prior | revoked | widerrufen\w* | gesperrt\w* | ungültig\w* | ungueltig\w*
           | invalid\w* | deaktiviert\w* | deactivated | expired | abgelaufen\w* | falsch\w* | wrong | incorrect
           | fehlerhaft\w* | typo | zahlendreher | vertippt | gelöscht\w* | deleted | obsolete | veraltet\w*
           | ursprünglich\w* | ehemals | einstig\w* | no\s+longer | nicht\s+mehr | damals | seinerzeit | back\s+then)\b",
    )
});

/// Words that call a number the one in use now: old where a new one is named beside
/// it (see `extract::temporal_of`).
static CURRENT: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)\b(?:current|existing|aktuell\w* | derzeitig\w* | jetzig\w* | bestehend\w* | gegenwärtig\w*)\b",
    )
});

pub(crate) fn current_words(text: &str) -> Vec<Cue> {
    // Most windows hold none of these: the pattern only runs where one may be.
    if !contains_any(
        text,
        &[
            "current",
            "existing",
            "aktuell",
            "derzeit",
            "jetzig",
            "bestehend",
            "gegenw",
        ],
    ) {
        return Vec::new();
    }
    all_matches(&CURRENT, text)
}

/// A negation right before the number: "(nicht 6514802)", "instead of 6514802".
static NEGATION: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?i)\b(?:nicht|not|statt|anstatt|anstelle|instead\s+of|rather\s+than|kein|keine|never|nie)\b",
    )
});

/// "z. B. 1234567", "e.g. 1234567", "Beispiel: 1234567".
static EXAMPLE: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)
        (?:\bz\.\s?b\.|\be\.\s?g\.|\bzb\b|\bbsp\.|\bbeispiel\w*|\bexample\w*|\bfor\s+instance\b|\bsuch\s+as\b
          |\bmuster\w*|\bsample\b|\bplaceholder\b|\bplatzhalter\w*|\bdummy\b|\bxxx+)",
    )
});

/// The global account (PGA): not the ID to apply when a location ID is also given.
static ROLE_PGA: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)
        \b(?:pga | partner[\s-]+global[\s-]+account | global\w*[\s-]+account\w* | globale?\w*[\s-]+(?:id|konto|kennung|partner\w*)
           | global | globale[nrs]? | hauptkont\w* | hauptaccount\w* | head[\s-]+office | parent[\s-]+account
           | headquarters? | hauptsitz | unternehmens[\s-]*(?:id|konto|ebene) | firmen[\s-]*(?:id|konto)
           | company[\s-]*(?:level|wide)[\s-]*id | organi[sz]ation(?:al)?[\s-]*(?:id|level))\b",
    )
});

/// The location account (PLA): the ID CSP transacts with, so the one to apply.
static ROLE_PLA: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)
        \b(?:pla | partner[\s-]+location[\s-]+account | location\w* | standort\w* | niederlassung\w* | filiale | branch
           | reseller[\s-]*id | indirect[\s-]+reseller | indirekte[rn]?[\s-]+reseller | transaktions\w* | transactional)\b",
    )
});

/// Old/new said right after the number: "4039875 (alt)", "6514802 war falsch",
/// "4039875 -> 6057318", "4039875 wird ersetzt".
static AFTER_OLD: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)
        ^\s*(?:
            [:\-–]?\s*[\(\[]\s*(?:die\s+|the\s+)?(?:alt\w*|old|bisher\w*|vorher\w*|previous|former|ehemalig\w*|falsch\w*|wrong|ungültig\w*|invalid|revoked|gesperrt\w*)\b[^\)\]\d\n]{0,20}[\)\]]
          | (?:ist|is|was|war|wurde|has\s+been|have\s+been|wird|will\s+be)\s+(?:(?:von|vom|by|durch|seitens|microsoft|leider|inzwischen|mittlerweile|bereits|schon|already|unfortunately|now|jetzt|nun|heute|today|gestern|yesterday|ab|sofort|zum|am|seit|since|\d[\d./-]*|_+)\s+){0,5}(?:die\s+|the\s+|unsere\s+|our\s+|meine\s+|my\s+)?(?:alt\w*|old|bisherig\w*|previous|former|falsch\w*|wrong|ungültig\w*|invalid|gesperrt\w*|revoked|widerrufen|entzogen|deaktiviert|deactivated|abgelaufen|expired|gekündigt|ersetzt|replaced|nicht\s+mehr|no\s+longer)\b
          | (?:->|→|=>|-->)
          | (?:ersetzt\s+durch|replaced\s+(?:by|with))\b
          | [:\-–]?\s*(?:gesperrt|widerrufen|revoked|deaktiviert|deactivated|ungültig|invalid|abgelaufen|expired|entzogen)\b
          | (?:die|der|das|the)\s+(?:alte\w*|old|bisherige\w*|frühere\w*|ehemalige\w*|previous|former)\b
          | (?:bitte\s+)?(?:löschen|entfernen|austragen)\b
          | (?:bitte\s+)?(?:ersetzen|austauschen)\s*(?:[–\-.,!;]|$)
          | (?:kann|können|darf|can|may)\s+(?:\w+\s+){0,2}(?:gelöscht|entfernt|weg|raus|deleted|removed)\b
        )",
    )
});

static AFTER_NEW: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)
        ^\s*(?:
            [:\-–]?\s*[\(\[]\s*(?:die\s+|the\s+)?(?:neu\w*|new|richtig\w*|correct|korrekt\w*)\b[^\)\]\d\n]{0,20}[\)\]]
          | (?:ist|is)\s+(?:die\s+|the\s+|unsere\s+|our\s+|meine\s+|my\s+)?(?:neue\w*|new|richtig\w*|correct|korrekt\w*)\b
          | (?:ersetzt|ersetzen|replaces|replacing)\b
        )",
    )
});

/// A parenthesis (or dash note) right after a number, e.g. "6120344 (PGA)".
static AFTER_NOTE: LazyLock<Regex> =
    LazyLock::new(|| compile(r"^\s*[:\-–]?\s*[\(\[]([^\)\]\n]{0,40})[\)\]]"));

/// Words that show the mail is about the ID at all; used to allow weak keywords and
/// bare numbers. "Partner Center" is included: people describe where they read it.
/// So is the re-registration itself ("nach der Registrierung haben wir zwei IDs
/// bekommen", "Neuregistrierung Microsoft", "re-enrolment done"), and "CSP" or the
/// indirect reseller status: resellers who write about those to us write about the
/// ID even when they only call it "ID" or "Nummer".
static TOPIC: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)
        \b(?:mpn | pla | partner[\s-]*ids? | partnerid | partner[\s-]*nummer | partnernummer | standort[\s-]*id
           | location[\s-]*id | partner[\s-]+center | partner[\s-]+location | partner[\s-]+program\w* | mcpp
           | location[\s-]+account | global[\s-]+account | pga | reseller[\s-]*id
           | csp | indirekte[nrs]?[\s-]+reseller\w* | indirect[\s-]+reseller\w*
           | (?:neu|re)?[\s-]?registrierung\w* | neu[\s-]?registriert | re-?registration | re-?registered
           | re-?enrol\w*)\b",
    )
});

/// "was"/"war" right before a number: "our partner ID was 4760018, now it's …".
/// Only right before it, because "was" is common far from any number.
static JUST_BEFORE_OLD: LazyLock<Regex> =
    LazyLock::new(|| compile(r"(?i)\b(?:was|war|waren|were|lautete|hieß|hiess)\s*:?\s*$"));

/// "now"/"jetzt" right before a number: "…, now it's 7178395", "jetzt: 6455803".
static JUST_BEFORE_NEW: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?i)\b(?:now|jetzt|nun|nunmehr)(?:\s+(?:it's|it’s|it\s+is|is|ist|lautet|gilt|die|the|we\s+have|haben\s+wir))*\s*:?\s*$",
    )
});

/// The only word between two numbers, saying the first is replaced by the second:
/// "die Partner-ID 4417206 durch 6409981", "von 5377104 auf 6521136", "from X to Y".
static JOINT: LazyLock<Regex> =
    LazyLock::new(|| compile(r"(?i)^\s*(?:durch|auf|gegen|zu|to|into|for)\s*(?:die|the)?\s*$"));

/// Words in the sentence before a number that make it someone else's ID or a test
/// registration's: "unsere Schwesterfirma hat ihre neue MPN-ID …", "Their Partner ID
/// is …" (not "its", nor German "seine"/"ihre" alone: those name a location of the
/// sender's as often), "für unsere
/// Tochtergesellschaft …", "testweise angelegt (Partner-ID …)", "als indirekter
/// Anbieter steht dort Nordwind mit der Partner-ID …", "our customer X is a partner
/// itself (MPN ID …)". They count only when the author does not claim the number
/// after them ([`OWN_CLAIM`]): "As the UK subsidiary of X we re-registered, and our
/// new location ID is …" is the sender's own.
static OTHER_PARTY: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)
        \b(?:schwester\w* | tochter\w* | mutter(?:gesellschaft|firma|konzern|unternehmen)\w* | konzernschwester\w*
           | sister[\s-]+(?:company|firm|business) | subsidiar\w* | affiliate\w* | parent[\s-]+company | group[\s-]+company
           | indirekte[rn]?[\s-]+(?:anbieter\w*|provider\w*) | indirect[\s-]+provider\w* | distribut\w* | distri\b | großhändler\w*
           | (?:seine[nmrs]?|ihre[nmrs]?|dessen|deren|his|her|its|their)\s+(?:eigene\w*|own)\s+(?:neue\w*\s+|new\s+)?(?:mpn|partner|pla|standort|location)
           | (?:his|her|their)\s+(?:new\s+)?(?:mpn|partner[\s-]*id|pla\b|location)
           | testweise | zu\s+test(?:zwecken|\s+zwecken) | for\s+testing | test[\s-]*(?:registrierung|tenant|mandant\w*|umgebung|account|konto|zugang|standort|registration|location|id)
           | (?:unser\w*|our|the|die|der|den)\s+test\b | sandbox | demo[\s-]*(?:tenant|mandant\w*|account|konto))\b",
    )
});

/// A customer's ID before the number: "the end customer's partner ID is …", "our
/// customer Contoso already has the MPN ID …", "unser Kunde hat die MPN-ID …"; or a
/// customer who is a partner itself ("der Kunde ist selbst Microsoft-Partner").
/// Apart from [`OTHER_PARTY`] (and checked like it), and run only on a clause that
/// names a customer: their bounded gaps make the lazy DFA give up, and in
/// `OTHER_PARTY`, run before every number of the author's, they cost ~8 % of triage.
static CUSTOMERS_ID: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)\b(?:
            (?:customer|kunde)\w*\b[^.!?\d]{0,60}\b(?:is|ist)\s+(?:selbst\s+|itself\s+|also\s+|auch\s+)*(?:(?:a|ein)\s+)?(?:microsoft[\s-]+)?partner
          | (?:customer|kunde|client|mandant)\w*(?:'s|’s|s')?\s+(?:(?:own|eigene\w*|new|neue\w*)\s+)?(?:mpn|partner[\s-]*id|pla|pga|standort[\s-]*id|location[\s-]*id)
          | (?:customer|kunde|client)\w*\b[^.!?\d]{0,60}?\b(?:has|hat|had|hatte|got|received|erhielt|erhalten|bekam|bekommen|owns|besitzt)\b[^.!?\d]{0,30}?\b(?:mpn|partner[\s-]*id|pla|pga|standort[\s-]*id|location[\s-]*id)
        )\b",
    )
});

/// Another vendor's partner program, or a Microsoft number that is no location
/// ID, named before a number: "Adobe VIP Reseller-ID: 7032418", "for the Workspace
/// orders (Google Cloud Partner Advantage) our new Partner ID is …", "Seller-ID",
/// "Microsoft Certification ID (MCID)". "our" does not make such a number the
/// CSP location's.
static OTHER_PROGRAM: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)\b(?:aws | amazon | google | adobe | sophos | vmware | broadcom | cisco | fortinet | kaspersky | eset
           | veeam | acronis | datto | salesforce | oracle | citrix | bitdefender | watchguard | sonicwall
           | hornetsecurity | teamviewer | autodesk | jetbrains | red\s+hat | trend\s+micro | palo\s+alto
           | seller[\s-]*id | publisher[\s-]*(?:id|anzeigename|display) | marketplace | mcid
           | certification[\s-]*id | zertifizierungs[\s-]*id | transcript[\s-]*id | action\s+pack
           | partner\s+advantage | vip\s+(?:reseller|partner)
        )\b",
    )
});

/// A word every match of [`OTHER_PROGRAM`] holds, lower case: most clauses have
/// none, and this is cheaper than the case-insensitive pattern.
const OTHER_PROGRAM_WORDS: &[&str] = &[
    "aws",
    "amazon",
    "google",
    "adobe",
    "sophos",
    "vmware",
    "broadcom",
    "cisco",
    "fortinet",
    "kaspersky",
    "eset",
    "veeam",
    "acronis",
    "datto",
    "salesforce",
    "oracle",
    "citrix",
    "bitdefender",
    "watchguard",
    "sonicwall",
    "hornetsecurity",
    "teamviewer",
    "autodesk",
    "jetbrains",
    "red",
    "trend",
    "palo",
    "seller",
    "publisher",
    "marketplace",
    "mcid",
    "certification",
    "zertifizierung",
    "transcript",
    "action",
    "advantage",
    "vip",
];

/// The author claiming a number as the sender's own: "we", "our", "unsere", "wir".
/// "us"/"uns" alone is an object ("hat uns seine eigene MPN-ID weitergeleitet": the
/// customer sent us its ID), only "für uns", "bei uns" claim.
static OWN_CLAIM: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?i)\b(?:we|we've|we're|our|ours|wir|unser|unsere|unserer|unseren|unserem|unseres)\b|\b(?:für|fuer|for|bei|with)\s+(?:uns|us)\b",
    )
});

/// A number named provisional or presumed: "im Portal steht vorläufig …".
static PROVISIONAL: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)\b(?:vorläufig\w* | provisional\w* | preliminary | voraussichtlich\w* | vermutlich | presumably | preview | vorschau)\b",
    )
});

/// Words right before a number that withdraw it: "please ignore the ID …", "bitte
/// ignorieren Sie die Partner-ID …", "please do not use 7093518", "verwenden Sie
/// bitte nicht die …". At most a few words may stand between, and no comma: in
/// "ignore my last mail, the right one is …" the number is the correction.
static WITHDRAW_BEFORE: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)\b(?:ignore|ignorieren(?:\s+sie)?|disregard|vergessen\s+sie|streichen\s+sie
           | (?:do\s+not|don'?t|never)\s+(?:use|apply|enter)
           | (?:verwenden|nutzen|benutzen|hinterlegen|tragen)\s+sie\s+(?:bitte\s+)?(?:nicht|keinesfalls))\s+(?:[^\s,;:.!?\d]+\s+){0,4}$",
    )
});

/// A condition right before the number: "if the new ID is …", "falls die neue ID … lautet".
static IF_BEFORE: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?i)\b(?:if|falls|wenn|whether|ob)\b[^.,;:!?\d]{0,40}\b(?:is|ist|lautet|wäre|would\s+be|be|sein\s+sollte)\s*:?\s*$",
    )
});

/// Said right after a number to withdraw it: "(Partner-ID 6498201), die bitte NICHT
/// verwenden", "7401122 - please ignore", "Die 6519-038 aus meiner Mail von heute früh
/// bitte verwerfen", "… ist nur eine Test-ID". Only a short gap
/// is allowed before it, checked by the caller for old words ("die alte bitte nicht
/// mehr verwenden" speaks of another number).
static DISOWN_AFTER: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)^[^.!?\d\n]{0,50}?\b(?:
            (?:bitte\s+)?(?:nicht|not|never|nie|keinesfalls)\s+(?:verwenden|benutzen|nutzen|eintragen|hinterlegen|use|apply|enter)
          | do\s+not\s+use | don'?t\s+use | ignorieren | ignore | disregard | verwerfen | discard | vergessen | streichen
          | wird\s+(?:wieder\s+)?gelöscht | will\s+be\s+deleted
          | (?:ist|is)\s+(?:nur\s+|only\s+|just\s+)?(?:ein\w*\s+|a\s+|unser\w*\s+|our\s+)?test\w*
          | (?:ist|is)\s+nicht\s+(?:unsere?|meine?)\b | (?:is\s+)?not\s+(?:ours|mine|our\s+(?:id|number))
        )\b",
    )
});

/// A future right after the number: "wird unsere neue Standort-ID die 6288714
/// sein", "… 6288714 lauten": expected, not issued yet.
static FUTURE_AFTER: LazyLock<Regex> =
    LazyLock::new(|| compile(r"(?i)^\s*(?:sein|werden|lauten)\b"));
/// The same before it: "our new location ID will be 7…".
static FUTURE_BEFORE: LazyLock<Regex> = LazyLock::new(|| {
    compile(r"(?i)\b(?:will|would|shall)\s+(?:then\s+|probably\s+|likely\s+)?be\s*:?\s*$")
});

/// The next sentence asks about the number: "… die Partner-ID 36 92 518 mit dem
/// Status „Aktiv“. Gilt die nicht einfach weiter?", "… 4276158. Does it stop
/// working?".
static ASKED_NEXT: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)^[\s\x22“”»«]*[.!]\s+(?:gilt|ist|bleibt|stimmt|passt|läuft|is|does|will|stays?|remains?)\s+(?:die|das|diese|sie|er|it|this|that|the\s+(?:old\s+)?(?:one|id|number))\b[^.!?\n]{0,60}\?",
    )
});

/// Whether the sentence after a number (`rest` starts at its end) asks about it.
pub(crate) fn asked_next(rest: &str) -> bool {
    rest.contains('?') && ASKED_NEXT.is_match(rest)
}

/// A question about the number itself, asked right after it: "3190846 – ist die bei
/// Ihnen noch richtig hinterlegt?", "7245501, is that still valid?". The caller also
/// requires the sentence to end in '?'.
static QUESTIONED_AFTER: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)^[\s\-–:,]*(?:ist|is|sind|are|stimmt|passt)\b(?:\s+(?:die|das|diese|sie|this|that|it|these|er))?[^.!?\n]{0,60}\b(?:noch|still|richtig|korrekt|correct|gültig|valid|aktuell|current|right|ok|okay)\b[^.!?\n]{0,40}$",
    )
});

/// "PLA noch nicht vorhanden", "location ID not yet", "Standort-ID folgt": the mail
/// says the location ID is still missing.
static LOCATION_PENDING: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)\b(?:pla|standort[\s-]*id|location[\s-]*id|partner[\s-]+location[\s-]+account)\b[^.!?\n\d]{0,60}\b(?:noch\s+nicht|not\s+yet|fehlt|missing|folgt|follows|to\s+follow|pending|ausstehend|reiche\w*\s+(?:ich|wir)\s+nach|nachreichen|nachgereicht|kommt\s+(?:noch|später|nach)|später|later|separat\w*|will\s+follow|wird\s+erst|erst\s+nach
           | in\s+prüfung|in\s+bearbeitung|beantragt|under\s+review|in\s+review|requested|applied\s+for
           | schick\w*\s+(?:ich|wir)\b[^.!?\n\d]{0,20}\b(?:sobald|wenn|nach|später)|(?:send|forward)\w*\s+(?:it\s+|you\s+)*(?:once|as\s+soon|when|later))\b
      | \b(?:warte\w*|wait\w*)\s+(?:noch\s+|still\s+)?(?:auf|for)\s+(?:unsere\w*\s+|die\s+|our\s+|the\s+)?(?:neue\w*\s+|new\s+)?(?:pla|standort[\s-]*id|location[\s-]*id)\b",
    )
});

/// The author says the reseller's own new ID is still to come, in words
/// [`LOCATION_PENDING`] does not know: "Unsere neue ID kommt erst, wenn Microsoft …",
/// "… erhalten Sie, sobald Microsoft die Registrierung bestätigt hat", "deren neue
/// Standort-ID schicken wir Ihnen separat", "Sobald die Wiener ID da ist, schicke
/// ich sie Ihnen", "Our own new Partner ID is still stuck in Microsoft's
/// verification; I'll send it separately once it's through". Not a state ("noch
/// in Prüfung", "pending verification"): an ID given while Microsoft still checks
/// it is given. The sentence must also speak of an ID ([`ID_WORD`]): "die
/// Unterlagen schicke ich Ihnen separat" says nothing about it. No gap between
/// the ID's name and the phrase in the pattern: bounded gaps made the lazy DFA
/// thrash.
static OWN_ID_PENDING: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)
        \b(?:kommt\s+erst | erhalten\s+sie\s*,?\s*sobald
          | (?:schick|send|reich|meld)\w*\s+(?:ich|wir)\s+(?:\w+\s+){0,3}?(?:separat\w*|dann|nach|später|sobald|nachmittag|morgen)
          | sobald\s+(?:die|der|das|unsere?)\s+(?:\w+\s+){0,2}?(?:id|nummer)\s+(?:da|vorliegt|kommt)
          | (?:i'?ll|i\s+will|we'?ll|we\s+will)\s+(?:send|forward|pass|e-?mail|mail)\w*\s+(?:\w+\s+){0,4}?(?:once|as\s+soon\s+as|when|separately|later)
          | noch\s+(?:gar\s+)?keine\w*\s+neue\w*\s+\w+\s+(?:beantragt|bekommen|erhalten)
        )\b",
    )
});

/// The author holds us back: "Bitte noch nichts umstellen", "Bitte die obige Nummer
/// NICHT verwenden", "bitte also nicht an unserem Konto eintragen", "please don't
/// change anything yet", "bin mir aber nicht sicher", "Ist das die richtige?",
/// "Reicht Ihnen die erst mal für unser Konto?". Not
/// "nicht mehr verwenden" / "no longer use" (said of the old ID).
static RESERVATION: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)
        \bbitte\s+(?:\w+\s+){0,5}?(?:nicht|nichts)\s+(?:\w+\s+){0,4}?(?:verwenden|eintragen|umstellen|ändern|aendern|übernehmen|uebernehmen|nutzen|benutzen|hinterlegen)\b
      | \b(?:please\s+)?(?:do\s+not|don't|dont)\s+(?:\w+\s+){0,4}?(?:use|enter|apply|change|switch|update)\b
      | \b(?:bin|sind)\s+(?:mir|uns)\s+(?:aber\s+|noch\s+)?(?:nicht|un)\s*sicher\b | \b(?:i'm|i\s+am|we're|we\s+are)\s+not\s+(?:\w+\s+)?sure\b
      | \bist\s+das\s+(?:die|der|das)\s+(?:richtige|korrekte)\b | \bstimmt\s+das\s*\? | \bis\s+(?:this|that|it)\s+the\s+(?:right|correct)\s+(?:one|id|number)\b
      | \breicht\s+(?:ihnen|euch|das|die|der|diese)\b[^.!?\n]{0,40}\? | \b(?:is|would)\s+(?:that|this|it)\s+(?:be\s+)?(?:enough|sufficient)\b[^.!?\n]{0,40}\?",
    )
});

/// More ways of holding back, each behind a literal of [`RESERVATION_MORE_WORDS`]
/// (run on every line of the author's, the pattern alone cost ~10 % of triage):
/// "Bitte stellen Sie aber noch nichts um", "Ist das die Nummer, die Sie …
/// brauchen?", "I think the new number is …".
static RESERVATION_MORE: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)
        \b(?:stellen|ändern|tragen)\s+sie\s+(?:\w+\s+){0,3}?(?:nichts|nicht)\s+(?:\w+\s+){0,3}?(?:um|ein)\b
      | \bist\s+(?:das|dies)\s+(?:die|der)\s+(?:nummer|id)\b[^.!?\n]{0,80}\? | \bis\s+(?:this|that)\s+the\s+(?:number|id)\b[^.!?\n]{0,60}\?
      | \b(?:i\s+think|i\s+believe|ich\s+glaube|ich\s+denke)\s*,?\s+(?:that\s+|dass\s+)?(?:the|our|die|unsere?)\s+(?:new\s+|neue\s+)?(?:\w+\s+)?(?:id|number|nummer|partner[\s-]*id|mpn[\s-]*id)\s+(?:is|ist|lautet)\b",
    )
});

const RESERVATION_MORE_WORDS: &[&str] = &[
    "stellen sie",
    "ändern sie",
    "tragen sie",
    "ist das",
    "ist dies",
    "is this",
    "is that",
    "i think",
    "i believe",
    "ich glaube",
    "ich denke",
];

/// Whether `line` holds the author back (see [`RESERVATION`]) and not only about an
/// old ID ("bitte die alte nicht mehr verwenden").
pub(crate) fn holds_back(line: &str) -> bool {
    let found = RESERVATION.find(line).or_else(|| {
        contains_any(line, RESERVATION_MORE_WORDS)
            .then(|| RESERVATION_MORE.find(line))
            .flatten()
    });
    found.is_some_and(|m| {
        let rest = &line[m.start()..];
        let lower = rest.to_lowercase();
        let whole = line.to_lowercase();
        !["nicht mehr", "no longer", "anymore", "any more", "nicht länger"]
            .iter()
            .any(|w| lower.contains(w))
            // "Die Nummer aus meiner ersten Mail bitte nicht verwenden": an earlier one.
            && ![
                "ersten mail", "erste mail", "vorherigen mail", "letzten mail", "first mail",
                "first email", "earlier mail", "earlier email", "previous mail", "previous email",
                "last mail", "last email",
            ]
            .iter()
            .any(|w| whole.contains(w))
            && old_words(line).is_empty()
    })
}

/// A correction of an ID given earlier in the same mail or in the subject: "P.S.
/// Sorry, typo above - it's …", "Nachtrag: Zahlendreher! Richtig ist …", "the
/// correct one is …". The number after it replaces every ID named before it.
static CORRECTION: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)\b(?:typo|tippfehler|zahlendreher|vertippt|verschrieben|korrektur|correction|corrected
           | richtig\s+(?:ist|lautet|wäre)|correct\s+(?:one|id|number)\s+is|the\s+right\s+one)\b",
    )
});

/// The author says the subject is wrong: "der Betreff war falsch", "the subject has
/// a typo", "ignore the subject line".
static SUBJECT_RETRACTED: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)\b(?:betreff|subject(?:\s+line)?)\b[^.!?\n]{0,30}\b(?:falsch|fehlerhaft|stimmt\s+nicht|wrong|incorrect|typo|tippfehler|zahlendreher|vertippt)
          | \b(?:ignore|ignorieren\s+sie)\s+(?:the|den)\s+(?:betreff|subject)
          | \b(?:nummer|zahl|id|number)\s+(?:im|in\s+the|in\s+der)\s+(?:betreff|subject(?:\s+line)?)\s+(?:ist|is|was|war)\s+(?:\w+\s+){0,2}?(?:alt\w*|old|bisherig\w*|previous|gesperrt\w*|revoked)",
    )
});

/// The author asks which of the numbers we need, or says not to know which is
/// which: "Welche davon brauchen Sie?", "ich weiß aber nicht, welche welche ist",
/// "not sure which one you need". Numbers sent that way are offered, not stated.
static ASKS_WHICH: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)
        \b(?:welche[nrs]?|which)\b[^.!?\n]{0,60}\b(?:brauch\w*|benötig\w*|need\w*|want\w*|require\w*|nehmen|use|verwenden)\b[^.!\n]{0,30}\?
      | \b(?:nicht\s+sicher|unsicher|weiß\s+(?:\w+\s+){0,2}nicht|wissen\s+(?:\w+\s+){0,2}nicht|not\s+sure|unsure|don'?t\s+know|do\s+not\s+know)\b[^.!?\n]{0,30}\b(?:welche|which)\b",
    )
});

/// "für mein" / "for our" right before a distractor word: the thing the ID belongs
/// to ("Neue MPN-ID für mein Konto: 6021947"), not a label of the number.
static FOR_OWN: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?i)\b(?:für|fuer|for)\s+(?:mein\w*|unser\w*|our|my|the|das|den|dem|die|ihr\w*|your|this|diese[mns]?)\s*$",
    )
});
/// Nothing but a colon or "lautet"/"is" between a label and its value.
static VALUE_FOLLOWS: LazyLock<Regex> =
    LazyLock::new(|| compile(r"(?i)^\s*(?::|=|lautet|ist|is)\s*$"));

/// Whether a distractor word names what the ID is for rather than the number: "für
/// mein Konto:" right before the value. Without the colon ("für unser Konto
/// 40078125") the number is the account's and the word labels it.
pub(crate) fn is_what_the_value_is_for(before: &str, after: &str) -> bool {
    FOR_OWN.is_match(before) && VALUE_FOLLOWS.is_match(after)
}

/// The end of a clause that points back at the sentence before it for the name of
/// the number that follows: "For the avoidance of doubt it is 6958312", "Zur
/// Sicherheit noch einmal: 7264019", "Sie lautet 6712598".
static REFERS_BACK: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)(?:
            \b(?:it|this|that)(?:\s+is|'s|’s|\s+was)
          | \b(?:sie|die|diese|es|das)\s+(?:lautet|lautete|ist|heißt|heisst)
          | \b(?:noch\s*(?:ein)?mal|nochmals|erneut|once\s+(?:more|again)|again|here\s+it\s+is)
        )\s*:?\s*$",
    )
});

/// Whether `clause`, the author's words right before a number with no ID keyword of
/// its own, points back at the sentence before (see [`REFERS_BACK`]).
pub(crate) fn refers_back(clause: &str) -> bool {
    REFERS_BACK.is_match(clause)
}

/// First-person words: the writer speaks of its own ("unsere neue Partner-ID").
static FIRST_PERSON: LazyLock<Regex> =
    LazyLock::new(|| compile(r"(?i)\b(?:we|we've|we're|our|ours|us|wir|unser\w*|uns)\b"));

/// Whether `text` speaks in the first person (see [`FIRST_PERSON`]).
pub(crate) fn speaks_for_itself(text: &str) -> bool {
    FIRST_PERSON.is_match(text)
}

/// A place looked in, right before a distractor word: "unter Kontoeinstellungen",
/// "in the account settings", "im Kundenportal".
static PLACE_BEFORE: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?i)\b(?:unter|under|im|in\s+(?:den|der|dem|die|the|our|unser\w*)|bei|auf\s+der|on\s+the)\s*$",
    )
});
/// After that place, a verb of its own before the colon that gives the value:
/// "nachgeschaut: Die", "looked: it is".
static PLACE_AFTER: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?i)^\s+(?:nachgeschaut|nachgesehen|geschaut|gesehen|gefunden|steht|stehen|looked|checked|found|shows?|says?|lists?|zeigt|heißt\s+es|heisst\s+es)\b[^\d:]{0,30}:\s*\S{0,8}\s*$",
    )
});

/// Whether a distractor word names the place the author looked the value up in
/// ("Ich habe unter Kontoeinstellungen nachgeschaut: Die 6297415 ist …"), not the
/// number's kind.
pub(crate) fn is_place_looked_in(before: &str, after: &str) -> bool {
    PLACE_BEFORE.is_match(before) && PLACE_AFTER.is_match(after)
}

/// A word between two numbers that offers the second as the alternative of the
/// first: "6840157 – oder … 6840175", "7519064 or 7519071", "… bzw. …".
static ALTERNATIVE: LazyLock<Regex> = LazyLock::new(|| {
    compile(r"(?i)\b(?:oder|or|bzw|beziehungsweise|alternativ\w*|alternatively)\b")
});

/// Whether the text between two numbers offers the second as an alternative.
pub(crate) fn offers_alternative(between: &str) -> bool {
    ALTERNATIVE.is_match(between)
}

fn all_matches(re: &Regex, text: &str) -> Vec<Cue> {
    re.find_iter(text)
        .map(|m| Cue {
            start: m.start(),
            end: m.end(),
            text: m.as_str().to_string(),
        })
        .collect()
}

/// ID keywords in `text`, strong first-class names and weak ones, with weak or strong
/// matches inside one of `distractors` ("Tenant-ID", "Kunden-Nr.") removed.
pub(crate) fn keywords(text: &str, distractors: &[Cue]) -> (Vec<Cue>, Vec<Cue>) {
    without(
        not_compound(all_matches(&STRONG_KEYWORD, text), text),
        not_compound(all_matches(&WEAK_KEYWORD, text), text),
        distractors,
    )
}

/// Keywords that head no compound: "Bestellung zur Partner-ID-Umstellung: 4503962"
/// names a switch, not the ID.
fn not_compound(mut cues: Vec<Cue>, text: &str) -> Vec<Cue> {
    cues.retain(|c| {
        let Some(rest) = text[c.end..].strip_prefix('-') else {
            return true;
        };
        let head = rest.chars().take(10).collect::<String>().to_lowercase();
        ![
            "umstellung",
            "wechsel",
            "änderung",
            "aenderung",
            "anpassung",
            "migration",
            "update",
            "change",
            "switch",
            "thema",
            "frage",
            "problem",
            "antrag",
        ]
        .iter()
        .any(|w| head.starts_with(w))
    });
    cues
}

/// [`keywords`] for a caller that wants the distractors only to remove keywords:
/// they are looked for only when there is a keyword to remove. (Most numbers of a
/// reply stand in quoted history with no keyword near them; the distractor pattern
/// is the largest of all.)
pub(crate) fn keywords_alone(text: &str) -> (Vec<Cue>, Vec<Cue>) {
    let strong = not_compound(all_matches(&STRONG_KEYWORD, text), text);
    let weak = not_compound(all_matches(&WEAK_KEYWORD, text), text);
    if strong.is_empty() && weak.is_empty() {
        return (strong, weak);
    }
    without(strong, weak, &distractors(text))
}

/// Strong and weak keywords without those inside a distractor, and weak ones
/// without those inside a strong one.
fn without(strong: Vec<Cue>, weak: Vec<Cue>, distractors: &[Cue]) -> (Vec<Cue>, Vec<Cue>) {
    let overlaps = |c: &Cue| {
        distractors
            .iter()
            .any(|d| c.start < d.end && d.start < c.end)
    };
    let strong: Vec<Cue> = strong.into_iter().filter(|c| !overlaps(c)).collect();
    let weak: Vec<Cue> = weak
        .into_iter()
        .filter(|c| !overlaps(c) && !strong.iter().any(|s| c.start < s.end && s.start < c.end))
        .collect();
    (strong, weak)
}

pub(crate) fn distractors(text: &str) -> Vec<Cue> {
    all_matches(&DISTRACTOR, text)
}

pub(crate) fn new_words(text: &str) -> Vec<Cue> {
    all_matches(&NEW, text)
}

pub(crate) fn old_words(text: &str) -> Vec<Cue> {
    all_matches(&OLD, text)
}

pub(crate) fn negations(text: &str) -> Vec<Cue> {
    all_matches(&NEGATION, text)
}

pub(crate) fn examples(text: &str) -> Vec<Cue> {
    all_matches(&EXAMPLE, text)
}

pub(crate) fn pga_words(text: &str) -> Vec<Cue> {
    all_matches(&ROLE_PGA, text)
}

pub(crate) fn pla_words(text: &str) -> Vec<Cue> {
    let mut words = all_matches(&ROLE_PLA, text);
    // "global account (PGA) – not transactional": a denied location word names none.
    words.retain(|c| {
        let before = &text.as_bytes()[..c.start];
        !["not ", "nicht ", "non-", "non ", "kein ", "keine "]
            .iter()
            .any(|n| {
                before.len() >= n.len()
                    && before[before.len() - n.len()..].eq_ignore_ascii_case(n.as_bytes())
            })
    });
    words
}

pub(crate) fn just_before_says_old(window: &str) -> bool {
    JUST_BEFORE_OLD.is_match(window)
}

pub(crate) fn just_before_says_new(window: &str) -> bool {
    JUST_BEFORE_NEW.is_match(window)
}

/// What stands between a negated number and its replacement: "statt 7757741 bitte
/// 7757714", "nicht 6514802, sondern 6514820", "not 6514802 but 6514820", "instead
/// of 7757741 please use 7757714".
static INSTEAD_JOINT: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?i)^\s*[,;:]?\s*(?:sondern|but|bitte|please(?:\s+use)?|use|nimm|nehmen\s+sie|->|→|=>)\s*(?:die|the|nur|only)?\s*$",
    )
});

/// Whether `between` (the text after a negated number, up to the next one) hands
/// over to that next number as its replacement (see [`INSTEAD_JOINT`]).
pub(crate) fn is_instead_joint(between: &str) -> bool {
    INSTEAD_JOINT.is_match(between)
}

/// Whether `between` (the text between two numbers) is a single "replaced by" word.
pub(crate) fn is_replacing_joint(between: &str) -> bool {
    JOINT.is_match(between)
}

pub(crate) fn after_says_old(after: &str) -> bool {
    AFTER_OLD.is_match(after)
}

pub(crate) fn after_says_new(after: &str) -> bool {
    AFTER_NEW.is_match(after)
}

/// The first of `stops` in `text` outside parentheses.
fn outside_parentheses(text: &str, stops: [char; 2]) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth = depth.saturating_sub(1),
            c if depth == 0 && stops.contains(&c) => return Some(i),
            _ => {}
        }
    }
    None
}

/// A statement about the number right before `text`, up to the end of its clause:
/// "ist unsere neue PLA, ", "is our PGA (global account) and ", "ist seit Mai
/// gesperrt, ", "for the company as a whole (the global account) and ". What it
/// says belongs to that number, not to the next one.
static PREDICATE: LazyLock<Regex> = LazyLock::new(|| {
    compile(r"(?i)^\s*(?:ist|is|are|sind|war|was|wird|wurde|will\s+be|has\s+been|für|fuer|for)\b")
});

/// Length in bytes of [`PREDICATE`] at the start of `text` through the comma,
/// semicolon or "und"/"and" that ends its clause; 0 when `text` holds no such
/// statement or its clause does not end before the next number ("4417206 ist durch
/// die neue Partner-ID 6409981 ersetzt" is one clause about both).
pub(crate) fn predicate_len(text: &str) -> usize {
    if !PREDICATE.is_match(text) {
        return 0;
    }
    // A comma inside a note ("(PLA, Horgen)") ends no clause.
    let mut end = outside_parentheses(text, [',', ';']);
    for joint in [" und ", " and ", " sowie ", " while ", " whereas "] {
        if let Some(i) = text.find(joint) {
            end = Some(end.map_or(i + joint.len() - 1, |e| e.min(i + joint.len() - 1)));
        }
    }
    end.map_or(0, |e| e + 1)
}

/// The ID's name said after the number as its predicate: "7581036 ist unsere neue
/// PLA", "7536110 is our PGA", "… is the location ID for Leeds".
static POSTPOSED_LABEL: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)^\s*(?:ist|is|are|sind|wäre|would\s+be)\s+
        (?:(?:die|der|das|the|unsere?\w*|our|my|meine?\w*|jetzt|nun|now|ab\s+sofort|künftig|neue\w*|new|richtig\w*|correct|aktuell\w*|current|eigentlich\w*|actual)\s+){0,4}",
    )
});

/// The strong keyword of a [`POSTPOSED_LABEL`] right after a number, in `after`'s
/// coordinates.
pub(crate) fn postposed_keyword(after: &str) -> Option<Cue> {
    let m = POSTPOSED_LABEL.find(after)?;
    let (strong, _) = keywords_alone(&after[m.end()..]);
    strong
        .into_iter()
        .next()
        .filter(|k| k.start == 0)
        .map(|k| Cue {
            start: m.end() + k.start,
            end: m.end() + k.end,
            text: k.text,
        })
}

/// The text of a parenthetical note right after a number, if any.
pub(crate) fn after_note(after: &str) -> Option<&str> {
    AFTER_NOTE
        .captures(after)
        .and_then(|c| c.get(1))
        .map(|m| m.as_str())
}

/// Length in bytes of a parenthetical note at the start of `text` ("(PGA) und "):
/// the note belongs to the number before it, not to the next one.
pub(crate) fn leading_note_len(text: &str) -> usize {
    AFTER_NOTE.find(text).map_or(0, |m| m.end())
}

/// Why the sentence before a number (from the previous number on) makes it no new ID
/// of the sender's, if it does.
pub(crate) fn disowned_before(clause: &str, just_before: &str) -> Option<&'static str> {
    let other = OTHER_PARTY.find_iter(clause).last();
    // Only a clause that names a customer at all can say it is the customer's.
    let customer = if contains_any(clause, &["kund", "custom", "client", "mandant"]) {
        CUSTOMERS_ID.find_iter(clause).last()
    } else {
        None
    };
    let last = match (other, customer) {
        (Some(a), Some(b)) => Some(if a.end() >= b.end() { a } else { b }),
        (a, b) => a.or(b),
    };
    if let Some(m) = last {
        if !OWN_CLAIM.is_match(&clause[m.end()..]) {
            return Some("another company's or a test registration's ID");
        }
    }
    if contains_any(clause, OTHER_PROGRAM_WORDS) && OTHER_PROGRAM.is_match(clause) {
        return Some("another vendor's or program's number");
    }
    if PROVISIONAL.is_match(clause) {
        return Some("a provisional ID");
    }
    if WITHDRAW_BEFORE.is_match(just_before) {
        return Some("withdrawn by the author");
    }
    if FUTURE_BEFORE.is_match(just_before) {
        return Some("only expected, not issued yet");
    }
    if IF_BEFORE.is_match(just_before) {
        return Some("only a condition (\"if the ID is …\")");
    }
    None
}

/// Why the words right after a number withdraw it, if they do (see [`DISOWN_AFTER`]).
pub(crate) fn disowned_after(after: &str, ends_question: bool) -> Option<&'static str> {
    if let Some(m) = DISOWN_AFTER.find(after) {
        let gap = &after[..m.start()];
        if OLD.find(gap).is_none() && NEW.find(gap).is_none() {
            return Some("withdrawn by the author");
        }
    }
    if FUTURE_AFTER.is_match(after) {
        return Some("only expected, not issued yet");
    }
    if ends_question && QUESTIONED_AFTER.is_match(after) {
        return Some("asked about, not stated");
    }
    if names_a_third_party(after) && OWNER_AFTER.is_match(after) {
        return Some("another company's or a test registration's ID");
    }
    None
}

/// Whether `text` holds a word [`OWNER_AFTER`] ends in: most numbers have none
/// after them, and this is cheaper than the pattern.
fn names_a_third_party(text: &str) -> bool {
    contains_any(
        text,
        &[
            "kund",
            "custom",
            "client",
            "schwester",
            "tochter",
            "sister",
            "subsidiar",
            "affiliate",
        ],
    )
}

/// Whether `text`, ASCII lower-cased, contains any of `words` (ASCII, lower case): the cheap
/// test that keeps a costly pattern off the text that cannot match it.
pub(crate) fn contains_any(text: &str, words: &[&str]) -> bool {
    let lower = text.to_ascii_lowercase();
    words.iter().any(|w| lower.contains(w))
}

/// The number's owner named right after it as someone else: "7581036 ist die PLA
/// von unserem Kunden", "… is the MPN ID of our customer", "… gehört unserem
/// Kunden", "… is our customer's", "die neue MPN-ID 7581036 unseres Kunden". Only
/// right after the number: "please apply 7581036 to all subscriptions of our
/// customers" names no owner.
static OWNER_AFTER: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?ix)^\s*(?:
            (?:ist|is|are|sind|war|was)\s+(?:\w+\s+){0,3}?(?:mpn|pla|pga|partner|standort|location|ids?\b)[\w-]*\s+(?:von|vom|des|of|from)\s+
          | (?:von|vom|des|der|eines|einer|of|from)\s+
          | (?:unseres|unserer)\s+
          | (?:gehört|gehoert|belongs\s+to)\s+
          | (?:ist|is)\s+
        )(?:(?:unsere[mnrs]?|our|einem|eines|einer|dem|the|a|an|my|meine[mnrs]?)\s+)?(?:end[\s-]?)?
        (?:kunde\w* | customer\w* | client\w* | schwester\w* | tochter\w* | sister\w* | subsidiar\w* | affiliate\w*)
        (?:'s|’s|s')?\b",
    )
});

/// Legal forms a company's name ends in.
const LEGAL_FORMS: &str = r"GmbH(?:\s*&\s*Co\.\s*KG)?|mbH|AG|KGaA|KG|OHG|UG|GbR|SE|e\.\s?K\.|LLC|Ltd\.?|Limited|Inc\.?|Corp\.?|PLC|plc|LLP|B\.V\.|BV|N\.V\.|S\.A\.|SAS|SARL|S\.r\.l\.|AB|Oy|ApS|A/S|Pty\.?\s+Ltd\.?";

/// A company's name: capitalised words ending in a legal form ("Förde IT GmbH",
/// "Redwood Lane IT LLC", "Kessler & Partner OHG").
fn company() -> String {
    format!(r"((?:(?:[A-ZÄÖÜ0-9][\w&.'’+/-]*|&)\s+){{1,6}}(?:{LEGAL_FORMS}))(?:[^\w]|$)")
}

/// The cheap test before [`OWNER_OF`] and [`OWNER_OF_AFTER`]: a legal form at all.
static LEGAL_FORM: LazyLock<Regex> = LazyLock::new(|| compile(&format!(r"\b(?:{LEGAL_FORMS})")));

/// A company named as the holder: "der Förde IT GmbH", "für die Firma X GmbH", "of
/// Redwood Lane IT LLC".
static OWNER_OF: LazyLock<Regex> = LazyLock::new(|| {
    compile(&format!(
        r"(?:^|[\s,(])(?:der|des|vom|von|für|fuer|for|of)\s+(?:(?:der|die|dem|den|the)\s+)?(?:(?:Firma|firm|company)\s+)?{}",
        company()
    ))
});

/// The same right after the number: "6557038 (Förde IT GmbH)", "7604519 für die
/// Redwood Lane IT LLC".
static OWNER_OF_AFTER: LazyLock<Regex> = LazyLock::new(|| {
    compile(&format!(
        r"^[\s,(–-]*(?:(?:der|des|vom|von|für|fuer|for|of)\s+(?:(?:der|die|dem|den|the)\s+)?(?:(?:Firma|firm|company)\s+)?)?{}",
        company()
    ))
});

/// A proper name that owns the keyword right after it: "Redwood Lane's new".
static OWNER_POSSESSIVE: LazyLock<Regex> = LazyLock::new(|| {
    compile(r"((?:(?:[A-ZÄÖÜ][\w&.-]*|&)\s+){0,3}[A-ZÄÖÜ][\w&.-]*)(?:'s|’s)\s+(?:[\w-]+\s+){0,2}$")
});

/// The company the author names as the holder of an ID: in `before` (the text
/// right before its keyword) as a possessive, in `between` (keyword to number) or
/// at the start of `after` as "der/of/für <name with legal form>". Microsoft (and
/// its Partner Center) holds no reseller's ID.
pub(crate) fn named_owner(before: &str, between: &str, after: &str) -> Option<String> {
    let name = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let owner = if before.contains("'s") || before.contains("’s") {
        OWNER_POSSESSIVE
            .captures(before)
            .and_then(|c| c.get(1))
            .map(|m| name(m.as_str()))
    } else {
        None
    }
    .or_else(|| {
        LEGAL_FORM
            .is_match(between)
            .then(|| OWNER_OF.captures_iter(between).last())
            .flatten()
            .and_then(|c| c.get(1))
            .map(|m| name(m.as_str()))
    })
    .or_else(|| {
        LEGAL_FORM
            .is_match(after)
            .then(|| OWNER_OF_AFTER.captures(after))
            .flatten()
            .and_then(|c| c.get(1))
            .map(|m| name(m.as_str()))
    })?;
    let lower = owner.to_lowercase();
    (!["microsoft", "partner center", "partner centre"]
        .iter()
        .any(|w| lower.contains(w)))
    .then_some(owner)
}

/// Where a correction cue ends in `text`, if there is one (see [`CORRECTION`]).
pub(crate) fn correction_end(text: &str) -> Option<usize> {
    CORRECTION.find_iter(text).last().map(|m| m.end())
}

/// Whether `text` says the mail's subject is wrong.
pub(crate) fn retracts_subject(text: &str) -> bool {
    SUBJECT_RETRACTED.is_match(text)
}

/// Whether `text` says the location (PLA) ID is still missing, or that the
/// reseller's own new ID is still to come ([`OWN_ID_PENDING`]).
pub(crate) fn says_location_pending(text: &str) -> bool {
    LOCATION_PENDING.is_match(text)
        || (contains_any(text, OWN_ID_PENDING_WORDS)
            && text
                .split_inclusive(['.', '!', '?'])
                .any(|s| OWN_ID_PENDING.is_match(s) && ID_WORD.is_match(s)))
}

/// A literal every match of [`OWN_ID_PENDING`] holds, lower case: few lines have
/// one, and the pattern on every line of the author's cost ~10 % of triage.
const OWN_ID_PENDING_WORDS: &[&str] = &[
    "kommt erst",
    "erhalten sie",
    "schick",
    "send",
    "reich",
    "meld",
    "sobald",
    "'ll",
    "will ",
    "keine",
];

/// A word a sentence that says the ID is still to come speaks of the ID with
/// ("ID" as a word or a compound's end: not the "id" of "provided").
static ID_WORD: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?i)\b(?:ids?|partnerids?|nummer|number|standort\w*|location|registrierung|registration|verifi\w*)\b|-ids?\b",
    )
});

pub(crate) fn asks_which(text: &str) -> bool {
    ASKS_WHICH.is_match(text)
}

pub(crate) fn mentions_id_topic(text: &str) -> bool {
    TOPIC.is_match(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(cues: &[Cue]) -> Vec<&str> {
        cues.iter().map(|c| c.text.as_str()).collect()
    }

    #[test]
    fn keywords_alone_finds_what_keywords_finds_with_the_distractors() {
        for text in [
            "unsere neue MPN-ID lautet",
            "Tenant-ID und Kunden-Nr.",
            "Kundennummer / Partner-ID",
            "die ID des Mandanten ist",
            "Bestellung 4007 zur Standort-ID",
            "Reseller-Nummer bei Ihnen",
            "nothing to see here",
            "",
            "ID ID Kennung Tel. Partner ID",
        ] {
            assert_eq!(
                keywords_alone(text),
                keywords(text, &distractors(text)),
                "{text:?}"
            );
        }
        // The shortcut: a distractor alone removes nothing, so it is not looked for.
        assert_eq!(keywords_alone("Kunden-Nr."), (Vec::new(), Vec::new()));
        let (strong, weak) = keywords_alone("Tenant-ID");
        assert!(
            strong.is_empty() && weak.is_empty(),
            "Tenant-ID is no keyword"
        );
    }

    #[test]
    fn strong_keywords_cover_the_names_of_the_id() {
        for name in [
            "MPN-ID",
            "MPN ID",
            "MPN-Nummer",
            "Partner-ID",
            "PartnerID",
            "Partner ID",
            "PLA",
            "PLA-ID",
            "Partner Location Account",
            "Partner Location Account ID",
            "Standort-ID",
            "Location ID",
            "Location MPN ID",
            "Microsoft AI Cloud Partner Program ID",
            "Partnernummer",
            "Microsoft Partner-ID",
        ] {
            let text = format!("unsere {name}: 1");
            let (strong, _) = keywords(&text, &distractors(&text));
            assert!(!strong.is_empty(), "{name} not recognised");
        }
    }

    #[test]
    fn distractor_swallows_a_trailing_id() {
        let text = "Die neue Tenant-ID ist";
        let (strong, weak) = keywords(text, &distractors(text));
        assert!(strong.is_empty());
        assert!(weak.is_empty(), "{:?}", texts(&weak));
        assert_eq!(texts(&distractors("Ihre Kundennummer")), ["Kundennummer"]);
        // The location ID still to come, said in other words.
        assert!(says_location_pending("Standort (PLA) | - | in Prüfung"));
        assert!(says_location_pending(
            "die Standort-ID schicke ich, sobald Microsoft fertig ist"
        ));
        assert!(says_location_pending(
            "the location ID we will send once approved"
        ));
        assert!(!says_location_pending("unsere neue Standort-ID lautet"));
        // Compounds that end in "-vertrag" label a contract number.
        assert_eq!(
            texts(&distractors("Unser Rahmenvertrag Nr. ")),
            ["Rahmenvertrag Nr"]
        );
        assert_eq!(texts(&distractors("Bestellnr. 4")), ["Bestellnr"]);
    }

    #[test]
    fn partner_center_is_not_an_id_keyword_but_is_topic() {
        let text = "im Partner Center stehen zwei Nummern";
        let (strong, weak) = keywords(text, &distractors(text));
        assert!(strong.is_empty() && weak.is_empty());
        assert!(mentions_id_topic("im Partner Center stehen zwei Nummern"));
        assert!(!mentions_id_topic("Ihre Bestellung wurde versandt"));
        // The re-registration and the CSP status are the ID's topic too.
        assert!(mentions_id_topic(
            "nach der Registrierung haben wir zwei IDs bekommen"
        ));
        assert!(mentions_id_topic("Neuregistrierung Microsoft"));
        assert!(mentions_id_topic("Re-enrolment done"));
        assert!(mentions_id_topic("our indirect reseller status"));
        assert!(!mentions_id_topic("your registered office"));
    }

    #[test]
    fn asks_which_number_is_needed() {
        assert!(asks_which("Welche davon brauchen Sie?"));
        assert!(asks_which("ich weiß aber nicht, welche welche ist"));
        assert!(asks_which("We're not sure which one you need for CSP"));
        assert!(asks_which("Welche ID brauchen Sie?"));
        assert!(!asks_which(
            "Our new location ID is 7403129, which we accepted."
        ));
        assert!(!asks_which(
            "Welche Abos betroffen sind, sehen Sie im Portal."
        ));
    }

    #[test]
    fn after_patterns() {
        assert!(after_says_old(" (alt), 6057318"));
        assert!(after_says_old(" war falsch"));
        assert!(after_says_old(" -> "));
        assert!(!after_says_old(" ein und stellen Sie"));
        assert!(
            !after_says_old(" (vorher "),
            "an open note belongs to the next number"
        );
        assert!(after_says_old(" (alte ID), "));
        assert!(after_says_old(" wird ersetzt durch "));
        assert!(!after_says_old(" ersetzt die alte "));
        assert!(after_says_new(" ersetzt die alte "));
        assert!(after_says_new(" (neu)"));
        assert_eq!(after_note(" (PGA) und "), Some("PGA"));
        assert_eq!(leading_note_len(" (PGA) und "), 6);
        assert_eq!(leading_note_len(" (nicht "), 0);
    }

    #[test]
    fn markers() {
        assert_eq!(texts(&old_words("unsere bisherige MPN-ID")), ["bisherige"]);
        assert_eq!(texts(&new_words("Die richtige MPN-ID")), ["richtige"]);
        assert_eq!(texts(&negations("(nicht ")), ["nicht"]);
        assert!(!examples("z. B. ").is_empty());
        assert_eq!(texts(&pga_words("für den global account (PGA)")).len(), 2);
        assert_eq!(
            texts(&pla_words("Partner-ID (Standort München)")),
            ["Standort"]
        );
    }
}
