//! Cutting a byte stream into lines, with a bound on the length of a line.

/// The longest line accepted (without its newline); a longer one is rejected and skipped.
pub(crate) const MAX_LINE: usize = 1024 * 1024;

/// What [`LineBuffer::next_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line<'a> {
    /// A complete line, without its `\n` (nor a `\r` before it).
    Complete(&'a [u8]),
    /// A line longer than the bound: reported once, when it is seen to be too long; its bytes
    /// are dropped up to its newline.
    TooLong,
}

/// Bytes pushed in, complete lines taken out. Holds at most the bound plus what one push adds.
#[derive(Debug)]
pub(crate) struct LineBuffer {
    max_line: usize,
    buf: Vec<u8>,
    /// Where the unread part of `buf` starts.
    pos: usize,
    /// Dropping a line that is too long, until its newline.
    discarding: bool,
    /// Bytes of the line being dropped, so far.
    discarded: u64,
    /// Bytes handled since the start: through the end of the last complete line (or dropped line).
    consumed: u64,
}

impl LineBuffer {
    pub(crate) fn new(max_line: usize) -> Self {
        LineBuffer { max_line, buf: Vec::new(), pos: 0, discarding: false, discarded: 0, consumed: 0 }
    }

    /// Bytes handled since the start: the offset, relative to where the buffer started, just
    /// past the last line returned (a line being dropped is not handled until its newline).
    pub(crate) fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Appends bytes read.
    pub(crate) fn push(&mut self, mut data: &[u8]) {
        if self.discarding {
            match memchr::memchr(b'\n', data) {
                Some(nl) => {
                    self.consumed += self.discarded + nl as u64 + 1;
                    self.discarded = 0;
                    self.discarding = false;
                    data = &data[nl + 1..];
                }
                None => {
                    self.discarded += data.len() as u64;
                    return;
                }
            }
        }
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete line, if there is one.
    pub(crate) fn next_line(&mut self) -> Option<Line<'_>> {
        if self.discarding {
            return None;
        }
        let rest = &self.buf[self.pos..];
        match memchr::memchr(b'\n', rest) {
            Some(nl) => {
                let start = self.pos;
                self.pos += nl + 1;
                self.consumed += nl as u64 + 1;
                if nl > self.max_line {
                    return Some(Line::TooLong);
                }
                let mut line = &self.buf[start..start + nl];
                if let [head @ .., b'\r'] = line {
                    line = head;
                }
                Some(Line::Complete(line))
            }
            None if rest.len() > self.max_line => {
                self.discarding = true;
                self.discarded = rest.len() as u64;
                self.buf.clear();
                self.pos = 0;
                Some(Line::TooLong)
            }
            None => None,
        }
    }

    /// Takes the unterminated rest as a last line (when its file is finished), if any.
    pub(crate) fn take_rest(&mut self) -> Option<Vec<u8>> {
        if self.discarding {
            self.consumed += self.discarded;
            self.discarded = 0;
            self.discarding = false;
            return None;
        }
        let rest = &self.buf[self.pos..];
        if rest.is_empty() {
            return None;
        }
        let mut line = rest.to_vec();
        self.consumed += line.len() as u64;
        self.buf.clear();
        self.pos = 0;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(b: &mut LineBuffer) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(l) = b.next_line() {
            out.push(match l {
                Line::Complete(l) => String::from_utf8(l.to_vec()).unwrap(),
                Line::TooLong => "<too long>".to_owned(),
            });
        }
        out
    }

    #[test]
    fn splits_lines_across_pushes() {
        let mut b = LineBuffer::new(10);
        b.push(b"ab\ncd");
        assert_eq!(drain(&mut b), ["ab"]);
        assert_eq!(b.consumed(), 3);
        b.push(b"e\r\n\nf");
        assert_eq!(drain(&mut b), ["cde", ""]);
        assert_eq!(b.consumed(), 9);
        assert_eq!(b.take_rest(), Some(b"f".to_vec()));
        assert_eq!(b.consumed(), 10);
        assert_eq!(b.take_rest(), None);
    }

    #[test]
    fn too_long_lines_are_dropped_to_their_newline() {
        let mut b = LineBuffer::new(4);
        b.push(b"1234\n12345\nok\n");
        assert_eq!(drain(&mut b), ["1234", "<too long>", "ok"]);
        assert_eq!(b.consumed(), 14);

        let mut b = LineBuffer::new(4);
        b.push(b"123");
        assert_eq!(drain(&mut b), Vec::<String>::new());
        b.push(b"45");
        assert_eq!(drain(&mut b), ["<too long>"]);
        assert_eq!(b.consumed(), 0);
        b.push(b"6789");
        assert_eq!(drain(&mut b), Vec::<String>::new());
        assert!(b.buf.is_empty());
        b.push(b"0\nok\n");
        assert_eq!(drain(&mut b), ["ok"]);
        assert_eq!(b.consumed(), 14);
    }
}
