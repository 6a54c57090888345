//! The live log: renders only the lines in view (a 100,000-line log stays smooth), ANSI colours
//! (carried from line to line), `\r` applied as a terminal would, line numbers that link to the
//! line (`#L42`, a click highlights it and sets the link), and auto-scroll that pauses while the
//! reader scrolls up and resumes at the bottom. A log opens at its tail (the live layer asks for
//! the last lines only); "load earlier lines" puts the lines before them on top, keeping the view
//! where it was; a linked line before the first one held is loaded the same way, then shown.
//!
//! Search covers every line the buffer holds (text ignoring case, or a regex), a slice at a time
//! between frames so a 50,000-line log never freezes the page; Enter / Shift+Enter and the
//! arrows move through the matches, and the view jumps to each one. "First error" jumps to the
//! first line that looks like an error by the slave's rule (`log_text::looks_like_error`).

use crate::components::ansi;
use crate::components::log_text::{
    self, match_text, split_runs, step_match, AnsiCarry, Pattern, Search,
};
use crate::live::LogBuf;
use gloo_timers::callback::Timeout;
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use web_sys::{HtmlElement, HtmlInputElement};
use yew::prelude::*;

const LINE_H: f64 = 18.0;
/// The same in whole pixels, for styles (formatted as integers: no float formatting code in
/// the wasm).
const LINE_PX: u64 = 18;
const OVERSCAN: usize = 40;
/// How long one slice of a search may run before the page gets a frame.
const SLICE_MS: f64 = 8.0;
/// How long typing must pause before a search starts.
const DEBOUNCE_MS: u32 = 150;

#[derive(Properties, PartialEq)]
pub struct Props {
    pub lines: LogBuf,
    /// Changes whenever lines were added (cheap comparison of a shared buffer).
    pub version: u64,
    /// The sequence number of `lines[0]`: the lines before it are not loaded.
    #[prop_or_default]
    pub start: u64,
    /// Earlier lines were asked for and are on their way.
    #[prop_or_default]
    pub loading_earlier: bool,
    /// Asks for the lines before `start`.
    #[prop_or_default]
    pub on_earlier: Callback<()>,
    pub raw_href: String,
}

/// The line a `#L42` link points at (numbered from 1), if any.
pub fn target_line() -> Option<usize> {
    let hash = web_sys::window()?.location().hash().ok()?;
    parse_target(&hash)
}

/// `#L42` → 42 (line numbers start at 1).
pub fn parse_target(hash: &str) -> Option<usize> {
    hash.strip_prefix("#L")?.parse().ok().filter(|&n| n > 0)
}

/// What the log bar says: how many lines the log has, and which are loaded when not all are.
pub fn count_text(start: u64, loaded: usize) -> String {
    let end = start + loaded as u64;
    if start == 0 {
        format!("{end} lines")
    } else if loaded == 0 {
        format!("{end} lines (none loaded)")
    } else {
        format!("{end} lines (showing {}–{end})", start + 1)
    }
}

/// Where a line to show is, against the lines held (`start+1 ..= start+held`).
#[derive(Debug, PartialEq, Eq)]
pub enum Place {
    /// Held, at this row.
    Row(usize),
    /// Before the first line held: load earlier lines.
    Earlier,
    /// Not there yet (or never): wait.
    Later,
}

pub fn place(line: u64, start: u64, held: usize) -> Place {
    if line <= start {
        Place::Earlier
    } else if line <= start + held as u64 {
        Place::Row((line - start - 1) as usize)
    } else {
        Place::Later
    }
}

/// The search in progress or done, shared with the task that runs it.
#[derive(Default)]
struct Finder {
    search: Option<Search>,
    done: bool,
    current: Option<usize>,
    error: Option<String>,
    /// Select the first match below the view when the search is done.
    select_first: bool,
    /// Which search the running task works for (a new search stops the old task).
    generation: u64,
    running: bool,
    began_ms: f64,
    took_ms: f64,
    longest_slice_ms: f64,
}

/// "12.3" for 12.34 (without float formatting).
fn tenths(v: f64) -> String {
    let t = (v * 10.0).round() as i64;
    format!("{}.{}", t / 10, t % 10)
}

fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map(|p| p.now())
        .unwrap_or(0.0)
}

/// What a search's task needs to go on and to show what it found.
#[derive(Clone)]
struct Runner {
    finder: Rc<RefCell<Finder>>,
    lines: Rc<RefCell<LogBuf>>,
    /// The sequence number of the first line held, as of the last render.
    start: Rc<RefCell<u64>>,
    /// The line to bring on screen (numbered from 1).
    jump: Rc<RefCell<Option<u64>>>,
    /// The first line shown, for "the first match below the view".
    first_row: Rc<RefCell<usize>>,
    /// A match was chosen: once its row is drawn, scroll sideways to it if a long line hides it.
    reveal: Rc<RefCell<bool>>,
    update: UseForceUpdateHandle,
}

impl Runner {
    /// One slice of the search; true when every line held was searched.
    fn slice(&self) -> bool {
        let buf = self.lines.borrow().clone();
        let lines = buf.0.borrow();
        let mut f = self.finder.borrow_mut();
        let first_row = *self.first_row.borrow();
        let Some(search) = f.search.as_mut() else {
            return true;
        };
        let t0 = now_ms();
        let mut done = false;
        while !done && now_ms() - t0 < SLICE_MS {
            done = search.step(&lines, 250);
        }
        let slice = now_ms() - t0;
        let first = search.first_from(first_row);
        let first_line = first.map(|k| search.start + search.hits[k].line as u64 + 1);
        f.longest_slice_ms = f.longest_slice_ms.max(slice);
        f.done = done;
        if done {
            f.took_ms = now_ms() - f.began_ms;
            if f.select_first {
                f.select_first = false;
                f.current = first;
                if first_line.is_some() {
                    *self.jump.borrow_mut() = first_line;
                    *self.reveal.borrow_mut() = true;
                }
            }
        }
        done
    }

    /// Runs the search a slice at a time, a frame between slices, until every line is searched.
    fn run(&self) {
        let generation = {
            let mut f = self.finder.borrow_mut();
            if f.running || f.search.is_none() {
                return;
            }
            f.running = true;
            f.generation
        };
        let this = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            loop {
                gloo_timers::future::TimeoutFuture::new(0).await;
                if this.finder.borrow().generation != generation {
                    break;
                }
                let done = this.slice();
                this.update.force_update();
                if done {
                    break;
                }
            }
            let mut f = this.finder.borrow_mut();
            if f.generation == generation {
                f.running = false;
            }
        });
    }

    /// Starts the search for `query` over again (or clears it).
    fn start(&self, query: &str, regex: bool) {
        {
            let mut f = self.finder.borrow_mut();
            f.generation += 1;
            f.running = false;
            f.current = None;
            f.done = false;
            f.error = None;
            f.search = None;
            match Pattern::new(query, regex) {
                Ok(Some(p)) => {
                    f.search = Some(Search::new(p, *self.start.borrow()));
                    f.select_first = true;
                    f.began_ms = now_ms();
                    f.longest_slice_ms = 0.0;
                }
                Ok(None) => {}
                Err(e) => f.error = Some(e),
            }
        }
        self.run();
        self.update.force_update();
    }

    /// The query is being typed: what was found no longer answers it (the count says so until
    /// the new search starts).
    fn stale(&self) {
        let mut f = self.finder.borrow_mut();
        f.generation += 1;
        f.running = false;
        f.done = false;
    }

    /// Goes on searching lines appended since (or from the top when earlier lines came).
    fn more_lines(&self, query: &str, regex: bool) {
        let restart = match &self.finder.borrow().search {
            None => return,
            Some(s) => s.start != *self.start.borrow(),
        };
        if restart {
            self.start(query, regex);
        } else {
            self.run();
        }
    }

    /// Moves to the next (or previous) match and shows it.
    fn step(&self, back: bool) {
        let mut f = self.finder.borrow_mut();
        let Some(search) = f.search.as_ref() else {
            return;
        };
        let total = search.hits.len();
        let next = if f.current.is_none() && !back {
            search.first_from(*self.first_row.borrow())
        } else {
            step_match(f.current, total, back)
        };
        if let Some(k) = next {
            *self.jump.borrow_mut() = Some(search.start + search.hits[k].line as u64 + 1);
            *self.reveal.borrow_mut() = true;
        }
        f.select_first = false;
        f.current = next;
        drop(f);
        self.update.force_update();
    }
}

/// Scrolls so that `row` is a third of the way down the view.
fn scroll_to_row(el: &HtmlElement, row: usize) {
    let h = el.client_height() as f64;
    let y = (row as f64 * LINE_H - h / 3.0).max(0.0);
    el.set_scroll_top(y as i32);
}

/// Scrolls sideways to the current match if it is drawn and out of view (a long line that does
/// not wrap); once it is drawn, `reveal` is done.
fn reveal_hit(el: &HtmlElement, reveal: &RefCell<bool>) {
    if !*reveal.borrow() {
        return;
    }
    let Some(hit) = el
        .query_selector(".hit.current")
        .ok()
        .flatten()
        .and_then(|h| h.dyn_into::<HtmlElement>().ok())
    else {
        return;
    };
    *reveal.borrow_mut() = false;
    let (x, w) = (hit.offset_left(), hit.offset_width());
    let (left, view) = (el.scroll_left(), el.client_width());
    if x < left || x + w > left + view {
        el.set_scroll_left((x - view / 3).max(0));
    }
}

#[function_component(LogView)]
pub fn log_view(p: &Props) -> Html {
    let node = use_node_ref();
    let top = use_state(|| 0.0f64);
    let view_h = use_state(|| 600.0f64);
    let follow = use_state(|| target_line().is_none());
    // The highlighted line (a `#L` link, a click on a number, "first error").
    let target = use_state(|| target_line().map(|n| n as u64));
    let wrap = use_state(|| false);
    let query = use_state(String::new);
    let regex = use_state(|| false);
    let note = use_state(|| None::<String>);
    let load_all = use_state(|| false);
    let update = use_force_update();
    // The first line held and the version at the last render: earlier lines put on top move the
    // view down by as many lines, so what the reader looked at stays in place.
    let shown = use_mut_ref(|| (p.start, 0u64));
    let carry = use_mut_ref(AnsiCarry::default);
    let debounce = use_mut_ref(|| None::<Timeout>);
    let runner = {
        let jump = use_mut_ref(|| target_line().map(|n| n as u64));
        let finder = use_mut_ref(Finder::default);
        let lines = use_mut_ref(|| p.lines.clone());
        let first_row = use_mut_ref(|| 0usize);
        let start = use_mut_ref(|| p.start);
        let reveal = use_mut_ref(|| false);
        Runner {
            finder,
            lines,
            start,
            jump,
            first_row,
            reveal,
            update: update.clone(),
        }
    };
    if *runner.lines.borrow() != p.lines {
        // Another log (the page shows another build): nothing found or worked out holds.
        *carry.borrow_mut() = AnsiCarry::default();
        let mut f = runner.finder.borrow_mut();
        f.generation += 1;
        f.running = false;
        f.search = None;
        f.current = None;
        *runner.lines.borrow_mut() = p.lines.clone();
    }
    *runner.start.borrow_mut() = p.start;

    {
        // A link to another line while the page is open (`#L…` typed or followed).
        let (target, follow, jump, update) = (
            target.clone(),
            follow.clone(),
            runner.jump.clone(),
            update.clone(),
        );
        use_effect_with((), move |_| {
            let on_hash = Closure::<dyn FnMut()>::new(move || {
                if let Some(n) = target_line() {
                    target.set(Some(n as u64));
                    follow.set(false);
                    *jump.borrow_mut() = Some(n as u64);
                    update.force_update();
                }
            });
            let window = web_sys::window();
            if let Some(w) = &window {
                let _ = w.add_event_listener_with_callback(
                    "hashchange",
                    on_hash.as_ref().unchecked_ref(),
                );
            }
            move || {
                if let Some(w) = window {
                    let _ = w.remove_event_listener_with_callback(
                        "hashchange",
                        on_hash.as_ref().unchecked_ref(),
                    );
                }
            }
        });
    }

    {
        // After every render: show a line asked for (loading earlier lines until it is held),
        // load everything when asked to, follow new lines, keep the view over prepended lines.
        let node = node.clone();
        let follow = follow.clone();
        let runner = runner.clone();
        let (start, version, loading) = (p.start, p.version, p.loading_earlier);
        let held = p.lines.0.borrow().len();
        let on_earlier = p.on_earlier.clone();
        let query = (*query).clone();
        let regex = *regex;
        let load_all = *load_all;
        let wrap = *wrap;
        use_effect(move || {
            let (before, seen) = std::mem::replace(&mut *shown.borrow_mut(), (start, version));
            if version != seen {
                runner.more_lines(&query, regex);
            }
            let Some(el) = node.cast::<HtmlElement>() else {
                return;
            };
            let want = *runner.jump.borrow();
            if let Some(line) = want {
                match place(line, start, held) {
                    Place::Row(row) => {
                        *runner.jump.borrow_mut() = None;
                        scroll_to_row(&el, row);
                        if wrap {
                            // Rows are taller than a line when wrapped: the row itself decides.
                            if let Some(e) = el.query_selector(&format!("#L{line}")).ok().flatten()
                            {
                                e.scroll_into_view_with_bool(false);
                            }
                        }
                        reveal_hit(&el, &runner.reveal);
                        return;
                    }
                    Place::Earlier if !loading => on_earlier.emit(()),
                    _ => {}
                }
            } else {
                reveal_hit(&el, &runner.reveal);
                if load_all && start > 0 && !loading {
                    on_earlier.emit(());
                }
            }
            if version != seen {
                if *follow && want.is_none() {
                    el.set_scroll_top(el.scroll_height());
                } else if start < before {
                    let added = (before - start) as f64 * LINE_H;
                    el.set_scroll_top(el.scroll_top() + added as i32);
                }
            }
        });
    }

    let onscroll = {
        let node = node.clone();
        let top = top.clone();
        let view_h = view_h.clone();
        let follow = follow.clone();
        Callback::from(move |_: Event| {
            if let Some(el) = node.cast::<HtmlElement>() {
                let st = el.scroll_top() as f64;
                let ch = el.client_height() as f64;
                top.set(st);
                view_h.set(ch);
                let at_bottom = st + ch >= el.scroll_height() as f64 - LINE_H;
                if *follow != at_bottom {
                    follow.set(at_bottom);
                }
            }
        })
    };
    let resume = {
        let follow = follow.clone();
        let node = node.clone();
        let jump = runner.jump.clone();
        Callback::from(move |_: MouseEvent| {
            *jump.borrow_mut() = None;
            follow.set(true);
            if let Some(el) = node.cast::<HtmlElement>() {
                el.set_scroll_top(el.scroll_height());
            }
        })
    };

    // Search: typing waits for a pause; Enter / Shift+Enter move through the matches.
    let oninput = {
        let (query, regex, runner, debounce) = (
            query.clone(),
            regex.clone(),
            runner.clone(),
            debounce.clone(),
        );
        Callback::from(move |e: InputEvent| {
            let q = e.target_unchecked_into::<HtmlInputElement>().value();
            query.set(q.clone());
            runner.stale();
            let (runner, regex) = (runner.clone(), *regex);
            *debounce.borrow_mut() =
                Some(Timeout::new(DEBOUNCE_MS, move || runner.start(&q, regex)));
        })
    };
    let onkeydown = {
        let runner = runner.clone();
        Callback::from(move |e: KeyboardEvent| {
            if e.key() == "Enter" {
                e.prevent_default();
                runner.step(e.shift_key());
            }
        })
    };
    let on_regex = {
        let (query, regex, runner) = (query.clone(), regex.clone(), runner.clone());
        Callback::from(move |e: Event| {
            let on = e.target_unchecked_into::<HtmlInputElement>().checked();
            regex.set(on);
            runner.start(&query, on);
        })
    };
    let step = |back: bool| {
        let runner = runner.clone();
        Callback::from(move |_: MouseEvent| runner.step(back))
    };
    let first_error = {
        let (lines, target, follow, note, jump, update) = (
            p.lines.clone(),
            target.clone(),
            follow.clone(),
            note.clone(),
            runner.jump.clone(),
            update.clone(),
        );
        let start = p.start;
        Callback::from(
            move |_: MouseEvent| match log_text::first_error(&lines.0.borrow()) {
                Some(i) => {
                    let n = start + i as u64 + 1;
                    target.set(Some(n));
                    follow.set(false);
                    note.set(None);
                    *jump.borrow_mut() = Some(n);
                    update.force_update();
                }
                None => note.set(Some(if start > 0 {
                    "No error line in the lines loaded".into()
                } else {
                    "No error line".into()
                })),
            },
        )
    };
    let toggle_wrap = {
        let wrap = wrap.clone();
        Callback::from(move |_: MouseEvent| wrap.set(!*wrap))
    };
    let on_load_all = {
        let load_all = load_all.clone();
        Callback::from(move |_: MouseEvent| load_all.set(true))
    };

    let lines = p.lines.0.borrow();
    let total = lines.len();
    let start = p.start;
    carry.borrow_mut().update(&lines, start);
    let first = ((*top / LINE_H) as usize)
        .saturating_sub(OVERSCAN)
        .min(total);
    let last = (first + (*view_h / LINE_H) as usize + 2 * OVERSCAN).min(total);
    *runner.first_row.borrow_mut() = ((*top / LINE_H) as usize).min(total);
    let finder = runner.finder.borrow();
    let search = finder.search.as_ref();
    let current_hit = finder
        .current
        .and_then(|k| search.and_then(|s| s.hits.get(k)).map(|h| (k, h.line)));
    let mut style = carry.borrow().at(&lines, first);
    let mut rows: Vec<Html> = Vec::with_capacity(last - first);
    for (i, raw) in lines.iter().enumerate().take(last).skip(first) {
        let n = start + i as u64 + 1;
        let runs = ansi::parse_from(&log_text::overwrite_cr(raw), style.clone());
        if raw.contains('\u{1b}') {
            style = ansi::end_style(raw, style);
        }
        let (base, hits): (usize, Vec<(usize, usize)>) = match search {
            Some(s) => {
                let on = s.on_line(i);
                let base = s.hits.partition_point(|h| h.line < i);
                (base, on.iter().map(|h| (h.from, h.to)).collect())
            }
            None => (0, vec![]),
        };
        let wrapped = *wrap;
        let style_attr = (!wrapped).then(|| format!("top:{}px", i as u64 * LINE_PX));
        let cls = classes!(
            "line",
            (*target == Some(n)).then_some("target"),
            current_hit
                .is_some_and(|(_, l)| l == i)
                .then_some("current-line"),
        );
        let onclick = {
            let (target, follow) = (target.clone(), follow.clone());
            Callback::from(move |e: MouseEvent| {
                e.prevent_default();
                target.set(Some(n));
                follow.set(false);
                if let Some(w) = web_sys::window() {
                    if let Ok(h) = w.history() {
                        let _ = h.replace_state_with_url(
                            &wasm_bindgen::JsValue::NULL,
                            "",
                            Some(&format!("#L{n}")),
                        );
                    }
                }
            })
        };
        rows.push(html! {
            <div class={cls} style={style_attr} id={format!("L{n}")} key={n.to_string()}>
                <a class="ln" href={format!("#L{n}")} tabindex="-1" {onclick}>{n}</a>
                { for split_runs(runs, &hits).into_iter().map(|(s, t, k)| {
                    let mut c = classes!();
                    if let Some(f) = s.fg { c.push(format!("fg{f}")); }
                    if s.bold { c.push("b"); }
                    if let Some(k) = k {
                        c.push("hit");
                        if current_hit.is_some_and(|(cur, _)| cur == base + k) { c.push("current"); }
                    }
                    html! { <span class={c}>{t}</span> }
                }) }
            </div>
        });
    }
    let earlier = {
        let on_earlier = p.on_earlier.clone();
        Callback::from(move |_: MouseEvent| on_earlier.emit(()))
    };
    let earlier_label = if p.loading_earlier {
        "Loading earlier lines…".to_string()
    } else {
        format!(
            "↑ Load {} earlier lines",
            u64::from(crate::live::EARLIER_LINES).min(start)
        )
    };
    let (hit_total, searching) = (search.map_or(0, |s| s.hits.len()), search.is_some());
    let count = if let Some(e) = &finder.error {
        e.clone()
    } else if searching {
        match_text(finder.current, hit_total, finder.done)
    } else {
        String::new()
    };
    let inner_style = if *wrap {
        format!(
            "min-height:{}px;padding-top:{}px",
            total as u64 * LINE_PX,
            first as u64 * LINE_PX
        )
    } else {
        format!("height:{}px", total as u64 * LINE_PX)
    };
    html! {
        <section class="log-wrap">
            <div class="log-bar">
                <span class="count" data-lines={(start + total as u64).to_string()} data-start={start.to_string()}>{count_text(start, total)}</span>
                if start > 0 {
                    <button id="load-earlier" onclick={earlier} disabled={p.loading_earlier}>{earlier_label}</button>
                    <button id="load-all" onclick={on_load_all} disabled={*load_all}>{"Load the whole log"}</button>
                }
                if !*follow {
                    <button onclick={resume}>{"↓ Follow the log"}</button>
                }
                <a href={p.raw_href.clone()} target="_blank">{"Raw log"}</a>
            </div>
            <div class="log-bar log-find" role="search">
                <input id="log-search" type="search" placeholder="Search the log" aria-label="search the log"
                    value={(*query).clone()} {oninput} {onkeydown} />
                <label><input id="search-regex" type="checkbox" checked={*regex} onchange={on_regex} />{" regex"}</label>
                <span id="search-count" aria-live="polite"
                    data-total={hit_total.to_string()}
                    data-current={finder.current.map(|c| (c + 1).to_string()).unwrap_or_default()}
                    data-done={(searching && finder.done).to_string()}
                    data-ms={(finder.took_ms.round() as i64).to_string()}
                    data-slice-ms={tenths(finder.longest_slice_ms)}
                    class={classes!(finder.error.is_some().then_some("error"))}>{count}</span>
                <button id="search-prev" onclick={step(true)} disabled={hit_total == 0} title="Previous match (Shift+Enter)">{"↑"}</button>
                <button id="search-next" onclick={step(false)} disabled={hit_total == 0} title="Next match (Enter)">{"↓"}</button>
                <button id="first-error" onclick={first_error}>{"First error"}</button>
                if let Some(n) = &*note { <span class="muted" id="log-note">{n}</span> }
                <button id="log-wrap" aria-pressed={wrap.to_string()} onclick={toggle_wrap}>{if *wrap { "No wrap" } else { "Wrap lines" }}</button>
            </div>
            <div class={classes!("log", wrap.then_some("wrap"))} ref={node} {onscroll} tabindex="0" role="region" aria-label="build log">
                <div class="log-inner" style={inner_style}>
                    { for rows }
                </div>
            </div>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_says_which_lines_are_loaded() {
        assert_eq!(count_text(0, 42), "42 lines");
        assert_eq!(
            count_text(98_000, 2_000),
            "100000 lines (showing 98001–100000)"
        );
        assert_eq!(count_text(5, 0), "5 lines (none loaded)");
    }

    #[test]
    fn a_linked_line_is_found_loaded_earlier_or_waited_for() {
        assert_eq!(parse_target("#L25000"), Some(25_000));
        assert_eq!(parse_target("#L0"), None);
        assert_eq!(parse_target("#section"), None);
        // Lines 48,001..=50,000 held.
        assert_eq!(place(50_000, 48_000, 2_000), Place::Row(1_999));
        assert_eq!(place(48_001, 48_000, 2_000), Place::Row(0));
        assert_eq!(place(48_000, 48_000, 2_000), Place::Earlier);
        assert_eq!(place(3_000, 48_000, 2_000), Place::Earlier);
        assert_eq!(place(50_001, 48_000, 2_000), Place::Later);
        assert_eq!(place(1, 0, 0), Place::Later);
    }
}
