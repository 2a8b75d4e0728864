//! The crash test, on the real lab with the real binary: about 200 quarantine and unquarantine
//! actions across the lab's three servers, detections posted over the API meanwhile, and the
//! manager killed with SIGKILL at random moments several times and restarted on the same data.
//! Afterwards every action has ended, no server is recorded differently from what its switch
//! shows, no detection that the API accepted is missing, and no port moved more times than its
//! actions asked. The test prints its counts (run it with `--nocapture` to see them).
//!
//! The choices (which request, which server, when to kill) come from a seeded generator; the seed
//! is printed, and `CORDON_CRASH_SEED=N` replays the same choices (the timing still varies).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;

/// (server, switch port, operational address) of the lab.
const SERVERS: [(&str, &str, &str); 3] =
    [("sbc-01", "p-sbc-01", "10.10.0.11"), ("sbc-02", "p-sbc-02", "10.10.0.12"), ("sbc-03", "p-sbc-03", "10.10.0.13")];

/// How many actions the run creates before it stops asking for more.
const TARGET_ACTIONS: i64 = 200;

/// How long the driving part may take at most (11-18 s on two cores, debug build).
const DRIVE_LIMIT: Duration = Duration::from_secs(40);

const TERMINAL: [&str; 5] = ["succeeded", "failed", "checked", "cancelled", "rejected"];

/// splitmix64: small and seedable, enough to pick operations and moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn seed() -> u64 {
    match std::env::var("CORDON_CRASH_SEED") {
        Ok(text) => text.trim().parse().expect("CORDON_CRASH_SEED is a number"),
        Err(_) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
            (now.as_nanos() as u64 ^ u64::from(std::process::id())) % 1_000_000_007
        }
    }
}

/// The last lines of the managers' log (all runs append to one file).
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(300)..].join("\n")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The manager of the moment: a killer thread replaces it while the driver keeps sending.
struct Live {
    manager: Mutex<Option<Manager>>,
    /// The address of the latest manager; while it is down, requests sent there find nobody.
    url: Mutex<String>,
    config: PathBuf,
    data: PathBuf,
}

impl Live {
    fn url(&self) -> String {
        lock(&self.url).clone()
    }
}

/// Owns the killer thread; on drop (also on a panic) waits for it and kills the manager, so that
/// no `cordon serve` outlives the test.
struct Chaos {
    live: Arc<Live>,
    killer: Option<JoinHandle<()>>,
    kills: u32,
}

impl Chaos {
    /// Kills the manager after `delay` (SIGKILL), waits `down`, starts it again on the same
    /// configuration and data; meanwhile the driver's requests find no manager.
    fn crash(&mut self, delay: Duration, down: Duration) {
        self.settle();
        self.kills += 1;
        let live = self.live.clone();
        self.killer = Some(std::thread::spawn(move || {
            std::thread::sleep(delay);
            let dying = lock(&live.manager).take();
            if let Some(manager) = dying {
                manager.kill();
            }
            std::thread::sleep(down);
            let fresh = Manager::start(&live.config, &live.data);
            *lock(&live.url) = fresh.url.clone();
            *lock(&live.manager) = Some(fresh);
        }));
    }

    /// Waits for a crash in progress to end with a running manager.
    fn settle(&mut self) {
        if let Some(killer) = self.killer.take()
            && let Err(panic) = killer.join()
        {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Drop for Chaos {
    fn drop(&mut self) {
        if let Some(killer) = self.killer.take() {
            let _ = killer.join();
        }
        if let Some(manager) = lock(&self.live.manager).take() {
            manager.kill();
        }
    }
}

/// `ip monitor link` in the switch namespace: every change of a port's master bridge, seen
/// independently of Cordon (also the moves whose step a kill kept out of the journal).
struct PortMonitor {
    child: Child,
    reader: Option<JoinHandle<Vec<String>>>,
}

impl PortMonitor {
    fn start(switch: &str) -> PortMonitor {
        let mut child = Command::new("ip")
            .args(["-n", switch, "-o", "monitor", "link"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader =
            std::thread::spawn(move || std::io::BufReader::new(stdout).lines().map_while(Result::ok).collect());
        // `ip monitor` subscribes at once; give it a moment before anything moves.
        std::thread::sleep(Duration::from_millis(200));
        PortMonitor { child, reader: Some(reader) }
    }

    fn finish(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reader.take().map(|r| r.join().unwrap_or_default()).unwrap_or_default()
    }
}

impl Drop for PortMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Master-bridge changes per port in `ip -o monitor link` lines, every port starting on `start`.
fn moves_seen(lines: &[String], start: &str) -> BTreeMap<String, u32> {
    let mut last: HashMap<String, String> = SERVERS.iter().map(|(_, p, _)| (p.to_string(), start.into())).collect();
    let mut moves: BTreeMap<String, u32> = SERVERS.iter().map(|(_, p, _)| (p.to_string(), 0)).collect();
    for line in lines.iter().filter(|l| !l.starts_with("Deleted")) {
        let Some((_, rest)) = line.split_once(": ") else { continue };
        let name = rest.split(['@', ':']).next().unwrap_or_default();
        let Some(previous) = last.get_mut(name) else { continue };
        let Some(master) = line.split_once(" master ").and_then(|(_, m)| m.split_whitespace().next()) else {
            continue;
        };
        if master != previous {
            *previous = master.to_string();
            *moves.get_mut(name).unwrap() += 1;
        }
    }
    moves
}

/// Runs `cordon` against `url` with the admin token.
fn cordon_at(url: &str, token_file: &Path, args: &[&str]) -> Output {
    Command::new(CORDON)
        .args(args)
        .env("CORDON_URL", url)
        .env("CORDON_TOKEN_FILE", token_file)
        .env_remove("CORDON_TOKEN")
        .output()
        .unwrap()
}

fn eve_alert(subject: &str, sid: u32) -> String {
    format!(
        r#"{{"timestamp":"2026-11-27T10:00:00.000000+0000","flow_id":{sid},"in_iface":"eth0","event_type":"alert","src_ip":"{subject}","src_port":40000,"dest_ip":"203.0.113.5","dest_port":80,"proto":"TCP","alert":{{"action":"allowed","gid":1,"signature_id":{sid},"rev":1,"signature":"CORDON CRASH {sid}","category":"Misc activity","severity":3}}}}"#
    ) + "\n"
}

/// When an armed kill fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moment {
    /// 0-25 ms after an action was queued: mostly while it runs.
    ActionQueued,
    /// 0-10 ms after a 202: mostly while the detections are processed.
    DetectionsAccepted,
    /// 0-40 ms from now: mostly while the next request is in flight.
    Now,
}

/// Fires the armed kill if `now` is its moment.
fn fire(chaos: &mut Chaos, rng: &mut Rng, armed: &mut Option<(Moment, u64)>, now: Moment, newest: i64) {
    if !armed.is_some_and(|(moment, _)| moment == now || now == Moment::Now) {
        return;
    }
    *armed = None;
    let most = match now {
        Moment::ActionQueued => 25,
        Moment::DetectionsAccepted => 10,
        Moment::Now => 40,
    };
    let delay = Duration::from_millis(rng.below(most));
    let down = Duration::from_millis(rng.below(200));
    println!(
        "kill {} ({now:?}, newest action {newest}): in {} ms, down for {} ms",
        chaos.kills + 1,
        delay.as_millis(),
        down.as_millis()
    );
    chaos.crash(delay, down);
}

/// How the manager answered a quarantine or unquarantine request.
#[derive(Debug)]
enum Answer {
    /// A new action.
    Queued(i64),
    /// 41004: the open action of that kind, returned.
    Existing,
    /// 41001 (already quarantined) or 41002 (not quarantined).
    Refused(u32),
    /// No manager (killed, or not started again yet), or it died before answering.
    Unreachable,
    /// Anything else: a bug.
    Unexpected(String),
}

/// `cordon quarantine|unquarantine SERVER` without --wait.
fn cli_act(url: &str, token_file: &Path, quarantine: bool, server: &str, turn: u64) -> Answer {
    let verb = if quarantine { "quarantine" } else { "unquarantine" };
    let reason = format!("crash test turn {turn}");
    let out = cordon_at(url, token_file, &[verb, server, "--reason", &reason]);
    let (text, errors) = (stdout(&out), stderr(&out));
    match text.split_once("queued as action ").and_then(|(_, id)| id.trim().parse().ok()) {
        Some(id) if out.status.success() => Answer::Queued(id),
        _ if out.status.success() && text.contains("WARNING 41004") => Answer::Existing,
        _ if errors.contains("41001") => Answer::Refused(41001),
        _ if errors.contains("41002") => Answer::Refused(41002),
        _ if errors.contains("60031") => Answer::Unreachable,
        _ => Answer::Unexpected(format!("cordon {verb} {server}: {text}{errors}")),
    }
}

/// `POST /api/v1/servers/SERVER/quarantine|unquarantine`.
fn api_act(http: &reqwest::blocking::Client, url: &str, token: &str, quarantine: bool, server: &str) -> Answer {
    let verb = if quarantine { "quarantine" } else { "unquarantine" };
    let answer = http
        .post(format!("{url}/api/v1/servers/{server}/{verb}"))
        .bearer_auth(token)
        .json(&serde_json::json!({"reason": "crash test burst"}))
        .send()
        .and_then(|r| Ok((r.status().as_u16(), r.json::<serde_json::Value>()?)));
    match answer {
        Ok((202, body)) => body["action"]["id"].as_i64().map_or(Answer::Unexpected(body.to_string()), Answer::Queued),
        Ok((200, body)) if body["message"]["number"] == 41004 => Answer::Existing,
        Ok((409, body)) if matches!(body["error"]["number"].as_u64(), Some(41001 | 41002)) => {
            Answer::Refused(body["error"]["number"].as_u64().unwrap_or_default() as u32)
        }
        Ok((status, body)) => Answer::Unexpected(format!("POST {verb} {server}: {status} {body}")),
        Err(_) => Answer::Unreachable,
    }
}

/// What the driver saw; printed at the end.
#[derive(Debug, Default)]
struct Tally {
    quarantine_requests: u32,
    unquarantine_requests: u32,
    queued: u32,
    existing_41004: u32,
    refused_41001: u32,
    refused_41002: u32,
    /// Requests (of any kind) that found no manager: killed, or not started again yet.
    unreachable: u32,
    cancelled: u32,
    cancel_refused: u32,
    rejected: u32,
    reject_refused: u32,
    eve_posts: u32,
    /// Posts answered 202: their detections must all be listed at the end.
    eve_posts_accepted: u32,
    /// Posts that found no manager: nothing was accepted.
    eve_posts_refused: u32,
    /// Posts without an answer (the manager died under them): their detections may or may not be there.
    eve_posts_in_doubt: u32,
    /// Posts answered with something other than 202.
    eve_posts_other: u32,
}

impl Tally {
    /// Counts an answer and keeps `wanted` (what the server is heading for) up to date; returns
    /// the id of a new action.
    fn count(&mut self, answer: &Answer, quarantine: bool, wanted: &mut bool, seed: u64) -> Option<i64> {
        if quarantine {
            self.quarantine_requests += 1;
        } else {
            self.unquarantine_requests += 1;
        }
        match answer {
            Answer::Queued(id) => {
                self.queued += 1;
                *wanted = quarantine;
                return Some(*id);
            }
            Answer::Existing => {
                self.existing_41004 += 1;
                *wanted = quarantine;
            }
            Answer::Refused(41001) => {
                self.refused_41001 += 1;
                *wanted = true;
            }
            Answer::Refused(_) => {
                self.refused_41002 += 1;
                *wanted = false;
            }
            Answer::Unreachable => self.unreachable += 1,
            Answer::Unexpected(what) => panic!("seed {seed}: neither a queued action nor a known refusal: {what}"),
        }
        None
    }
}

/// The bridges of a journaled port step: "bridge br-office, not isolated -> bridge br-quarantine, isolated".
fn step_bridges(detail: &str) -> Option<(String, String)> {
    let bridge =
        |part: &str| part.trim().strip_prefix("bridge ").map(|b| b.split(',').next().unwrap_or_default().to_string());
    let (before, after) = detail.split_once(" -> ")?;
    Some((bridge(before).unwrap_or_else(|| "-".into()), bridge(after)?))
}

/// A lab whose manager takes Suricata EVE from source `ids-1` (a followed file that stays empty,
/// and `POST /api/v1/sources/ids-1/eve`). Detections ask the administrator (notify): they attach
/// to actions or wait for approval, and never race the driver's own quarantine requests.
fn lab_with_eve_source(prefix: &str) -> Lab {
    let lab = Lab::up(&format!("{prefix}{}", std::process::id() % 100_000));
    let eve = lab.dir.path().join("eve.json");
    std::fs::write(&eve, "").unwrap();
    let config = std::fs::read_to_string(lab.config()).unwrap()
        + &format!(
            "\n[[source]]\nname = \"ids-1\"\ntype = \"suricata-eve\"\npath = \"{}\"\n\n[policy]\ndefault_action = \"notify\"\n",
            eve.display()
        );
    std::fs::write(lab.config(), config).unwrap();
    lab
}

#[test]
fn sigkill_at_random_points_loses_nothing_and_leaves_records_matching_the_switch() {
    let began = Instant::now();
    let seed = seed();
    println!("crash test seed {seed} (replay the choices with CORDON_CRASH_SEED={seed})");
    let mut rng = Rng(seed);

    let lab = lab_with_eve_source("x");
    for (_, port, _) in SERVERS {
        assert_eq!(lab.port(port), ("br-office".to_string(), false), "the lab starts on the office bridge");
    }
    let monitor = PortMonitor::start(&lab.switch());
    let data = lab.dir.path().join("data");
    let first = Manager::start(&lab.config(), &data);
    let token_file = first.token_file.clone();
    let token = std::fs::read_to_string(&token_file).unwrap().trim().to_string();
    let live = Arc::new(Live {
        url: Mutex::new(first.url.clone()),
        manager: Mutex::new(Some(first)),
        config: lab.config(),
        data: data.clone(),
    });
    let mut chaos = Chaos { live: live.clone(), killer: None, kills: 0 };
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();

    // When to kill: 3 to 5 times, one random moment in each stretch of the run.
    let kills_planned = 3 + rng.below(3) as i64;
    let stretch = (TARGET_ACTIONS - 20) / kills_planned;
    let mut kill_at: Vec<i64> =
        (0..kills_planned).map(|i| 10 + i * stretch + rng.below(stretch as u64) as i64).collect();
    kill_at.reverse();
    println!("kills planned after actions {:?}", kill_at.iter().rev().collect::<Vec<_>>());

    let mut tally = Tally::default();
    let mut accepted_sids: BTreeSet<u32> = BTreeSet::new();
    let mut in_doubt_sids: BTreeSet<u32> = BTreeSet::new();
    let mut next_sid = 1_000_000u32;
    // What the driver last asked for each server (true: quarantine).
    let mut wanted = [false; 3];
    let mut newest_action = 0i64;
    let drive_began = Instant::now();
    let mut iteration = 0u64;

    // A kill waits for its moment: just after an action was queued (it runs then), just after
    // detections were accepted (they are processed then), or at once (a request is in flight).
    let mut armed: Option<(Moment, u64)> = None;

    while newest_action < TARGET_ACTIONS || armed.is_some() || !kill_at.is_empty() {
        assert!(
            drive_began.elapsed() < DRIVE_LIMIT,
            "seed {seed}: only {newest_action} actions after {DRIVE_LIMIT:?}: {tally:?}"
        );
        iteration += 1;
        if armed.is_none() && kill_at.last().is_some_and(|&at| newest_action >= at) {
            kill_at.pop();
            let moment = [Moment::ActionQueued, Moment::ActionQueued, Moment::DetectionsAccepted, Moment::Now]
                [rng.below(4) as usize];
            armed = Some((moment, iteration));
        }
        match armed {
            // A moment that does not come within 20 turns: kill now.
            Some((Moment::Now, _)) => fire(&mut chaos, &mut rng, &mut armed, Moment::Now, newest_action),
            Some((_, since)) if iteration > since + 20 => {
                fire(&mut chaos, &mut rng, &mut armed, Moment::Now, newest_action)
            }
            _ => {}
        }
        let url = live.url();
        let roll = rng.below(100);
        let which = rng.below(3) as usize;
        let (server, _, address) = SERVERS[which];
        if roll < 62 {
            // With the command: mostly the opposite of the last request (a real change),
            // sometimes the same again (refused with 41001/41002), and sometimes twice at once
            // (the second one gets the open action back with 41004, unless the first one ended).
            let quarantine = if rng.chance(80) { !wanted[which] } else { wanted[which] };
            let times = if rng.chance(15) { 2 } else { 1 };
            for _ in 0..times {
                let answer = cli_act(&url, &token_file, quarantine, server, iteration);
                let queued = tally.count(&answer, quarantine, &mut wanted[which], seed);
                if let Some(id) = queued {
                    newest_action = newest_action.max(id);
                    fire(&mut chaos, &mut rng, &mut armed, Moment::ActionQueued, newest_action);
                }
            }
        } else if roll < 68 {
            // Over the API, as fast as it goes: a change and its reverse at once (the reverse
            // queues behind the change), then the reverse withdrawn at once: cancelled if no
            // worker started it yet, refused with 41003 otherwise.
            let quarantine = !wanted[which];
            let first = api_act(&http, &url, &token, quarantine, server);
            let second = api_act(&http, &url, &token, !quarantine, server);
            let cancel = match &second {
                Answer::Queued(id) => Some(
                    http.post(format!("{url}/api/v1/actions/{id}/cancel"))
                        .bearer_auth(&token)
                        .send()
                        .and_then(|r| Ok((r.status(), r.text()?))),
                ),
                _ => None,
            };
            for (answer, kind) in [(first, quarantine), (second, !quarantine)] {
                if let Some(id) = tally.count(&answer, kind, &mut wanted[which], seed) {
                    newest_action = newest_action.max(id);
                }
            }
            match cancel {
                None => {}
                Some(Ok((status, _))) if status.is_success() => {
                    tally.cancelled += 1;
                    // The reverse will not happen: the change stands.
                    wanted[which] = quarantine;
                }
                Some(Ok((_, body))) if body.contains("41003") => tally.cancel_refused += 1,
                Some(Ok((status, body))) => panic!("seed {seed}: cancel: {status} {body}"),
                Some(Err(_)) => tally.unreachable += 1,
            }
            fire(&mut chaos, &mut rng, &mut armed, Moment::ActionQueued, newest_action);
        } else if roll < 90 {
            // A sensor posts 1 to 4 alerts about one server, each with a signature id never used before.
            let count = 1 + rng.below(4) as u32;
            let sids: Vec<u32> = (next_sid..next_sid + count).collect();
            next_sid += count;
            let body: String = sids.iter().map(|&sid| eve_alert(address, sid)).collect();
            tally.eve_posts += 1;
            let answer = http
                .post(format!("{url}/api/v1/sources/ids-1/eve"))
                .bearer_auth(&token)
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send();
            match answer {
                Ok(response) if response.status() == reqwest::StatusCode::ACCEPTED => {
                    // A 202 is sent once the detections are committed; a body cut short by a kill
                    // does not take that back.
                    if let Ok(body) = response.json::<serde_json::Value>() {
                        assert_eq!(body["accepted"], count, "seed {seed}: a 202 accepts every alert of the post");
                    }
                    tally.eve_posts_accepted += 1;
                    accepted_sids.extend(&sids);
                    fire(&mut chaos, &mut rng, &mut armed, Moment::DetectionsAccepted, newest_action);
                }
                Ok(_) => tally.eve_posts_other += 1,
                Err(error) if error.is_connect() => tally.eve_posts_refused += 1,
                Err(_) => {
                    tally.eve_posts_in_doubt += 1;
                    in_doubt_sids.extend(&sids);
                }
            }
        } else {
            // The administrator rejects one of the notify actions that wait for approval.
            let waiting = http
                .get(format!("{url}/api/v1/actions?state=awaiting_approval"))
                .bearer_auth(&token)
                .send()
                .and_then(|r| r.json::<serde_json::Value>());
            let Ok(waiting) = waiting else {
                tally.unreachable += 1;
                continue;
            };
            let ids: Vec<i64> = waiting.as_array().into_iter().flatten().filter_map(|a| a["id"].as_i64()).collect();
            let Some(&id) = ids.get(rng.below(ids.len().max(1) as u64) as usize) else { continue };
            newest_action = newest_action.max(id);
            let out = cordon_at(&url, &token_file, &["actions", "reject", &id.to_string()]);
            if out.status.success() {
                tally.rejected += 1;
            } else if stderr(&out).contains("41003") {
                tally.reject_refused += 1;
            } else if stderr(&out).contains("60031") {
                tally.unreachable += 1;
            } else {
                panic!("seed {seed}: `cordon actions reject {id}`: {}", stderr(&out));
            }
        }
        // Every tenth turn, the newest action id: the notify actions count too.
        if iteration.is_multiple_of(10)
            && let Ok(response) = http
                .get(format!("{url}/api/v1/actions?limit=1"))
                .bearer_auth(&token)
                .send()
                .and_then(|r| r.json::<serde_json::Value>())
            && let Some(id) = response[0]["id"].as_i64()
        {
            newest_action = newest_action.max(id);
        }
    }
    chaos.settle();
    let drive_time = drive_began.elapsed();
    assert!(lock(&live.manager).is_some(), "seed {seed}: a manager runs after the last restart");
    let manager_url = live.url();
    let manager = |args: &[&str]| {
        let out = cordon_at(&manager_url, &token_file, args);
        assert!(out.status.success(), "seed {seed}: cordon {args:?}: {}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };

    // Everything the driver asked for runs to its end; every detection gets decided.
    let settle_began = Instant::now();
    let settle_deadline = settle_began + Duration::from_secs(30);
    loop {
        let actions = manager(&["actions", "list", "-o", "json"]);
        let open: Vec<String> = actions
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| matches!(a["state"].as_str(), Some("pending" | "running" | "retrying")))
            .map(|a| format!("{} {} {} {}", a["id"], a["kind"], a["server"], a["state"]))
            .collect();
        let detections = manager(&["detections", "list", "--limit", "10000", "-o", "json"]);
        let undecided = detections.as_array().unwrap().iter().filter(|d| d["decision"].is_null()).count();
        if open.is_empty() && undecided == 0 {
            break;
        }
        assert!(
            Instant::now() < settle_deadline,
            "seed {seed}: stuck after 30 s: open actions {open:?}, {undecided} detections never decided\n{}",
            tail(&lock(&live.manager).as_ref().map(|m| m.log()).unwrap_or_default())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let settle_time = settle_began.elapsed();
    // What still waits for approval is the administrator's to decide: reject it, so that it ends.
    let waiting = manager(&["actions", "list", "--state", "awaiting_approval", "-o", "json"]);
    let mut rejected_at_end = 0;
    for action in waiting.as_array().unwrap() {
        let id = action["id"].as_i64().unwrap().to_string();
        let out = cordon_at(&manager_url, &token_file, &["actions", "reject", &id]);
        assert!(out.status.success(), "seed {seed}: cordon actions reject {id}: {}", stderr(&out));
        rejected_at_end += 1;
    }
    let monitor_lines = monitor.finish();

    // ---- The records ----
    let mut problems: Vec<String> = Vec::new();
    let actions = manager(&["actions", "list", "-o", "json"]).as_array().unwrap().clone();
    let mut ids: Vec<i64> = actions.iter().map(|a| a["id"].as_i64().unwrap()).collect();
    ids.sort_unstable();
    if ids != (1..=ids.len() as i64).collect::<Vec<_>>() {
        problems.push(format!("the action ids are not 1..={}: {ids:?}", ids.len()));
    }
    let mut by_state: BTreeMap<String, u32> = BTreeMap::new();
    let mut by_kind: BTreeMap<String, u32> = BTreeMap::new();
    for action in &actions {
        let (id, state) = (&action["id"], action["state"].as_str().unwrap_or("?"));
        *by_state.entry(state.to_string()).or_default() += 1;
        *by_kind.entry(action["kind"].as_str().unwrap_or("?").to_string()).or_default() += 1;
        if !TERMINAL.contains(&state) {
            problems.push(format!("action {id} is {state}, not terminal: {action}"));
        }
        if state == "failed" && action["message"]["number"].as_u64().is_none() {
            problems.push(format!("action {id} failed without a message number: {action}"));
        }
    }

    // Per server: the moves its actions asked for, journaled and expected from their order.
    #[derive(Default)]
    struct Moves {
        /// Quarantine/unquarantine actions that started at least once: each may move the port once.
        asked: u32,
        /// Succeeded ones.
        succeeded: u32,
        /// Failed ones (a failure may leave a move half done).
        failed: u32,
        /// Journaled port steps that changed the bridge.
        journaled: u32,
        /// Moves implied by the succeeded actions in order (each one that changes the side).
        implied: u32,
        /// Where the last succeeded action put the server (true: quarantine).
        last_quarantined: bool,
        attempts: u32,
    }
    let mut moves: BTreeMap<&str, Moves> = SERVERS.iter().map(|(s, _, _)| (*s, Moves::default())).collect();
    let mut movers: Vec<&serde_json::Value> =
        actions.iter().filter(|a| matches!(a["kind"].as_str(), Some("quarantine" | "unquarantine"))).collect();
    movers.sort_by_key(|a| a["id"].as_i64());
    for action in movers {
        let id = action["id"].as_i64().unwrap();
        let Some(entry) = action["server"].as_str().and_then(|s| moves.get_mut(s)) else {
            problems.push(format!("action {id} names no lab server: {action}"));
            continue;
        };
        let quarantine = action["kind"] == "quarantine";
        let attempts = action["attempts"].as_u64().unwrap_or(0) as u32;
        entry.attempts += attempts;
        if attempts > 0 {
            entry.asked += 1;
        }
        match action["state"].as_str() {
            Some("succeeded") => {
                entry.succeeded += 1;
                if quarantine != entry.last_quarantined {
                    entry.implied += 1;
                }
                entry.last_quarantined = quarantine;
            }
            Some("failed") => entry.failed += 1,
            _ => {}
        }
        if attempts == 0 {
            continue;
        }
        // What `cordon actions show ID -o json` prints, read from the API directly (faster).
        let shown: serde_json::Value = http
            .get(format!("{manager_url}/api/v1/actions/{id}"))
            .bearer_auth(&token)
            .send()
            .and_then(|r| r.error_for_status()?.json())
            .unwrap_or_else(|e| panic!("seed {seed}: action {id}: {e}"));
        let steps = shown["steps"].as_array().cloned().unwrap_or_default();
        let mut per_attempt: BTreeMap<u64, (u32, u32)> = BTreeMap::new();
        let mut journaled = 0;
        for step in steps.iter().filter(|s| s["name"] == "ensure_port_on_bridge") {
            let attempt = step["attempt"].as_u64().unwrap_or(0);
            let slot = per_attempt.entry(attempt).or_default();
            slot.0 += 1;
            if step["outcome"] == "done" {
                slot.1 += 1;
                if step_bridges(step["detail"].as_str().unwrap_or_default()).is_some_and(|(from, to)| from != to) {
                    journaled += 1;
                }
            }
        }
        entry.journaled += journaled;
        if journaled > 1 {
            problems.push(format!("action {id} journaled {journaled} bridge changes; one is all it may make: {shown}"));
        }
        for (attempt, (port_steps, done)) in &per_attempt {
            if *port_steps > 1 || *done > 1 {
                problems.push(format!(
                    "action {id} attempt {attempt}: {port_steps} port steps, {done} done; at most one each: {shown}"
                ));
            }
            if *attempt == 0 || *attempt > u64::from(attempts) {
                problems.push(format!("action {id} journaled attempt {attempt} of {attempts}: {shown}"));
            }
        }
    }

    // The switch, read with iproute2, against the records.
    let seen = moves_seen(&monitor_lines, "br-office");
    let mut servers_shown = Vec::new();
    for (server, port, _) in SERVERS {
        let record = manager(&["servers", "show", server, "-o", "json"]);
        let (bridge, isolated) = lab.port(port);
        let (state, network) = (record["state"].as_str().unwrap_or("?"), record["network"].as_str().unwrap_or("?"));
        let nic_network = record["nics"][0]["network"].as_str().unwrap_or("?");
        let expected = match (bridge.as_str(), isolated) {
            ("br-quarantine", true) => Some(("quarantined", "quarantine")),
            ("br-office", false) => Some(("operational", "office")),
            _ => None,
        };
        match expected {
            Some((want_state, want_network)) if (state, network, nic_network) == (want_state, want_network, want_network) => {}
            _ => problems.push(format!(
                "{server} is recorded {state} on {network} (NIC on {nic_network}) but its port {port} is on {bridge}, isolated {isolated}: {record}"
            )),
        }
        let entry = &moves[server];
        if entry.succeeded > 0 && entry.last_quarantined != (bridge == "br-quarantine") {
            problems.push(format!(
                "{server}: the last succeeded action put it {} but its port is on {bridge}",
                if entry.last_quarantined { "in quarantine" } else { "on office" }
            ));
        }
        let observed = seen[port];
        if observed > entry.asked {
            problems
                .push(format!("port {port} moved {observed} times but only {} actions on {server} ran", entry.asked));
        }
        if entry.journaled > observed {
            problems.push(format!("{server}: {} journaled moves but the switch saw only {observed}", entry.journaled));
        }
        if entry.failed == 0 && observed != entry.implied {
            problems.push(format!(
                "port {port} moved {observed} times; its {} succeeded actions in order imply {}",
                entry.succeeded, entry.implied
            ));
        }
        servers_shown.push(format!(
            "{server}: {state}, port {port} on {bridge}{}; port moves seen {observed}, journaled {}, implied {}; actions ran {} (attempts {}), succeeded {}, failed {}",
            if isolated { " (isolated)" } else { "" },
            entry.journaled,
            entry.implied,
            entry.asked,
            entry.attempts,
            entry.succeeded,
            entry.failed
        ));
    }

    // The detections: every one accepted with a 202 is listed, none twice.
    let detections = manager(&["detections", "list", "--limit", "10000", "-o", "json"]).as_array().unwrap().clone();
    let mut listed: BTreeMap<u32, u32> = BTreeMap::new();
    for detection in &detections {
        if let Some(sid) = detection["signature_id"].as_str().and_then(|s| s.parse().ok()) {
            *listed.entry(sid).or_default() += 1;
        }
    }
    let missing: Vec<u32> = accepted_sids.iter().filter(|sid| !listed.contains_key(sid)).copied().collect();
    if !missing.is_empty() {
        problems.push(format!("{} detections accepted with 202 are not listed: {missing:?}", missing.len()));
    }
    let twice: Vec<u32> = listed.iter().filter(|(_, n)| **n > 1).map(|(sid, _)| *sid).collect();
    if !twice.is_empty() {
        problems.push(format!("detections listed more than once: {twice:?}"));
    }
    let unknown = listed.keys().filter(|sid| !accepted_sids.contains(sid) && !in_doubt_sids.contains(sid)).count();
    if unknown > 0 {
        problems.push(format!("{unknown} listed detections were never posted"));
    }
    let in_doubt_listed = in_doubt_sids.iter().filter(|sid| listed.contains_key(sid)).count();
    let unattached = detections.iter().filter(|d| d["action_id"].is_null()).count();

    let log = lock(&live.manager).as_ref().map(|m| m.log()).unwrap_or_default();
    let resumed = log.matches("action was running when Cordon stopped").count();

    println!("---- crash test, seed {seed} ----");
    println!(
        "actions: {} in all, by state {by_state:?}, by kind {by_kind:?}; {rejected_at_end} awaiting approval rejected at the end",
        actions.len()
    );
    println!(
        "kills: {} (SIGKILL, each followed by a restart); actions found running and resumed after a kill: {resumed}",
        chaos.kills
    );
    println!(
        "requests: {} quarantine, {} unquarantine; {} queued, {} returned the open action (41004), refused {} already quarantined (41001) and {} not quarantined (41002); {} found no manager",
        tally.quarantine_requests,
        tally.unquarantine_requests,
        tally.queued,
        tally.existing_41004,
        tally.refused_41001,
        tally.refused_41002,
        tally.unreachable
    );
    println!(
        "operators: {} cancelled at once, {} cancels too late (41003); {} notify actions rejected, {} rejects refused",
        tally.cancelled, tally.cancel_refused, tally.rejected, tally.reject_refused
    );
    println!(
        "detections: {} posts ({} answered 202, {} found no manager, {} lost their answer, {} other answers); {} accepted with 202, {} listed ({} of {} in doubt among them), {} missing, {} not attached to an action",
        tally.eve_posts,
        tally.eve_posts_accepted,
        tally.eve_posts_refused,
        tally.eve_posts_in_doubt,
        tally.eve_posts_other,
        accepted_sids.len(),
        detections.len(),
        in_doubt_listed,
        in_doubt_sids.len(),
        missing.len(),
        unattached
    );
    for line in &servers_shown {
        println!("{line}");
    }
    println!(
        "timings: drive {:.1} s, settle {:.1} s, total {:.1} s",
        drive_time.as_secs_f64(),
        settle_time.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );

    assert!(chaos.kills >= 3, "seed {seed}: the manager was killed {} times", chaos.kills);
    assert!(actions.len() as i64 >= TARGET_ACTIONS, "seed {seed}: {} actions", actions.len());
    assert!(
        problems.is_empty(),
        "seed {seed} (replay with CORDON_CRASH_SEED={seed}):\n{}\n{}",
        problems.join("\n"),
        tail(&log)
    );
}

/// A detection about an address that no server holds ends as a failed action with 67198 for an
/// operator. Killed while that action is being recorded, the manager must not leave it open:
/// a pending or retrying action without a server is never run by anyone.
#[test]
fn sigkill_while_an_unknown_address_is_recorded_leaves_no_action_open() {
    let lab = lab_with_eve_source("y");
    let data = lab.dir.path().join("data");
    let mut manager = Manager::start(&lab.config(), &data);
    let token = std::fs::read_to_string(&manager.token_file).unwrap().trim().to_string();
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let newest = |url: &str| -> serde_json::Value {
        http.get(format!("{url}/api/v1/actions?limit=1"))
            .bearer_auth(&token)
            .send()
            .and_then(|r| r.json::<serde_json::Value>())
            .map(|v| v[0].clone())
            .unwrap_or_default()
    };

    // Each alert names an address of its own (one unresolved action per address). The manager
    // is killed right after the alert is accepted, at staggered moments while the engine records
    // the unresolved action: whenever the kill lands, the action must end failed with 67198, once.
    let (mut alerts, mut kills) = (0u32, 0u32);
    while alerts < 12 {
        alerts += 1;
        let address = format!("10.20.0.{alerts}");
        let answer = http
            .post(format!("{}/api/v1/sources/ids-1/eve", manager.url))
            .bearer_auth(&token)
            .body(eve_alert(&address, alerts))
            .send()
            .unwrap();
        assert_eq!(answer.status(), reqwest::StatusCode::ACCEPTED);
        if alerts % 2 == 0 {
            std::thread::sleep(Duration::from_millis(u64::from(alerts)));
            manager.kill();
            kills += 1;
            manager = Manager::start(&lab.config(), &data);
        }
    }
    let _ = newest(&manager.url);
    manager.wait_until(15, "every detection decided", |m| {
        let listed = m.json(&["detections", "list", "--limit", "10000", "-o", "json"]);
        let listed = listed.as_array().unwrap();
        listed.len() == alerts as usize && listed.iter().all(|d| !d["decision"].is_null())
    });
    // Give the restarted manager time to finish what it resumed.
    std::thread::sleep(Duration::from_secs(3));
    let actions = manager.json(&["actions", "list", "-o", "json"]).as_array().unwrap().clone();
    let mut by_state: BTreeMap<String, u32> = BTreeMap::new();
    for action in &actions {
        *by_state.entry(action["state"].as_str().unwrap_or("?").to_string()).or_default() += 1;
    }
    let open: Vec<String> = actions
        .iter()
        .filter(|a| !TERMINAL.contains(&a["state"].as_str().unwrap_or("?")))
        .map(|a| format!("action {} {} for {} is {}", a["id"], a["kind"], a["address"], a["state"]))
        .collect();
    println!(
        "unknown addresses: {alerts} alerts, {kills} kills while the action was open; {} actions, by state {by_state:?}; {} still open",
        actions.len(),
        open.len()
    );
    assert_eq!(actions.len(), alerts as usize, "one action per unknown address: {actions:?}");
    assert!(open.is_empty(), "actions left open for good by a SIGKILL:\n{}", open.join("\n"));
    for action in &actions {
        assert_eq!(action["message"]["number"], 67198, "{action}");
    }
}
