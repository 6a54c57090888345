//! One connection listening for the database's notifications (`LISTEN`): whatever a master must
//! hear from the database (access changes on `kiln_access`, the other masters' `kiln_fanout`
//! messages) arrives through it.

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::time::Duration;

/// What the listener tells its handler.
pub enum Heard<'a> {
    Notification {
        channel: &'a str,
        payload: &'a str,
    },
    /// The connection was made or made again: notifications sent while it was down are lost.
    Gap,
}

/// Listens on `channels` until the pool closes, reconnecting after a failure (once a second).
pub async fn listen(db: PgPool, channels: &[&str], mut on: impl FnMut(Heard<'_>)) {
    loop {
        match PgListener::connect_with(&db).await {
            Ok(mut l) => match l.listen_all(channels.iter().copied()).await {
                Ok(()) => {
                    on(Heard::Gap);
                    loop {
                        match l.try_recv().await {
                            Ok(Some(n)) => on(Heard::Notification {
                                channel: n.channel(),
                                payload: n.payload(),
                            }),
                            // The connection was lost; it is made again, listening again, on
                            // the next call.
                            Ok(None) => on(Heard::Gap),
                            Err(sqlx::Error::PoolClosed) => return,
                            Err(e) => {
                                tracing::warn!("listening for database notifications: {e}");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!("listening for database notifications: {e}"),
            },
            Err(e) => tracing::debug!("connecting to listen for database notifications: {e}"),
        }
        on(Heard::Gap);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
