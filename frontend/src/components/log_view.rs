//! The live log: renders only the lines in view (a 100,000-line log stays smooth), ANSI colours,
//! line numbers that link to the line (`#L42`), and auto-scroll that pauses while the reader
//! scrolls up and resumes at the bottom. A log opens at its tail (the live layer asks for the last
//! lines only); "load earlier lines" puts the lines before them on top, keeping the view where it
//! was.

use crate::components::ansi;
use crate::live::LogBuf;
use web_sys::HtmlElement;
use yew::prelude::*;

const LINE_H: f64 = 18.0;
const OVERSCAN: usize = 40;

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
    hash.strip_prefix("#L")?.parse().ok()
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

#[function_component(LogView)]
pub fn log_view(p: &Props) -> Html {
    let node = use_node_ref();
    let top = use_state(|| 0.0f64);
    let view_h = use_state(|| 600.0f64);
    let follow = use_state(|| target_line().is_none());
    let target = use_state(target_line);
    // The first line held at the last render: earlier lines put on top move the view down by as
    // many lines, so what the reader looked at stays in place.
    let shown_start = use_mut_ref(|| p.start);

    {
        // Follow new lines, or jump once to a linked line.
        let node = node.clone();
        let follow = follow.clone();
        let target = target.clone();
        let n = p.lines.0.borrow().len();
        let start = p.start;
        use_effect_with(p.version, move |_| {
            let before = std::mem::replace(&mut *shown_start.borrow_mut(), start);
            if let Some(el) = node.cast::<HtmlElement>() {
                if *follow {
                    el.set_scroll_top(el.scroll_height());
                } else if start < before {
                    let added = (before - start) as f64 * LINE_H;
                    el.set_scroll_top(el.scroll_top() + added as i32);
                } else if let Some(t) = *target {
                    // `t` is numbered from 1; the buffer holds lines start+1 ..= start+n.
                    let t = t as u64;
                    if t > start && t <= start + n as u64 && el.scroll_top() == 0 {
                        let row = (t - start - 1).saturating_sub(5);
                        el.set_scroll_top((row as f64 * LINE_H) as i32);
                    }
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
        Callback::from(move |_: MouseEvent| {
            follow.set(true);
            if let Some(el) = node.cast::<HtmlElement>() {
                el.set_scroll_top(el.scroll_height());
            }
        })
    };

    let lines = p.lines.0.borrow();
    let total = lines.len();
    let first = ((*top / LINE_H) as usize)
        .saturating_sub(OVERSCAN)
        .min(total);
    let last = (first + (*view_h / LINE_H) as usize + 2 * OVERSCAN).min(total);
    let start = p.start;
    let rows = (first..last).map(|i| {
        let n = start + i as u64 + 1;
        let runs = ansi::parse(&lines[i]);
        let style = format!("top:{}px", i as f64 * LINE_H);
        let cls = classes!("line", (*target == Some(n as usize)).then_some("target"));
        html! {
            <div class={cls} {style} id={format!("L{n}")}>
                <a class="ln" href={format!("#L{n}")} tabindex="-1">{n}</a>
                { for runs.into_iter().map(|(s, t)| {
                    let mut c = classes!();
                    if let Some(f) = s.fg { c.push(format!("fg{f}")); }
                    if s.bold { c.push("b"); }
                    html! { <span class={c}>{t}</span> }
                }) }
            </div>
        }
    });
    let rows: Vec<Html> = rows.collect();
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
    html! {
        <section class="log-wrap">
            <div class="log-bar">
                <span class="count" data-lines={(start + total as u64).to_string()} data-start={start.to_string()}>{count_text(start, total)}</span>
                if start > 0 {
                    <button id="load-earlier" onclick={earlier} disabled={p.loading_earlier}>{earlier_label}</button>
                }
                if !*follow {
                    <button onclick={resume}>{"↓ Follow the log"}</button>
                }
                <a href={p.raw_href.clone()} target="_blank">{"Raw log"}</a>
            </div>
            <div class="log" ref={node} {onscroll} tabindex="0" aria-label="build log">
                <div class="log-inner" style={format!("height:{}px", total as f64 * LINE_H)}>
                    { for rows }
                </div>
            </div>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::count_text;

    #[test]
    fn the_count_says_which_lines_are_loaded() {
        assert_eq!(count_text(0, 42), "42 lines");
        assert_eq!(
            count_text(98_000, 2_000),
            "100000 lines (showing 98001–100000)"
        );
        assert_eq!(count_text(5, 0), "5 lines (none loaded)");
    }
}
