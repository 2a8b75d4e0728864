//! From TOML text to raw entries: every table checked against its known keys, every value
//! checked to be of its key's type (a string, a boolean, an integer, an array of strings), each
//! kept with its byte position. Meaning is checked in `validate`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::Problems;
use Kind::{Bool, Ids, Int, Str, Strings};

/// A string value and where it is.
#[derive(Debug, Clone)]
pub(crate) struct Leaf {
    pub value: String,
    pub span: Range<usize>,
}

/// A boolean or integer value and where it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scalar<T> {
    pub value: T,
    pub start: usize,
}

/// An array of strings (integers too, for [`Kind::Ids`], as decimal text) and where it is.
#[derive(Debug, Clone)]
pub(crate) struct List {
    /// The well-typed items, each with its own position (the others are already reported).
    pub items: Vec<Leaf>,
    /// Where the array starts.
    pub start: usize,
    /// How many items were written, well typed or not.
    pub written: usize,
}

/// The type a key's value must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Str,
    Bool,
    Int,
    /// An array of strings.
    Strings,
    /// An array of strings or integers (integers kept as decimal text).
    Ids,
}

/// One table: a `[manager]`, one element of `[[network]]`, one `[[server.nic]]`, ...
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The readable path of the table, like `network "office"` or `server "sbc-01".nic[0]`.
    pub key: String,
    /// Where the table starts (its header, or its `{` when inline).
    pub start: usize,
    pub strings: BTreeMap<&'static str, Leaf>,
    pub bools: BTreeMap<&'static str, Scalar<bool>>,
    pub ints: BTreeMap<&'static str, Scalar<i128>>,
    pub lists: BTreeMap<&'static str, List>,
    /// Every known key present, whatever its value, with where the key is written.
    pub present: BTreeMap<&'static str, usize>,
    /// Known keys present with a value of the wrong type (already reported).
    pub mistyped: BTreeSet<&'static str>,
    /// The entries of its one nested array of tables (`nic` of a server), in file order.
    pub children: Vec<Entry>,
    /// Its one nested table (`bmc` of a server), if present and a table.
    pub table: Option<Box<Entry>>,
}

impl Entry {
    pub fn get(&self, field: &str) -> Option<&Leaf> {
        self.strings.get(field)
    }

    pub fn get_bool(&self, field: &str) -> Option<Scalar<bool>> {
        self.bools.get(field).copied()
    }

    pub fn get_int(&self, field: &str) -> Option<Scalar<i128>> {
        self.ints.get(field).copied()
    }

    pub fn get_list(&self, field: &str) -> Option<&List> {
        self.lists.get(field)
    }

    /// Whether `field` is not there at all (neither well typed nor mistyped).
    pub fn absent(&self, field: &str) -> bool {
        !self.present.contains_key(field)
    }

    /// The readable path of one of its keys.
    pub fn key_of(&self, field: &str) -> String {
        format!("{}.{}", self.key, field)
    }
}

/// The whole file.
#[derive(Debug, Default)]
pub(crate) struct Document {
    pub manager: Option<Entry>,
    pub networks: Vec<Entry>,
    pub switches: Vec<Entry>,
    pub hypervisors: Vec<Entry>,
    pub tenants: Vec<Entry>,
    pub servers: Vec<Entry>,
    pub sources: Vec<Entry>,
    pub policy: Option<Entry>,
    pub notify: Option<Entry>,
}

/// What a kind of table may hold.
struct Schema {
    /// Its key in its parent (`network`, `nic`).
    section: &'static str,
    /// How it is written as a header (`[[network]]`, `[[server.nic]]`).
    header: &'static str,
    /// Whether entries are shown by their `name` in keys.
    named: bool,
    /// Its keys and their types, in the order error messages list them.
    fields: &'static [(&'static str, Kind)],
    child: Option<&'static Schema>,
    /// Its one nested table (`[server.bmc]`).
    table: Option<&'static Schema>,
    /// Keys refused whatever their value, each with what to write instead (`password`).
    refused: &'static [(&'static str, &'static str)],
}

const MANAGER: Schema = Schema {
    section: "manager",
    header: "[manager]",
    named: false,
    fields: &[
        ("listen", Str),
        ("data_dir", Str),
        ("instance", Str),
        ("graceful_timeout", Str),
        ("reboot_deadline", Str),
        ("max_attempts", Int),
        ("retry_backoff", Str),
        ("reconcile_interval", Str),
        ("on_drift", Str),
        ("driver_timeout", Str),
        ("tls_cert_file", Str),
        ("tls_key_file", Str),
        ("allow_plain_http", Bool),
        ("session_idle_timeout", Str),
        ("session_lifetime", Str),
        ("secure_cookies", Bool),
        ("database", Str),
        ("database_password_file", Str),
        ("action_lease", Str),
        ("workers", Int),
    ],
    child: None,
    table: None,
    refused: &[(
        "tls_key",
        "a private key is never written in the configuration: put it in a file only Cordon can read and name that \
         file with tls_key_file",
    )],
};
const NETWORK: Schema = Schema {
    section: "network",
    header: "[[network]]",
    named: true,
    fields: &[
        ("name", Str),
        ("role", Str),
        ("subnet", Str),
        ("gateway", Str),
        ("quarantine_network", Str),
        ("pool", Str),
        ("bridge", Str),
        ("vlan", Int),
    ],
    child: None,
    table: None,
    refused: &[],
};
const SWITCH: Schema = Schema {
    section: "switch",
    header: "[[switch]]",
    named: true,
    fields: &[("name", Str), ("driver", Str), ("netns", Str), ("ovsdb", Str), ("bridge", Str)],
    child: None,
    table: None,
    refused: &[],
};
const HYPERVISOR: Schema = Schema {
    section: "hypervisor",
    header: "[[hypervisor]]",
    named: true,
    fields: &[("name", Str), ("driver", Str), ("uri", Str), ("netns", Str)],
    child: None,
    table: None,
    refused: &[],
};
const TENANT: Schema = Schema {
    section: "tenant",
    header: "[[tenant]]",
    named: true,
    fields: &[("name", Str), ("admin_email", Str)],
    child: None,
    table: None,
    refused: &[],
};
const NIC: Schema = Schema {
    section: "nic",
    header: "[[server.nic]]",
    named: false,
    fields: &[("mac", Str), ("network", Str), ("ip", Str), ("switch", Str), ("port", Str)],
    child: None,
    table: None,
    refused: &[],
};
const BMC: Schema = Schema {
    section: "bmc",
    header: "[server.bmc]",
    named: false,
    fields: &[
        ("driver", Str),
        ("endpoint", Str),
        ("system", Str),
        ("username", Str),
        ("password_file", Str),
        ("ca_file", Str),
        ("insecure", Bool),
    ],
    child: None,
    table: None,
    refused: &[(
        "password",
        "a password is never written in the configuration: put it in a file only Cordon can read and name that \
         file with password_file",
    )],
};
const SERVER: Schema = Schema {
    section: "server",
    header: "[[server]]",
    named: true,
    fields: &[
        ("name", Str),
        ("kind", Str),
        ("tenant", Str),
        ("user_email", Str),
        ("action", Str),
        ("protected", Bool),
        ("hypervisor", Str),
        ("domain", Str),
    ],
    child: Some(&NIC),
    table: Some(&BMC),
    refused: &[],
};
const SOURCE: Schema = Schema {
    section: "source",
    header: "[[source]]",
    named: true,
    fields: &[
        ("name", Str),
        ("type", Str),
        ("path", Str),
        ("socket", Str),
        ("listen_udp", Str),
        ("listen_tcp", Str),
        ("profile", Str),
        ("allowed_peers", Strings),
        ("token_file", Str),
        ("hmac_secret_file", Str),
        ("max_rate", Int),
    ],
    child: None,
    table: None,
    refused: &[
        (
            "token",
            "a token is never written in the configuration: put it in a file only Cordon can read and name that file \
             with token_file",
        ),
        (
            "hmac_secret",
            "a secret is never written in the configuration: put it in a file only Cordon can read and name that \
             file with hmac_secret_file",
        ),
    ],
};
const RULE: Schema = Schema {
    section: "rule",
    header: "[[policy.rule]]",
    named: true,
    fields: &[
        ("name", Str),
        ("sources", Strings),
        ("min_severity", Str),
        ("signature_ids", Ids),
        ("categories", Strings),
        ("networks", Strings),
        ("tenants", Strings),
        ("servers", Strings),
        ("action", Str),
        ("mode", Str),
        ("shadow", Bool),
        ("subject", Str),
    ],
    child: None,
    table: None,
    refused: &[],
};
const POLICY: Schema = Schema {
    section: "policy",
    header: "[policy]",
    named: false,
    fields: &[
        ("default_action", Str),
        ("default_mode", Str),
        ("exclude_keywords", Strings),
        ("max_auto_actions", Int),
        ("window", Str),
        ("cooldown", Str),
        ("shadow", Bool),
    ],
    child: Some(&RULE),
    table: None,
    refused: &[],
};
const NOTIFY: Schema = Schema {
    section: "notify",
    header: "[notify]",
    named: false,
    fields: &[
        ("smtp", Str),
        ("starttls", Bool),
        ("from", Str),
        ("smtp_username", Str),
        ("smtp_password_file", Str),
        ("smtp_ca_file", Str),
        ("webhooks", Strings),
        ("operator_email", Str),
        ("public_url", Str),
        ("link_secret_file", Str),
        ("link_ttl", Str),
    ],
    child: None,
    table: None,
    refused: &[
        (
            "smtp_password",
            "a password is never written in the configuration: put it in a file only Cordon can read and name that \
             file with smtp_password_file",
        ),
        (
            "link_secret",
            "a secret is never written in the configuration: put it in a file only Cordon can read and name that \
             file with link_secret_file",
        ),
    ],
};
const SECTIONS: &[&str] =
    &["manager", "network", "switch", "hypervisor", "tenant", "server", "source", "policy", "notify"];

/// Reads the document; `None` (with the problems recorded) when the text is not valid TOML.
pub(crate) fn read(text: &str, problems: &mut Problems) -> Option<Document> {
    let (root, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        let places = places(text, &root);
        for error in errors {
            let offset = error.span().map_or(text.len(), |span| span.start);
            let key = syntax_error_key(text, &places, offset);
            problems.add(Some(offset), key, format!("invalid TOML: {}", error.message()));
        }
        return None;
    }
    let mut document = Document::default();
    for (key, value) in root.get_ref().iter() {
        let name: &str = key.get_ref();
        match name {
            "manager" => document.manager = read_table(MANAGER.section.into(), value, &MANAGER, problems),
            "network" => document.networks = read_array(None, value, &NETWORK, problems),
            "switch" => document.switches = read_array(None, value, &SWITCH, problems),
            "hypervisor" => document.hypervisors = read_array(None, value, &HYPERVISOR, problems),
            "tenant" => document.tenants = read_array(None, value, &TENANT, problems),
            "server" => document.servers = read_array(None, value, &SERVER, problems),
            "source" => document.sources = read_array(None, value, &SOURCE, problems),
            "policy" => document.policy = read_table(POLICY.section.into(), value, &POLICY, problems),
            "notify" => document.notify = read_table(NOTIFY.section.into(), value, &NOTIFY, problems),
            _ => problems.add(
                Some(key.span().start),
                display_key(name),
                format!("unknown section (expected one of: {})", SECTIONS.join(", ")),
            ),
        }
    }
    Some(document)
}

fn read_array(
    parent: Option<&str>,
    value: &Spanned<DeValue<'_>>,
    schema: &Schema,
    problems: &mut Problems,
) -> Vec<Entry> {
    let key = match parent {
        Some(parent) => format!("{parent}.{}", schema.section),
        None => schema.section.to_string(),
    };
    let DeValue::Array(items) = value.get_ref() else {
        problems.add(
            Some(value.span().start),
            key,
            format!("expected an array of tables (write it {}), found {}", schema.header, a(value.get_ref())),
        );
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(index, item)| {
            let name = if schema.named { name_of(item) } else { None };
            let item_key = match name {
                Some(name) => format!("{key} {name:?}"),
                None => format!("{key}[{index}]"),
            };
            read_table(item_key, item, schema, problems)
        })
        .collect()
}

fn read_table(key: String, value: &Spanned<DeValue<'_>>, schema: &Schema, problems: &mut Problems) -> Option<Entry> {
    let DeValue::Table(table) = value.get_ref() else {
        problems.add(
            Some(value.span().start),
            key,
            format!("expected a table (write it {}), found {}", schema.header, a(value.get_ref())),
        );
        return None;
    };
    let mut entry = Entry {
        key,
        start: value.span().start,
        strings: BTreeMap::new(),
        bools: BTreeMap::new(),
        ints: BTreeMap::new(),
        lists: BTreeMap::new(),
        present: BTreeMap::new(),
        mistyped: BTreeSet::new(),
        children: Vec::new(),
        table: None,
    };
    for (field, value) in table.iter() {
        let name: &str = field.get_ref();
        if let Some(&(known, kind)) = schema.fields.iter().find(|&&(known, _)| known == name) {
            entry.present.insert(known, field.span().start);
            read_value(&mut entry, known, kind, value, problems);
        } else if let Some(child) = schema.child.filter(|child| child.section == name) {
            entry.present.insert(child.section, field.span().start);
            if !matches!(value.get_ref(), DeValue::Array(_)) {
                entry.mistyped.insert(child.section);
            }
            entry.children = read_array(Some(&entry.key), value, child, problems);
        } else if let Some(inner) = schema.table.filter(|inner| inner.section == name) {
            entry.present.insert(inner.section, field.span().start);
            if !matches!(value.get_ref(), DeValue::Table(_)) {
                entry.mistyped.insert(inner.section);
            }
            entry.table = read_table(entry.key_of(inner.section), value, inner, problems).map(Box::new);
        } else if let Some(&(_, instead)) = schema.refused.iter().find(|&&(refused, _)| refused == name) {
            problems.add(Some(field.span().start), entry.key_of(&display_key(name)), instead);
        } else {
            let mut expected: Vec<&str> = schema.fields.iter().map(|&(known, _)| known).collect();
            expected.extend(schema.child.map(|child| child.section));
            expected.extend(schema.table.map(|inner| inner.section));
            problems.add(
                Some(field.span().start),
                entry.key_of(&display_key(name)),
                format!("unknown key (expected one of: {})", expected.join(", ")),
            );
        }
    }
    Some(entry)
}

/// Keeps the value of known key `field` in `entry` if it has the type `kind` wants, else reports it.
fn read_value(
    entry: &mut Entry,
    field: &'static str,
    kind: Kind,
    value: &Spanned<DeValue<'_>>,
    problems: &mut Problems,
) {
    let start = value.span().start;
    match (kind, value.get_ref()) {
        (Str, DeValue::String(text)) => {
            entry.strings.insert(field, Leaf { value: text.to_string(), span: value.span() });
        }
        (Bool, DeValue::Boolean(flag)) => {
            entry.bools.insert(field, Scalar { value: *flag, start });
        }
        (Int, DeValue::Integer(integer)) => match i128::from_str_radix(integer.as_str(), integer.radix()) {
            Ok(number) => {
                entry.ints.insert(field, Scalar { value: number, start });
            }
            Err(_) => {
                entry.mistyped.insert(field);
                problems.add(Some(start), entry.key_of(field), "not a valid integer");
            }
        },
        (Strings | Ids, DeValue::Array(items)) => {
            let mut list = List { items: Vec::new(), start, written: items.len() };
            for (index, item) in items.iter().enumerate() {
                let span = item.span();
                match (kind, item.get_ref()) {
                    (_, DeValue::String(text)) => list.items.push(Leaf { value: text.to_string(), span }),
                    (Ids, DeValue::Integer(integer)) => match i128::from_str_radix(integer.as_str(), integer.radix()) {
                        Ok(number) if number >= 0 => list.items.push(Leaf { value: number.to_string(), span }),
                        _ => problems.add(
                            Some(span.start),
                            format!("{}[{index}]", entry.key_of(field)),
                            format!("`{integer}` is not a valid id (expected a string or a non-negative integer)"),
                        ),
                    },
                    (_, other) => {
                        let wanted = if kind == Ids { "a string or an integer" } else { "a string" };
                        problems.add(
                            Some(span.start),
                            format!("{}[{index}]", entry.key_of(field)),
                            format!("expected {wanted}, found {}", a(other)),
                        );
                    }
                }
            }
            entry.lists.insert(field, list);
        }
        (_, other) => {
            entry.mistyped.insert(field);
            let wanted = match kind {
                Str => "a string".to_string(),
                Bool => "a boolean (true or false)".to_string(),
                Int => "an integer".to_string(),
                Strings => match other {
                    DeValue::String(text) => format!("an array of strings, like [{:?}]", text.as_ref() as &str),
                    _ => "an array of strings".to_string(),
                },
                Ids => "an array of strings or integers".to_string(),
            };
            problems.add(Some(start), entry.key_of(field), format!("expected {wanted}, found {}", a(other)));
        }
    }
}

/// The non-empty string `name` of a table, if it has one.
fn name_of(item: &Spanned<DeValue<'_>>) -> Option<String> {
    let DeValue::Table(table) = item.get_ref() else {
        return None;
    };
    table.iter().find_map(|(key, value)| {
        let text = value.get_ref().as_str()?;
        (AsRef::<str>::as_ref(key.get_ref()) == "name" && !text.is_empty()).then(|| text.to_string())
    })
}

/// "a string", "an integer", ...
fn a(value: &DeValue<'_>) -> String {
    let kind = value.type_str();
    let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("{article} {kind}")
}

/// A key as it would be written in TOML: bare when it can be, quoted otherwise.
fn display_key(name: &str) -> String {
    let bare = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare { name.to_string() } else { format!("{name:?}") }
}

/// A place in the recovered document tree, for naming the key of a syntax error.
struct Place {
    span: Range<usize>,
    key: String,
    /// A table opened by a `[header]` or `[[header]]` (its span is the header only).
    header: bool,
}

/// Every table header and every value of the (partially) parsed document, in no order.
fn places(text: &str, root: &Spanned<DeTable<'_>>) -> Vec<Place> {
    let mut out = Vec::new();
    collect_places(text, root.get_ref(), "", 0, &mut out);
    out
}

fn collect_places(text: &str, table: &DeTable<'_>, prefix: &str, depth: usize, out: &mut Vec<Place>) {
    // The configuration nests two levels deep; deeper tables are mistakes reported by their parent.
    if depth > 3 {
        return;
    }
    let is_header = |span: &Range<usize>| text.as_bytes().get(span.start) == Some(&b'[');
    for (key, value) in table.iter() {
        let name = display_key(key.get_ref());
        let path = if prefix.is_empty() { name } else { format!("{prefix}.{name}") };
        match value.get_ref() {
            DeValue::Table(inner) => {
                out.push(Place { span: value.span(), key: path.clone(), header: is_header(&value.span()) });
                collect_places(text, inner, &path, depth + 1, out);
            }
            DeValue::Array(items) if items.iter().any(|item| item.get_ref().is_table()) => {
                for (index, item) in items.iter().enumerate() {
                    let item_path = match name_of(item) {
                        Some(item_name) => format!("{path} {item_name:?}"),
                        None => format!("{path}[{index}]"),
                    };
                    out.push(Place { span: item.span(), key: item_path.clone(), header: is_header(&item.span()) });
                    if let DeValue::Table(inner) = item.get_ref() {
                        collect_places(text, inner, &item_path, depth + 1, out);
                    }
                }
            }
            _ => out.push(Place { span: value.span(), key: path, header: false }),
        }
    }
}

/// The best readable key for a syntax error at `offset`: the value it is in, or else the table
/// its line is in and the key the line starts with.
fn syntax_error_key(text: &str, places: &[Place], offset: usize) -> String {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    // Inside (or right at the end of) a value, like an unterminated string.
    let value = places
        .iter()
        .filter(|p| !p.header && p.span.start <= offset && offset <= p.span.end)
        .min_by_key(|p| p.span.len());
    if let Some(place) = value {
        return place.key.clone();
    }
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = text[line_start..line_end].trim();
    if let Some(header) = line.strip_prefix('[') {
        let header = header.trim_matches(|c: char| c == '[' || c == ']' || c.is_whitespace());
        let header: String = header.chars().take(60).collect();
        return if header.is_empty() { "(table header)".to_string() } else { header };
    }
    let table = places
        .iter()
        .filter(|p| p.header && p.span.start < line_start)
        .max_by_key(|p| p.span.start)
        .map(|p| p.key.as_str());
    let first: String =
        line.chars().take_while(|&c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.').collect();
    let first = (!first.is_empty() && !first.starts_with('.')).then_some(first);
    match (table, first) {
        (Some(table), Some(first)) => format!("{table}.{first}"),
        (Some(table), None) => table.to_string(),
        (None, Some(first)) => first,
        (None, None) => "(file)".to_string(),
    }
}
