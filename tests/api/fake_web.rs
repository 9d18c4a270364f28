//! A WhatsApp Web stand-in at the library's port (`wagate_waweb::port`) for the API and browser
//! tests: it emits what whatsapp-rust would (a QR code or pair code, the pairing, connected) and
//! records what the gateway sends. Its session store is the gateway's real one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use wacore::store::Device;
use wagate_waweb::port::{
    ConnectOptions, SessionBackend, WebConnection, WebConnector, WebError, WebEvent, WebHandler,
    WebInbound, WebMedia,
};

/// The linked phone's own number.
pub const OWN: &str = "5511888880000@s.whatsapp.net";
/// The QR code the fake offers.
pub const QR: &str = "2@fakeRef0123456789,fakeNoiseKeyAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,fakeIdentityKeyBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB=,fakeAdvSecretCCCCCCCCCCCCCCCCCCCC=";

/// What the fake saw and holds, by account.
#[derive(Default)]
pub struct FakeState {
    pub handlers: HashMap<String, Arc<dyn WebHandler>>,
    pub backends: HashMap<String, Arc<dyn SessionBackend>>,
    /// Connections started, and those not stopped yet.
    pub connects: HashMap<String, usize>,
    pub live: HashMap<String, usize>,
    pub pair_phones: Vec<String>,
    pub sent: Vec<(String, String, String)>,
    pub typing: Vec<(String, String)>,
    pub read: Vec<(String, String, Vec<String>)>,
    /// What a download of the media at a direct path gives (absent: WhatsApp's CDN says 404).
    pub media: HashMap<String, Result<Vec<u8>, WebError>>,
    /// The direct paths downloaded.
    pub downloads: Vec<String>,
}

/// A WhatsApp Web stand-in: unpaired sessions get a QR code (or a pair code), paired ones
/// connect at once.
#[derive(Clone, Default)]
pub struct FakeWeb(Arc<Mutex<FakeState>>);

impl FakeWeb {
    pub fn st(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.0.lock().unwrap()
    }

    pub fn handler(&self, acc: &str) -> Arc<dyn WebHandler> {
        self.st()
            .handlers
            .get(acc)
            .cloned()
            .expect("a connection was started")
    }

    /// The phone scanned the code: the device is stored as paired, then it connects.
    pub async fn scan(&self, acc: &str) {
        let backend = self.st().backends.get(acc).cloned().expect("backend");
        let mut device = Device::new();
        device.pn = Some(OWN.parse().unwrap());
        device.push_name = "Shop".into();
        backend.save(&device).await.expect("device saved");
        let h = self.handler(acc);
        h.event(WebEvent::Paired { jid: OWN.into() }).await;
        h.event(WebEvent::Connected).await;
    }

    pub async fn say(&self, acc: &str, m: WebInbound) -> Result<(), String> {
        self.handler(acc).messages(vec![m]).await
    }

    /// What a download of the media at `direct_path` gives.
    pub fn serve(&self, direct_path: &str, bytes: Result<Vec<u8>, WebError>) {
        self.st().media.insert(direct_path.to_string(), bytes);
    }

    pub fn sent(&self) -> Vec<(String, String, String)> {
        self.st().sent.clone()
    }
}

#[async_trait]
impl WebConnector for FakeWeb {
    async fn connect(&self, o: ConnectOptions) -> Result<Arc<dyn WebConnection>, WebError> {
        let paired = o
            .backend
            .load()
            .await
            .map_err(|e| WebError::permanent(e.to_string()))?
            .is_some_and(|d| d.pn.is_some());
        {
            let mut st = self.st();
            st.handlers.insert(o.account.clone(), o.handler.clone());
            st.backends.insert(o.account.clone(), o.backend.clone());
            *st.connects.entry(o.account.clone()).or_default() += 1;
            *st.live.entry(o.account.clone()).or_default() += 1;
            if let Some(p) = &o.pair_phone {
                st.pair_phones.push(p.clone());
            }
        }
        let handler = o.handler.clone();
        let phone = o.pair_phone.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            match (paired, phone) {
                (true, _) => handler.event(WebEvent::Connected).await,
                (false, Some(_)) => {
                    handler
                        .event(WebEvent::PairCode {
                            code: "ABCD-EFGH".into(),
                            valid_for: Duration::from_secs(180),
                        })
                        .await
                }
                (false, None) => {
                    handler
                        .event(WebEvent::Qr {
                            code: QR.into(),
                            valid_for: Duration::from_secs(60),
                        })
                        .await
                }
            }
        });
        Ok(Arc::new(FakeConn {
            web: self.clone(),
            account: o.account,
            stopped: Mutex::new(false),
        }))
    }
}

pub struct FakeConn {
    web: FakeWeb,
    account: String,
    stopped: Mutex<bool>,
}

#[async_trait]
impl WebConnection for FakeConn {
    async fn send_text(&self, chat: &str, text: &str) -> Result<String, WebError> {
        let mut st = self.web.st();
        st.sent
            .push((self.account.clone(), chat.to_string(), text.to_string()));
        Ok(format!("3EB0FAKE{}", st.sent.len()))
    }
    async fn typing(&self, chat: &str, composing: bool) -> Result<(), WebError> {
        if composing {
            self.web
                .st()
                .typing
                .push((self.account.clone(), chat.to_string()));
        }
        Ok(())
    }
    async fn mark_read(&self, chat: &str, _sender: &str, ids: &[String]) -> Result<(), WebError> {
        self.web
            .st()
            .read
            .push((self.account.clone(), chat.to_string(), ids.to_vec()));
        Ok(())
    }
    async fn download(&self, media: &WebMedia, max_bytes: usize) -> Result<Vec<u8>, WebError> {
        if let Some(size) = media.size.filter(|s| *s > max_bytes as u64) {
            return Err(WebError::permanent(format!(
                "the media is {size} bytes; at most {max_bytes} are accepted (WAGATE_MEDIA_MAX_BYTES)"
            )));
        }
        let path = media.locator.direct_path.clone().unwrap_or_default();
        let mut st = self.web.st();
        st.downloads.push(path.clone());
        st.media.get(&path).cloned().unwrap_or_else(|| {
            Err(WebError::permanent(
                "the media download failed (WhatsApp's CDN refused it, or it did not decrypt)",
            ))
        })
    }
    async fn logout(&self) -> Result<(), WebError> {
        Ok(())
    }
    async fn stop(&self) {
        let mut stopped = self.stopped.lock().unwrap();
        if !*stopped {
            *stopped = true;
            *self.web.st().live.entry(self.account.clone()).or_default() -= 1;
        }
    }
}
