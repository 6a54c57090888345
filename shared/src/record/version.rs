//! Debian version comparison, as `dpkg --compare-versions` does it (epoch, upstream version,
//! Debian revision; `~` sorts before everything, letters before non-letters).

use std::cmp::Ordering;

/// Compares two Debian versions.
///
/// `[epoch:]upstream[-revision]`: the epoch is everything before the first `:` (0 when there is
/// none), the revision everything after the last `-` (empty when there is none, which compares
/// equal to `0`). Each part is compared like dpkg's `verrevcmp`: alternating runs of non-digits
/// (character by character, `~` lowest, then the end of the string, then letters, then every
/// other character) and digits (numerically, of any length). Malformed versions are compared
/// by the same rules rather than rejected, so the order is total.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split(a.trim());
    let (eb, ub, rb) = split(b.trim());
    verrevcmp(ea, eb)
        .then_with(|| verrevcmp(ua, ub))
        .then_with(|| verrevcmp(ra, rb))
}

/// `(epoch, upstream, revision)`.
fn split(v: &str) -> (&str, &str, &str) {
    let (epoch, rest) = match v.find(':') {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => ("0", v),
    };
    let (upstream, revision) = match rest.rfind('-') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    (epoch, upstream, revision)
}

/// The weight of a character in a non-digit run (`None` is the end of the string).
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        Some(c) => i32::from(c) + 256,
    }
}

fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        // Non-digit run.
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let (ac, bc) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        // Digit run: leading zeros do not count, then the longer run is the larger number,
        // then the first differing digit decides.
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        let (si, sj) = (i, j);
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let (da, db) = (&a[si..i], &b[sj..j]);
        match da.len().cmp(&db.len()).then_with(|| da.cmp(db)) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};

    fn check(a: &str, b: &str, want: Ordering) {
        assert_eq!(compare(a, b), want, "{a} vs {b}");
        assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
    }

    #[test]
    fn basic_numeric() {
        check("1.0", "1.0.1", Less);
        check("1.0", "1.0", Equal);
        check("1.2", "1.10", Less);
        check("2", "10", Less);
        check("0", "", Equal);
    }

    #[test]
    fn tilde_sorts_first() {
        check("1.0~rc1", "1.0", Less);
        check("1.0~rc1", "1.0~rc2", Less);
        check("1.0~~", "1.0~", Less);
        check("1.0~~a", "1.0~", Less);
        check("1.0~", "1.0", Less);
        check("1.0~rc1-1", "1.0-1", Less);
    }

    #[test]
    fn epochs() {
        check("1:0.1", "2.0", Greater);
        check("0:2.0", "2.0", Equal);
        check("1:1.0", "2:0.1", Less);
        check("10:1", "9:1", Greater);
        check("00:1", "0:1", Equal);
    }

    #[test]
    fn revisions() {
        check("2.36-9+deb12u4", "2.36-9+deb12u10", Less);
        check("7.88.1-10+deb12u5", "7.88.1-10+deb12u12", Less);
        check("1.0-1", "1.0-1.1", Less);
        check("1.0-1", "1.0-2", Less);
        check("1.0", "1.0-0", Equal);
        check("1.0-1", "1.0", Greater);
        // Only the last hyphen starts the revision.
        check("1.0-beta-2", "1.0-beta-10", Less);
        check("2.0-1", "1.0-9", Greater);
    }

    #[test]
    fn letters_and_other_characters() {
        check("1.0a", "1.0", Greater);
        check("1.0a", "1.0b", Less);
        check("1.0a", "1.0+", Less);
        check("1.0+", "1.0.", Less);
        check("1.0Z", "1.0a", Less);
        check("1.0+dfsg", "1.0", Greater);
        check("1.0.", "1.0", Greater);
    }

    #[test]
    fn leading_zeros() {
        check("1.01", "1.1", Equal);
        check("1.001", "1.1", Equal);
        check("1.00", "1.0", Equal);
        check("1.010", "1.9", Greater);
        check("01:1", "1:1", Equal);
    }

    #[test]
    fn long_digit_runs() {
        check(
            "1.123456789012345678901234567890",
            "1.123456789012345678901234567891",
            Less,
        );
        check("99999999999999999999999", "100000000000000000000000", Less);
        check("18446744073709551616", "18446744073709551615", Greater);
        check("000018446744073709551616", "18446744073709551616", Equal);
        check("1:18446744073709551616", "18446744073709551617", Greater);
    }

    #[test]
    fn realistic() {
        check("2.36-9+deb12u4", "2.36-9+deb12u4", Equal);
        check("1:2.38.1-5+deb12u1", "2.38.1-5+deb12u1", Greater);
        check("252.22-1~deb12u1", "252.22-1", Less);
        check("6.1.0-18", "6.1.0-9", Greater);
        check("3.0.11-1~deb12u2", "3.0.13-1~deb12u1", Less);
        check("5.2.15-2+b2", "5.2.15-2", Greater);
        check("1.2.13.dfsg-1", "1.2.13-1", Greater);
    }

    #[test]
    fn total_order_is_consistent() {
        let mut v = vec![
            "1.0", "1.0~rc1", "1:0.1", "1.0a", "1.0-1", "1.0-1.1", "0.9", "1.0+b1", "1.0.1", "2.0",
            "1.0~",
        ];
        v.sort_by(|a, b| compare(a, b));
        assert_eq!(
            v,
            vec![
                "0.9", "1.0~", "1.0~rc1", "1.0", "1.0-1", "1.0-1.1", "1.0a", "1.0+b1", "1.0.1",
                "2.0", "1:0.1"
            ]
        );
    }
}
