//! ANSI colour codes (SGR) in log lines → styled spans. Pure, tested natively.

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Style {
    pub fg: Option<u8>,
    pub bold: bool,
}

/// Splits a line into (style, text) runs; unknown escape sequences are dropped.
#[cfg(test)]
pub fn parse(line: &str) -> Vec<(Style, String)> {
    parse_from(line, Style::default())
}

/// [`parse`] for a line that starts in `style` (the colour the lines before it left on).
pub fn parse_from(line: &str, style: Style) -> Vec<(Style, String)> {
    let mut out = vec![];
    let mut style = style;
    let mut text = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            let mut code = String::new();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    if d == 'm' {
                        if !text.is_empty() {
                            out.push((style.clone(), std::mem::take(&mut text)));
                        }
                        apply(&mut style, &code);
                    }
                    break;
                }
                code.push(d);
            }
        } else {
            text.push(c);
        }
    }
    if !text.is_empty() {
        out.push((style, text));
    }
    out
}

/// The style a line leaves on for the next one, starting in `style`.
pub fn end_style(line: &str, mut style: Style) -> Style {
    let mut rest = line;
    while let Some(at) = rest.find("\u{1b}[") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find(|c: char| c.is_ascii_alphabetic()) else {
            break;
        };
        if rest[end..].starts_with('m') {
            apply(&mut style, &rest[..end]);
        }
        rest = &rest[end + 1..];
    }
    style
}

fn apply(style: &mut Style, code: &str) {
    for part in code.split(';') {
        match part.parse::<u8>().unwrap_or(0) {
            0 => *style = Style::default(),
            1 => style.bold = true,
            22 => style.bold = false,
            n @ 30..=37 => style.fg = Some(n - 30),
            n @ 90..=97 => style.fg = Some(n - 90 + 8),
            39 => style.fg = None,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_and_resets() {
        let runs = parse("plain \u{1b}[1;31mred bold\u{1b}[0m back");
        assert_eq!(runs[0], (Style::default(), "plain ".into()));
        assert_eq!(
            runs[1],
            (
                Style {
                    fg: Some(1),
                    bold: true
                },
                "red bold".into()
            )
        );
        assert_eq!(runs[2], (Style::default(), " back".into()));
        assert_eq!(
            parse("\u{1b}[2Kclear"),
            vec![(Style::default(), "clear".into())]
        );
        assert!(parse("").is_empty());
    }

    #[test]
    fn a_line_leaves_its_colour_on_for_the_next() {
        let red = Style {
            fg: Some(1),
            bold: false,
        };
        assert_eq!(end_style("\u{1b}[31mred", Style::default()), red);
        assert_eq!(end_style("no codes", red.clone()), red);
        assert_eq!(
            end_style("\u{1b}[2Kx\u{1b}[0m", red.clone()),
            Style::default()
        );
        assert_eq!(
            parse_from("still red", red.clone()),
            vec![(red, "still red".into())]
        );
    }
}
