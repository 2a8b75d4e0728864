//! Cordon's numbered messages: every operator-facing event and error has a stable number.
//!
//! `2xxxx` information, `4xxxx` warning, `6xxxx` error. Numbers never change meaning; a retired
//! number is never reused. `docs/messages.md` is generated from [`ALL`] and a test keeps it equal.

use std::fmt;

/// How serious a message is; implied by the first digit of its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Warning => "WARNING",
            Severity::Error => "ERROR",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One numbered message: its one-line text (with `{name}` placeholders) and its remedy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    pub number: u32,
    /// A short stable identifier, for code and logs.
    pub name: &'static str,
    pub text: &'static str,
    pub remedy: &'static str,
}

impl Message {
    pub fn severity(&self) -> Severity {
        match self.number / 10_000 {
            2 => Severity::Info,
            4 => Severity::Warning,
            _ => Severity::Error,
        }
    }

    /// The text with each `{name}` replaced by its value; unknown placeholders stay visible.
    pub fn render(&self, args: &[(&str, &dyn fmt::Display)]) -> String {
        let mut out = self.text.to_string();
        for (name, value) in args {
            out = out.replace(&format!("{{{name}}}"), &value.to_string());
        }
        out
    }

    /// Looks a number up in the catalogue.
    pub fn find(number: u32) -> Option<&'static Message> {
        ALL.iter().find(|m| m.number == number)
    }
}

macro_rules! catalogue {
    ($($(#[$meta:meta])* $ident:ident = $number:literal, $name:literal, $text:literal, $remedy:literal;)+) => {
        $($(#[$meta])* pub const $ident: Message = Message { number: $number, name: $name, text: $text, remedy: $remedy };)+
        /// Every message, in number order.
        pub const ALL: &[Message] = &[$($ident),+];
    };
}

catalogue! {
    CORDON_STARTED = 20001, "cordon_started",
        "cordon {version} started as instance {instance}, listening on {listen}",
        "None: informational.";
    ADMIN_TOKEN_CREATED = 20002, "admin_token_created",
        "first start: an admin API token was created and written to {path}",
        "Keep the file secret (it is mode 0600). Use it with `--token-file` or the CORDON_TOKEN environment variable.";
    INVENTORY_SYNCED = 20003, "inventory_synced",
        "inventory synced from configuration: {added} added, {updated} updated, {retired} retired",
        "None: informational.";
    QUARANTINE_STARTED = 21001, "quarantine_started",
        "quarantine of {server} started (action {action})",
        "None: informational. Follow it with `cordon actions show {action}`.";
    QUARANTINE_SUCCEEDED = 21002, "quarantine_succeeded",
        "quarantine of {server} succeeded: {detail}",
        "Tell the user, adapt the guest's address to the quarantine address shown by `cordon servers show`, clean the machine, then run `cordon unquarantine`.";
    UNQUARANTINE_STARTED = 21003, "unquarantine_started",
        "unquarantine of {server} started (action {action})",
        "None: informational.";
    UNQUARANTINE_SUCCEEDED = 21004, "unquarantine_succeeded",
        "unquarantine of {server} succeeded: {detail}",
        "Restore the guest's operational address if it was changed, and tell the user they may resume work.";
    PORT_ALREADY_IN_PLACE = 21005, "port_already_in_place",
        "port {port} of {server} was already on bridge {bridge}: recorded without moving it",
        "None: Cordon's records now match the network (the port had been moved by hand).";
    ACTION_CHECKED = 21006, "action_checked",
        "action {action} checked by {actor}: Cordon will not act on it again",
        "None. Checking never releases a server; only `cordon unquarantine` does.";
    ACTION_RETRY_QUEUED = 21007, "action_retry_queued",
        "action {action} queued for another attempt by {actor}",
        "Follow it with `cordon actions show {action}`.";
    ACTION_QUEUED = 21008, "action_queued",
        "{kind} of {server} queued as action {action}",
        "None: informational. Follow it with `cordon actions show {action}`, or pass --wait.";
    ACTION_STARTED = 21009, "action_started",
        "{kind} of {server} started (action {action})",
        "None: informational.";
    BREAKER_RESET = 21010, "breaker_reset",
        "circuit breaker reset by {actor}: automatic actions resume",
        "None: informational.";
    POLICY_RELOADED = 21011, "policy_reloaded",
        "policy reloaded from {path}: {rules} rules, default action {default}",
        "None: informational.";
    ACTION_APPROVED = 21012, "action_approved",
        "action {action} approved as {kind} by {actor}",
        "None: the action runs now. Follow it with `cordon actions show {action}`.";
    ACTION_REJECTED = 21013, "action_rejected",
        "action {action} rejected by {actor}",
        "None: nothing was done to the server.";
    ACTION_AWAITS_APPROVAL = 21014, "action_awaits_approval",
        "{kind} of {server} awaits approval: {reason}",
        "Decide: `cordon actions approve ID` (optionally `--as quarantine|reboot|quarantine_reboot`) or `cordon actions reject ID`; `cordon actions list --state awaiting_approval` lists them.";
    REBOOT_CONFIRMED = 21015, "reboot_confirmed",
        "reboot of {server} confirmed: {detail}",
        "Tell the server's user that it is back.";
    SERVER_POWERED_ON = 21016, "server_powered_on",
        "{server} was found powered off and was powered on: {detail}",
        "Find out why it was off (a crash, someone at the console) before relying on it.";
    SERVERS_IMPORTED = 21017, "servers_imported",
        "import from hypervisor {hypervisor}: {added} servers added, {existing} already known, {skipped} skipped",
        "Give the imported servers their addresses in the configuration so that detections resolve to them (an imported NIC has no address yet).";
    ACTION_CANCELLED = 21018, "action_cancelled",
        "action {action} cancelled by {actor}: nothing was done to the server",
        "None. To act on the server after all, request the action again.";
    NOTIFICATION_SENT = 21030, "notification_sent",
        "{event} notification for {subject} sent to {recipient}",
        "None: informational.";
    LINK_DECISION = 21031, "link_decision",
        "action {action}: {choice} through an approval link by {recipient}",
        "None: informational. The decision is in the action's audit trail as `link:<address>`.";
    DATABASE_CONNECTED = 21060, "database_connected",
        "instance {instance} uses the database {database}",
        "None: informational. Every instance that names the same PostgreSQL database shares the records and the actions (`cordon status` lists them).";
    SERVER_RETIRED = 40001, "server_retired",
        "server {server} is no longer in the configuration: kept and flagged retired",
        "If the server was removed on purpose, nothing to do. If it still has open actions, check or finish them; Cordon never deletes a server's history.";
    ALREADY_QUARANTINED = 41001, "already_quarantined",
        "server {server} is already quarantined",
        "Nothing to do. To release it, run `cordon unquarantine {server}`.";
    NOT_QUARANTINED = 41002, "not_quarantined",
        "server {server} is not quarantined",
        "Nothing to do. If the port was moved by hand, run `cordon quarantine {server}` so that Cordon's records match the network.";
    ACTION_STATE_FORBIDS = 41003, "action_state_forbids",
        "action {action} is {state}: it cannot {command}",
        "See `cordon actions show {action}`; `retry` applies to failed actions, `check` to failed or retrying ones.";
    ACTION_ALREADY_OPEN = 41004, "action_already_open",
        "server {server} already has an open {kind} action ({action}): returning it",
        "None: the request is already being handled. Follow it with `cordon actions show {action}`.";
    BREAKER_TRIPPED = 41005, "breaker_tripped",
        "circuit breaker tripped: more than {max} automatic actions within {window} s; further automatic actions wait for approval",
        "Look at the recent detections (`cordon detections list`): a false positive may be isolating a fleet. Approve or reject the waiting actions, fix the policy if needed, then `cordon breaker reset`.";
    POLICY_RELOAD_FAILED = 41006, "policy_reload_failed",
        "policy reload from {path} failed; the previous policy stays in force: {detail}",
        "Fix the file at the line and key named; Cordon reloads it when it changes or on SIGHUP.";
    INPUT_REJECTED = 41007, "input_rejected",
        "source {source} rejected input: {detail}",
        "The sensor sent something Cordon cannot read; the rest of its input is still processed. Check the sensor's output format. Counted in cordon_source_rejected_total.";
    ACTION_RETRYING = 41008, "action_retrying",
        "attempt {attempt} of action {action} failed; next attempt in {seconds} s: {detail}",
        "Nothing to do if the cause passes (a daemon restarted, a port that reappears). To stop further attempts, `cordon actions check ID` and handle it by hand.";
    DRIFT_FOUND = 41009, "drift_found",
        "drift on {server}: {nic} is recorded on {recorded} but the {driver} reports {observed}",
        "Someone changed the network by hand. If that was the recovery procedure, run `cordon quarantine`/`unquarantine` so that the records match; otherwise put it back (`on_drift = \"enforce\"` does it automatically).";
    NOTIFICATION_FAILED = 41030, "notification_failed",
        "{event} notification for {subject} could not be delivered to {recipient} after {attempts} attempts: {detail}",
        "Check the SMTP server (`[notify] smtp`, its credentials and TLS) or the webhook named, and that Cordon can reach it. Nothing is resent later: tell the recipient by hand (`cordon actions show ID` has the details). Counted in cordon_notifications_failed_total.";
    NOTIFICATION_NO_RECIPIENT = 41031, "notification_no_recipient",
        "{event} notification for {subject} has no e-mail recipient: {detail}",
        "Give the server a `tenant` whose [[tenant]] has an `admin_email` (or the server a `user_email`), or set `[notify] operator_email` to receive what has no tenant.";
    NOTIFICATIONS_MISSED = 41032, "notifications_missed",
        "the notifier fell behind and missed {count} engine events",
        "Notifications for those events were not sent: look at `cordon actions list` for what happened meanwhile. A slow SMTP server or webhook is the usual cause.";
    ACTION_TAKEN_OVER = 41060, "action_taken_over",
        "action {action} was running on instance {previous}, whose lease expired: instance {instance} resumes it from its journal",
        "Nothing to do for the action: its steps are idempotent and the journal shows both attempts. Find out why {previous} stopped renewing its lease (crashed, stopped, cut off from the database); `cordon status` lists the live instances.";
    ACTION_LEASE_LOST = 41061, "action_lease_lost",
        "instance {instance} lost its lease on action {action}: another instance took it over, this worker stops",
        "This instance stalled longer than [manager] action_lease (an overloaded host or database, a paused VM): find the stall, or raise action_lease.";
    INVALID_CONFIGURATION = 60001, "invalid_configuration",
        "invalid configuration: {detail}",
        "Fix the file at the line and key named, then start Cordon again. `cordon serve --config FILE --check` validates without starting.";
    SERVER_NOT_FOUND = 60002, "server_not_found",
        "server not found. name={name}",
        "Check the name with `cordon servers list`. Servers come from the [[server]] entries of the configuration.";
    ACTION_NOT_FOUND = 60003, "action_not_found",
        "action not found. id={action}",
        "Check the id with `cordon actions list`.";
    DRIVER_FAILURE = 60010, "driver_failure",
        "driver {driver} failed on {switch}: {detail}",
        "Check that the switch (or its network namespace) exists and that the port and bridges named in the configuration exist on it. Fix it, then `cordon actions retry ID`; or move the port by hand and `cordon actions check ID`, then run `cordon quarantine`/`unquarantine` again so that the records match.";
    READ_BACK_MISMATCH = 60011, "read_back_mismatch",
        "read-back mismatch on {switch} port {port}: expected {expected}, observed {observed}",
        "Something else changed the port at the same time, or the switch did not apply the change. Inspect the port by hand (`ip -n NETNS link show PORT`), fix it, then retry the action.";
    POOL_EXHAUSTED = 60012, "pool_exhausted",
        "quarantine address pool of network {network} is exhausted ({range})",
        "Release quarantined servers that are clean (`cordon unquarantine`), or widen `pool` of that network in the configuration.";
    NO_MOVABLE_NIC = 60013, "no_movable_nic",
        "server {server} has no NIC on a switch port that Cordon manages",
        "Give the server's [[server.nic]] entries a `switch` and a `port` in the configuration.";
    HYPERVISOR_UNREACHABLE = 60014, "hypervisor_unreachable",
        "hypervisor {target} cannot be reached: {detail}",
        "Check that libvirtd runs on the hypervisor and that its `uri` in the configuration is right, then `cordon actions retry ID`. Nothing was changed.";
    DOMAIN_NOT_FOUND = 60015, "domain_not_found",
        "domain not found on hypervisor {target}: {detail}",
        "Check the server's `domain` in the configuration against `virsh list --all` on the hypervisor.";
    VM_NIC_NOT_FOUND = 60016, "vm_nic_not_found",
        "no NIC with the configured MAC on the domain ({target}): {detail}",
        "Check the NIC's `mac` in the configuration against `virsh domiflist DOMAIN`.";
    BMC_AUTH_FAILED = 60017, "bmc_auth_failed",
        "the BMC {target} refused the credentials: {detail}",
        "Check the BMC's `username` and the file named by `password_file`; nothing was done to the server.";
    BMC_TIMEOUT = 60018, "bmc_timeout",
        "the BMC {target} did not answer in time: {detail}",
        "Check that the BMC is reachable from Cordon (endpoint, firewall), then retry the action; or reboot by hand and check it.";
    BMC_ERROR = 60019, "bmc_error",
        "the BMC {target} answered with an error: {detail}",
        "Read the BMC's own log; retry the action once the BMC is healthy, or reboot by hand and check it.";
    UNAUTHENTICATED = 60020, "unauthenticated",
        "authentication required: the bearer token is missing, unknown or revoked",
        "Pass a token with `--token-file` or CORDON_TOKEN. The first admin token is in <data_dir>/admin.token.";
    FORBIDDEN = 60021, "forbidden",
        "a token with role {role} may not {operation}: role {needed} is required",
        "Use a token with the role named.";
    STORE_FAILURE = 60030, "store_failure",
        "the store failed: {detail}",
        "Check that <data_dir> is writable and the disk is not full; the detail names the database error.";
    API_UNREACHABLE = 60031, "api_unreachable",
        "cannot reach the Cordon API at {url}: {detail}",
        "Check that `cordon serve` is running and that --url (or CORDON_URL) points at its listen address.";
    WAIT_TIMED_OUT = 60032, "wait_timed_out",
        "gave up waiting for action {action} after {seconds} s: it is still {state}",
        "The action goes on. Follow it with `cordon actions show {action}`, or wait longer with --timeout.";
    ACTION_DID_NOT_SUCCEED = 60033, "action_did_not_succeed",
        "action {action} ended {state}: {detail}",
        "Read the action's steps with `cordon actions show {action}`, fix the cause, then `cordon actions retry {action}`; or handle it by hand and `cordon actions check {action}`.";
    NO_POWER_DRIVER = 60035, "no_power_driver",
        "{server} has no power driver: no [server.bmc] and no hypervisor",
        "Give a physical server a [server.bmc] (or run the VM on a configured hypervisor) and restart Cordon; meanwhile reboot it by hand and tell its user. If an action was recorded, `cordon actions check ID`.";
    REBOOT_NOT_CONFIRMED = 60036, "reboot_not_confirmed",
        "the reboot of {target} was not confirmed: {detail}",
        "Nothing observable showed the server restarting. Check it through the hypervisor or BMC console; reboot by hand if needed, then `cordon actions check ID`.";
    HYPERVISOR_NOT_FOUND = 60037, "hypervisor_not_found",
        "no hypervisor is named {name}",
        "Check the name against the [[hypervisor]] entries of the configuration.";
    BAD_REQUEST = 60040, "bad_request",
        "bad request: {detail}",
        "Correct the request as the detail says; the API is described at /api/v1/openapi.json.";
    UNKNOWN_MESSAGE = 60041, "unknown_message",
        "no message has number {number}",
        "See docs/messages.md for every number.";
    NO_SUCH_ROUTE = 60042, "no_such_route",
        "no such route: {method} {path}",
        "See the API description at /api/v1/openapi.json (docs/openapi.json) for the routes and their methods.";
    DATABASE_UNREACHABLE = 60060, "database_unreachable",
        "cannot connect to the database {database}: {detail}",
        "Check that PostgreSQL runs and accepts connections from this host, that [manager] database names the right host, port, user and database, and that the file named by database_password_file holds the password.";
    DATABASE_TOO_NEW = 60061, "database_too_new",
        "the database {database} has schema version {found}, newer than this Cordon knows ({known})",
        "A newer Cordon migrated this database: run that version here too (every instance on one database must run the same version), or restore the backup taken before the upgrade.";
    DATABASE_PASSWORD_FILE = 60062, "database_password_file",
        "cannot read the database password file {path}: {detail}",
        "Create the file named by [manager] database_password_file, readable by the user Cordon runs as, holding the password on one line.";
    LINK_INVALID = 60070, "link_invalid",
        "approval link refused: {detail}",
        "The link is damaged or was not made by this Cordon (or its link secret changed): open the whole link from the e-mail, or decide with `cordon actions approve|reject ID`.";
    LINK_EXPIRED = 60071, "link_expired",
        "approval link for action {action} expired at {expiry}",
        "Decide with `cordon actions approve ID` or `cordon actions reject ID`; links last `[notify] link_ttl`.";
    LINK_ALREADY_USED = 60072, "link_already_used",
        "approval link for action {action} cannot be used: {detail}",
        "A link works once, and only while the action awaits approval. See `cordon actions show {action}` for what was decided.";
    LINKS_DISABLED = 60073, "links_disabled",
        "approval links are not enabled on this Cordon",
        "Set `public_url` and `link_secret_file` in `[notify]` and restart Cordon; meanwhile decide with `cordon actions approve|reject ID`.";
    INTERNAL_ERROR = 60099, "internal_error",
        "internal error: {detail}",
        "This is a bug in Cordon. The action's journal says how far it got; report the detail.";
    SERVER_NOT_FOUND_BY_ADDRESS = 67198, "server_not_found_by_address",
        "server not found. ip={address}",
        "No managed server has this address. Handle the host by hand (it may be unmanaged or the configuration out of date), then `cordon actions check ID`.";
}

/// The Markdown of `docs/messages.md`, generated from the catalogue.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Cordon messages\n\n\
         Every operator-facing event and error carries a stable five-digit number: `2xxxx` information,\n\
         `4xxxx` warning, `6xxxx` error. `cordon explain NUMBER` prints an entry. This file is generated\n\
         from `crates/cordon-model/src/messages.rs` (`UPDATE_EXPECT=1 cargo test -p cordon-model` rewrites it).\n",
    );
    for m in ALL {
        out.push_str(&format!(
            "\n## {} {} `{}`\n\n{}\n\n**Remedy:** {}\n",
            m.number,
            m.severity(),
            m.name,
            m.text,
            m.remedy
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_unique_sorted_and_well_formed() {
        for pair in ALL.windows(2) {
            assert!(pair[0].number < pair[1].number, "{} then {}", pair[0].number, pair[1].number);
        }
        for m in ALL {
            assert!((20000..70000).contains(&m.number), "{} is not five digits", m.number);
            assert!(matches!(m.number / 10_000, 2 | 4 | 6), "{} has no severity digit", m.number);
            assert!(!m.text.contains('\n') && !m.remedy.is_empty());
        }
    }

    #[test]
    fn seed_number_is_kept() {
        let m = Message::find(67198).unwrap();
        assert_eq!(m.render(&[("address", &"10.10.0.99")]), "server not found. ip=10.10.0.99");
    }

    #[test]
    fn docs_match_catalogue() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/messages.md");
        let expected = markdown();
        if std::env::var_os("UPDATE_EXPECT").is_some() {
            std::fs::write(path, &expected).unwrap();
        }
        let actual = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            actual == expected,
            "docs/messages.md is out of date: run `UPDATE_EXPECT=1 cargo test -p cordon-model`"
        );
    }
}
