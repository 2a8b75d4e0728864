//! ArcSight Common Event Format: `CEF:0|vendor|product|version|sigid|name|severity|k=v k2=v2 ...`.

/// One CEF event, header fields and extensions unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CefEvent {
    pub version: u32,
    pub device_vendor: String,
    pub device_product: String,
    pub device_version: String,
    pub signature_id: String,
    pub name: String,
    /// As written: a number (0–10) or a word (`Low`, `Medium`, `High`, `Very-High`).
    pub severity: String,
    /// In the order written; a key written twice appears twice.
    pub extensions: Vec<(String, String)>,
}

impl CefEvent {
    /// The value of the first extension named `key` (case-sensitive, as CEF keys are).
    pub fn extension(&self, key: &str) -> Option<&str> {
        self.extensions.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Why text is not CEF.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CefError {
    #[error("not CEF: the text does not start with `CEF:`")]
    NotCef,
    #[error("invalid CEF version `{0}`")]
    InvalidVersion(String),
    #[error("truncated CEF header: {found} of the 7 `|`-separated fields before the extensions")]
    TruncatedHeader { found: usize },
}

/// Parses `CEF:0|vendor|product|version|sigid|name|severity|k=v k2=v2 ...`.
///
/// Header fields unescape `\|` and `\\`; extension values unescape `\=`, `\\`, `\n` and `\r`
/// (and `\|`, which some emitters write; any other backslash is kept as written, as sloppy
/// emitters write Windows paths unescaped). A value runs until the next ` key=`, so values
/// may hold spaces, and `=` that does not follow ` key`; keys are `[A-Za-z0-9_.-]+`. Leading
/// whitespace and trailing line ends are ignored.
pub fn parse(text: &str) -> Result<CefEvent, CefError> {
    let text = text.trim_start().trim_end_matches(['\r', '\n', '\0']);
    let rest = text.strip_prefix("CEF:").ok_or(CefError::NotCef)?;

    let mut fields: [String; 7] = Default::default();
    let mut found = 0;
    let mut pos = 0;
    let bytes = rest.as_bytes();
    let mut segment = 0;
    let mut i = 0;
    while found < fields.len() {
        match bytes.get(i) {
            None => return Err(CefError::TruncatedHeader { found }),
            Some(b'\\') => match bytes.get(i + 1) {
                Some(&escaped @ (b'|' | b'\\')) => {
                    let field = &mut fields[found];
                    field.push_str(rest.get(segment..i).unwrap_or_default());
                    field.push(char::from(escaped));
                    i += 2;
                    segment = i;
                }
                _ => i += 1,
            },
            Some(b'|') => {
                fields[found].push_str(rest.get(segment..i).unwrap_or_default());
                found += 1;
                i += 1;
                segment = i;
                pos = i;
            }
            Some(_) => i += 1,
        }
    }
    let [version, device_vendor, device_product, device_version, signature_id, name, severity] = fields;
    let version = version
        .trim()
        .parse::<u32>()
        .map_err(|_| CefError::InvalidVersion(crate::syslog::snippet(version.as_bytes())))?;
    Ok(CefEvent {
        version,
        device_vendor,
        device_product,
        device_version,
        signature_id,
        name,
        severity,
        extensions: extensions(rest.get(pos..).unwrap_or_default()),
    })
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// `k=v k2=v2 ...`. A key is a run of key bytes at the start or after an (unescaped) space,
/// followed by an unescaped `=`; text before the first key is ignored.
fn extensions(ext: &str) -> Vec<(String, String)> {
    let bytes = ext.as_bytes();
    // (key start, position of its `=`)
    let mut keys: Vec<(usize, usize)> = Vec::new();
    let mut run_start = Some(0);
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\\' => {
                run_start = None;
                i += 2;
                continue;
            }
            b' ' => run_start = Some(i + 1),
            b'=' => {
                if let Some(start) = run_start.filter(|&s| s < i) {
                    keys.push((start, i));
                }
                run_start = None;
            }
            b if is_key_byte(b) => {}
            _ => run_start = None,
        }
        i += 1;
    }
    keys.iter()
        .enumerate()
        .map(|(n, &(start, eq))| {
            // The value ends at the space before the next key.
            let end = keys.get(n + 1).map_or(ext.len(), |&(next, _)| next - 1);
            let key = ext.get(start..eq).unwrap_or_default();
            let value = ext.get(eq + 1..end).unwrap_or_default();
            (key.to_owned(), unescape_value(value))
        })
        .collect()
}

fn unescape_value(value: &str) -> String {
    if !value.contains('\\') {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('=') => out.push('='),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            // Not an extension escape, but some emitters escape pipes everywhere.
            Some('|') => out.push('|'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
pub(crate) fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
pub(crate) fn escape_header(value: &str) -> String {
    value.replace('\\', "\\\\").replace('|', "\\|")
}

#[cfg(test)]
mod tests;
