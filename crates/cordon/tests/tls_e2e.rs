//! TLS for the API: a real `cordon serve` with certificates made by openssl, the CLI verifying
//! against a CA file, SIGHUP reloading the certificate (and keeping it when the new files are
//! bad), refusals for an exposed private key and for plain HTTP off loopback.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;

/// A CA and a server certificate for 127.0.0.1 signed by it, made with openssl in `dir`.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl").current_dir(dir).args(args).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn pki(dir: &Path, name: &str) -> Pki {
    let file = |suffix: &str| format!("{name}-{suffix}");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=Cordon test CA {name}"),
            "-keyout",
            &file("ca.key"),
            "-out",
            &file("ca.pem"),
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &file("server.key"),
            "-out",
            &file("server.csr"),
        ],
    );
    std::fs::write(dir.join(file("ext")), "subjectAltName = IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &file("server.csr"),
            "-CA",
            &file("ca.pem"),
            "-CAkey",
            &file("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &file("ext"),
            "-out",
            &file("server.pem"),
        ],
    );
    Pki { ca: dir.join(file("ca.pem")), cert: dir.join(file("server.pem")), key: dir.join(file("server.key")) }
}

/// The lab's configuration with `lines` added to `[manager]`.
fn config_with(lab: &Lab, name: &str, lines: &str) -> PathBuf {
    let text = std::fs::read_to_string(lab.config()).unwrap();
    let path = lab.dir.path().join(name);
    std::fs::write(&path, text.replacen("[manager]\n", &format!("[manager]\n{lines}\n"), 1)).unwrap();
    path
}

fn check(config: &Path) -> std::process::Output {
    std::process::Command::new(CORDON).args(["serve", "--check", "--config"]).arg(config).output().unwrap()
}

fn status(manager: &Manager, ca: Option<&Path>) -> std::process::Output {
    let mut args = vec!["status", "-o", "json"];
    if let Some(ca) = ca {
        args.extend(["--ca-file", ca.to_str().unwrap()]);
    }
    manager.cordon(&args)
}

#[test]
fn https_with_a_ca_file_and_sighup_reload() {
    let lab = Lab::up(&format!("tl{}", std::process::id() % 100_000));
    let dir = lab.dir.path();
    let first = pki(dir, "one");
    let second = pki(dir, "two");
    // The files the configuration names; the test swaps their content for the reload.
    let (cert, key) = (dir.join("tls.pem"), dir.join("tls.key"));
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let tls = format!("tls_cert_file = \"{}\"\ntls_key_file = \"{}\"", cert.display(), key.display());
    let config = config_with(&lab, "tls.toml", &tls);

    // A private key others may read: refused before anything starts.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = check(&config);
    assert!(!out.status.success(), "an exposed key must be refused");
    let said = stderr(&out);
    assert!(said.contains("60090") && said.contains("tls_key_file") && said.contains("0644"), "{said}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(check(&config).status.success(), "{}", stderr(&check(&config)));

    let mut manager = Manager::start(&config, &dir.join("data"));
    manager.url = manager.url.replacen("http://", "https://", 1);

    let out = status(&manager, Some(&first.ca));
    assert!(out.status.success(), "with the CA: {}", stderr(&out));
    for (case, ca) in [("without a CA file", None), ("with another CA", Some(second.ca.as_path()))] {
        let out = status(&manager, ca);
        assert!(!out.status.success(), "{case}: must not trust the server");
        assert!(stderr(&out).contains("60031"), "{case}: {}", stderr(&out));
    }
    let plain = manager.url.replacen("https://", "http://", 1);
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", &format!("{plain}/healthz")])
        .output()
        .unwrap();
    assert!(!out.status.success() || !stdout(&out).contains("ok"), "plain HTTP on the TLS port must not work");

    // SIGHUP with a new certificate: new connections get it.
    std::fs::copy(&second.cert, &cert).unwrap();
    std::fs::copy(&second.key, &key).unwrap();
    let pid = manager.pid().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    manager.wait_until(10, "the reload (21096)", |m| m.log().contains("21096"));
    assert!(status(&manager, Some(&second.ca)).status.success(), "the new CA after the reload");
    assert!(!status(&manager, Some(&first.ca)).status.success(), "the old certificate is gone");

    // SIGHUP with a broken key: refused, the certificate in use stays.
    std::fs::write(&key, "not a key\n").unwrap();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    manager.wait_until(10, "the refused reload (41092)", |m| m.log().contains("41092"));
    assert!(status(&manager, Some(&second.ca)).status.success(), "still served after a bad reload");
}

#[test]
fn plain_http_off_loopback_needs_an_explicit_choice() {
    let lab = Lab::up(&format!("tp{}", std::process::id() % 100_000));
    let text = std::fs::read_to_string(lab.config()).unwrap();
    let listen_line = text.lines().find(|l| l.starts_with("listen = ")).unwrap().to_string();
    let everywhere = lab.dir.path().join("everywhere.toml");
    std::fs::write(&everywhere, text.replacen(&listen_line, "listen = \"0.0.0.0:0\"", 1)).unwrap();
    let out = check(&everywhere);
    assert!(!out.status.success(), "plain HTTP on 0.0.0.0 must be refused");
    assert!(stderr(&out).contains("60091"), "{}", stderr(&out));

    let allowed = lab.dir.path().join("allowed.toml");
    let text = std::fs::read_to_string(&everywhere).unwrap();
    std::fs::write(&allowed, text.replacen("[manager]\n", "[manager]\nallow_plain_http = true\n", 1)).unwrap();
    assert!(check(&allowed).status.success(), "{}", stderr(&check(&allowed)));
}

#[test]
fn secrets_written_inline_are_refused() {
    let lab = Lab::up(&format!("ts{}", std::process::id() % 100_000));
    let text = std::fs::read_to_string(lab.config()).unwrap();
    let inline = lab.dir.path().join("inline.toml");
    std::fs::write(
        &inline,
        format!("{text}\n[[source]]\nname = \"hook\"\ntype = \"webhook\"\ntoken = \"s3cret-token\"\n"),
    )
    .unwrap();
    let out = check(&inline);
    assert!(!out.status.success());
    let said = stderr(&out);
    assert!(said.contains("60001") && said.contains("token_file"), "{said}");
    assert!(!said.contains("s3cret-token"), "the secret is not repeated: {said}");
}

#[test]
fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use std::io::{Read, Write};
    let lab = Lab::up(&format!("th{}", std::process::id() % 100_000));
    let manager = Manager::start(&lab.config(), &lab.dir.path().join("data"));
    let address = manager.url.trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: cordon\r\n").unwrap();
    // The header read timeout is 10 s; give it twice that before calling it a hang.
    stream.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    assert!(read.is_ok(), "the server closed the connection instead of waiting for ever: {read:?}");
    // A complete request on a new connection is answered as usual.
    let out = manager.cordon(&["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
