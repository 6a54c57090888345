//! "Why is my build waiting?" — the most asked question about any build queue. For a queued
//! build, the first reason each online slave cannot take it, summed up in one sentence.

/// What a project asks of a slave.
pub struct Needs<'a> {
    pub architecture: Option<&'a str>,
    pub allow_emulation: bool,
    pub tags: &'a [String],
    pub max_running: Option<i32>,
    pub running: i64,
}

/// An online slave as the dispatcher sees it.
pub struct Offer<'a> {
    pub name: &'a str,
    pub arch: &'a str,
    pub emulates: &'a [String],
    pub tags: &'a [String],
    pub capacity: u32,
    pub active: u32,
    pub draining: bool,
}

enum Why<'a> {
    Arch,
    Tag(&'a str),
    Draining,
    Busy,
}

fn first_reason<'a>(n: &Needs<'a>, s: &Offer<'a>) -> Option<Why<'a>> {
    if let Some(a) = n.architecture {
        let emulated = n.allow_emulation && s.emulates.iter().any(|e| e == a);
        if s.arch != a && !emulated {
            return Some(Why::Arch);
        }
    }
    if let Some(t) = n.tags.iter().find(|t| !s.tags.contains(t)) {
        return Some(Why::Tag(t));
    }
    if s.draining {
        return Some(Why::Draining);
    }
    if s.active >= s.capacity {
        return Some(Why::Busy);
    }
    None
}

/// One sentence saying why the build cannot start now.
pub fn why_waiting(n: &Needs, slaves: &[Offer]) -> String {
    if let Some(max) = n.max_running {
        if n.running >= i64::from(max) {
            return format!("the project's limit of {max} running build(s) is reached");
        }
    }
    if slaves.is_empty() {
        return "no slave is online".into();
    }
    let reasons: Vec<(&Offer, Option<Why>)> =
        slaves.iter().map(|s| (s, first_reason(n, s))).collect();
    if reasons.iter().all(|(_, r)| matches!(r, Some(Why::Arch))) {
        let a = n.architecture.unwrap_or("?");
        return if n.allow_emulation {
            format!("no online slave can build {a}, natively or emulated")
        } else {
            format!("no online slave is {a} (the project does not allow emulation)")
        };
    }
    let missing: Vec<&str> = reasons
        .iter()
        .filter_map(|(_, r)| match r {
            Some(Why::Tag(t)) => Some(*t),
            _ => None,
        })
        .collect();
    let usable = reasons
        .iter()
        .filter(|(_, r)| !matches!(r, Some(Why::Arch) | Some(Why::Tag(_))))
        .count();
    if usable == 0 {
        let mut tags: Vec<&str> = missing.clone();
        tags.sort();
        tags.dedup();
        return format!("no online slave with tag {}", tags.join(" or "));
    }
    let busy = reasons
        .iter()
        .filter(|(_, r)| matches!(r, Some(Why::Busy)))
        .count();
    let draining = reasons
        .iter()
        .filter(|(_, r)| matches!(r, Some(Why::Draining)))
        .count();
    if busy + draining == usable {
        let names: Vec<&str> = reasons
            .iter()
            .filter(|(_, r)| matches!(r, Some(Why::Busy) | Some(Why::Draining)))
            .map(|(s, _)| s.name)
            .collect();
        if draining == usable {
            return format!("every matching slave is draining ({})", names.join(", "));
        }
        return format!("every matching slave is busy ({})", names.join(", "));
    }
    "waiting for its turn: builds of higher priority or of other projects go first".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s<'a>(name: &'a str, arch: &'a str, tags: &'a [String], active: u32) -> Offer<'a> {
        Offer {
            name,
            arch,
            emulates: &[],
            tags,
            capacity: 1,
            active,
            draining: false,
        }
    }

    #[test]
    fn reasons_read_like_answers() {
        let none: Vec<String> = vec![];
        let imx6 = vec!["imx6".to_string()];
        let needs = |arch, tags: &'static [String]| Needs {
            architecture: arch,
            allow_emulation: false,
            tags,
            max_running: None,
            running: 0,
        };
        static IMX6: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        let want_imx6 = IMX6.get_or_init(|| vec!["imx6".into()]);
        assert_eq!(why_waiting(&needs(None, &[]), &[]), "no slave is online");
        assert_eq!(
            why_waiting(&needs(None, want_imx6), &[s("a", "amd64", &none, 0)]),
            "no online slave with tag imx6"
        );
        assert_eq!(
            why_waiting(&needs(Some("arm64"), &[]), &[s("a", "amd64", &none, 0)]),
            "no online slave is arm64 (the project does not allow emulation)"
        );
        assert_eq!(
            why_waiting(
                &needs(None, want_imx6),
                &[s("a", "amd64", &none, 0), s("b", "amd64", &imx6, 1)]
            ),
            "every matching slave is busy (b)"
        );
        let mut n = needs(None, &[]);
        n.max_running = Some(1);
        n.running = 1;
        assert!(why_waiting(&n, &[s("a", "amd64", &none, 0)]).contains("limit of 1"));
    }

    #[test]
    fn emulation_counts_when_allowed() {
        let none: Vec<String> = vec![];
        let emu = vec!["arm64".to_string()];
        let slave = Offer {
            name: "x",
            arch: "amd64",
            emulates: &emu,
            tags: &none,
            capacity: 1,
            active: 1,
            draining: false,
        };
        let n = Needs {
            architecture: Some("arm64"),
            allow_emulation: true,
            tags: &[],
            max_running: None,
            running: 0,
        };
        assert_eq!(
            why_waiting(&n, &[slave]),
            "every matching slave is busy (x)"
        );
    }
}
