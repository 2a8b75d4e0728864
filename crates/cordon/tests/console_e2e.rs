//! The web console in a real browser: headless Chromium (Debian's `chromium`) driven over
//! WebDriver (`chromedriver`, started here on a loopback port, one for this test binary) against
//! a real `cordon serve` on the real lab (scripts/lab.sh).
//!
//! One test, in order: an operator signs in; quarantines sbc-01 from its page (the confirmation
//! says what will happen) and sees the state, network and quarantine address change without a
//! reload; sees the release done from the CLI arrive live as well; sees a failed action (the
//! quarantine bridge deleted: 60010) with its message and remedy and checks it; then a viewer
//! sees no action button anywhere, the console refuses the viewer's form, and the API refuses a
//! viewer token's quarantine.
//!
//! `CORDON_SCREENSHOTS=DIR` writes the overview, servers, server and actions pages at 1280×800
//! into DIR (docs/screenshots/ holds the committed ones). Needs root (the lab), chromium and
//! chromium-driver (scripts/install-deps.sh). Everything is torn down on drop: chromedriver and
//! the browser (their whole process group), the manager and the lab.

mod common;

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const PASSWORD: &str = "a long console passphrase";

/// chromedriver in its own process group, so that dropping it also ends the browser it started.
struct Chromedriver {
    child: Child,
    port: u16,
    profile: tempfile::TempDir,
}

impl Chromedriver {
    fn start() -> Chromedriver {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver (Debian's chromium-driver) must be installed: scripts/install-deps.sh");
        let driver = Chromedriver { child, port, profile: tempfile::tempdir().unwrap() };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }

    async fn browser(&self) -> Client {
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    format!("--user-data-dir={}", self.profile.path().display()),
                    "--window-size=1280,800", "--hide-scrollbars",
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else { unreachable!() };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("cannot open a Chromium session through chromedriver")
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's process group; no memory is involved.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Runs `script` in the page (a function body that returns a value).
async fn js(client: &Client, script: &str) -> Value {
    client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("script failed ({e}): {script}"))
}

/// Waits until `script` returns true in the page; fails with `what` after 30 s.
async fn until(client: &Client, what: &str, script: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if js(client, script).await == Value::Bool(true) {
            return;
        }
        if Instant::now() > deadline {
            let main = js(client, "return document.querySelector('main') ? document.querySelector('main').innerText : document.body.innerText").await;
            panic!("timed out waiting for {what}; the page shows:\n{}", main.as_str().unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn state_is(selector: &str, state: &str) -> String {
    format!("var e = document.querySelector('{selector} [data-state]'); return !!e && e.dataset.state === '{state}';")
}

async fn text(client: &Client, selector: &str) -> String {
    js(client, &format!("var e = document.querySelector('{selector}'); return e ? e.textContent : null;"))
        .await
        .as_str()
        .unwrap_or_else(|| panic!("nothing matches {selector}"))
        .trim()
        .to_string()
}

async fn sign_in(client: &Client, url: &str, user: &str) {
    client.goto(&format!("{url}/")).await.unwrap();
    until(client, "the sign-in form", "return !!document.querySelector('input[name=user]');").await;
    client.find(Locator::Css("input[name=user]")).await.unwrap().send_keys(user).await.unwrap();
    client.find(Locator::Css("input[name=password]")).await.unwrap().send_keys(PASSWORD).await.unwrap();
    client.find(Locator::Css("form[action='/login'] button")).await.unwrap().click().await.unwrap();
    until(client, &format!("{user} signed in"), &format!(
        "var w = document.querySelector('header .who'); return !!w && w.textContent.indexOf('{user}') >= 0 && location.pathname === '/';"
    ))
    .await;
}

/// Opens a page and waits until its live stream is connected (the page refreshes itself once
/// then), so that nothing replaces the page's content under the test's next click.
async fn open(client: &Client, url: &str) {
    client.goto(url).await.unwrap();
    until(
        client,
        &format!("{url} connected"),
        "var m = document.querySelector('main'); return !!m && Number(m.dataset.refreshed || '0') >= 1;",
    )
    .await;
}

/// Marks the document: the mark survives anything but a reload.
async fn mark(client: &Client, value: u32) {
    js(client, &format!("window.cordonMark = {value}; return true;")).await;
}

async fn assert_not_reloaded(client: &Client, value: u32) {
    assert_eq!(
        js(client, "return window.cordonMark === undefined ? null : window.cordonMark;").await,
        json!(value),
        "the page was reloaded"
    );
}

async fn screenshot(client: &Client, name: &str) {
    let Ok(dir) = std::env::var("CORDON_SCREENSHOTS") else { return };
    let png = client.screenshot().await.unwrap();
    // The PNG header says the size: width and height at bytes 16..24.
    let (width, height) =
        (u32::from_be_bytes(png[16..20].try_into().unwrap()), u32::from_be_bytes(png[20..24].try_into().unwrap()));
    assert_eq!((width, height), (1280, 800), "{name}: screenshots are taken at 1280×800");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png).unwrap();
}

/// Inserts `keys` at the top of the lab configuration's `[manager]` table.
fn manager_keys(lab: &Lab, keys: &str) {
    let mut text = std::fs::read_to_string(lab.config()).unwrap();
    let needle = "\n[manager]\n";
    let at = text.find(needle).unwrap() + needle.len();
    text.insert_str(at, keys);
    std::fs::write(lab.config(), text).unwrap();
}

fn queued_id(output: &std::process::Output) -> i64 {
    let out = stdout(output);
    out.split("queued as action ")
        .nth(1)
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("{out}{}", stderr(output)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_real_browser() {
    let lab = Lab::up(&format!("ccn{}", std::process::id() % 100_000));
    // One attempt: the fault below fails its action at once. The reconciler only runs at start.
    manager_keys(&lab, "max_attempts = 1\nreconcile_interval = \"1h\"\n");
    let manager = Manager::start(&lab.config(), &lab.dir.path().join("data"));
    let password_file = lab.dir.path().join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    for (user, role) in [("olivia", "operator"), ("victor", "viewer")] {
        let out =
            manager.cordon(&["users", "add", user, "--role", role, "--password-file", password_file.to_str().unwrap()]);
        assert!(out.status.success(), "users add {user}: {}", stderr(&out));
    }
    let users = manager.json(&["users", "list", "-o", "json"]);
    assert_eq!(users.as_array().unwrap().len(), 2, "{users}");
    let before = manager.json(&["servers", "show", "sbc-01", "-o", "json"]);
    let operational_ip = before["nics"][0]["ip"].as_str().unwrap().to_string();

    let driver = Chromedriver::start();
    let client = driver.browser().await;
    // The window's frame takes some height even headless: size the window so that the
    // viewport (what a screenshot shows) is 1280×800.
    let viewport = js(&client, "return [window.innerWidth, window.innerHeight];").await;
    let (width, height) = (viewport[0].as_u64().unwrap() as u32, viewport[1].as_u64().unwrap() as u32);
    client.set_window_size(1280 + (1280 - width), 800 + (800 - height)).await.unwrap();
    let viewport = js(&client, "return [window.innerWidth, window.innerHeight];").await;
    assert_eq!(viewport, json!([1280, 800]));

    // An operator signs in (a page asked for first leads to the sign-in form).
    sign_in(&client, &manager.url, "olivia").await;

    // Quarantine sbc-01 from its page: confirm, then watch the page change without a reload.
    open(&client, &format!("{}/servers/sbc-01", manager.url)).await;
    until(&client, "the server page", &state_is("#server-state", "operational")).await;
    mark(&client, 1).await;
    client.find(Locator::Css("details[data-verb=quarantine] summary")).await.unwrap().click().await.unwrap();
    let confirmation = text(&client, "details[data-verb=quarantine] p").await;
    assert!(
        confirmation.contains("moves every NIC of sbc-01 to its quarantine network")
            && confirmation.contains("from office to quarantine"),
        "the confirmation says what will happen: {confirmation}"
    );
    client.find(Locator::Css("button[data-confirm=quarantine]")).await.unwrap().click().await.unwrap();
    until(&client, "sbc-01 quarantined on the page", &state_is("#server-state", "quarantined")).await;
    until(
        &client,
        "the NIC on the quarantine network",
        "return document.querySelector('#nics .nic-network').textContent === 'quarantine';",
    )
    .await;
    assert_not_reloaded(&client, 1).await;
    let shown = text(&client, "#nics .nic-address").await;
    let recorded = manager.json(&["servers", "show", "sbc-01", "-o", "json"]);
    assert_eq!(recorded["state"], "quarantined");
    assert_eq!(shown, recorded["nics"][0]["ip"].as_str().unwrap(), "the page shows the quarantine address");
    assert!(shown.starts_with("10.99.0."), "{shown}");
    assert_eq!(lab.port("p-sbc-01"), ("br-quarantine".to_string(), true), "the port really moved");
    let actions = manager.json(&["actions", "list", "--server", "sbc-01", "-o", "json"]);
    assert_eq!(actions[0]["requested_by"], "user:olivia", "{actions}");
    assert_eq!(actions[0]["trigger"], "console");
    screenshot(&client, "server").await;

    // A release from the CLI arrives on the open page by itself (server-sent events).
    mark(&client, 2).await;
    let out = manager.cordon(&["unquarantine", "sbc-01", "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let released = Instant::now();
    until(&client, "sbc-01 operational again on the page", &state_is("#server-state", "operational")).await;
    // A figure, not an assertion: from the CLI seeing the action succeed to the page showing it.
    eprintln!("live update: the page showed the release {} ms after the CLI saw it", released.elapsed().as_millis());
    until(&client, "the operational address back", &format!(
        "return document.querySelector('#nics .nic-address').textContent === '{operational_ip}' && document.querySelector('#nics .nic-network').textContent === 'office';"
    ))
    .await;
    assert_not_reloaded(&client, 2).await;

    // A failed action: the quarantine bridge is gone, so quarantining sbc-02 fails with 60010.
    run("ip", &["-n", &lab.switch(), "link", "del", "br-quarantine"]);
    let id = queued_id(&manager.cordon(&["quarantine", "sbc-02", "--reason", "console e2e"]));
    open(&client, &format!("{}/actions/{id}", manager.url)).await;
    mark(&client, 3).await;
    until(&client, "the action failed on its page", &state_is("#action-state", "failed")).await;
    assert_not_reloaded(&client, 3).await;
    let message = text(&client, "#action-message").await;
    let remedy = cordon_model::Message::find(60010).unwrap().remedy;
    assert!(message.contains("60010") && message.contains("br-quarantine"), "{message}");
    assert!(message.contains(remedy), "the remedy is shown: {message}");
    until(&client, "the steps with their timings", "return document.querySelectorAll('#steps tbody tr').length > 0 && document.querySelector('#steps').textContent.indexOf(' ms') > 0;").await;

    for (page, name) in [("/", "overview"), ("/servers", "servers"), ("/actions", "actions")] {
        open(&client, &format!("{}{page}", manager.url)).await;
        until(&client, name, "return document.readyState === 'complete';").await;
        screenshot(&client, name).await;
    }
    open(&client, &format!("{}/actions", manager.url)).await;
    until(&client, "the failed action listed with its remedy", &format!(
        "var row = document.querySelector('tr[data-action=\"{id}\"]'); return !!row && row.textContent.indexOf('60010') >= 0;"
    ))
    .await;

    // Check it from its page.
    open(&client, &format!("{}/actions/{id}", manager.url)).await;
    until(&client, "the Check button", "return !!document.querySelector('button[data-verb=check]');").await;
    mark(&client, 4).await;
    client.find(Locator::Css("button[data-verb=check]")).await.unwrap().click().await.unwrap();
    until(&client, "the action checked", &state_is("#action-state", "checked")).await;
    assert_not_reloaded(&client, 4).await;
    assert_eq!(manager.json(&["actions", "show", &id.to_string(), "-o", "json"])["state"], "checked");

    // A viewer: no action button anywhere; the console and the API refuse a viewer's action.
    client.find(Locator::Css("header .who button")).await.unwrap().click().await.unwrap();
    until(&client, "signed out", "return location.pathname === '/login';").await;
    sign_in(&client, &manager.url, "victor").await;
    for page in ["/", "/servers", "/servers/sbc-01", "/servers/sbc-02", "/actions", &format!("/actions/{id}")] {
        open(&client, &format!("{}{page}", manager.url)).await;
        until(&client, page, "return document.readyState === 'complete' && !!document.querySelector('main h1');").await;
        let buttons = js(&client, "return document.querySelectorAll('main form[method=post], main details.confirm, main [data-verb]').length;").await;
        assert_eq!(buttons, json!(0), "a viewer sees no action button on {page}");
    }
    let status = client
        .execute_async(
            "var done = arguments[arguments.length - 1]; var csrf = document.querySelector('input[name=csrf]').value; \
             fetch('/servers/sbc-01/quarantine', {method: 'POST', body: new URLSearchParams({csrf: csrf})}).then(function (r) { done(r.status); });",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(403), "the console refuses a viewer's quarantine");
    let out = manager.cordon(&["tokens", "create", "--role", "viewer", "--name", "ccn-viewer", "--expires", "1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let token = stdout(&out).lines().last().unwrap().to_string();
    let answer = reqwest::Client::new()
        .post(format!("{}/api/v1/servers/sbc-01/quarantine", manager.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 403);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["number"], 60021, "{body}");
    assert_eq!(manager.json(&["servers", "show", "sbc-01", "-o", "json"])["state"], "operational");

    // A narrow window: nothing wider than the window but the tables, which scroll in their box.
    client.set_window_size(420, 860).await.unwrap();
    for page in ["/", "/servers", "/servers/sbc-01", "/actions"] {
        open(&client, &format!("{}{page}", manager.url)).await;
        let fits = js(&client, "return document.documentElement.scrollWidth <= window.innerWidth + 1;").await;
        assert_eq!(fits, json!(true), "{page} fits a narrow window");
    }
    if let Ok(dir) = std::env::var("CORDON_SCREENSHOTS") {
        open(&client, &format!("{}/servers/sbc-01", manager.url)).await;
        std::fs::write(std::path::Path::new(&dir).join("narrow.png"), client.screenshot().await.unwrap()).unwrap();
    }

    // Tokens: listed with their expiry, revoked by id, refused once revoked or expired.
    let tokens = manager.json(&["tokens", "list", "-o", "json"]);
    let viewer = tokens.as_array().unwrap().iter().find(|t| t["name"] == "ccn-viewer").unwrap().clone();
    assert!(viewer["expires_at"].is_string() && viewer["revoked"] == false, "{viewer}");
    let url = manager.url.clone();
    let status_with = |token: String| {
        let url = url.clone();
        async move {
            reqwest::Client::new()
                .get(format!("{url}/api/v1/servers"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status_with(token.clone()).await, 200);
    let out = manager.cordon(&["tokens", "revoke", &viewer["id"].to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(status_with(token).await, 401, "a revoked token is refused");
    let out = manager.cordon(&["tokens", "create", "--role", "viewer", "--name", "ccn-brief", "--expires", "1s"]);
    let brief = stdout(&out).lines().last().unwrap().to_string();
    assert_eq!(status_with(brief.clone()).await, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(status_with(brief).await, 401, "an expired token is refused like an unknown one");
    let out = manager.cordon(&["tokens", "create", "--role", "viewer", "--name", "ccn-bad", "--expires", "5x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("60086"), "{}", stderr(&out));

    client.close().await.unwrap();
}
