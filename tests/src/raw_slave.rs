//! A slave spoken from the test itself: the real protocol over `/ws/slave`, frame by frame, for
//! tests that must know exactly what a slave has said (and that nothing of it is still on its
//! way) or that play a slave that misbehaves.

use crate::farm::{test_hello, Farm, Ws};
use futures_util::{SinkExt, StreamExt};
use kiln_shared::codec;
use kiln_shared::frames::{Hello, MasterFrame, SlaveFrame};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

pub struct RawSlave {
    pub ws: Ws,
}

impl RawSlave {
    /// Registers slave `name`, connects and says [`test_hello`].
    pub async fn connect(farm: &Farm, name: &str) -> RawSlave {
        RawSlave::connect_with(farm, test_hello(name)).await
    }

    /// Registers the slave `hello` names, connects and says `hello`.
    pub async fn connect_with(farm: &Farm, hello: Hello) -> RawSlave {
        let token = farm.register_slave(&hello.name).await;
        let ws = farm
            .slave_ws(&token)
            .await
            .unwrap_or_else(|e| panic!("{} connects: {e}", hello.name));
        let mut s = RawSlave { ws };
        s.send(SlaveFrame::Hello(hello)).await;
        s
    }

    pub async fn send(&mut self, f: SlaveFrame) {
        self.ws
            .send(Message::Binary(codec::encode(&f).unwrap().into()))
            .await
            .expect("sending a frame to the master");
    }

    /// The master's next frame; panics if it closes or says nothing for 30 s.
    pub async fn next(&mut self) -> MasterFrame {
        loop {
            match tokio::time::timeout(Duration::from_secs(30), self.ws.next()).await {
                Ok(Some(Ok(Message::Binary(b)))) => return codec::decode(&b).unwrap(),
                Ok(Some(Ok(_))) => continue,
                other => panic!("the master closed or went quiet: {other:?}"),
            }
        }
    }

    /// The next `Assign` (frames before it are skipped).
    pub async fn job(&mut self) -> kiln_shared::frames::Job {
        loop {
            if let MasterFrame::Assign(job) = self.next().await {
                return job;
            }
        }
    }
}
