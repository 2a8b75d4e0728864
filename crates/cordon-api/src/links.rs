//! `/approve/{token}`: the signed approval links of the notification e-mails.
//!
//! No bearer token: the signed link is the credential (see `cordon_notify::links`). `GET` only
//! shows what the link would do, with a button that posts the same URL: mail scanners and link
//! previews fetch links, and must never decide anything. `POST` decides, through
//! [`Engine::approve`](cordon_engine::Engine::approve) or `reject`, as actor
//! `link:<recipient>`. A link is refused when its signature is bad (403, 60070), when it
//! expired (410, 60071), and when its action no longer awaits approval or the link was already
//! used (409, 60072). Answers are small HTML pages that carry the numbered message.

use crate::console::html::escape;
use std::fmt::Write as _;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{Extensions, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cordon_engine::{Actor, ErrorKind};
use cordon_model::{ActionState, Message, messages};
use cordon_notify::{Link, LinkError, LinkSigner};
use cordon_store::ActionRecord;

use crate::ApiState;

/// `GET /approve/{token}`: what the link would do, and a button to do it.
pub async fn show(State(state): State<ApiState>, Path(token): Path<String>) -> Response {
    let (_, link, action) = match check(&state, &token).await {
        Ok(found) => found,
        Err(refusal) => return refusal,
    };
    let server = action.server_name.as_deref().unwrap_or("(no server)");
    let verb = link.choice.label();
    let mut body = format!("<h1>{}</h1>\n", escape(&format!("{} of {server}?", capitalized(verb))));
    body.push_str("<table>\n");
    row(&mut body, "Action", &format!("{} ({}, {})", action.id, action.kind, action.state));
    row(&mut body, "Server", server);
    if let Some(reason) = &action.reason {
        row(&mut body, "Reason", reason);
    }
    if let Some(address) = action.address {
        row(&mut body, "Address", &address.to_string());
    }
    row(&mut body, "Detections", &action.detections.to_string());
    row(&mut body, "Requested", &action.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string());
    row(&mut body, "Link for", &link.recipient);
    row(&mut body, "Link valid until", &cordon_notify::links::format_time(link.expires));
    body.push_str("</table>\n");
    let effect = match link.choice.kind() {
        Some(kind) => format!("Cordon will run the action as <b>{kind}</b> on {} at once.", escape(server)),
        None => format!("The action is rejected: nothing is done to {}.", escape(server)),
    };
    let _ = write!(
        body,
        "<p>{effect} Nothing happens until you press the button; the first decision made through any link of \
         this action counts.</p>\n<form method=\"post\"><button type=\"submit\">{}</button></form>\n",
        escape(&capitalized(verb))
    );
    page(StatusCode::OK, &format!("Cordon: action {}", action.id), &body)
}

/// `POST /approve/{token}`: makes the link's decision, once.
pub async fn decide(State(state): State<ApiState>, Path(token): Path<String>, extensions: Extensions) -> Response {
    let (signer, link, action) = match check(&state, &token).await {
        Ok(found) => found,
        Err(refusal) => return refusal,
    };
    let now = chrono::Utc::now().timestamp();
    if !signer.claim(&link, now) {
        return already_used(&state, action.id, "this link was already used");
    }
    let origin = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip().to_string())
        .unwrap_or_else(|| "local".to_string());
    let actor = Actor { name: format!("link:{}", link.recipient), origin };
    let decided = match link.choice.kind() {
        Some(kind) => state.engine.approve(action.id, &actor, Some(kind)).await,
        None => state.engine.reject(action.id, &actor).await,
    };
    match decided {
        Ok(decided) => {
            let text = messages::LINK_DECISION.render(&[
                ("action", &action.id),
                ("choice", &link.choice.label()),
                ("recipient", &link.recipient),
            ]);
            tracing::info!(number = messages::LINK_DECISION.number, "{text}");
            let server = decided.server_name.as_deref().unwrap_or("(no server)");
            let body = match decided.state {
                ActionState::Rejected => {
                    format!(
                        "<h1>Rejected</h1>\n<p>Action {} is rejected: nothing is done to {}.</p>\n",
                        decided.id,
                        escape(server)
                    )
                }
                _ => format!(
                    "<h1>Approved</h1>\n<p>Action {} is approved as <b>{}</b>; Cordon runs it on {} now. You will \
                     get an e-mail when it is done.</p>\n",
                    decided.id,
                    decided.kind,
                    escape(server)
                ),
            };
            page(StatusCode::OK, &format!("Cordon: action {}", decided.id), &body)
        }
        Err(error) => {
            if error.kind == ErrorKind::Conflict {
                // Decided meanwhile (by another link, an operator, ...): the link stays spent.
                return already_used(&state, action.id, &error.text);
            }
            // A passing failure: the administrator may try the same link again.
            signer.release(&link);
            let status = match error.kind {
                ErrorKind::NotFound => StatusCode::NOT_FOUND,
                ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            refusal(status, error.message, &error.text)
        }
    }
}

/// The signer, the verified link and its action, if the action still awaits approval and the
/// link was not used; otherwise the refusal to answer.
async fn check<'s>(state: &'s ApiState, token: &str) -> Result<(&'s LinkSigner, Link, ActionRecord), Response> {
    let Some(notify) = &state.notify else {
        return Err(refusal(StatusCode::NOT_FOUND, &messages::LINKS_DISABLED, messages::LINKS_DISABLED.text));
    };
    let Some(signer) = &notify.links else {
        return Err(refusal(StatusCode::NOT_FOUND, &messages::LINKS_DISABLED, messages::LINKS_DISABLED.text));
    };
    let now = chrono::Utc::now().timestamp();
    let link = match signer.verify(token, now) {
        Ok(link) => link,
        Err(error) => {
            notify.counters.link_refused();
            tracing::warn!(number = error_message(&error).number, "approval link refused: {error}");
            return Err(match error {
                LinkError::Expired { action, expires } => {
                    let expiry = cordon_notify::links::format_time(expires);
                    let text = messages::LINK_EXPIRED.render(&[("action", &action), ("expiry", &expiry)]);
                    refusal(StatusCode::GONE, &messages::LINK_EXPIRED, &text)
                }
                other => {
                    let text = messages::LINK_INVALID.render(&[("detail", &other)]);
                    refusal(StatusCode::FORBIDDEN, &messages::LINK_INVALID, &text)
                }
            });
        }
    };
    let action = match state.engine.store().action(link.action).await {
        Ok(Some(action)) => action,
        Ok(None) => {
            let text = messages::ACTION_NOT_FOUND.render(&[("action", &link.action)]);
            return Err(refusal(StatusCode::NOT_FOUND, &messages::ACTION_NOT_FOUND, &text));
        }
        Err(error) => {
            let text = messages::STORE_FAILURE.render(&[("detail", &error)]);
            return Err(refusal(StatusCode::INTERNAL_SERVER_ERROR, &messages::STORE_FAILURE, &text));
        }
    };
    if action.state != ActionState::AwaitingApproval {
        let decided = match &action.message {
            Some(message) => format!("it is {} ({})", action.state, message.text),
            None => format!("it is {}", action.state),
        };
        return Err(already_used(state, action.id, &decided));
    }
    if signer.is_used(&link) {
        return Err(already_used(state, action.id, "this link was already used"));
    }
    Ok((signer, link, action))
}

fn error_message(error: &LinkError) -> &'static Message {
    match error {
        LinkError::Expired { .. } => &messages::LINK_EXPIRED,
        _ => &messages::LINK_INVALID,
    }
}

fn already_used(state: &ApiState, action: i64, detail: &str) -> Response {
    if let Some(notify) = &state.notify {
        notify.counters.link_refused();
    }
    let text = messages::LINK_ALREADY_USED.render(&[("action", &action), ("detail", &detail)]);
    tracing::warn!(number = messages::LINK_ALREADY_USED.number, "{text}");
    refusal(StatusCode::CONFLICT, &messages::LINK_ALREADY_USED, &text)
}

/// A page that carries a numbered message: severity, number, text and remedy.
fn refusal(status: StatusCode, message: &Message, text: &str) -> Response {
    let body = format!(
        "<h1>{} {}</h1>\n<p class=\"text\">{}</p>\n<p><b>What to do:</b> {}</p>\n",
        message.severity(),
        message.number,
        escape(text),
        escape(message.remedy)
    );
    page(status, &format!("Cordon: {} {}", message.severity(), message.number), &body)
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" \
         content=\"width=device-width\">\n<meta name=\"robots\" content=\"noindex\">\n<title>{}</title>\n<style>body{{\
         font-family:sans-serif;max-width:42em;margin:2em auto;padding:0 1em}}td{{padding:.2em 1em .2em 0;\
         vertical-align:top}}button{{font-size:1.1em;padding:.5em 1.5em}}</style>\n</head>\n<body>\n{body}</body>\n\
         </html>\n",
        escape(title)
    );
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    // The token is in the URL: never cached, never sent on as a referrer, never framed.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    response
}

fn row(out: &mut String, name: &str, value: &str) {
    let _ = writeln!(out, "<tr><td>{}</td><td>{}</td></tr>", escape(name), escape(value));
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
