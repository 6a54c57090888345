//! The live log: renders only the lines in view (a 100,000-line log stays smooth), ANSI colours,
//! line numbers that link to the line (`#L42`), and auto-scroll that pauses while the reader
//! scrolls up and resumes at the bottom.

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
    pub raw_href: String,
}

fn target_line() -> Option<usize> {
    let hash = web_sys::window()?.location().hash().ok()?;
    hash.strip_prefix("#L")?.parse().ok()
}

#[function_component(LogView)]
pub fn log_view(p: &Props) -> Html {
    let node = use_node_ref();
    let top = use_state(|| 0.0f64);
    let view_h = use_state(|| 600.0f64);
    let follow = use_state(|| target_line().is_none());
    let target = use_state(target_line);

    {
        // Follow new lines, or jump once to a linked line.
        let node = node.clone();
        let follow = follow.clone();
        let target = target.clone();
        let n = p.lines.0.borrow().len();
        use_effect_with(p.version, move |_| {
            if let Some(el) = node.cast::<HtmlElement>() {
                if *follow {
                    el.set_scroll_top(el.scroll_height());
                } else if let Some(t) = *target {
                    if t <= n && n > 0 && el.scroll_top() == 0 {
                        el.set_scroll_top(((t.saturating_sub(5)) as f64 * LINE_H) as i32);
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
    let rows = (first..last).map(|i| {
        let n = i + 1;
        let runs = ansi::parse(&lines[i]);
        let style = format!("top:{}px", i as f64 * LINE_H);
        let cls = classes!("line", (*target == Some(n)).then_some("target"));
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
    html! {
        <section class="log-wrap">
            <div class="log-bar">
                <span class="count" data-lines={total.to_string()}>{format!("{total} lines")}</span>
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
