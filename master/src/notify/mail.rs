//! Mail over SMTP with `lettre`: one pooled transport from `[notify.smtp]`, and the message a
//! notification becomes (plain text with an HTML alternative, a Message-ID derived from the
//! outbox row so that a message sent twice is recognisable as one).

use anyhow::Context as _;
use kiln_shared::config::{Config, SmtpConfig, SmtpTls};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The host of `master.public_url`, the right-hand side of Message-IDs.
    id_host: String,
}

/// How one sending went.
pub struct Sent {
    pub delivered: bool,
    /// The server's reply code, when there was one.
    pub code: Option<i32>,
    pub error: Option<String>,
    /// The server refused for good (5xx): retrying will not help.
    pub permanent: bool,
}

impl Mailer {
    pub fn new(cfg: &Config, s: &SmtpConfig) -> anyhow::Result<Mailer> {
        let from: Mailbox = s.from.parse().with_context(|| {
            format!(
                "config key notify.smtp.from: '{}' is not a mail address",
                s.from
            )
        })?;
        let builder = match s.tls {
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&s.host)
                .context("config key notify.smtp.host")?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&s.host)
                .context("config key notify.smtp.host")?,
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host),
        };
        let port = s.port.unwrap_or(match s.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        });
        let mut builder = builder
            .port(port)
            .timeout(Some(Duration::from_secs(30)))
            .pool_config(PoolConfig::new().max_size(s.pool_size.max(1)));
        if let (Some(user), Some(file)) = (&s.username, &s.password_file) {
            let path = cfg.path(file);
            let password = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "config key notify.smtp.password_file: cannot read {}",
                    path.display()
                )
            })?;
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.trim_end_matches(['\n', '\r']).to_string(),
            ));
        }
        let id_host = cfg
            .master
            .public_url
            .as_deref()
            .map(|u| {
                let rest = u.split_once("://").map_or(u, |(_, r)| r);
                let host = rest.split(['/', '?', '#']).next().unwrap_or("");
                host.rsplit_once(':')
                    .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
                    .map_or(host, |(h, _)| h)
                    .trim_matches(['[', ']'])
                    .to_string()
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "kiln.invalid".into());
        Ok(Mailer {
            transport: builder.build(),
            from,
            id_host,
        })
    }

    /// The Message-ID of outbox row `id`.
    pub fn message_id(&self, id: i64) -> String {
        format!("<kiln.notification.{id}@{}>", self.id_host)
    }

    /// Sends one mail. `headers` are extra `(name, value)` pairs (ASCII names).
    pub async fn send(
        &self,
        id: i64,
        to: &str,
        subject: &str,
        text: &str,
        html: &str,
        headers: &[(&'static str, String)],
    ) -> Sent {
        let fail = |error: String, permanent| Sent {
            delivered: false,
            code: None,
            error: Some(error),
            permanent,
        };
        let to: Mailbox = match to.parse() {
            Ok(m) => m,
            Err(e) => return fail(format!("'{to}' is not a mail address: {e}"), true),
        };
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(self.message_id(id)))
            .multipart(MultiPart::alternative_plain_html(
                text.to_string(),
                html.to_string(),
            ));
        let mut message = match message {
            Ok(m) => m,
            Err(e) => return fail(format!("cannot build the mail: {e}"), true),
        };
        for (name, value) in headers {
            message.headers_mut().insert_raw(HeaderValue::new(
                HeaderName::new_from_ascii_str(name),
                value.clone(),
            ));
        }
        match self.transport.send(message).await {
            Ok(r) => Sent {
                delivered: true,
                code: Some(i32::from(u16::from(r.code()))),
                error: None,
                permanent: false,
            },
            Err(e) => {
                let mut why = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    why.push_str(": ");
                    why.push_str(&s.to_string());
                    src = s.source();
                }
                Sent {
                    delivered: false,
                    code: e.status().map(|c| i32::from(u16::from(c))),
                    error: Some(why),
                    permanent: e.is_permanent(),
                }
            }
        }
    }
}
