//! The command line: what each command means and how it reports.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use cordon_api::wire::{
    ActRequest, ActionView, ApproveRequest, AuditVerifyView, AuditView, BreakerView, DetectionPost, DetectionView,
    ImportRequest, ImportView, IngestResponse, PasswordRequest, ReconcileView, ServerView, StatusView, SubmitResponse,
    TokenCreated, TokenRequest, TokenView, UserRequest, UserView,
};
use cordon_model::{Message, messages};

use crate::client::Client;
use crate::output;

const AFTER_HELP: &str = "\
Operator commands talk to a running `cordon serve` over its API:
  --url (or CORDON_URL, default http://127.0.0.1:8080) says where; the token comes from
  CORDON_TOKEN or --token-file. The first admin token is written to <data_dir>/admin.token.

Examples:
  cordon serve --config /etc/cordon/cordon.toml
  export CORDON_TOKEN=$(cat /var/lib/cordon/admin.token)
  cordon servers list
  cordon quarantine sbc-01 --reason \"ransomware beacon\" --wait
  cordon servers show sbc-01 -o json
  cordon unquarantine sbc-01 --wait
  cordon actions list --state failed
  cordon explain 67198
  cordon tokens create --role sensor --name ids-1 --expires 30d
  cordon users add alice --role operator

Exit status: 0 success; 1 the operation failed or was refused (the message number says why);
2 invalid usage or configuration.";

/// Cordon contains compromised machines: it moves a server's network port into the quarantine
/// network (and back), verifies that the move took effect, and records every step.
#[derive(Debug, Parser)]
#[command(name = "cordon", version, after_help = AFTER_HELP, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the manager: API, engine and drivers, configured by a TOML file.
    Serve {
        /// The configuration file.
        #[arg(long, short, env = "CORDON_CONFIG", default_value = "/etc/cordon/cordon.toml")]
        config: PathBuf,
        /// Validate the configuration, print a summary and exit without starting.
        #[arg(long)]
        check: bool,
    },
    /// List servers, or show one with its NICs, networks and addresses.
    #[command(subcommand)]
    Servers(ServersCommand),
    /// Move a server's NICs to their quarantine network and give it a quarantine address.
    ///
    /// If the port was already moved by hand, Cordon records the quarantine without moving
    /// anything (message 21005), so that its records match the network again.
    Quarantine(ActArgs),
    /// Move a quarantined server back to its operational network and address.
    ///
    /// This is the only way to release a server: checking or retrying an action never does.
    Unquarantine(ActArgs),
    /// Reboot a server: a VM through its hypervisor, a physical server through its BMC.
    ///
    /// Graceful first, forced after `graceful_timeout`; the action succeeds only when the
    /// restart was observed (message 21015). A server found powered off is powered on.
    Reboot(RebootArgs),
    /// List actions, show one with its steps, or acknowledge (check) or retry one.
    #[command(subcommand)]
    Actions(ActionsCommand),
    /// List the detections that sensors reported, newest first, with what Cordon decided.
    #[command(subcommand)]
    Detections(DetectionsCommand),
    /// Show or reset the circuit breaker that holds automatic actions for approval.
    #[command(subcommand)]
    Breaker(BreakerCommand),
    /// Read and verify the audit trail: who did what, when, from where and why, and every state
    /// change, each row chained to the one before by its hash.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Report a detection to Cordon from an endpoint (for clamd's VirusEvent).
    ///
    /// In clamd.conf: `VirusEvent /usr/bin/cordon report --url https://cordon:8080
    /// --token-file /etc/cordon/report.token`. clamd sets CLAM_VIRUSEVENT_VIRUSNAME and
    /// CLAM_VIRUSEVENT_FILENAME, which `report` reads; the host's address defaults to the
    /// local address that reaches Cordon.
    Report(ReportArgs),
    /// Compare every server's recorded network with what the switches and hypervisors report,
    /// now, and print the differences (drift). With `on_drift = "enforce"` it also puts them back.
    Reconcile {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Whether the manager runs: version, database, drivers (checked now), sources, circuit
    /// breaker and actions per state. Exits non-zero when the manager cannot be reached or a
    /// driver is unhealthy.
    Status {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Manage API tokens (admin only): create one with a role and an optional lifetime, list
    /// them, revoke one.
    ///
    /// Only a token's SHA-256 is stored: `create` prints the token once, alone on its last line,
    /// so that `cordon tokens create ... | tail -n1 > file` keeps it. Roles: admin (everything),
    /// operator (quarantine, unquarantine, reboot, check, retry, approve, reject), viewer (read)
    /// and sensor (post detections only).
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Manage the web console's local accounts (admin only): add, list, change a password, remove.
    ///
    /// Passwords are never taken on the command line: from a prompt on a terminal, else from
    /// --password-file or standard input (first line). At least 12 characters; stored as an
    /// argon2id hash. Changing a password or removing a user ends their console sessions.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Print what a message number means and what to do about it.
    Explain {
        /// A five-digit message number, e.g. 67198.
        number: u32,
    },
}

#[derive(Debug, Subcommand)]
enum ServersCommand {
    /// Every server with its state, network and address.
    List {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Lists a hypervisor's domains as servers (a dry run); `--apply` adds the new ones.
    ///
    /// Each NIC is matched to the operational network whose `bridge` it is on. Imported servers
    /// have no address yet: add them to the configuration with their `ip` so that detections
    /// resolve to them.
    Import {
        /// The [[hypervisor]] to list (its name in the configuration).
        #[arg(long = "from-libvirt", value_name = "HYPERVISOR")]
        from_libvirt: String,
        /// Write the new servers to the store (without it nothing is written).
        #[arg(long)]
        apply: bool,
        #[command(flatten)]
        api: ApiArgs,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// One server: state, each NIC's current and operational network and address, last action.
    Show {
        /// The server's name, or one of its addresses (operational or quarantine).
        name: String,
        #[command(flatten)]
        api: ApiArgs,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

#[derive(Debug, Subcommand)]
enum TokensCommand {
    /// Create a token and print it (alone on the last line); it is not shown again.
    #[command(
        after_help = "Examples:\n  cordon tokens create --role sensor --name ids-1 | tail -n1 > ids-1.token\n  cordon tokens create --role viewer --name dashboard --expires 30d"
    )]
    Create {
        /// admin, operator, viewer or sensor.
        #[arg(long)]
        role: String,
        /// A unique name (letters, digits, `-`, `_`, `.`, `@`), shown in the audit trail as token:NAME.
        #[arg(long)]
        name: String,
        /// Lifetime, e.g. 12h or 30d (s, m, h, d); without it the token never expires.
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Every token with its role and status (active, expired, revoked).
    List {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Revoke a token by name or id: it is refused from now on (the name stays taken).
    Revoke {
        /// The token's name or id.
        token: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Add a console user with a role.
    #[command(
        after_help = "Examples:\n  cordon users add alice --role operator            # asks for the password\n  cordon users add ci --role viewer --password-file /run/secrets/ci"
    )]
    Add {
        /// The user's name, as typed at sign-in.
        name: String,
        /// admin, operator, viewer or sensor.
        #[arg(long)]
        role: String,
        #[command(flatten)]
        password: PasswordArgs,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Every console user with its role.
    List {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Set a user's password; the user's sessions end.
    Passwd {
        name: String,
        #[command(flatten)]
        password: PasswordArgs,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Remove a user; the user's sessions end.
    Remove {
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Debug, Args)]
struct PasswordArgs {
    /// Read the password from this file (its first line) instead of a prompt or standard input.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum DetectionsCommand {
    /// Detections, newest first.
    List {
        /// Only detections from this source.
        #[arg(long)]
        source: Option<String>,
        /// Only detections attached to this action.
        #[arg(long)]
        action: Option<i64>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        api: ApiArgs,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

#[derive(Debug, Subcommand)]
enum BreakerCommand {
    /// Whether the breaker has tripped and how many automatic actions it counts now.
    Status {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Let automatic actions run again (actions already waiting stay waiting).
    Reset {
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// The newest rows, newest first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        api: ApiArgs,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Check the whole hash chain. Exits non-zero (message 60094) and names the first row that
    /// does not verify when a row was changed, deleted or moved after it was written.
    ///
    /// Prints the head (last row and its hash): record it somewhere Cordon cannot write, since
    /// rows cut off the end of the trail can only be noticed against an earlier head.
    Verify {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// The webhook source configured for this reporter.
    #[arg(long, default_value = "clamav")]
    source: String,
    /// The virus or threat name.
    #[arg(long, env = "CLAM_VIRUSEVENT_VIRUSNAME")]
    virus: String,
    /// The infected file.
    #[arg(long, env = "CLAM_VIRUSEVENT_FILENAME")]
    file: Option<String>,
    /// The address of the host at risk (default: this host's address towards Cordon).
    #[arg(long)]
    address: Option<std::net::IpAddr>,
    /// info, low, medium, high or critical.
    #[arg(long, default_value = "high")]
    severity: String,
    /// Sign with HMAC-SHA256 using the secret in this file, instead of a bearer token.
    #[arg(long, env = "CORDON_HMAC_SECRET_FILE")]
    hmac_secret_file: Option<PathBuf>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, Subcommand)]
enum ActionsCommand {
    /// Actions, newest first.
    List {
        /// Only actions in this state (pending, running, succeeded, failed, checked, ...).
        #[arg(long)]
        state: Option<String>,
        /// Only actions on this server.
        #[arg(long)]
        server: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// One action with its journal of steps and its numbered messages.
    Show {
        id: i64,
        #[command(flatten)]
        api: ApiArgs,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Acknowledge a failed action that you handled by hand: Cordon stops acting on it.
    ///
    /// Checking does not release a server. After moving a port by hand, run
    /// `cordon quarantine`/`unquarantine` so that Cordon records where the server is.
    Check {
        id: i64,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Approve an action that waits for approval; it runs at once.
    Approve {
        id: i64,
        /// Approve as another kind: quarantine, reboot or quarantine_reboot (a notify action
        /// becomes a quarantine by default).
        #[arg(long = "as")]
        as_kind: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
        /// Wait until the action ends; exit 0 only if it succeeded.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Withdraw an action that has not started (pending or awaiting approval).
    Cancel {
        id: i64,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Reject an action that waits for approval: nothing is done to the server.
    Reject {
        id: i64,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Try a failed action again; steps already done are found in place and skipped.
    Retry {
        id: i64,
        #[command(flatten)]
        api: ApiArgs,
        /// Wait until the action ends; exit 0 only if it succeeded.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

#[derive(Debug, Args)]
struct ActArgs {
    /// The server's name (see `cordon servers list`).
    name: String,
    /// Why: recorded on the action and in the audit trail.
    #[arg(long)]
    reason: Option<String>,
    /// Wait until the action ends; exit 0 only if it succeeded.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, Args)]
struct RebootArgs {
    /// The server's name (see `cordon servers list`).
    name: String,
    /// Why: recorded on the action and in the audit trail.
    #[arg(long)]
    reason: Option<String>,
    /// Wait until the reboot is confirmed; exit 0 only if it was.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits, in seconds (a graceful reboot may take minutes).
    #[arg(long, default_value_t = 400)]
    timeout: u64,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, Args, Clone)]
pub struct ApiArgs {
    /// The API's address.
    #[arg(long, env = "CORDON_URL", default_value = "http://127.0.0.1:8080", global = true)]
    pub url: String,
    /// A file holding the API token (used when CORDON_TOKEN is not set).
    #[arg(long, env = "CORDON_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// For an https:// URL: the CA certificate(s), PEM, that Cordon's certificate must chain to
    /// (then only these are trusted; without it, the system's CAs).
    #[arg(long, env = "CORDON_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// A failed command: what to print and which exit status to use.
#[derive(Debug)]
pub struct Failure {
    pub number: u32,
    pub text: String,
    pub remedy: Option<String>,
    pub exit_code: u8,
}

impl Failure {
    pub fn new(message: &'static Message, args: &[(&str, &dyn std::fmt::Display)]) -> Self {
        Failure { number: message.number, text: message.render(args), remedy: None, exit_code: 1 }
    }

    pub fn usage(mut self) -> Self {
        self.exit_code = 2;
        self
    }

    pub fn report(&self) -> String {
        let severity = Message::find(self.number).map(|m| m.severity().as_str()).unwrap_or("ERROR");
        let mut out = format!("{severity} {} {}", self.number, self.text);
        if let Some(remedy) = &self.remedy {
            out.push_str(&format!("\n  remedy: {remedy}"));
        }
        out
    }
}

pub async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve { config, check } => crate::serve::run(&config, check).await,
        Command::Explain { number } => explain(number),
        Command::Tokens(command) => tokens(command).await,
        Command::Users(command) => users(command).await,
        Command::Detections(DetectionsCommand::List { source, action, limit, api, output }) => {
            let mut query = vec![format!("limit={limit}")];
            if let Some(source) = source {
                query.push(format!("source={}", encode(&source)));
            }
            if let Some(action) = action {
                query.push(format!("action={action}"));
            }
            let detections: Vec<DetectionView> =
                Client::new(&api)?.get(&format!("/api/v1/detections?{}", query.join("&"))).await?;
            output::print(output, &detections[..], output::detections_table)
        }
        Command::Breaker(BreakerCommand::Status { api, output }) => {
            let breaker: BreakerView = Client::new(&api)?.get("/api/v1/breaker").await?;
            output::print(output, &breaker, output::breaker_detail)
        }
        Command::Breaker(BreakerCommand::Reset { api }) => {
            let breaker: BreakerView = Client::new(&api)?.post("/api/v1/breaker/reset", &()).await?;
            print!("{}", output::breaker_detail(&breaker));
            Ok(())
        }
        Command::Audit(AuditCommand::List { limit, api, output }) => {
            let rows: Vec<AuditView> = Client::new(&api)?.get(&format!("/api/v1/audit?limit={limit}")).await?;
            output::print(output, &rows[..], output::audit_table)
        }
        Command::Audit(AuditCommand::Verify { api, output }) => {
            let verdict: AuditVerifyView = Client::new(&api)?.get("/api/v1/audit/verify").await?;
            if verdict.ok || output == Format::Json {
                output::print(output, &verdict, output::audit_verdict)?;
            }
            match verdict.broken_at {
                None => Ok(()),
                Some(id) => {
                    let detail = verdict.text.split_once(": ").map_or(verdict.text.as_str(), |(_, d)| d);
                    Err(Failure::new(&messages::AUDIT_CHAIN_BROKEN, &[("id", &id), ("detail", &detail)]))
                }
            }
        }
        Command::Report(args) => report(args).await,
        Command::Status { api, output } => {
            let status: StatusView = Client::new(&api)?.get("/api/v1/status").await?;
            output::print(output, &status, output::status_detail)?;
            let unhealthy: Vec<&str> =
                status.drivers.iter().filter(|d| d.healthy == Some(false)).map(|d| d.name.as_str()).collect();
            if unhealthy.is_empty() {
                Ok(())
            } else {
                Err(Failure::new(
                    &messages::DRIVER_FAILURE,
                    &[("driver", &"status"), ("switch", &unhealthy.join(", ")), ("detail", &"unhealthy (see above)")],
                ))
            }
        }
        Command::Reconcile { api, output } => {
            let report: ReconcileView = Client::new(&api)?.post("/api/v1/reconcile", &()).await?;
            output::print(output, &report, output::reconcile_table)
        }
        Command::Servers(ServersCommand::List { api, output }) => {
            let servers: Vec<ServerView> = Client::new(&api)?.get("/api/v1/servers").await?;
            output::print(output, &servers[..], output::servers_table)
        }
        Command::Servers(ServersCommand::Import { from_libvirt, apply, api, output }) => {
            let body = ImportRequest { apply };
            let report: ImportView = Client::new(&api)?
                .post(&format!("/api/v1/hypervisors/{}/import", encode(&from_libvirt)), &body)
                .await?;
            output::print(output, &report, output::import_table)
        }
        Command::Servers(ServersCommand::Show { name, api, output }) => {
            let server: ServerView = Client::new(&api)?.get(&format!("/api/v1/servers/{}", encode(&name))).await?;
            output::print(output, &server, output::server_detail)
        }
        Command::Quarantine(args) => act("quarantine", args).await,
        Command::Reboot(args) => {
            let act_args =
                ActArgs { name: args.name, reason: args.reason, wait: args.wait, timeout: args.timeout, api: args.api };
            act("reboot", act_args).await
        }
        Command::Unquarantine(args) => act("unquarantine", args).await,
        Command::Actions(ActionsCommand::List { state, server, api, output }) => {
            let mut query = Vec::new();
            if let Some(state) = state {
                query.push(format!("state={}", encode(&state)));
            }
            if let Some(server) = server {
                query.push(format!("server={}", encode(&server)));
            }
            let path = if query.is_empty() {
                "/api/v1/actions".to_string()
            } else {
                format!("/api/v1/actions?{}", query.join("&"))
            };
            let actions: Vec<ActionView> = Client::new(&api)?.get(&path).await?;
            output::print(output, &actions[..], output::actions_table)
        }
        Command::Actions(ActionsCommand::Show { id, api, output }) => {
            let action: ActionView = Client::new(&api)?.get(&format!("/api/v1/actions/{id}")).await?;
            output::print(output, &action, output::action_detail)
        }
        Command::Actions(ActionsCommand::Check { id, api }) => {
            let action: ActionView = Client::new(&api)?.post(&format!("/api/v1/actions/{id}/check"), &()).await?;
            println!("action {} is {}", action.id, action.state);
            Ok(())
        }
        Command::Actions(ActionsCommand::Approve { id, as_kind, api, wait, timeout }) => {
            let client = Client::new(&api)?;
            let body = ApproveRequest { as_kind };
            let action: ActionView = client.post(&format!("/api/v1/actions/{id}/approve"), &body).await?;
            println!("action {} approved as {}: {}", action.id, action.kind, action.state);
            if wait { wait_for(&client, action.id, timeout).await } else { Ok(()) }
        }
        Command::Actions(ActionsCommand::Cancel { id, api }) => {
            let action: ActionView = Client::new(&api)?.post(&format!("/api/v1/actions/{id}/cancel"), &()).await?;
            println!("action {} is {}", action.id, action.state);
            Ok(())
        }
        Command::Actions(ActionsCommand::Reject { id, api }) => {
            let action: ActionView = Client::new(&api)?.post(&format!("/api/v1/actions/{id}/reject"), &()).await?;
            println!("action {} is {}", action.id, action.state);
            Ok(())
        }
        Command::Actions(ActionsCommand::Retry { id, api, wait, timeout }) => {
            let client = Client::new(&api)?;
            let action: ActionView = client.post(&format!("/api/v1/actions/{id}/retry"), &()).await?;
            println!("action {} is {}", action.id, action.state);
            if wait { wait_for(&client, action.id, timeout).await } else { Ok(()) }
        }
    }
}

async fn tokens(command: TokensCommand) -> Result<(), Failure> {
    match command {
        TokensCommand::Create { role, name, expires, api } => {
            let expires_in_secs = expires.as_deref().map(parse_duration).transpose()?;
            let body = TokenRequest { name, role, expires_in_secs };
            let created: TokenCreated = Client::new(&api)?.post("/api/v1/tokens", &body).await?;
            let t = &created.token;
            println!(
                "token {} ({}) created; expires {}. It is shown once, on the next line:",
                t.name,
                t.role,
                t.expires_at.as_deref().unwrap_or("never")
            );
            println!("{}", created.secret);
            Ok(())
        }
        TokensCommand::List { api, output } => {
            let tokens: Vec<TokenView> = Client::new(&api)?.get("/api/v1/tokens").await?;
            output::print(output, &tokens[..], output::tokens_table)
        }
        TokensCommand::Revoke { token, api } => {
            let revoked: TokenView =
                Client::new(&api)?.post(&format!("/api/v1/tokens/{}/revoke", encode(&token)), &()).await?;
            println!("token {} (id {}) revoked", revoked.name, revoked.id);
            Ok(())
        }
    }
}

async fn users(command: UsersCommand) -> Result<(), Failure> {
    match command {
        UsersCommand::Add { name, role, password, api } => {
            let client = Client::new(&api)?;
            let password = read_password(&password, &format!("Password for {name}: "))?;
            let body = UserRequest { name, role, password };
            let user: UserView = client.post("/api/v1/users", &body).await?;
            println!("user {} ({}) added", user.name, user.role);
            Ok(())
        }
        UsersCommand::List { api, output } => {
            let users: Vec<UserView> = Client::new(&api)?.get("/api/v1/users").await?;
            output::print(output, &users[..], output::users_table)
        }
        UsersCommand::Passwd { name, password, api } => {
            let client = Client::new(&api)?;
            let password = read_password(&password, &format!("New password for {name}: "))?;
            let user: UserView = client
                .post(&format!("/api/v1/users/{}/password", encode(&name)), &PasswordRequest { password })
                .await?;
            println!("password of {} changed; their sessions ended", user.name);
            Ok(())
        }
        UsersCommand::Remove { name, api } => {
            let user: UserView = Client::new(&api)?.delete(&format!("/api/v1/users/{}", encode(&name))).await?;
            println!("user {} removed", user.name);
            Ok(())
        }
    }
}

/// A password from --password-file, else a prompt (twice) on a terminal, else standard input.
fn read_password(args: &PasswordArgs, prompt: &str) -> Result<String, Failure> {
    let refused = |detail: String| Failure::new(&messages::PASSWORD_REFUSED, &[("detail", &detail)]).usage();
    let first_line = |text: String| text.lines().next().unwrap_or_default().to_string();
    if let Some(path) = &args.password_file {
        return std::fs::read_to_string(path)
            .map(first_line)
            .map_err(|e| refused(format!("cannot read {}: {e}", path.display())));
    }
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        let password = rpassword::prompt_password(prompt).map_err(|e| refused(format!("cannot read it: {e}")))?;
        let again = rpassword::prompt_password("Again: ").map_err(|e| refused(format!("cannot read it: {e}")))?;
        if password != again {
            return Err(refused("the two entries differ".into()));
        }
        return Ok(password);
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
        .map_err(|e| refused(format!("cannot read standard input: {e}")))?;
    Ok(first_line(text))
}

/// `30d`, `12h`, `90m`, `45s` (or a bare number of seconds) in seconds.
pub fn parse_duration(text: &str) -> Result<u64, Failure> {
    let bad = || Failure::new(&messages::BAD_DURATION, &[("value", &text)]).usage();
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let count: u64 = digits.parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    match count.checked_mul(scale) {
        Some(0) | None => Err(bad()),
        Some(secs) => Ok(secs),
    }
}

fn explain(number: u32) -> Result<(), Failure> {
    let Some(message) = Message::find(number) else {
        return Err(Failure::new(&messages::UNKNOWN_MESSAGE, &[("number", &number)]).usage());
    };
    println!(
        "{} {} ({})\n  {}\n\nRemedy:\n  {}",
        message.severity(),
        message.number,
        message.name,
        message.text,
        message.remedy
    );
    Ok(())
}

async fn act(verb: &str, args: ActArgs) -> Result<(), Failure> {
    let client = Client::new(&args.api)?;
    let body = ActRequest { reason: args.reason };
    let submitted: SubmitResponse =
        client.post(&format!("/api/v1/servers/{}/{verb}", encode(&args.name)), &body).await?;
    let action = &submitted.action;
    if submitted.existing {
        println!("WARNING {} {}", submitted.message.number, submitted.message.text);
    } else {
        println!("{verb} of {} queued as action {}", args.name, action.id);
    }
    if args.wait { wait_for(&client, action.id, args.timeout).await } else { Ok(()) }
}

/// Follows an action until it ends. Exit 0 only for `succeeded`.
async fn wait_for(client: &Client, id: i64, timeout_seconds: u64) -> Result<(), Failure> {
    let deadline = Instant::now() + Duration::from_secs(timeout_seconds);
    let mut pause = Duration::from_millis(20);
    loop {
        let action: ActionView = client.get(&format!("/api/v1/actions/{id}")).await?;
        match action.state.as_str() {
            "succeeded" => {
                let text = action.message.map(|m| format!("{} {}", m.number, m.text)).unwrap_or_default();
                println!("action {id} succeeded: {text}");
                return Ok(());
            }
            "failed" | "checked" | "cancelled" | "rejected" => {
                let detail =
                    action.message.map(|m| format!("{} {}", m.number, m.text)).unwrap_or_else(|| "no message".into());
                let mut failure = Failure::new(
                    &messages::ACTION_DID_NOT_SUCCEED,
                    &[("action", &id), ("state", &action.state), ("detail", &detail)],
                );
                failure.remedy = Some(messages::ACTION_DID_NOT_SUCCEED.remedy.replace("{action}", &id.to_string()));
                return Err(failure);
            }
            state => {
                if Instant::now() >= deadline {
                    return Err(Failure::new(
                        &messages::WAIT_TIMED_OUT,
                        &[("action", &id), ("seconds", &timeout_seconds), ("state", &state)],
                    ));
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(250));
            }
        }
    }
}

/// Posts one detection as clamd's VirusEvent (or any script) would.
async fn report(args: ReportArgs) -> Result<(), Failure> {
    let client = Client::new(&args.api)?;
    let address = match args.address {
        Some(address) => address,
        None => client.local_address().map_err(|detail| {
            Failure::new(
                &messages::BAD_REQUEST,
                &[("detail", &format!("cannot tell this host's address ({detail}): pass --address"))],
            )
            .usage()
        })?,
    };
    let post = DetectionPost {
        source: args.source,
        subject: address.to_string(),
        peer: None,
        signature: args.virus,
        signature_id: None,
        category: Some("malware".into()),
        severity: args.severity,
        observed_at: None,
        sensor: Some(format!("clamav@{}", hostname())),
        file: args.file,
    };
    let body = serde_json::to_vec(&post).map_err(|e| Failure::new(&messages::INTERNAL_ERROR, &[("detail", &e)]))?;
    let secret = match &args.hmac_secret_file {
        Some(path) => Some(std::fs::read(path).map(|s| s.trim_ascii().to_vec()).map_err(|e| {
            Failure::new(&messages::UNAUTHENTICATED, &[]).with_text(format!("cannot read {}: {e}", path.display()))
        })?),
        None => None,
    };
    let answer: IngestResponse = client.post_detection(body, secret.as_deref()).await?;
    println!("reported {} on {address}: detection {}", post.signature, answer.ids.first().copied().unwrap_or_default());
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Percent-encodes a path segment or query value.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_take_a_number_and_a_unit() {
        for (text, secs) in [("45s", 45), ("90m", 5400), ("12h", 43_200), ("30d", 2_592_000), ("600", 600)] {
            assert_eq!(parse_duration(text).ok(), Some(secs), "{text}");
        }
        for bad in ["", "d", "0d", "5x", "1.5h", "-1d", "30 d", "99999999999999999999d", "18446744073709551615d"] {
            let failure = parse_duration(bad).expect_err(bad);
            assert_eq!((failure.number, failure.exit_code), (60086, 2), "{bad}");
        }
    }
}
