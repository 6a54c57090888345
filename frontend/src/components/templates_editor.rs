//! The words of a project's notifications (maintainers): per event the template in use
//! (`GET /api/projects/{name}/templates`; its source: Kiln's `builtin`, the `site`'s or the
//! `project`'s own), its subject and body editable in place, Preview (rendered by the master
//! against the project's last ended build, as typed, not saved), Save (`PUT`) and Reset to
//! default (`DELETE`: back to the site's or Kiln's). A template the master cannot parse or
//! render is refused at the field (`subject` or `body`) with the line and the reason.

use super::subscriptions::{heading, ADMIN_EVENT};
use crate::api::{self, seg, ApiErr};
use crate::pages::{error_box, field_error_id, invalid, loading_or_error, Loaded};
use kiln_shared::notify::{PreviewTemplate, PutTemplate, Rendered, Template};
use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct Props {
    pub project: AttrValue,
    /// The level of the section's heading ("Templates").
    #[prop_or(2)]
    pub level: u8,
}

/// What a template's source means to the person editing it.
pub fn source_label(source: &str) -> &'static str {
    match source {
        "project" => "this project's own",
        "site" => "the site's (set by an admin)",
        _ => "Kiln's default",
    }
}

/// The templates a project may have: build events (`slave_offline` is no project's).
pub fn project_templates(all: Vec<Template>) -> Vec<Template> {
    all.into_iter().filter(|t| t.event != ADMIN_EVENT).collect()
}

#[function_component(Templates)]
pub fn templates(p: &Props) -> Html {
    let list = use_state(|| Loaded::<Vec<Template>>::Loading);
    let path = format!("/api/projects/{}/templates", seg(&p.project));
    let reload = {
        let (list, path) = (list.clone(), path.clone());
        Callback::from(move |_: ()| {
            let (list, path) = (list.clone(), path.clone());
            wasm_bindgen_futures::spawn_local(async move {
                list.set(match api::get::<Vec<Template>>(&path).await {
                    Ok(ts) => Loaded::Ok(project_templates(ts)),
                    Err(e) => Loaded::Err(e),
                });
            });
        })
    };
    {
        let reload = reload.clone();
        use_effect_with(p.project.clone(), move |_| reload.emit(()));
    }
    html! {
        <section id="templates" aria-labelledby="templates-title">
            { heading(p.level, "templates-title", "Templates") }
            <p class="muted">{"The subject and text of the messages per event. Preview renders what is typed \
                against the project's last ended build; nothing is saved until Save."}</p>
            { loading_or_error(&*list) }
            if let Loaded::Ok(ts) = &*list {
                { for ts.iter().map(|t| html! {
                    <TemplateEditor key={t.event.clone()} project={p.project.clone()} template={t.clone()}
                        path={path.clone()} on_changed={reload.clone()} />
                }) }
            }
        </section>
    }
}

#[derive(Properties, PartialEq)]
struct EditorProps {
    project: AttrValue,
    template: Template,
    /// `/api/projects/{name}/templates`.
    path: String,
    /// Saved or reset: the list is read again.
    on_changed: Callback<()>,
}

#[function_component(TemplateEditor)]
fn template_editor(p: &EditorProps) -> Html {
    let subject = use_state(|| p.template.subject.clone());
    let body = use_state(|| p.template.body.clone());
    let err = use_state(|| None::<ApiErr>);
    let rendered = use_state(|| None::<Rendered>);
    let note = use_state(|| None::<String>);
    {
        // What the server holds now (after a save or reset): shown as it is.
        let (subject, body) = (subject.clone(), body.clone());
        use_effect_with(p.template.clone(), move |t| {
            subject.set(t.subject.clone());
            body.set(t.body.clone());
        });
    }
    let ev = p.template.event.clone();
    let id = |what: &str| format!("tpl-{ev}-{what}");
    let prefix = format!("tpl-{ev}-");
    let on_subject = {
        let subject = subject.clone();
        Callback::from(move |e: InputEvent| {
            if let Some(i) = e.target_dyn_into::<web_sys::HtmlInputElement>() {
                subject.set(i.value());
            }
        })
    };
    let on_body = {
        let body = body.clone();
        Callback::from(move |e: InputEvent| {
            if let Some(t) = e.target_dyn_into::<web_sys::HtmlTextAreaElement>() {
                body.set(t.value());
            }
        })
    };
    let preview = {
        let (subject, body, err, rendered, note, ev) = (
            subject.clone(),
            body.clone(),
            err.clone(),
            rendered.clone(),
            note.clone(),
            ev.clone(),
        );
        let project = p.project.clone();
        Callback::from(move |_: MouseEvent| {
            let req = PreviewTemplate {
                event: ev.clone(),
                subject: (*subject).clone(),
                body: (*body).clone(),
                build: None,
            };
            let (err, rendered, note, project) =
                (err.clone(), rendered.clone(), note.clone(), project.clone());
            wasm_bindgen_futures::spawn_local(async move {
                match api::post::<_, Rendered>(
                    &format!("/api/projects/{}/templates/preview", seg(&project)),
                    &req,
                )
                .await
                {
                    Ok(r) => {
                        err.set(None);
                        note.set(None);
                        rendered.set(Some(r));
                    }
                    Err(e) => {
                        rendered.set(None);
                        err.set(Some(e));
                    }
                }
            });
        })
    };
    let onsubmit = {
        let (subject, body, err, note, ev, path, on_changed) = (
            subject.clone(),
            body.clone(),
            err.clone(),
            note.clone(),
            ev.clone(),
            p.path.clone(),
            p.on_changed.clone(),
        );
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let req = PutTemplate {
                subject: (*subject).clone(),
                body: (*body).clone(),
            };
            let (err, note, on_changed) = (err.clone(), note.clone(), on_changed.clone());
            let url = format!("{path}/{}", seg(&ev));
            wasm_bindgen_futures::spawn_local(async move {
                match api::put::<_, serde_json::Value>(&url, &req).await {
                    Ok(_) => {
                        err.set(None);
                        note.set(Some("Saved: this project's messages use it now.".into()));
                        on_changed.emit(());
                    }
                    Err(e) => {
                        note.set(None);
                        err.set(Some(e));
                    }
                }
            });
        })
    };
    let reset = {
        let (err, note, ev, path, on_changed, rendered) = (
            err.clone(),
            note.clone(),
            ev.clone(),
            p.path.clone(),
            p.on_changed.clone(),
            rendered.clone(),
        );
        Callback::from(move |_: MouseEvent| {
            if !crate::pages::confirm(&format!(
                "Forget this project's template for '{ev}' and use the default again?"
            )) {
                return;
            }
            let (err, note, on_changed, rendered) = (
                err.clone(),
                note.clone(),
                on_changed.clone(),
                rendered.clone(),
            );
            let url = format!("{path}/{}", seg(&ev));
            wasm_bindgen_futures::spawn_local(async move {
                match api::delete(&url).await {
                    Ok(()) => {
                        err.set(None);
                        rendered.set(None);
                        note.set(Some("Back to the default.".into()));
                        on_changed.emit(());
                    }
                    Err(e) => {
                        note.set(None);
                        err.set(Some(e));
                    }
                }
            });
        })
    };
    let general = match &*err {
        Some(e) if !matches!(e.field.as_deref(), Some("subject" | "body")) => {
            Some(e.message.clone())
        }
        _ => None,
    };
    let t = &p.template;
    html! {
        <details class="template" id={id("details")} data-event={ev.clone()} data-source={t.source.clone()}>
            <summary>{format!("{ev} ")}<span class="muted">{format!("({})", source_label(&t.source))}</span></summary>
            <form class="form template-form" id={id("form")} novalidate=true {onsubmit}
                aria-label={format!("Template for {ev}")}>
                <label for={id("subject")}>{"Subject"}</label>
                <input id={id("subject")} name="subject" value={(*subject).clone()} oninput={on_subject}
                    spellcheck="false" aria-describedby={id("subject-error")}
                    aria-invalid={invalid(&err, "subject")} />
                { field_error_id(&err, &prefix, "subject") }
                <label for={id("body")}>{"Body"}</label>
                <textarea id={id("body")} name="body" rows="12" class="mono" value={(*body).clone()}
                    oninput={on_body} spellcheck="false" aria-describedby={id("body-error")}
                    aria-invalid={invalid(&err, "body")} />
                { field_error_id(&err, &prefix, "body") }
                <div class="actions">
                    <button type="button" class="secondary" id={id("preview-button")} onclick={preview}>{"Preview"}</button>
                    <button type="submit" id={id("save")}>{"Save"}</button>
                    if t.source == "project" {
                        <button type="button" class="danger" id={id("reset")} onclick={reset}>{"Reset to default"}</button>
                    }
                </div>
                if let Some(n) = &*note { <p class="muted" role="status" id={id("saved")}>{n}</p> }
                { error_box(&general) }
            </form>
            if let Some(r) = &*rendered {
                <div class="preview" id={id("preview")}>
                    <p class="muted">{format!("Preview of the {ev} message:")}</p>
                    <p><strong>{"Subject: "}</strong><span id={id("preview-subject")}>{&r.subject}</span></p>
                    if let Some(b) = r.build { <p class="muted">{format!("Rendered against build #{b}.")}</p> }
                    <pre id={id("preview-text")}>{&r.text}</pre>
                </div>
            }
        </details>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_edits_the_templates_of_build_events() {
        let t = |e: &str| Template {
            event: e.into(),
            source: "builtin".into(),
            subject: String::new(),
            body: String::new(),
        };
        let kept: Vec<String> = project_templates(vec![t("failed"), t("slave_offline"), t("lost")])
            .into_iter()
            .map(|t| t.event)
            .collect();
        assert_eq!(kept, vec!["failed", "lost"]);
        assert_eq!(source_label("project"), "this project's own");
        assert_eq!(source_label("builtin"), "Kiln's default");
    }
}
