//! No secret leaks: a full end-to-end run with every kind of configured secret (a webhook token,
//! an HMAC key, a BMC password, an approval-link key, the admin token), exercising successes and
//! failures (wrong credentials, replays, bad bodies, a refused quarantine, a reboot that fails at
//! the BMC), then every log line, CLI output and HTTP error body it produced is searched for each
//! secret. None may appear.

mod common;
mod support;

use common::*;
use support::append_config;

const WEBHOOK_TOKEN: &str = "tok-5f2b8e11c0d94a7e8d1f-webhook";
const HMAC_KEY: &str = "hmac-9c4e2a77b1f0453d96e8-signing";
const BMC_PASSWORD: &str = "bmc-pw-3a8f61d2e94b4c07-secret";
const LINK_KEY: &str = "link-key-7d1e0b5c92a84f36a5c1e8d2b4f60a93";
const CONSOLE_PASSWORD: &str = "console-pw-e61b9a04c8d2";

/// The value of the first `name="NAME" value="..."` in an HTML page.
fn form_field(html: &str, name: &str) -> String {
    let at = html.find(&format!("name=\"{name}\" value=\"")).unwrap_or_else(|| panic!("no {name} field in:\n{html}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// A plain HTTP request with curl: (status line and headers, body).
fn curl(args: &[&str]) -> String {
    let out = std::process::Command::new("curl").args(["-sS", "-i", "--max-time", "10"]).args(args).output().unwrap();
    format!("{}{}", stdout(&out), stderr(&out))
}

#[test]
fn no_configured_secret_appears_in_logs_outputs_or_error_bodies() {
    let lab = Lab::up(&format!("sx{}", std::process::id() % 100_000));
    let dir = lab.dir.path();
    let (token_file, hmac_file, bmc_file, link_file) =
        (dir.join("hook.token"), dir.join("hook.key"), dir.join("sbc-02.bmc"), dir.join("link.key"));
    write_secret(&token_file, &format!("{WEBHOOK_TOKEN}\n"));
    write_secret(&hmac_file, HMAC_KEY);
    write_secret(&bmc_file, &format!("{BMC_PASSWORD}\n"));
    write_secret(&link_file, &format!("{LINK_KEY}\n"));

    // sbc-02 gets a BMC that nobody answers for (a reboot fails at it, with its message).
    let mut text = std::fs::read_to_string(lab.config()).unwrap();
    let needle = "port = \"p-sbc-02\"\n";
    let at = text.find(needle).unwrap() + needle.len();
    text.insert_str(
        at,
        &format!(
            "[server.bmc]\ndriver = \"redfish\"\nendpoint = \"https://127.0.0.1:9\"\nsystem = \"/redfish/v1/Systems/1\"\n\
             username = \"cordon\"\npassword_file = \"{}\"\n",
            bmc_file.display()
        ),
    );
    std::fs::write(lab.config(), text).unwrap();
    append_config(
        &lab.config(),
        &format!(
            "[[source]]\nname = \"hook\"\ntype = \"webhook\"\ntoken_file = \"{}\"\n\n\
             [[source]]\nname = \"signed\"\ntype = \"webhook\"\nhmac_secret_file = \"{}\"\n\n\
             [notify]\nsmtp = \"smtp://127.0.0.1:9\"\nfrom = \"cordon@example.com\"\n\
             operator_email = \"soc@example.com\"\nwebhooks = [\"http://127.0.0.1:9/hook\"]\n\
             public_url = \"http://127.0.0.1:8080\"\n\
             link_secret_file = \"{}\"\n",
            token_file.display(),
            hmac_file.display(),
            link_file.display()
        ),
    );
    let manager = Manager::start(&lab.config(), &dir.join("data"));
    let admin_token = std::fs::read_to_string(&manager.token_file).unwrap().trim().to_string();
    let url = manager.url.clone();
    let mut produced = Vec::new();
    let mut cli = |args: &[&str]| {
        let out = manager.cordon(args);
        produced.push(format!("$ cordon {args:?}\n{}{}", stdout(&out), stderr(&out)));
    };

    // Successes and failures through the CLI.
    cli(&["quarantine", "sbc-01", "--reason", "secrets e2e", "--wait"]);
    cli(&["reboot", "sbc-02", "--wait", "--timeout", "60"]);
    cli(&["quarantine", "nope"]);
    cli(&["unquarantine", "sbc-03"]);
    cli(&["status"]);
    cli(&["actions", "list"]);
    cli(&["servers", "list", "-o", "json"]);
    cli(&["detections", "list"]);
    cli(&["audit", "list", "--limit", "1000"]);
    cli(&["audit", "verify"]);

    // Webhooks: right and wrong credentials, a replay, bad bodies.
    let detection = r#"{"source":"hook","subject":"10.10.0.13","signature":"EICAR","severity":"high"}"#;
    let signed = r#"{"source":"signed","subject":"10.10.0.13","signature":"EICAR","severity":"high"}"#;
    let detections = format!("{url}/api/v1/detections");
    let json = "content-type: application/json";
    produced.push(curl(&[
        "-H",
        &format!("authorization: Bearer {WEBHOOK_TOKEN}"),
        "-H",
        json,
        "-d",
        detection,
        &detections,
    ]));
    produced.push(curl(&["-H", "authorization: Bearer wrong", "-H", json, "-d", detection, &detections]));
    produced.push(curl(&[
        "-H",
        &format!("authorization: Bearer {WEBHOOK_TOKEN}"),
        "-H",
        json,
        "-d",
        r#"{"source":"hook","subject":"not an address","signature":"s","severity":"high"}"#,
        &detections,
    ]));
    let timestamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs().to_string();
    let signature = format!("sha256={}", cordon_api::ingest::sign(HMAC_KEY.as_bytes(), &timestamp, signed.as_bytes()));
    for _ in 0..2 {
        produced.push(curl(&[
            "-H",
            &format!("x-cordon-timestamp: {timestamp}"),
            "-H",
            &format!("x-cordon-signature: {signature}"),
            "-H",
            json,
            "-d",
            signed,
            &detections,
        ]));
    }
    produced.push(curl(&[
        "-H",
        "x-cordon-timestamp: 1",
        "-H",
        "x-cordon-signature: sha256=00",
        "-H",
        json,
        "-d",
        signed,
        &detections,
    ]));
    produced.push(curl(&[
        "-H",
        &format!("authorization: Bearer {admin_token}"),
        &format!("{url}/api/v1/servers/nope"),
    ]));
    produced.push(curl(&["-H", &format!("authorization: Bearer {admin_token}"), &format!("{url}/metrics")]));
    produced.push(curl(&[&format!("{url}/api/v1/status")]));

    // The console: sign in and read every page.
    let password_file = dir.join("console.password");
    write_secret(&password_file, &format!("{CONSOLE_PASSWORD}\n"));
    let added =
        manager.cordon(&["users", "add", "sec", "--role", "admin", "--password-file", password_file.to_str().unwrap()]);
    assert!(added.status.success(), "{}", stderr(&added));
    produced.push(format!("{}{}", stdout(&added), stderr(&added)));
    let jar = dir.join("cookies.txt");
    let jar = jar.to_str().unwrap();
    let login = curl(&["-c", jar, "-b", jar, &format!("{url}/login")]);
    let csrf = form_field(&login, "csrf");
    let body = format!("csrf={csrf}&next=%2F&user=sec&password={CONSOLE_PASSWORD}");
    produced.push(login);
    produced.push(curl(&["-c", jar, "-b", jar, "-d", &body, &format!("{url}/login")]));
    let wrong = format!("csrf={csrf}&next=%2F&user=sec&password=not-{CONSOLE_PASSWORD}");
    produced.push(curl(&["-c", jar, "-b", jar, "-d", &wrong, &format!("{url}/login")]));
    let mut pages = String::new();
    for page in ["/", "/servers", "/servers/sbc-01", "/servers/sbc-02", "/actions", "/detections", "/messages"] {
        pages.push_str(&curl(&["-b", jar, &format!("{url}{page}")]));
    }
    assert!(pages.contains("sbc-02") && pages.contains("HTTP/1.1 200"), "signed in:\n{pages}");
    produced.push(pages);

    manager.wait_until(10, "the detections processed", |m| {
        let list = m.json(&["detections", "list", "-o", "json"]);
        list.as_array().is_some_and(|l| l.iter().all(|d| !d["decision"].is_null()))
    });
    let log = manager.log();
    assert!(
        log.contains("60018") || log.contains("60017") || log.contains("60019"),
        "the BMC failure is logged:\n{log}"
    );
    assert!(log.contains("41090"), "the replay is logged");
    let everything = format!("{log}\n{}", produced.join("\n"));
    for (what, secret) in [
        ("the webhook token", WEBHOOK_TOKEN),
        ("the HMAC key", HMAC_KEY),
        ("the BMC password", BMC_PASSWORD),
        ("the link key", LINK_KEY),
        ("the admin token", admin_token.as_str()),
        ("the console password", CONSOLE_PASSWORD),
    ] {
        assert!(!everything.contains(secret), "{what} leaked:\n{everything}");
    }
    // The run did what it says (so that the search covered real output).
    assert!(everything.contains("HTTP/1.1 401"), "a refused credential was answered");
    assert!(everything.contains("41090"), "a replay was answered");
    assert!(everything.contains("60040"), "a bad body was answered");
}
