//! A TCP proxy a test can cut: ordo talks to a real server (RabbitMQ, NATS, ...) through it,
//! and the test makes that server vanish as a network outage would — every open connection
//! closed, every new one closed at once — then brings it back, without stopping the shared
//! server other tests use.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct CutProxy {
    /// `127.0.0.1:<port>`, to put in place of the real server's address.
    pub address: String,
    up: Arc<AtomicBool>,
    /// Bumped at every cut; each forwarded connection ends when it changes.
    cuts: watch::Sender<u64>,
    /// Connections refused while cut (a sign that the client did try again).
    refused: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// Forwards a free local port to `target` (`host:port`).
    pub async fn start(target: &str) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let up = Arc::new(AtomicBool::new(true));
        let refused = Arc::new(AtomicU64::new(0));
        let (cuts, _) = watch::channel(0u64);
        let task = tokio::spawn({
            let target = target.to_owned();
            let up = Arc::clone(&up);
            let refused = Arc::clone(&refused);
            let cuts = cuts.clone();
            async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if !up.load(Ordering::SeqCst) {
                        refused.fetch_add(1, Ordering::Relaxed);
                        drop(inbound);
                        continue;
                    }
                    let mut cut = cuts.subscribe();
                    let target = target.clone();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = TcpStream::connect(&target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            // Both ends are closed as the task ends.
                            _ = cut.changed() => {}
                        }
                    });
                }
            }
        });
        CutProxy {
            address,
            up,
            cuts,
            refused,
            task,
        }
    }

    /// The outage begins: open connections are closed, new ones too.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// The outage ends.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}
