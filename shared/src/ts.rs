//! Timestamps on the wire: RFC 3339 text, as chrono writes it. Every `DateTime<Utc>` field of
//! the API and the frames goes through here (`#[serde(with = "crate::ts")]`, or
//! `crate::ts::option`). Natively it is chrono's own parser. In the browser it is
//! [`parse_rfc3339`], a few hundred bytes instead of chrono's general parser (about 12 KB of
//! the console's wasm budget): the console only ever reads what the master wrote.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    t.serialize(s)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        DateTime::<Utc>::deserialize(d)
    }
    #[cfg(target_arch = "wasm32")]
    {
        let s = String::deserialize(d)?;
        parse_rfc3339(&s).ok_or_else(|| {
            serde::de::Error::custom(format_args!("'{s}' is not an RFC 3339 timestamp"))
        })
    }
}

/// The same for `Option<DateTime<Utc>>` fields.
pub mod option {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        t.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        #[derive(Deserialize)]
        struct Ts(#[serde(with = "super")] DateTime<Utc>);
        Ok(Option::<Ts>::deserialize(d)?.map(|t| t.0))
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` (`t`, `T` or a space between date and time;
/// `z` or `Z`), as UTC; `None` for anything else.
pub fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<u32> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let sep = |at: usize, ok: &[u8]| b.get(at).is_some_and(|c| ok.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(num(0, 4)? as i32, num(5, 2)?, num(8, 2)?)?;
    let (h, m, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let mut i = 19;
    let mut nanos = 0u32;
    if sep(i, b".") {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..9 {
            nanos *= 10;
        }
    }
    let offset_secs: i64 = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&c @ (b'+' | b'-')) if i + 6 == b.len() && sep(i + 3, b":") => {
            let o = i64::from(num(i + 1, 2)? * 3600 + num(i + 4, 2)? * 60);
            if c == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    // A leap second (:60) is kept the way chrono keeps it.
    let t = if sec == 60 {
        date.and_hms_nano_opt(h, m, 59, 1_000_000_000 + nanos)?
    } else {
        date.and_hms_nano_opt(h, m, sec, nanos)?
    };
    let utc = t.and_utc() - chrono::Duration::seconds(offset_secs);
    Some(utc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{SecondsFormat, TimeZone};

    #[test]
    fn reads_what_chrono_writes_and_what_chrono_reads() {
        let mut t = Utc.with_ymd_and_hms(1999, 12, 31, 23, 59, 58).unwrap();
        for step in 0..2000i64 {
            t += chrono::Duration::nanoseconds(step * 987_654_321_123 + 7);
            for fmt in [
                SecondsFormat::Secs,
                SecondsFormat::Millis,
                SecondsFormat::Micros,
                SecondsFormat::Nanos,
                SecondsFormat::AutoSi,
            ] {
                let z = t.to_rfc3339_opts(fmt, true);
                let want: DateTime<Utc> = z.parse().unwrap();
                assert_eq!(parse_rfc3339(&z), Some(want), "{z}");
                let off = t
                    .with_timezone(&chrono::FixedOffset::west_opt(5 * 3600 + 1800).unwrap())
                    .to_rfc3339_opts(fmt, false);
                assert_eq!(parse_rfc3339(&off), Some(want), "{off}");
            }
            // serde's own form (what the master sends).
            let json = serde_json::to_string(&t).unwrap();
            let text: String = serde_json::from_str(&json).unwrap();
            assert_eq!(parse_rfc3339(&text), Some(t), "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_timestamp() {
        for bad in [
            "",
            "2026-11-26",
            "2026-11-26T10:00:00",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-26T24:00:00Z",
            "2026-11-26T10:00:00.Z",
            "2026-11-26T10:00:00Zjunk",
            "2026-11-26T10:00:00+0100",
            "20x6-11-26T10:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn fields_round_trip_through_json() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct S {
            #[serde(with = "super")]
            a: DateTime<Utc>,
            #[serde(default, with = "super::option")]
            b: Option<DateTime<Utc>>,
        }
        let v = S {
            a: Utc.with_ymd_and_hms(2026, 11, 26, 17, 0, 0).unwrap(),
            b: Some(Utc.with_ymd_and_hms(2026, 11, 27, 1, 2, 3).unwrap()),
        };
        let j = serde_json::to_string(&v).unwrap();
        assert_eq!(serde_json::from_str::<S>(&j).unwrap(), v);
        let none: S = serde_json::from_str(r#"{"a":"2026-11-26T17:00:00Z"}"#).unwrap();
        assert_eq!(none.b, None);
        let null: S = serde_json::from_str(r#"{"a":"2026-11-26T17:00:00Z","b":null}"#).unwrap();
        assert_eq!(null.b, None);
    }
}
