//! The `mpnd` command: the daemon and the operator's tools.
//!
//! Parses the command line and the configuration, then calls the library. Errors
//! are printed once, here, with their whole context (`{:#}`), and become the exit
//! code: 0 success, 1 error, 2 usage, 3 not found, 4 the gate is closed (`mpnd gate`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use serde::Serialize;

use mpnd::backend::{Backend, Verification};
use mpnd::config::Config;
use mpnd::reply::Templates;
use mpnd::store::{fmt_time, now, Ctx, Store};
use mpnd::triage::{self, MpnId, Registry};

/// Takes resellers' new MPN/PLA IDs from the cloud@ mailbox and applies them.
#[derive(Parser)]
#[command(name = "mpnd", version, about)]
struct Cli {
    /// Configuration file (TOML); without it, the embedded default under --state-dir.
    #[arg(long, global = true, env = "MPND_CONFIG")]
    config: Option<PathBuf>,
    /// State directory of the embedded default (ignored with --config).
    #[arg(long, global = true, default_value = "./var")]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: watch the mailbox, apply IDs, send confirmations, serve the gate.
    Run,
    /// Triage mail files offline and show what the daemon would decide.
    Extract {
        /// Reseller registry CSV (columns as for `reseller import`); default: the store's.
        #[arg(long)]
        resellers: Option<PathBuf>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// .eml files or directories of them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Resellers: import, list, show, revoke.
    #[command(subcommand)]
    Reseller(ResellerCmd),
    /// Subscriptions: import, list.
    #[command(subcommand)]
    Subscription(SubscriptionCmd),
    /// Cases: what was decided about each mail; review, approve, reject, retry.
    #[command(subcommand)]
    Queue(QueueCmd),
    /// Jobs: the updates a case needs; mark them done or failed (manual backend).
    #[command(subcommand)]
    Job(JobCmd),
    /// May this reseller order now? Exit 0 allowed, 4 blocked, 3 unknown.
    Gate {
        account: String,
        #[arg(long)]
        json: bool,
    },
    /// The audit log: who did what, when.
    Audit {
        #[arg(long = "case")]
        case_id: Option<i64>,
        #[arg(long)]
        account: Option<String>,
        #[arg(long, default_value_t = 200)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Configuration: check a file and report every problem.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// What the daemon is doing: mailbox, queues, outbox. The first thing to run.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) to stdout.
    Man,
}

#[derive(Subcommand)]
enum ResellerCmd {
    /// Import or update resellers from CSV: account,company,contact_emails,domains,old_mpn_id,locale.
    Import { file: PathBuf },
    List {
        #[arg(long)]
        json: bool,
    },
    Show {
        account: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke the reseller's current ID: orders are blocked until a new ID is applied.
    Revoke { account: String },
}

#[derive(Subcommand)]
enum SubscriptionCmd {
    /// Import or update subscriptions from CSV: account,customer_id,subscription_id,offer,partner_id.
    Import { file: PathBuf },
    List {
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum QueueCmd {
    /// List cases (default: those in review).
    List {
        /// review, updating, done, rejected, ignored, superseded, or all.
        #[arg(long, default_value = "review")]
        state: String,
        #[arg(long)]
        json: bool,
    },
    /// A case with its candidates, evidence, reasons, jobs and mails.
    Show {
        case_id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Accept a case: apply its ID (or --id) to its reseller (or --account).
    /// With backend.verify, Microsoft must confirm the ID first.
    Approve {
        case_id: i64,
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        account: Option<String>,
        /// Apply without asking Partner Center (the operator has checked the ID).
        #[arg(long)]
        no_verify: bool,
    },
    /// Reject a case; --notify tells the reseller the reason.
    Reject {
        case_id: i64,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        notify: bool,
    },
    /// Try a case again: revive its failed jobs and mails, or triage a case in
    /// review again against the current registry.
    Retry { case_id: i64 },
}

#[derive(Subcommand)]
enum JobCmd {
    List {
        #[arg(long = "case")]
        case_id: Option<i64>,
        /// pending, running, done, failed, dead, cancelled, or all.
        #[arg(long, default_value = "all")]
        state: String,
        #[arg(long)]
        json: bool,
    },
    /// Mark a job (or every open job of --case) done.
    Done {
        job_id: Option<i64>,
        #[arg(long = "case")]
        case_id: Option<i64>,
    },
    /// Mark a job failed; the reseller stays blocked until it is retried.
    Fail {
        job_id: i64,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Check the configuration; every problem with file, line, key and what was expected.
    Check,
}

/// An error that has its own exit code.
#[derive(Debug)]
struct Exit(u8, String);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}
impl std::error::Error for Exit {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Output piped into `head` must end a CLI command quietly, as for any Unix tool,
    // not panic in println!. Never for the daemon: a peer that closes a TLS or HTTP
    // connection makes a vectored write (writev has no MSG_NOSIGNAL) raise SIGPIPE,
    // which would kill it without a word; ignored, the write is an EPIPE error.
    if !matches!(cli.command, Command::Run) {
        // SAFETY: setting a signal disposition to its default before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let json_logs = std::env::var_os("JOURNAL_STREAM").is_some();
    let filter = tracing_subscriber::EnvFilter::try_from_env("MPND_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json_logs {
        builder.json().with_current_span(false).init();
    } else {
        builder.init();
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if let Some(Exit(code, msg)) = e.downcast_ref::<Exit>() {
                if !msg.is_empty() {
                    eprintln!("mpnd: {msg}");
                }
                return ExitCode::from(*code);
            }
            eprintln!("mpnd: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config> {
    match &cli.config {
        Some(path) => Config::load(path),
        None => Ok(Config::embedded(&cli.state_dir)),
    }
}

fn operator() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    format!("operator:{user}")
}

fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "mpnd", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let config = load_config(&cli)?;
    match cli.command {
        Command::Run => {
            mpnd::daemon::limit_malloc_arenas();
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(async {
                let token = tokio_util::sync::CancellationToken::new();
                mpnd::daemon::stop_on_signals(token.clone());
                mpnd::daemon::run(config, cli.config.clone(), token).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Extract {
            resellers,
            json,
            paths,
        } => extract(&config, resellers.as_deref(), json, &paths),
        Command::Config(ConfigCmd::Check) => {
            Templates::load(config.templates_dir.as_deref())?;
            println!("{}: ok", config.source);
            Ok(ExitCode::SUCCESS)
        }
        command => {
            let templates = Templates::load(config.templates_dir.as_deref())?;
            let mut store = Store::open(&config.db_path())?;
            let actor = operator();
            let ctx = Ctx {
                now: now(),
                from: &config.smtp.from,
                templates: &templates,
                max_per_recipient_per_day: config.smtp.max_per_recipient_per_day,
                actor: &actor,
            };
            operate(command, &config, &mut store, &ctx)
        }
    }
}

fn extract(
    config: &Config,
    resellers: Option<&Path>,
    json: bool,
    paths: &[PathBuf],
) -> Result<ExitCode> {
    let registry = match resellers {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            mpnd::store::registry_from_csv(&text).with_context(|| format!("{}", p.display()))?
        }
        None if config.db_path().exists() => Store::open(&config.db_path())?.registry()?,
        None => Registry::default(),
    };
    let mut files = Vec::new();
    let mut unreadable = Vec::new();
    for p in paths {
        if let Err(e) = collect_files(p, &mut files) {
            unreadable.push(format!("{e:#}"));
        }
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for file in files {
        let raw = match std::fs::read(&file) {
            Ok(raw) => raw,
            Err(e) => {
                unreadable.push(format!("cannot read {}: {e}", file.display()));
                continue;
            }
        };
        let t = triage::triage(&raw, &registry, &config.policy);
        if json {
            let line = serde_json::json!({
                "file": file.display().to_string(),
                "outcome": t.outcome,
                "mpn_id": t.mpn_id,
                "decision": t.decision,
                "reasons": t.reasons,
                "candidates": t.candidates,
                "reseller": t.reseller,
                "from": t.headers.from,
                "subject": t.headers.subject,
                "message_id": t.headers.message_id,
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}",
                file.display(),
                t.outcome.as_str(),
                t.mpn_id.as_ref().map(|i| i.as_str()).unwrap_or("-"),
                t.decision.as_str(),
                t.reasons.join("; ")
            )?;
        }
    }
    if !unreadable.is_empty() {
        // Every readable file was triaged; the others are named, and the exit
        // code says not everything was.
        return Err(Exit(1, unreadable.join("\n")).into());
    }
    Ok(ExitCode::SUCCESS)
}

fn collect_files(p: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let meta = std::fs::metadata(p).with_context(|| format!("cannot read {}", p.display()))?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
            .with_context(|| format!("cannot list {}", p.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            if e.is_dir() {
                collect_files(&e, out)?;
            } else if e.extension().is_some_and(|x| x == "eml") {
                out.push(e);
            }
        }
    } else {
        out.push(p.to_path_buf());
    }
    Ok(())
}

fn print_json<T: Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints rows as aligned columns.
fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "-".into())
}

fn not_found(what: String) -> anyhow::Error {
    Exit(3, what).into()
}

fn operate(
    command: Command,
    config: &Config,
    store: &mut Store,
    ctx: &Ctx<'_>,
) -> Result<ExitCode> {
    match command {
        Command::Reseller(ResellerCmd::Import { file }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let r = store
                .import_resellers(&text, ctx)
                .with_context(|| format!("{}", file.display()))?;
            println!(
                "resellers: {} added, {} updated, {} unchanged",
                r.added, r.updated, r.unchanged
            );
        }
        Command::Reseller(ResellerCmd::List { json }) => {
            let list = store.resellers()?;
            if json {
                print_json(&list)?;
            } else {
                table(
                    &["ACCOUNT", "STATE", "MPN ID", "PENDING", "LOCALE", "COMPANY"],
                    list.iter()
                        .map(|r| {
                            vec![
                                r.account.clone(),
                                r.state.clone(),
                                opt(&r.mpn_id),
                                opt(&r.pending_mpn_id),
                                r.locale.clone(),
                                r.company.clone(),
                            ]
                        })
                        .collect(),
                );
            }
        }
        Command::Reseller(ResellerCmd::Show { account, json }) => {
            let r = store
                .reseller(&account)?
                .ok_or_else(|| not_found(format!("no reseller with account {account:?}")))?;
            let subs = store.subscriptions(Some(&account))?;
            let gate = store.gate(&account)?;
            if json {
                print_json(
                    &serde_json::json!({"reseller": r, "subscriptions": subs, "gate": gate}),
                )?;
            } else {
                println!("account:       {}", r.account);
                println!("company:       {}", r.company);
                println!("state:         {}", r.state);
                println!(
                    "mpn id:        {}{}",
                    opt(&r.mpn_id),
                    if r.mpn_id_applied { "" } else { " (imported)" }
                );
                println!("pending id:    {}", opt(&r.pending_mpn_id));
                println!("revoked ids:   {}", r.revoked_ids.join(", "));
                println!("contacts:      {}", r.contact_emails.join(", "));
                println!("domains:       {}", r.domains.join(", "));
                println!("locale:        {}", r.locale);
                if let Some(g) = gate {
                    println!(
                        "orders:        {} ({})",
                        if g.allowed { "allowed" } else { "blocked" },
                        g.reason
                    );
                }
                println!("subscriptions: {}", subs.len());
                for s in subs {
                    println!(
                        "  {}  {}  {}  {}",
                        s.subscription_id, s.customer_id, s.partner_id, s.offer
                    );
                }
            }
        }
        Command::Reseller(ResellerCmd::Revoke { account }) => {
            store.revoke(&account, ctx)?;
            println!("{account}: ID revoked; orders blocked until a new ID is applied");
        }
        Command::Subscription(SubscriptionCmd::Import { file }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let r = store
                .import_subscriptions(&text, ctx)
                .with_context(|| format!("{}", file.display()))?;
            println!(
                "subscriptions: {} added, {} updated, {} unchanged",
                r.added, r.updated, r.unchanged
            );
        }
        Command::Subscription(SubscriptionCmd::List { account, json }) => {
            let subs = store.subscriptions(account.as_deref())?;
            if json {
                print_json(&subs)?;
            } else {
                table(
                    &["ACCOUNT", "SUBSCRIPTION", "CUSTOMER", "PARTNER ID", "OFFER"],
                    subs.into_iter()
                        .map(|s| {
                            vec![
                                s.account,
                                s.subscription_id,
                                s.customer_id,
                                s.partner_id,
                                s.offer,
                            ]
                        })
                        .collect(),
                );
            }
        }
        Command::Queue(QueueCmd::List { state, json }) => {
            let filter = if state == "all" {
                None
            } else {
                Some(state.as_str())
            };
            let cases = store.cases(filter, None)?;
            if json {
                print_json(&cases)?;
            } else {
                table(
                    &[
                        "CASE", "CREATED", "STATE", "DECISION", "ACCOUNT", "ID", "SENDER",
                        "REASONS",
                    ],
                    cases
                        .into_iter()
                        .map(|c| {
                            vec![
                                c.id.to_string(),
                                fmt_time(c.created_at),
                                c.state,
                                c.decision,
                                opt(&c.account),
                                opt(&c.mpn_id),
                                c.sender,
                                c.reasons.join("; "),
                            ]
                        })
                        .collect(),
                );
            }
        }
        Command::Queue(QueueCmd::Show { case_id, json }) => {
            let d = store
                .case(case_id)?
                .ok_or_else(|| not_found(format!("no case {case_id}")))?;
            if json {
                print_json(&d)?;
            } else {
                show_case(&d);
            }
        }
        Command::Queue(QueueCmd::Approve {
            case_id,
            id,
            account,
            no_verify,
        }) => {
            let id = id
                .map(|i| MpnId::parse(&i).map_err(|e| anyhow!(e)))
                .transpose()?;
            let evidence = if no_verify {
                None
            } else {
                let found = store.case(case_id)?.map(|c| c.case);
                let to_check = id.clone().or_else(|| {
                    found
                        .as_ref()
                        .and_then(|c| c.mpn_id.as_deref())
                        .and_then(|f| MpnId::parse(f).ok())
                });
                let target = account
                    .clone()
                    .or_else(|| found.as_ref().and_then(|c| c.account.clone()));
                match (to_check, target) {
                    (Some(to_check), Some(target)) => {
                        match verify_for_approval(config, &to_check)? {
                            Checked::Valid(evidence) => evidence,
                            Checked::Invalid(reason, evidence) => {
                                store.reject_unverified(
                                    case_id, &target, &to_check, &reason, &evidence, ctx,
                                )?;
                                return Err(Exit(
                                    5,
                                    format!(
                                        "case {case_id} rejected: {evidence}; the reseller is told \
                                         (approve with --no-verify if you know better)"
                                    ),
                                )
                                .into());
                            }
                        }
                    }
                    // Without an ID or account approve() says what is missing.
                    _ => None,
                }
            };
            store.approve(case_id, id.as_ref(), account.as_deref(), ctx)?;
            if let Some(evidence) = evidence {
                store.note_case(case_id, &evidence, ctx)?;
            }
            let c = store
                .case(case_id)?
                .ok_or_else(|| anyhow!("case {case_id} vanished"))?;
            println!(
                "case {case_id} approved: ID {} for {}; {} job(s) queued",
                opt(&c.case.mpn_id),
                opt(&c.case.account),
                c.jobs.iter().filter(|j| j.state != "cancelled").count()
            );
        }
        Command::Queue(QueueCmd::Reject {
            case_id,
            reason,
            notify,
        }) => {
            store.reject_case(case_id, &reason, notify, ctx)?;
            println!(
                "case {case_id} rejected{}",
                if notify {
                    "; the reseller will be told"
                } else {
                    ""
                }
            );
        }
        Command::Queue(QueueCmd::Retry { case_id }) => {
            let d = store
                .case(case_id)?
                .ok_or_else(|| not_found(format!("no case {case_id}")))?;
            if d.case.state == "review" {
                let raw = store
                    .case_raw(case_id)?
                    .ok_or_else(|| anyhow!("case {case_id} has no stored mail to triage again"))?;
                let registry = store.registry()?;
                let t = triage::triage(&raw, &registry, &config.policy);
                store.retriage(case_id, &t, ctx)?;
                println!(
                    "case {case_id} triaged again: {} {} ({})",
                    t.decision.as_str(),
                    t.mpn_id.as_ref().map(|i| i.as_str()).unwrap_or("-"),
                    t.reasons.join("; ")
                );
            } else {
                let jobs = store.retry_jobs(case_id, ctx)?;
                let mails = store.outbox_revive(case_id)?;
                println!("case {case_id}: {jobs} job(s) and {mails} mail(s) queued again");
            }
        }
        Command::Job(JobCmd::List {
            case_id,
            state,
            json,
        }) => {
            let filter = if state == "all" {
                None
            } else {
                Some(state.as_str())
            };
            let jobs = store.jobs(case_id, filter)?;
            if json {
                print_json(&jobs)?;
            } else {
                table(
                    &[
                        "JOB",
                        "CASE",
                        "ACCOUNT",
                        "KIND",
                        "TARGET",
                        "NEW ID",
                        "STATE",
                        "ATTEMPTS",
                        "LAST ERROR",
                    ],
                    jobs.into_iter()
                        .map(|j| {
                            vec![
                                j.id.to_string(),
                                j.case_id.to_string(),
                                j.account.clone(),
                                j.kind.clone(),
                                j.subscription_id
                                    .clone()
                                    .unwrap_or_else(|| j.account.clone()),
                                j.mpn_id,
                                j.state,
                                j.attempts.to_string(),
                                j.last_error,
                            ]
                        })
                        .collect(),
                );
            }
        }
        Command::Job(JobCmd::Done { job_id, case_id }) => {
            let ids: Vec<i64> = match (job_id, case_id) {
                (Some(id), None) => vec![id],
                (None, Some(case)) => store
                    .jobs(Some(case), None)?
                    .into_iter()
                    .filter(|j| j.state != "done" && j.state != "cancelled")
                    .map(|j| j.id)
                    .collect(),
                _ => return Err(Exit(2, "give a job ID or --case CASE, not both".into()).into()),
            };
            if ids.is_empty() {
                bail!("nothing to mark done");
            }
            for id in &ids {
                store.job_done(*id, ctx)?;
            }
            println!("{} job(s) done", ids.len());
        }
        Command::Job(JobCmd::Fail { job_id, reason }) => {
            store.job_fail(job_id, &reason, ctx)?;
            println!("job {job_id} failed: {reason}");
        }
        Command::Gate { account, json } => {
            let g = store
                .gate(&account)?
                .ok_or_else(|| not_found(format!("no reseller with account {account:?}")))?;
            if json {
                println!("{}", serde_json::to_string(&g)?);
            } else {
                println!(
                    "{}: {} ({}){}",
                    g.account,
                    if g.allowed { "allowed" } else { "blocked" },
                    g.reason,
                    g.mpn_id
                        .map(|i| format!(", MPN ID {i}"))
                        .unwrap_or_default()
                );
            }
            return Ok(if g.allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(4)
            });
        }
        Command::Audit {
            case_id,
            account,
            limit,
            json,
        } => {
            let events = store.audit_events(case_id, account.as_deref(), limit)?;
            if json {
                print_json(&events)?;
            } else {
                table(
                    &[
                        "TIME", "ACTOR", "ACTION", "CASE", "ACCOUNT", "JOB", "DETAIL",
                    ],
                    events
                        .into_iter()
                        .map(|e| {
                            vec![
                                fmt_time(e.at),
                                e.actor,
                                e.action,
                                e.case_id
                                    .map(|c| c.to_string())
                                    .unwrap_or_else(|| "-".into()),
                                opt(&e.account),
                                e.job_id
                                    .map(|c| c.to_string())
                                    .unwrap_or_else(|| "-".into()),
                                e.detail,
                            ]
                        })
                        .collect(),
                );
            }
        }
        Command::Status { json } => {
            let status = store.status()?;
            let counts = store.counts()?;
            let cursors = store.cursors()?;
            if json {
                print_json(&serde_json::json!({
                    "config": config.source,
                    "store": config.db_path(),
                    "status": status.iter().map(|(k, v, t)| serde_json::json!({"key": k, "value": v, "at": t})).collect::<Vec<_>>(),
                    "cursors": cursors.iter().map(|(f, v, n)| serde_json::json!({"folder": f, "uidvalidity": v, "next_uid": n})).collect::<Vec<_>>(),
                    "counts": counts.iter().map(|(t, s, n)| serde_json::json!({"kind": t, "state": s, "count": n})).collect::<Vec<_>>(),
                }))?;
            } else {
                println!("config:  {}", config.source);
                println!("store:   {}", config.db_path().display());
                if status.is_empty() {
                    println!(
                        "daemon:  has not reported yet (is `mpnd run` running on this store?)"
                    );
                }
                for (k, v, t) in status {
                    println!("{k} (reported {}):", fmt_time(t));
                    match serde_json::from_str::<serde_json::Value>(&v) {
                        Ok(serde_json::Value::Object(m)) => {
                            for (field, value) in m {
                                let value = value
                                    .as_str()
                                    .map(str::to_string)
                                    .unwrap_or_else(|| value.to_string());
                                if !value.is_empty() {
                                    println!("  {field:<22} {value}");
                                }
                            }
                        }
                        _ => println!("  {v}"),
                    }
                }
                for (folder, uidvalidity, next_uid) in cursors {
                    println!("cursor:  {folder} uidvalidity {uidvalidity}, next UID {next_uid}");
                }
                println!("counts:");
                for (t, s, n) in counts {
                    println!("  {t:<10} {s:<22} {n}");
                }
            }
        }
        Command::Run
        | Command::Extract { .. }
        | Command::Config(_)
        | Command::Completions { .. }
        | Command::Man => unreachable!("handled before"),
    }
    Ok(ExitCode::SUCCESS)
}

enum Checked {
    Valid(Option<String>),
    Invalid(mpnd::triage::RejectReason, String),
}

/// Asks Partner Center about an ID an operator approves, as the daemon does for a
/// mail. No answer stops the approval (try later, or --no-verify); a refusal
/// rejects the case like a mail's. Returns the evidence to keep.
fn verify_for_approval(config: &Config, id: &MpnId) -> Result<Checked> {
    let backend = Backend::new(&config.backend)?;
    if !backend.verifies() {
        return Ok(Checked::Valid(None));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match rt.block_on(backend.verify(id)) {
        Verification::Skipped => Ok(Checked::Valid(None)),
        Verification::Valid { evidence } => Ok(Checked::Valid(Some(format!("approval: {evidence}")))),
        Verification::Invalid {
            code,
            description,
            evidence,
        } => Ok(Checked::Invalid(
            mpnd::triage::RejectReason::NotAuthorisedAtMicrosoft { code, description },
            evidence,
        )),
        Verification::Unavailable(why) => Err(Exit(
            5,
            format!("not approved: cannot verify {id} with Partner Center now ({why}); try again later or use --no-verify"),
        )
        .into()),
    }
}

fn show_case(d: &mpnd::store::CaseDetail) {
    let c = &d.case;
    println!("case {}  ({})", c.id, c.state);
    println!("created:   {}", fmt_time(c.created_at));
    println!("sender:    {}", c.sender);
    println!("subject:   {}", c.subject);
    println!("reseller:  {}", opt(&c.account));
    println!(
        "decision:  {} (outcome {}, by {})",
        c.decision, c.outcome, c.decided_by
    );
    println!("mpn id:    {}", opt(&c.mpn_id));
    println!("message:   {}", d.message_key.as_deref().unwrap_or("-"));
    println!("reasons:");
    for r in &c.reasons {
        println!("  - {r}");
    }
    if let Some(cands) = d.triage["candidates"].as_array() {
        println!("candidates:");
        for cand in cands {
            println!(
                "  {} score {} [{}{}] {}",
                cand["id"].as_str().unwrap_or("?"),
                cand["score"],
                cand["source"].as_str().unwrap_or(""),
                cand["keyword"]
                    .as_str()
                    .map(|k| format!(", {k}"))
                    .unwrap_or_default(),
                cand["verdict"].as_str().unwrap_or("")
            );
            println!("      | {}", cand["evidence"].as_str().unwrap_or(""));
        }
    }
    if !d.jobs.is_empty() {
        println!("jobs:");
        for j in &d.jobs {
            println!(
                "  {} {} {} → {} [{}]{}",
                j.id,
                j.kind,
                j.subscription_id.as_deref().unwrap_or(&j.account),
                j.mpn_id,
                j.state,
                if j.last_error.is_empty() {
                    String::new()
                } else {
                    format!(" {}", j.last_error)
                }
            );
        }
    }
    if !d.outbox.is_empty() {
        println!("mails:");
        for m in &d.outbox {
            println!(
                "  {} {} to {} [{}] {}",
                m.id, m.kind, m.recipient, m.state, m.last_error
            );
        }
    }
}
