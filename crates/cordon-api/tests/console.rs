//! The console over plain HTTP, in process, on an in-memory store: every page redirects to the
//! sign-in page without a session, every form refuses a request without the session's CSRF
//! token (the sign-in form included), roles gate the console's actions like the API's, the
//! session cookie is hardened, and sessions end on sign-out, idleness and password changes.
//!
//! The engine has no switch driver and never runs: an allowed quarantine is only queued, and
//! nothing touches a network.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use cordon_api::console::{Access, CONSOLE_ROUTES, ConsoleSettings};
use cordon_api::ingest::IngestSettings;
use cordon_api::{ApiState, router};
use cordon_engine::{Engine, EngineSettings, NetworkPlan, Topology};
use cordon_model::{ActionCommand, ActionKind, NetworkRole, Role, ServerKind, messages};
use cordon_store::{Inventory, NetworkSpec, NewAction, NicSpec, ServerSpec, SqliteStore, Store};
use tower::ServiceExt;

const PASSWORD: &str = "correct horse battery staple";

struct Fixture {
    app: Router,
    store: Arc<dyn Store>,
    console: Arc<ConsoleSettings>,
    /// An action id that exists (for the `{id}` routes).
    action: i64,
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Reply {
    fn location(&self) -> &str {
        self.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    fn cookies(&self) -> Vec<String> {
        self.headers.get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_string()).collect()
    }

    /// The value of `name="..." value="..."` in the page.
    fn field(&self, name: &str) -> String {
        let needle = format!(r#"name="{name}" value=""#);
        let at = self.body.find(&needle).unwrap_or_else(|| panic!("no field {name} in {}", self.body)) + needle.len();
        self.body[at..].split('"').next().unwrap().to_string()
    }
}

impl Fixture {
    async fn new(console: ConsoleSettings) -> Fixture {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let inventory = Inventory {
            networks: vec![
                NetworkSpec {
                    name: "office".into(),
                    role: NetworkRole::Operational,
                    subnet: "10.10.0.0/24".into(),
                    quarantine_network: Some("quarantine".into()),
                    pool: None,
                    bridge: Some("br-office".into()),
                },
                NetworkSpec {
                    name: "quarantine".into(),
                    role: NetworkRole::Quarantine,
                    subnet: "10.99.0.0/24".into(),
                    quarantine_network: None,
                    pool: Some("10.99.0.100-10.99.0.199".into()),
                    bridge: Some("br-quarantine".into()),
                },
            ],
            tenants: vec![],
            servers: vec![ServerSpec {
                name: "sbc-01".into(),
                kind: ServerKind::Physical,
                tenant: None,
                user_email: None,
                hypervisor: None,
                domain: None,
                nics: vec![NicSpec {
                    mac: "02:00:00:00:01:01".parse().unwrap(),
                    network: "office".into(),
                    ip: Some("10.10.0.11".parse().unwrap()),
                    switch: Some("tor-1".into()),
                    port: Some("p1".into()),
                }],
            }],
        };
        store.sync_inventory(&inventory).await.unwrap();
        let server = store.server_by_name("sbc-01").await.unwrap().unwrap();
        let action = store
            .create_action(&NewAction {
                kind: ActionKind::Quarantine,
                server_id: Some(server.id),
                address: None,
                state: cordon_model::ActionState::AwaitingApproval,
                reason: None,
                trigger: "test".into(),
                requested_by: "test".into(),
                instance: "test-1".into(),
                decided_by: None,
                message: None,
            })
            .await
            .unwrap();
        for role in Role::ALL {
            let hash = cordon_api::console_hash_password(PASSWORD).unwrap();
            store.create_user(role.as_str(), *role, &hash).await.unwrap();
        }
        let networks = [NetworkPlan {
            name: "office".into(),
            role: NetworkRole::Operational,
            bridge: Some("br-office".into()),
            quarantine_network: Some("quarantine".into()),
            pool: None,
            vlan: None,
        }]
        .into_iter()
        .map(|plan| (plan.name.clone(), plan))
        .collect();
        let engine =
            Engine::new(store.clone(), Topology { networks, ..Topology::default() }, EngineSettings::new("test-1"));
        let ingest = IngestSettings {
            webhooks: HashMap::new(),
            eve_sources: HashSet::new(),
            max_skew_secs: 300,
            ..Default::default()
        };
        let console = Arc::new(console);
        let app = router(ApiState {
            engine,
            ingest: Arc::new(ingest),
            on_drift: Default::default(),
            notify: None,
            console: console.clone(),
        });
        Fixture { app, store, console, action: action.id }
    }

    async fn send(&self, method: Method, uri: &str, cookies: &[String], body: Option<String>) -> Reply {
        let mut request = Request::builder().method(method).uri(uri);
        if !cookies.is_empty() {
            request = request.header(header::COOKIE, cookies.join("; "));
        }
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let request = request.body(body.map(Body::from).unwrap_or_else(Body::empty)).unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 22).await.unwrap();
        Reply { status, headers, body: String::from_utf8_lossy(&bytes).into_owned() }
    }

    /// Signs in through the real form; returns the session cookie and the session's CSRF token.
    async fn sign_in(&self, user: &str) -> (String, String) {
        let form = self.send(Method::GET, "/login", &[], None).await;
        assert_eq!(form.status, StatusCode::OK);
        let pre = cookie_pair(&form.cookies(), "cordon_login");
        let body = format!("csrf={}&next=%2F&user={user}&password={}", form.field("csrf"), PASSWORD.replace(' ', "+"));
        let signed = self.send(Method::POST, "/login", &[pre], Some(body)).await;
        assert_eq!(signed.status, StatusCode::SEE_OTHER, "{user}: {}", signed.body);
        let session = cookie_pair(&signed.cookies(), "cordon_session");
        // Every page, even a refusal (a sensor account sees no page), carries the sign-out form.
        let page = self.send(Method::GET, "/", std::slice::from_ref(&session), None).await;
        assert!([StatusCode::OK, StatusCode::FORBIDDEN].contains(&page.status), "{}", page.body);
        (session, page.field("csrf"))
    }
}

/// `name=value` of a Set-Cookie header, for a Cookie header.
fn cookie_pair(cookies: &[String], name: &str) -> String {
    cookies
        .iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie in {cookies:?}"))
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

fn concrete(path: &str, action: i64) -> String {
    path.replace("{name}", "sbc-01").replace("{id}", &action.to_string())
}

#[tokio::test]
async fn every_page_redirects_to_sign_in_without_a_session() {
    let f = Fixture::new(ConsoleSettings::default()).await;
    let mut walked = 0;
    for route in CONSOLE_ROUTES.iter().filter(|r| r.access != Access::Open) {
        let uri = concrete(route.path, f.action);
        for cookies in [vec![], vec!["cordon_session=".to_string() + &"0".repeat(64)]] {
            let body = (route.method == Method::POST).then(String::new);
            let reply = f.send(route.method.clone(), &uri, &cookies, body).await;
            assert_eq!(reply.status, StatusCode::SEE_OTHER, "{} {uri} with {cookies:?}", route.method);
            assert!(reply.location().starts_with("/login"), "{} {uri}: {}", route.method, reply.location());
        }
        walked += 1;
    }
    assert!(walked >= 15, "walked {walked} routes");
    // A page remembers where it was going.
    let reply = f.send(Method::GET, "/servers/sbc-01", &[], None).await;
    assert_eq!(reply.location(), "/login?next=%2Fservers%2Fsbc-01");
}

#[tokio::test]
async fn every_form_refuses_a_request_without_the_sessions_csrf_token() {
    let f = Fixture::new(ConsoleSettings::default()).await;
    let (session, csrf) = f.sign_in("admin").await;
    let (_, other_csrf) = f.sign_in("operator").await;
    assert_ne!(csrf, other_csrf, "each session has its own token");
    let mut forms = 0;
    for route in CONSOLE_ROUTES.iter().filter(|r| r.method == Method::POST && r.access != Access::Open) {
        let uri = concrete(route.path, f.action);
        for (case, body) in [
            ("no body", String::new()),
            ("no token", "reason=x".to_string()),
            ("empty token", "csrf=".to_string()),
            ("another session's token", format!("csrf={other_csrf}")),
            ("a truncated token", format!("csrf={}", &csrf[..csrf.len() - 1])),
        ] {
            let reply = f.send(Method::POST, &uri, std::slice::from_ref(&session), Some(body)).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "POST {uri} with {case}: {}", reply.body);
            assert!(reply.body.contains(&messages::CSRF_REJECTED.number.to_string()), "{uri} {case}");
        }
        forms += 1;
    }
    assert!(forms >= 8, "{forms} forms");
    assert!(
        f.console.render_metrics().contains("cordon_console_csrf_rejections_total 40"),
        "{}",
        f.console.render_metrics()
    );
    // Nothing was done: the action still waits for approval.
    assert_eq!(f.store.action(f.action).await.unwrap().unwrap().state, cordon_model::ActionState::AwaitingApproval);

    // The sign-in form: its token is bound to the pre-session cookie of the same browser.
    let form = f.send(Method::GET, "/login", &[], None).await;
    let pre = cookie_pair(&form.cookies(), "cordon_login");
    let other = cookie_pair(&f.send(Method::GET, "/login", &[], None).await.cookies(), "cordon_login");
    let good = format!("user=admin&password={}", PASSWORD.replace(' ', "+"));
    for (case, cookies, body) in [
        ("no token", vec![pre.clone()], good.clone()),
        ("no pre-session cookie", vec![], format!("csrf={}&{good}", form.field("csrf"))),
        ("another browser's cookie", vec![other], format!("csrf={}&{good}", form.field("csrf"))),
        ("a forged token", vec![pre.clone()], format!("csrf={}&{good}", "ab".repeat(32))),
    ] {
        let reply = f.send(Method::POST, "/login", &cookies, Some(body)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "sign-in with {case}");
        assert!(reply.cookies().iter().all(|c| !c.starts_with("cordon_session=")), "{case}: no session");
    }
}

#[tokio::test]
async fn roles_gate_console_actions_like_tokens_and_actions_are_audited_with_the_user() {
    let f = Fixture::new(ConsoleSettings::default()).await;
    for role in Role::ALL {
        let (session, csrf) = f.sign_in(role.as_str()).await;
        let page = f.send(Method::GET, "/servers/sbc-01", std::slice::from_ref(&session), None).await;
        let reply = f
            .send(
                Method::POST,
                "/servers/sbc-01/quarantine",
                std::slice::from_ref(&session),
                Some(format!("csrf={csrf}")),
            )
            .await;
        if role.allows(Role::Operator) {
            assert_eq!(page.status, StatusCode::OK);
            assert!(page.body.contains(r#"id="server-actions""#), "{role} sees the buttons");
            // Allowed: queued (or found queued), and back to the server's page.
            assert_eq!(
                (reply.status, reply.location()),
                (StatusCode::SEE_OTHER, "/servers/sbc-01"),
                "{role}: {}",
                reply.body
            );
        } else if role.allows(Role::Viewer) {
            assert_eq!(page.status, StatusCode::OK);
            assert!(!page.body.contains(r#"id="server-actions""#), "a viewer sees no action buttons");
            assert!(!page.body.contains("data-verb=\"approve\""), "a viewer sees no approve button");
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{role}");
            assert!(reply.body.contains("60021"));
        } else {
            // A sensor account may sign in and out, and see nothing.
            assert_eq!(page.status, StatusCode::FORBIDDEN);
            assert_eq!(reply.status, StatusCode::FORBIDDEN);
        }
    }
    // The operator approves the waiting action from the console: the engine audits the user.
    let (session, csrf) = f.sign_in("operator").await;
    let page = f.send(Method::GET, &format!("/actions/{}", f.action), std::slice::from_ref(&session), None).await;
    assert!(page.body.contains(r#"data-verb="approve""#) && page.body.contains(r#"data-verb="reject""#));
    let reply = f
        .send(
            Method::POST,
            &format!("/actions/{}/reject", f.action),
            std::slice::from_ref(&session),
            Some(format!("csrf={csrf}")),
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(f.store.action(f.action).await.unwrap().unwrap().state, cordon_model::ActionState::Rejected);
    let audit = f.store.list_audit(50).await.unwrap();
    assert!(audit.iter().any(|a| a.entry.actor == "user:operator" && a.entry.verb == "reject"), "{audit:#?}");
    assert!(audit.iter().any(|a| a.entry.actor == "user:admin" && a.entry.verb == "sign_in"));
    // With the waiting action rejected, a new quarantine reaches the engine, which refuses it
    // for want of a switch driver: the console shows the engine's numbered message and remedy.
    let reply = f
        .send(Method::POST, "/servers/sbc-01/quarantine", &[session], Some(format!("csrf={csrf}&reason=beacon")))
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(reply.body.contains("60013") && reply.body.contains("Remedy:"), "{}", reply.body);
}

#[tokio::test]
async fn a_failed_action_is_checked_from_the_console() {
    let f = Fixture::new(ConsoleSettings::default()).await;
    let store = &f.store;
    let action = store.action(f.action).await.unwrap().unwrap();
    let action = store.transition_action(action.id, action.generation, ActionCommand::Approve, None).await.unwrap();
    let action = store.transition_action(action.id, action.generation, ActionCommand::Start, None).await.unwrap();
    let message = cordon_store::MessageRef { number: 60010, text: "bridge br-quarantine does not exist".into() };
    store.transition_action(action.id, action.generation, ActionCommand::Fail, Some(message)).await.unwrap();
    let (session, csrf) = f.sign_in("operator").await;
    let page = f.send(Method::GET, &format!("/actions/{}", f.action), std::slice::from_ref(&session), None).await;
    assert!(
        page.body.contains("60010")
            && page.body.contains(cordon_model::Message::find(60010).unwrap().remedy.split('`').next().unwrap())
    );
    assert!(page.body.contains(r#"data-verb="check""#) && page.body.contains(r#"data-verb="retry""#));
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        f.send(Method::POST, &format!("/actions/{}/check", f.action), &[session], Some(format!("csrf={csrf}"))),
    )
    .await
    .expect("the check answered");
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(store.action(f.action).await.unwrap().unwrap().state, cordon_model::ActionState::Checked);
}

#[tokio::test]
async fn the_session_cookie_is_hardened_and_sessions_end() {
    let f = Fixture::new(ConsoleSettings::new(Duration::from_secs(1800), Duration::from_secs(3600), true)).await;
    let form = f.send(Method::GET, "/login", &[], None).await;
    let pre = cookie_pair(&form.cookies(), "cordon_login");
    let body =
        format!("csrf={}&next=%2Factions&user=viewer&password={}", form.field("csrf"), PASSWORD.replace(' ', "+"));
    let signed = f.send(Method::POST, "/login", std::slice::from_ref(&pre), Some(body)).await;
    assert_eq!((signed.status, signed.location()), (StatusCode::SEE_OTHER, "/actions"));
    let set = signed.cookies().into_iter().find(|c| c.starts_with("cordon_session=")).unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(set.contains(flag), "{flag} in {set}");
    }
    let session = cookie_pair(&signed.cookies(), "cordon_session");
    let id = session.trim_start_matches("cordon_session=");
    assert_eq!(id.len(), 64);
    assert!(f.store.session_by_hash(id).await.unwrap().is_none(), "the id itself is not stored");
    assert!(f.store.session_by_hash(&cordon_api::hash_token(id)).await.unwrap().is_some(), "its hash is");

    // A wrong password: 401, the form again, counted; an unknown name is the same answer.
    for user in ["viewer", "nobody"] {
        let form = f.send(Method::GET, "/login", &[], None).await;
        let pre = cookie_pair(&form.cookies(), "cordon_login");
        let body = format!("csrf={}&user={user}&password=wrong+password+1", form.field("csrf"));
        let reply = f.send(Method::POST, "/login", &[pre], Some(body)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert!(reply.body.contains("Unknown name or wrong password"));
    }
    let metrics = f.console.render_metrics();
    assert!(metrics.contains("cordon_console_sign_ins_total{outcome=\"success\"} 1"), "{metrics}");
    assert!(metrics.contains("cordon_console_sign_ins_total{outcome=\"failure\"} 2"), "{metrics}");

    // A new password ends the session.
    let page = f.send(Method::GET, "/", std::slice::from_ref(&session), None).await;
    assert_eq!(page.status, StatusCode::OK);
    f.store
        .set_user_password("viewer", &cordon_api::console_hash_password("another long password").unwrap())
        .await
        .unwrap();
    let page = f.send(Method::GET, "/", std::slice::from_ref(&session), None).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);

    // Sign-out ends it too, and clears the cookie.
    let (session, csrf) = f.sign_in("operator").await;
    let out = f.send(Method::POST, "/logout", std::slice::from_ref(&session), Some(format!("csrf={csrf}"))).await;
    assert_eq!((out.status, out.location()), (StatusCode::SEE_OTHER, "/login"));
    assert!(out.cookies().iter().any(|c| c.starts_with("cordon_session=;") && c.contains("Max-Age=0")));
    assert_eq!(f.send(Method::GET, "/", &[session], None).await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn idle_sessions_end() {
    // An idle timeout of zero: every session is idle by its next request.
    let f = Fixture::new(ConsoleSettings::new(Duration::ZERO, Duration::from_secs(3600), false)).await;
    let form = f.send(Method::GET, "/login", &[], None).await;
    let pre = cookie_pair(&form.cookies(), "cordon_login");
    let body = format!("csrf={}&user=admin&password={}", form.field("csrf"), PASSWORD.replace(' ', "+"));
    let signed = f.send(Method::POST, "/login", &[pre], Some(body)).await;
    let session = cookie_pair(&signed.cookies(), "cordon_session");
    let page = f.send(Method::GET, "/", &[session], None).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn pages_escape_what_they_show_and_assets_are_served_locally() {
    let f = Fixture::new(ConsoleSettings::default()).await;
    let (session, _) = f.sign_in("viewer").await;
    for path in ["/", "/servers", "/servers/sbc-01", "/actions", "/detections", "/messages"] {
        let page = f.send(Method::GET, &format!("{path}?q=%3Cscript%3E"), std::slice::from_ref(&session), None).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(!page.body.contains("<script>"), "{path} echoes markup");
        assert!(!page.body.contains("http://") && !page.body.contains("https://"), "{path} links elsewhere");
        let csp = page.headers.get(header::CONTENT_SECURITY_POLICY).unwrap().to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{csp}");
    }
    for asset in ["/assets/console.js", "/assets/console.css"] {
        let reply = f.send(Method::GET, asset, &[], None).await;
        assert_eq!(reply.status, StatusCode::OK, "{asset}");
        assert!(!reply.body.contains("http"), "{asset} loads nothing from elsewhere");
    }
}
