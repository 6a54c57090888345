//! Whether a slave can run a build, in one place. The dispatcher's choices ([`plan`]) and every
//! queued build's waiting reason ([`why_waiting`]) are both derived from [`refusal`], so "why is
//! my build waiting?" always names the rule that keeps it from running.

use std::collections::HashMap;

/// What a project asks of a slave (all builds of a project ask the same).
#[derive(Clone, Debug)]
pub struct Needs<'a> {
    pub architecture: Option<&'a str>,
    pub allow_emulation: bool,
    pub tags: &'a [String],
    /// The backend its `kiln.toml` uses, when the project names it.
    pub backend: Option<&'a str>,
    pub max_running: Option<i32>,
    /// The project's builds dispatched or running now.
    pub running: i64,
}

impl Needs<'_> {
    fn at_limit(&self, running: i64) -> bool {
        self.max_running.is_some_and(|m| running >= i64::from(m))
    }
}

/// A connected slave as the dispatcher sees it.
#[derive(Clone, Debug)]
pub struct Offer<'a> {
    pub name: &'a str,
    pub arch: &'a str,
    pub emulates: &'a [String],
    pub tags: &'a [String],
    pub backends: &'a [String],
    pub capacity: u32,
    /// Builds it holds now.
    pub active: u32,
    /// Disabled by an admin: it stays connected and finishes what it holds, but gets nothing new.
    pub disabled: bool,
    pub draining: bool,
    /// Heard from within two heartbeats: a slave that went quiet gets no new builds.
    pub heard_recently: bool,
}

/// Why a slave cannot take a build now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why<'a> {
    /// Neither its architecture nor (where the project allows it) one it emulates.
    Arch,
    /// It lacks this tag of the project's.
    Tag(&'a str),
    /// It does not run the project's backend.
    Backend(&'a str),
    /// An admin disabled it.
    Disabled,
    Draining,
    /// Not heard from within two heartbeats.
    Silent,
    /// All its slots are taken.
    Busy,
}

impl Why<'_> {
    /// The slave could never take it (as opposed to: not now).
    fn is_capability(self) -> bool {
        matches!(self, Why::Arch | Why::Tag(_) | Why::Backend(_))
    }
}

/// The first reason slave `s` cannot take a build needing `n` now; `None`: it can. The one rule
/// of matching: what the project needs (architecture, natively or emulated; every tag; the
/// backend), then whether the slave takes work now (enabled, not draining, heard from, a free
/// slot).
pub fn refusal<'a>(n: &Needs<'a>, s: &Offer<'_>) -> Option<Why<'a>> {
    if let Some(a) = n.architecture {
        let emulated = n.allow_emulation && s.emulates.iter().any(|e| e == a);
        if s.arch != a && !emulated {
            return Some(Why::Arch);
        }
    }
    if let Some(t) = n.tags.iter().find(|t| !s.tags.contains(t)) {
        return Some(Why::Tag(t));
    }
    if let Some(b) = n.backend {
        if !s.backends.iter().any(|x| x == b) {
            return Some(Why::Backend(b));
        }
    }
    if s.disabled {
        return Some(Why::Disabled);
    }
    if s.draining {
        return Some(Why::Draining);
    }
    if !s.heard_recently {
        return Some(Why::Silent);
    }
    if s.active >= s.capacity {
        return Some(Why::Busy);
    }
    None
}

/// One sentence saying why a build needing `n` cannot start now on any of `slaves`.
pub fn why_waiting(n: &Needs, slaves: &[Offer]) -> String {
    if n.at_limit(n.running) {
        let max = n.max_running.unwrap_or_default();
        return format!("the project's limit of {max} running build(s) is reached");
    }
    if slaves.is_empty() {
        return "no slave is online".into();
    }
    let reasons: Vec<(&Offer, Option<Why>)> = slaves.iter().map(|s| (s, refusal(n, s))).collect();
    if reasons.iter().all(|(_, r)| matches!(r, Some(Why::Arch))) {
        let a = n.architecture.unwrap_or("?");
        return if n.allow_emulation {
            format!("no online slave can build {a}, natively or emulated")
        } else {
            format!("no online slave is {a} (the project does not allow emulation)")
        };
    }
    if reasons
        .iter()
        .all(|(_, r)| r.is_some_and(Why::is_capability))
    {
        let mut tags: Vec<&str> = reasons
            .iter()
            .filter_map(|(_, r)| match r {
                Some(Why::Tag(t)) => Some(*t),
                _ => None,
            })
            .collect();
        tags.sort();
        tags.dedup();
        let backend = reasons.iter().find_map(|(_, r)| match r {
            Some(Why::Backend(b)) => Some(*b),
            _ => None,
        });
        return match (tags.is_empty(), backend) {
            (false, None) => format!("no online slave with tag {}", tags.join(" or ")),
            (true, Some(b)) => format!("no online slave has the {b} backend"),
            (false, Some(b)) => format!(
                "no online slave with tag {} has the {b} backend",
                tags.join(" or ")
            ),
            (true, None) => "no online slave matches the project".into(),
        };
    }
    let usable: Vec<&(&Offer, Option<Why>)> = reasons
        .iter()
        .filter(|(_, r)| !r.is_some_and(Why::is_capability))
        .collect();
    if usable.iter().all(|(_, r)| r.is_some()) {
        let names = |w: Why| -> Vec<&str> {
            usable
                .iter()
                .filter(|(_, r)| *r == Some(w))
                .map(|(s, _)| s.name)
                .collect()
        };
        let (disabled, draining, silent) = (
            names(Why::Disabled),
            names(Why::Draining),
            names(Why::Silent),
        );
        if disabled.len() == usable.len() {
            return format!(
                "every matching slave is disabled ({}); an admin can enable it",
                disabled.join(", ")
            );
        }
        if draining.len() == usable.len() {
            return format!("every matching slave is draining ({})", draining.join(", "));
        }
        if silent.len() == usable.len() {
            return format!(
                "every matching slave has gone quiet ({}); waiting for it to be heard from",
                silent.join(", ")
            );
        }
        let busy = names(Why::Busy);
        if busy.len() == usable.len() {
            return format!("every matching slave is busy ({})", busy.join(", "));
        }
        // A mix: each slave with what keeps it from taking the build.
        let all: Vec<String> = usable
            .iter()
            .map(|(s, r)| {
                let why = match r {
                    Some(Why::Disabled) => "disabled",
                    Some(Why::Draining) => "draining",
                    Some(Why::Silent) => "quiet",
                    _ => "busy",
                };
                format!("{}: {why}", s.name)
            })
            .collect();
        return format!("no matching slave can take it now ({})", all.join(", "));
    }
    "waiting for its turn: builds of higher priority or of other projects go first".into()
}

/// A queued build as the dispatcher sees it.
#[derive(Clone, Debug)]
pub struct Queued<'a> {
    pub id: i64,
    pub project: i64,
    pub priority: i32,
    /// When its project last had a build dispatched (`None`: never); the project served longest
    /// ago goes first among equal priorities.
    pub last_served: Option<chrono::DateTime<chrono::Utc>>,
    pub needs: Needs<'a>,
    /// Index (into the round's slaves) of the slave that took its project's last build.
    pub warm: Option<usize>,
}

/// One dispatch round, decided in memory: which queued build goes to which slave (by index into
/// `slaves`). Builds go out in queue order: higher priority first; then the project served
/// longest ago (a project that just got a build goes behind the others, so one project's 50
/// builds do not starve another's one); then first in, first out. A project never goes past its
/// `max_running`. Each build goes to its project's warm slave (the one that took its last build,
/// whose package and git caches hold what it needs) when that slave can take it now, else to the
/// first slave that can.
pub fn plan(queued: &[Queued], slaves: &[Offer]) -> Vec<(i64, usize)> {
    // Fairness rank per project: never served first, then by when it was last served.
    let mut served: Vec<_> = queued.iter().map(|q| q.last_served).collect();
    served.sort();
    served.dedup();
    let mut rank: HashMap<i64, usize> = queued
        .iter()
        .map(|q| (q.project, served.binary_search(&q.last_served).unwrap_or(0)))
        .collect();
    let mut next_rank = served.len();
    let mut running: HashMap<i64, i64> = queued
        .iter()
        .map(|q| (q.project, q.needs.running))
        .collect();
    let mut slaves: Vec<Offer> = slaves.to_vec();
    let mut taken = vec![false; queued.len()];
    let mut out = vec![];
    loop {
        // A project's builds all ask the same, so where one of them would go is decided once.
        let mut goes_to: HashMap<i64, Option<usize>> = HashMap::new();
        let pick = (0..queued.len())
            .filter(|&i| !taken[i])
            .filter(|&i| !queued[i].needs.at_limit(running[&queued[i].project]))
            .filter_map(|i| {
                let q = &queued[i];
                let si = *goes_to
                    .entry(q.project)
                    .or_insert_with(|| slave_for(q, &slaves));
                si.map(|si| (i, si))
            })
            .min_by_key(|&(i, _)| {
                let q = &queued[i];
                (std::cmp::Reverse(q.priority), rank[&q.project], q.id)
            });
        let Some((i, si)) = pick else { break };
        let q = &queued[i];
        taken[i] = true;
        out.push((q.id, si));
        slaves[si].active += 1;
        *running.get_mut(&q.project).expect("every project counted") += 1;
        rank.insert(q.project, next_rank);
        next_rank += 1;
    }
    out
}

/// The slave that takes `q` now: its warm slave if that one can, else the first that can.
fn slave_for(q: &Queued, slaves: &[Offer]) -> Option<usize> {
    q.warm
        .filter(|&w| {
            slaves
                .get(w)
                .is_some_and(|s| refusal(&q.needs, s).is_none())
        })
        .or_else(|| slaves.iter().position(|s| refusal(&q.needs, s).is_none()))
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
            backends: &[],
            capacity: 1,
            active,
            disabled: false,
            draining: false,
            heard_recently: true,
        }
    }

    fn needs<'a>(arch: Option<&'a str>, tags: &'a [String]) -> Needs<'a> {
        Needs {
            architecture: arch,
            allow_emulation: false,
            tags,
            backend: None,
            max_running: None,
            running: 0,
        }
    }

    #[test]
    fn reasons_read_like_answers() {
        let none: Vec<String> = vec![];
        let imx6 = vec!["imx6".to_string()];
        assert_eq!(why_waiting(&needs(None, &[]), &[]), "no slave is online");
        assert_eq!(
            why_waiting(&needs(None, &imx6), &[s("a", "amd64", &none, 0)]),
            "no online slave with tag imx6"
        );
        assert_eq!(
            why_waiting(&needs(Some("arm64"), &[]), &[s("a", "amd64", &none, 0)]),
            "no online slave is arm64 (the project does not allow emulation)"
        );
        assert_eq!(
            why_waiting(
                &needs(None, &imx6),
                &[s("a", "amd64", &none, 0), s("b", "amd64", &imx6, 1)]
            ),
            "every matching slave is busy (b)"
        );
        let mut n = needs(None, &[]);
        n.max_running = Some(1);
        n.running = 1;
        assert!(why_waiting(&n, &[s("a", "amd64", &none, 0)]).contains("limit of 1"));
        let mut n = needs(None, &[]);
        n.backend = Some("debos");
        assert_eq!(
            why_waiting(&n, &[s("a", "amd64", &none, 0)]),
            "no online slave has the debos backend"
        );
        let mut quiet = s("q", "amd64", &none, 0);
        quiet.heard_recently = false;
        assert!(
            why_waiting(&needs(None, &[]), std::slice::from_ref(&quiet)).contains("gone quiet (q)")
        );
        let mut off = s("d", "amd64", &none, 0);
        off.disabled = true;
        assert_eq!(
            why_waiting(&needs(None, &[]), std::slice::from_ref(&off)),
            "every matching slave is disabled (d); an admin can enable it"
        );
        assert_eq!(
            why_waiting(&needs(None, &[]), &[off, s("b", "amd64", &none, 1), quiet]),
            "no matching slave can take it now (d: disabled, b: busy, q: quiet)"
        );
    }

    #[test]
    fn emulation_counts_when_allowed() {
        let none: Vec<String> = vec![];
        let emu = vec!["arm64".to_string()];
        let slave = Offer {
            emulates: &emu,
            ..s("x", "amd64", &none, 1)
        };
        let n = Needs {
            allow_emulation: true,
            ..needs(Some("arm64"), &[])
        };
        assert_eq!(
            why_waiting(&n, std::slice::from_ref(&slave)),
            "every matching slave is busy (x)"
        );
        assert_eq!(refusal(&needs(Some("arm64"), &[]), &slave), Some(Why::Arch));
    }

    /// The dispatcher and the waiting reason agree: for every case, a build is planned onto a
    /// slave exactly when its reason does not name a rule that keeps it off every slave.
    #[test]
    fn plan_and_reason_agree_on_every_case() {
        let none: Vec<String> = vec![];
        let imx6 = vec!["imx6".to_string()];
        let script = vec!["script".to_string()];
        let emu = vec!["arm64".to_string()];
        let base = s("a", "amd64", &none, 0);
        let slaves: Vec<(&str, Offer)> = vec![
            ("idle", base.clone()),
            (
                "busy",
                Offer {
                    active: 1,
                    ..base.clone()
                },
            ),
            (
                "draining",
                Offer {
                    draining: true,
                    ..base.clone()
                },
            ),
            (
                "disabled",
                Offer {
                    disabled: true,
                    ..base.clone()
                },
            ),
            (
                "quiet",
                Offer {
                    heard_recently: false,
                    ..base.clone()
                },
            ),
            (
                "tagged",
                Offer {
                    tags: &imx6,
                    ..base.clone()
                },
            ),
            (
                "scripted",
                Offer {
                    backends: &script,
                    ..base.clone()
                },
            ),
            (
                "emulating",
                Offer {
                    emulates: &emu,
                    ..base.clone()
                },
            ),
            (
                "arm",
                Offer {
                    arch: "arm64",
                    ..base.clone()
                },
            ),
        ];
        let n0 = needs(None, &[]);
        let wants: Vec<(&str, Needs)> = vec![
            ("anything", n0.clone()),
            (
                "arm64",
                Needs {
                    architecture: Some("arm64"),
                    ..n0.clone()
                },
            ),
            (
                "arm64 emulated",
                Needs {
                    architecture: Some("arm64"),
                    allow_emulation: true,
                    ..n0.clone()
                },
            ),
            (
                "imx6",
                Needs {
                    tags: &imx6,
                    ..n0.clone()
                },
            ),
            (
                "script",
                Needs {
                    backend: Some("script"),
                    ..n0.clone()
                },
            ),
            (
                "at limit",
                Needs {
                    max_running: Some(1),
                    running: 1,
                    ..n0.clone()
                },
            ),
        ];
        for (sn, slave) in &slaves {
            for (wn, need) in &wants {
                let q = Queued {
                    id: 1,
                    project: 1,
                    priority: 0,
                    last_served: None,
                    needs: need.clone(),
                    warm: None,
                };
                let planned =
                    !plan(std::slice::from_ref(&q), std::slice::from_ref(slave)).is_empty();
                let reason = why_waiting(need, std::slice::from_ref(slave));
                assert_eq!(
                    planned,
                    reason.starts_with("waiting for its turn"),
                    "slave {sn}, build needing {wn}: planned={planned}, reason: {reason}"
                );
            }
        }
    }

    #[test]
    fn plan_is_fair_between_projects_and_keeps_limits() {
        let none: Vec<String> = vec![];
        let slave = Offer {
            capacity: 3,
            ..s("a", "amd64", &none, 0)
        };
        let q = |id, project, priority| Queued {
            id,
            project,
            priority,
            last_served: None,
            needs: needs(None, &[]),
            warm: None,
        };
        // Project 1 has three builds queued first, project 2 one: 2 is not starved.
        let queued = vec![q(1, 1, 0), q(2, 1, 0), q(3, 1, 0), q(4, 2, 0)];
        let got: Vec<i64> = plan(&queued, std::slice::from_ref(&slave))
            .into_iter()
            .map(|(b, _)| b)
            .collect();
        assert_eq!(got, vec![1, 4, 2]);
        // Priority beats fairness.
        let queued = vec![q(1, 1, 0), q(2, 2, 5)];
        let got: Vec<i64> = plan(&queued, std::slice::from_ref(&slave))
            .into_iter()
            .map(|(b, _)| b)
            .collect();
        assert_eq!(got, vec![2, 1]);
        // max_running holds within one round.
        let mut limited = q(1, 1, 0);
        limited.needs.max_running = Some(1);
        let queued = vec![limited.clone(), Queued { id: 2, ..limited }];
        assert_eq!(plan(&queued, std::slice::from_ref(&slave)).len(), 1);
    }

    #[test]
    fn a_build_goes_to_its_projects_warm_slave_when_it_can() {
        let none: Vec<String> = vec![];
        let slaves = [s("a", "amd64", &none, 0), s("b", "amd64", &none, 0)];
        let q = |id, project, warm| Queued {
            id,
            project,
            priority: 0,
            last_served: None,
            needs: needs(None, &[]),
            warm,
        };
        // Without a warm slave the first free one takes it; with one, that one does.
        assert_eq!(plan(&[q(1, 1, None)], &slaves), vec![(1, 0)]);
        assert_eq!(plan(&[q(1, 1, Some(1))], &slaves), vec![(1, 1)]);
        // Two projects warm on the same slave: the first in queue order gets it, the other
        // goes to the free one rather than wait.
        assert_eq!(
            plan(&[q(1, 1, Some(1)), q(2, 2, Some(1))], &slaves),
            vec![(1, 1), (2, 0)]
        );
        // A warm slave that cannot take it now (busy) is passed over.
        let busy = [s("a", "amd64", &none, 0), s("b", "amd64", &none, 1)];
        assert_eq!(plan(&[q(1, 1, Some(1))], &busy), vec![(1, 0)]);
        // A warm slave that left the round (an index past the end) is ignored.
        assert_eq!(plan(&[q(1, 1, Some(7))], &slaves), vec![(1, 0)]);
    }
}
