//! The command line: what each command means and how it reports.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use cordon_api::wire::{ActRequest, ActionView, ServerView, SubmitResponse};
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
    /// List actions, show one with its steps, or acknowledge (check) or retry one.
    #[command(subcommand)]
    Actions(ActionsCommand),
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

#[derive(Debug, Args, Clone)]
pub struct ApiArgs {
    /// The API's address.
    #[arg(long, env = "CORDON_URL", default_value = "http://127.0.0.1:8080", global = true)]
    pub url: String,
    /// A file holding the API token (used when CORDON_TOKEN is not set).
    #[arg(long, env = "CORDON_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
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
        Command::Servers(ServersCommand::List { api, output }) => {
            let servers: Vec<ServerView> = Client::new(&api)?.get("/api/v1/servers").await?;
            output::print(output, &servers[..], output::servers_table)
        }
        Command::Servers(ServersCommand::Show { name, api, output }) => {
            let server: ServerView = Client::new(&api)?.get(&format!("/api/v1/servers/{}", encode(&name))).await?;
            output::print(output, &server, output::server_detail)
        }
        Command::Quarantine(args) => act("quarantine", args).await,
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
        Command::Actions(ActionsCommand::Retry { id, api, wait, timeout }) => {
            let client = Client::new(&api)?;
            let action: ActionView = client.post(&format!("/api/v1/actions/{id}/retry"), &()).await?;
            println!("action {} is {}", action.id, action.state);
            if wait { wait_for(&client, action.id, timeout).await } else { Ok(()) }
        }
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
