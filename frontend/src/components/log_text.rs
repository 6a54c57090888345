//! What a log line shows, and finding things in a log: a carriage return overwrites the line as
//! a terminal would, ANSI colour carries from line to line, search (text or regex, incremental
//! over a 50,000-line buffer) and the first line that looks like an error. Pure, tested natively.

use super::ansi::{self, Style};
use std::borrow::Cow;

/// The line as a terminal leaves it: each `\r` moves back to the start of the line and what
/// follows overwrites what was there (`10%\r20%\r30%` → `30%`); `ESC[K` / `ESC[2K` erase.
/// Escape sequences take no column; the ones before an overwritten character stay, so a colour
/// started there still applies after it.
pub fn overwrite_cr(line: &str) -> Cow<'_, str> {
    if !line.contains('\r') {
        return Cow::Borrowed(line);
    }
    // (escape sequences before the character, the character)
    let mut cells: Vec<(String, char)> = vec![];
    let mut pending = String::new();
    let mut cursor = 0usize;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => cursor = 0,
            '\u{1b}' if chars.peek() == Some(&'[') => {
                chars.next();
                let mut seq = String::from("\u{1b}[");
                let mut last = None;
                for d in chars.by_ref() {
                    seq.push(d);
                    if d.is_ascii_alphabetic() {
                        last = Some(d);
                        break;
                    }
                }
                if last == Some('K') {
                    let param = &seq[2..seq.len() - 1];
                    match param {
                        "2" => cells.clear(),
                        "1" => {
                            for cell in cells.iter_mut().take(cursor) {
                                cell.1 = ' ';
                            }
                        }
                        _ => cells.truncate(cursor),
                    }
                    cursor = cursor.min(cells.len());
                } else {
                    pending.push_str(&seq);
                }
            }
            c => {
                if cursor < cells.len() {
                    cells[cursor].0.push_str(&pending);
                    cells[cursor].1 = c;
                } else {
                    while cells.len() < cursor {
                        cells.push((String::new(), ' '));
                    }
                    cells.push((std::mem::take(&mut pending), c));
                }
                pending.clear();
                cursor += 1;
            }
        }
    }
    let mut out = String::with_capacity(line.len());
    for (esc, c) in cells {
        out.push_str(&esc);
        out.push(c);
    }
    out.push_str(&pending);
    Cow::Owned(out)
}

/// The text a line shows: carriage returns applied, escape sequences gone. Byte offsets of
/// search matches are offsets in this text.
pub fn plain(line: &str) -> Cow<'_, str> {
    let line = overwrite_cr(line);
    if !line.contains('\u{1b}') {
        return line;
    }
    // What `ansi::parse` keeps: everything but `ESC [ … letter`.
    let mut out = String::with_capacity(line.len());
    let mut rest: &str = &line;
    while let Some(at) = rest.find("\u{1b}[") {
        out.push_str(&rest[..at]);
        rest = &rest[at + 2..];
        match rest.find(|c: char| c.is_ascii_alphabetic()) {
            Some(end) => rest = &rest[end + 1..],
            None => rest = "",
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// How many lines apart the colour at a line's start is remembered.
const EVERY: usize = 256;

/// The colour each line starts in, carried over from the lines before (a `\x1b[31m` on one line
/// colours the next ones until a reset). Remembered every [`EVERY`] lines and worked out from
/// there, so a render costs at most that many lines; brought up to date as lines are appended,
/// worked out again when lines were put before the first one.
#[derive(Default)]
pub struct AnsiCarry {
    /// The style at the start of line `k * EVERY`.
    marks: Vec<Style>,
    /// The style after the last line seen, and how many were seen.
    end: Style,
    seen: usize,
    /// The first line's sequence number when the marks were made.
    start: u64,
}

impl AnsiCarry {
    /// Takes in the lines appended since the last call (all of them again if `start` moved).
    pub fn update(&mut self, lines: &[String], start: u64) {
        if start != self.start || lines.len() < self.seen {
            *self = AnsiCarry {
                start,
                ..AnsiCarry::default()
            };
        }
        for line in &lines[self.seen..] {
            if self.seen.is_multiple_of(EVERY) {
                self.marks.push(self.end.clone());
            }
            if line.contains('\u{1b}') {
                self.end = ansi::end_style(line, self.end.clone());
            }
            self.seen += 1;
        }
    }

    /// The style line `i` starts in (lines not yet taken in start plain).
    pub fn at(&self, lines: &[String], i: usize) -> Style {
        if i >= self.seen {
            return Style::default();
        }
        let k = i / EVERY;
        let mut style = self.marks[k].clone();
        for line in &lines[k * EVERY..i] {
            if line.contains('\u{1b}') {
                style = ansi::end_style(line, style);
            }
        }
        style
    }
}

/// Lines that usually say why a build failed: the slave's own rule (its first such line
/// becomes the failure reason).
pub use kiln_shared::log_rules::looks_like_error;

/// The index of the first line that looks like an error (by the text it shows).
pub fn first_error(lines: &[String]) -> Option<usize> {
    lines.iter().position(|l| looks_like_error(&plain(l)))
}

/// What is searched for.
pub enum Pattern {
    /// ASCII text, ignoring case.
    Text(String),
    /// Other text, ignoring case (compared lowercased, a character at a time).
    Unicode(Vec<char>),
    Regex(super::regex::Regex),
}

impl Pattern {
    /// `None` for an empty query; an error message for a bad regex.
    pub fn new(query: &str, regex: bool) -> Result<Option<Pattern>, String> {
        if query.is_empty() {
            return Ok(None);
        }
        if regex {
            super::regex::Regex::new(query).map(|r| Some(Pattern::Regex(r)))
        } else if query.is_ascii() {
            Ok(Some(Pattern::Text(query.to_ascii_lowercase())))
        } else {
            Ok(Some(Pattern::Unicode(query.chars().map(lower).collect())))
        }
    }

    /// The byte ranges of the matches in `text`, in order, none empty.
    pub fn find(&self, text: &str, out: &mut Vec<(usize, usize)>) {
        match self {
            Pattern::Text(needle) => {
                let (h, n) = (text.as_bytes(), needle.as_bytes());
                if n.len() > h.len() {
                    return;
                }
                let first = n[0];
                let mut i = 0;
                while i + n.len() <= h.len() {
                    if h[i].to_ascii_lowercase() == first
                        && h[i..i + n.len()]
                            .iter()
                            .zip(n)
                            .all(|(a, b)| a.to_ascii_lowercase() == *b)
                    {
                        out.push((i, i + n.len()));
                        i += n.len();
                    } else {
                        i += 1;
                    }
                }
            }
            Pattern::Unicode(needle) => {
                let h: Vec<(usize, char)> =
                    text.char_indices().map(|(i, c)| (i, lower(c))).collect();
                let mut i = 0;
                while i + needle.len() <= h.len() {
                    if h[i..i + needle.len()]
                        .iter()
                        .map(|x| x.1)
                        .eq(needle.iter().copied())
                    {
                        let j = i + needle.len();
                        out.push((h[i].0, h.get(j).map_or(text.len(), |x| x.0)));
                        i = j;
                    } else {
                        i += 1;
                    }
                }
            }
            Pattern::Regex(r) => r.find_into(text, out),
        }
    }
}

fn lower(c: char) -> char {
    c.to_lowercase().next().unwrap_or(c)
}

/// One match: the line's index in the buffer and a byte range of its shown text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    pub line: usize,
    pub from: usize,
    pub to: usize,
}

/// A search over a growing buffer, done a slice at a time so a 50,000-line log never blocks the
/// page: [`Search::step`] goes on from where it stopped, and new lines are searched as they come.
pub struct Search {
    pattern: Pattern,
    pub hits: Vec<Hit>,
    /// The next line to search.
    pub next: usize,
    /// The first line's sequence number when the search started (earlier lines put on top
    /// shift every index: the search starts over).
    pub start: u64,
}

impl Search {
    pub fn new(pattern: Pattern, start: u64) -> Search {
        Search {
            pattern,
            hits: vec![],
            next: 0,
            start,
        }
    }

    /// Searches up to `budget` more lines; true when every line held was searched.
    pub fn step(&mut self, lines: &[String], budget: usize) -> bool {
        let end = lines.len().min(self.next + budget);
        let mut found = vec![];
        for (i, line) in lines.iter().enumerate().take(end).skip(self.next) {
            found.clear();
            self.pattern.find(&plain(line), &mut found);
            self.hits
                .extend(found.iter().map(|&(from, to)| Hit { line: i, from, to }));
        }
        self.next = end;
        self.next >= lines.len()
    }

    /// The matches on line `i` (the hits are in line order).
    pub fn on_line(&self, i: usize) -> &[Hit] {
        let a = self.hits.partition_point(|h| h.line < i);
        let b = self.hits.partition_point(|h| h.line <= i);
        &self.hits[a..b]
    }

    /// The first match at or after line `i` (wrapping), for the first jump of a new search.
    pub fn first_from(&self, i: usize) -> Option<usize> {
        if self.hits.is_empty() {
            return None;
        }
        let k = self.hits.partition_point(|h| h.line < i);
        Some(if k == self.hits.len() { 0 } else { k })
    }
}

/// "3 of 17"; "0 of 17" before the first jump; "no matches"; "… so far" while searching.
pub fn match_text(current: Option<usize>, total: usize, done: bool) -> String {
    let so_far = if done { "" } else { " so far" };
    match (total, current) {
        (0, _) if done => "no matches".into(),
        (0, _) => "searching…".into(),
        (n, Some(c)) => format!("{} of {n}{so_far}", c + 1),
        (n, None) => format!("{n} matches{so_far}"),
    }
}

/// The next (or previous) match, wrapping around.
pub fn step_match(current: Option<usize>, total: usize, back: bool) -> Option<usize> {
    if total == 0 {
        return None;
    }
    Some(match (current, back) {
        (None, false) => 0,
        (None, true) => total - 1,
        (Some(c), false) => (c + 1) % total,
        (Some(c), true) => (c + total - 1) % total,
    })
}

/// Splits styled runs (whose texts make the shown line) at the match ranges: each piece says
/// whether it is part of a match and which one (its index in `hits`).
pub fn split_runs(
    runs: Vec<(Style, String)>,
    hits: &[(usize, usize)],
) -> Vec<(Style, String, Option<usize>)> {
    if hits.is_empty() {
        return runs.into_iter().map(|(s, t)| (s, t, None)).collect();
    }
    let mut out = vec![];
    let mut pos = 0usize;
    for (style, text) in runs {
        let (a, b) = (pos, pos + text.len());
        let mut cut = a;
        for (k, &(from, to)) in hits.iter().enumerate() {
            let (from, to) = (from.max(a), to.min(b));
            if from >= to {
                continue;
            }
            if from > cut {
                out.push((style.clone(), text[cut - a..from - a].to_string(), None));
            }
            out.push((style.clone(), text[from - a..to - a].to_string(), Some(k)));
            cut = to;
        }
        if cut < b {
            out.push((style.clone(), text[cut - a..].to_string(), None));
        }
        pos = b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_carriage_return_overwrites_the_line_like_a_terminal() {
        assert_eq!(overwrite_cr("10%\r20%\r30%"), "30%");
        assert_eq!(overwrite_cr("no return"), "no return");
        assert_eq!(overwrite_cr("downloading\rdone"), "doneloading");
        assert_eq!(overwrite_cr("working 50%\r\u{1b}[2Kdone"), "done");
        assert_eq!(overwrite_cr("working 50%\r\u{1b}[Kok"), "ok");
        assert_eq!(overwrite_cr("progress 30%\r"), "progress 30%");
        // A colour before overwritten text still applies.
        assert_eq!(plain("\u{1b}[32m10%\r\u{1b}[32m99%\u{1b}[0m"), "99%");
        let runs = ansi::parse(&overwrite_cr("\u{1b}[32m10%\r99%"));
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].0.fg, Some(2));
        assert_eq!(runs[0].1, "99%");
    }

    #[test]
    fn colour_carries_from_line_to_line() {
        let mut buf = lines(&["\u{1b}[31mred starts", "still red", "\u{1b}[0mplain", "x"]);
        for i in 0..600 {
            buf.push(format!("filler {i}"));
        }
        buf.push("\u{1b}[1;34mblue".into());
        buf.push("after blue".into());
        let mut carry = AnsiCarry::default();
        carry.update(&buf[..300], 0);
        assert_eq!(carry.at(&buf, 1).fg, Some(1));
        assert_eq!(carry.at(&buf, 3).fg, None);
        // Lines appended later are taken in from where it stopped.
        carry.update(&buf, 0);
        let last = buf.len() - 1;
        assert_eq!(
            carry.at(&buf, last),
            Style {
                fg: Some(4),
                bold: true
            }
        );
        assert_eq!(carry.at(&buf, 500).fg, None);
        // Earlier lines put on top: worked out again.
        let mut more = lines(&["\u{1b}[33myellow"]);
        more.extend(buf.iter().cloned());
        carry.update(&more, 0u64.wrapping_sub(1));
        assert_eq!(carry.at(&more, 1).fg, Some(3));
        assert_eq!(carry.at(&more, 2).fg, Some(1));
    }

    #[test]
    fn the_first_error_follows_the_slaves_rule() {
        let log = lines(&[
            "Get:1 http://deb.debian.org",
            "an error in the middle is not one",
            "\u{1b}[31mE: Unable to locate package nope\u{1b}[0m",
            "Error: later",
        ]);
        assert_eq!(first_error(&log), Some(2));
        assert!(looks_like_error("  fatal: not a git repository"));
        assert!(looks_like_error("write: No space left on device"));
        assert!(!looks_like_error("0 errors"));
        assert_eq!(first_error(&lines(&["ok", "fine"])), None);
    }

    #[test]
    fn search_ignores_case_goes_on_where_it_stopped_and_counts_every_match() {
        let mut buf: Vec<String> = (0..10_000).map(|i| format!("line {i}")).collect();
        buf[1234] = "the MARKER here and a marker there".into();
        buf[9000] = "\u{1b}[32mmarker\u{1b}[0m in colour".into();
        let mut s = Search::new(Pattern::new("Marker", false).unwrap().unwrap(), 0);
        assert!(!s.step(&buf, 5_000));
        assert_eq!(s.hits.len(), 2);
        assert!(s.step(&buf, 5_000));
        assert_eq!(
            s.hits,
            [
                Hit {
                    line: 1234,
                    from: 4,
                    to: 10
                },
                Hit {
                    line: 1234,
                    from: 22,
                    to: 28
                },
                Hit {
                    line: 9000,
                    from: 0,
                    to: 6
                },
            ]
        );
        assert_eq!(s.on_line(1234).len(), 2);
        assert!(s.on_line(1235).is_empty());
        assert_eq!(s.first_from(5_000), Some(2));
        assert_eq!(s.first_from(9_500), Some(0), "wraps");
        // Appended lines are searched next.
        buf.push("one more marker".into());
        assert!(!s.step(&buf[..buf.len() - 1], 10) || s.next == 10_000);
        assert!(s.step(&buf, 10));
        assert_eq!(s.hits.len(), 4);
    }

    #[test]
    fn regex_search_and_bad_regexes() {
        let p = Pattern::new(r"line \d+5$", true).unwrap().unwrap();
        let mut s = Search::new(p, 0);
        let buf: Vec<String> = (0..100).map(|i| format!("LINE {i}")).collect();
        assert!(s.step(&buf, 1_000));
        assert_eq!(s.hits.len(), 9);
        assert!(Pattern::new("(", true)
            .err()
            .is_some_and(|e| e.starts_with("bad regex: ")));
        assert!(Pattern::new("", true).unwrap().is_none());
        // Non-ASCII text ignores case too.
        let p = Pattern::new("ÉCHEC", false).unwrap().unwrap();
        let mut found = vec![];
        p.find("un échec", &mut found);
        assert_eq!(found, [(3, 9)]);
    }

    #[test]
    fn counts_and_moving_through_matches() {
        assert_eq!(match_text(Some(2), 17, true), "3 of 17");
        assert_eq!(match_text(None, 0, true), "no matches");
        assert_eq!(match_text(Some(0), 4, false), "1 of 4 so far");
        assert_eq!(step_match(None, 3, false), Some(0));
        assert_eq!(step_match(Some(2), 3, false), Some(0));
        assert_eq!(step_match(Some(0), 3, true), Some(2));
        assert_eq!(step_match(None, 0, true), None);
    }

    #[test]
    fn runs_are_split_at_matches() {
        let red = Style {
            fg: Some(1),
            bold: false,
        };
        let runs = vec![
            (Style::default(), "ab".to_string()),
            (red.clone(), "cdef".to_string()),
        ];
        let out = split_runs(runs, &[(1, 3), (4, 5)]);
        let texts: Vec<_> = out.iter().map(|(_, t, k)| (t.as_str(), *k)).collect();
        assert_eq!(
            texts,
            [
                ("a", None),
                ("b", Some(0)),
                ("c", Some(0)),
                ("d", None),
                ("e", Some(1)),
                ("f", None)
            ]
        );
        assert_eq!(out[2].0, red);
    }

    #[test]
    fn searching_50_000_lines_takes_little_time() {
        let buf: Vec<String> = (0..50_000)
            .map(|i| format!("\u{1b}[32mline\u{1b}[0m {i} of a long log with some text"))
            .collect();
        let t = std::time::Instant::now();
        let mut s = Search::new(Pattern::new("of a LONG", false).unwrap().unwrap(), 0);
        assert!(s.step(&buf, usize::MAX));
        assert_eq!(s.hits.len(), 50_000);
        let text_ms = t.elapsed().as_millis();
        let t = std::time::Instant::now();
        let mut s = Search::new(Pattern::new(r"line 4\d{4} ", true).unwrap().unwrap(), 0);
        assert!(s.step(&buf, usize::MAX));
        assert_eq!(s.hits.len(), 10_000);
        println!(
            "SEARCH 50000 lines: text {text_ms} ms, regex {} ms (native)",
            t.elapsed().as_millis()
        );
    }
}
