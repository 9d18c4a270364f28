//! The one acceptance of inbound media bytes at the edge (ADR 0028), shared by every transport:
//! the sandbox's base64, a Cloud API download from the Graph API, a WhatsApp Web download. It
//! checks the kind, the declared MIME type (well formed, of the kind's family, and the type the
//! bytes show, `infer`), the size cap (`WAGATE_MEDIA_MAX_BYTES`) and computes the SHA-256.
//!
//! The sandbox turns a [`Refusal`] into a 400 naming its field; the Cloud API and WhatsApp Web
//! record the message all the same, its media marked [`MediaInfo::unavailable`] with the
//! refusal's message, and its reply ends with that reason.

use wagate_events::chat::{MediaInfo, MessageKind};

/// Media whose bytes were checked: its kind, what the events record, and the bytes.
pub struct CheckedMedia {
    pub kind: MessageKind,
    pub info: MediaInfo,
    pub bytes: Vec<u8>,
}

/// Why media was not accepted: the request field it concerns (the sandbox's 400 names it) and
/// what is wrong (never the bytes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub field: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// The media kinds an inbound message may carry: `audio`, `image`, `sticker` or `document`.
pub fn media_kind(kind: &str) -> Result<MessageKind, Refusal> {
    match kind {
        "audio" => Ok(MessageKind::Audio),
        "image" => Ok(MessageKind::Image),
        "sticker" => Ok(MessageKind::Sticker),
        "document" => Ok(MessageKind::Document),
        _ => Err(Refusal::new(
            "media.kind",
            "must be audio, image, sticker or document",
        )),
    }
}

/// A MIME type without its parameters, lowercased (`audio/ogg; codecs=opus` -> `audio/ogg`).
pub fn essence(mime: &str) -> String {
    mime.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Whether the declared MIME type `declared` (an essence) names the type `sniffed` found in the
/// bytes: the same, or one of the common aliases of one format.
fn same_type(declared: &str, sniffed: &str) -> bool {
    const ALIASES: &[&[&str]] = &[
        &["audio/ogg", "audio/opus", "application/ogg"],
        &[
            "audio/mp4",
            "audio/m4a",
            "audio/x-m4a",
            "audio/aac",
            "video/mp4",
        ],
        &["audio/mpeg", "audio/mp3"],
        &["audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"],
        &["image/jpeg", "image/jpg"],
    ];
    declared == sniffed
        || ALIASES
            .iter()
            .any(|group| group.contains(&declared) && group.contains(&sniffed))
}

/// The declared MIME type's essence, when it is well formed and of `kind`'s family (audio for
/// audio, an image for images and stickers, anything for documents).
pub fn declared_type(kind: MessageKind, mime: &str) -> Result<String, Refusal> {
    let declared = essence(mime);
    let well_formed = declared.split_once('/').is_some_and(|(t, sub)| {
        !t.is_empty()
            && !sub.is_empty()
            && declared
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/.+-_".contains(&b))
    });
    if !well_formed || mime.len() > 255 {
        return Err(Refusal::new(
            "media.mime_type",
            "must be a MIME type such as audio/ogg or image/jpeg",
        ));
    }
    let family_ok = match kind {
        MessageKind::Audio => declared.starts_with("audio/") || declared == "application/ogg",
        MessageKind::Image | MessageKind::Sticker => declared.starts_with("image/"),
        _ => true,
    };
    if !family_ok {
        return Err(Refusal::new(
            "media.mime_type",
            format!("{declared} is not a type of {} media", kind.as_str()),
        ));
    }
    Ok(declared)
}

/// A file name as the sandbox takes it: 1..=255 bytes, without `/`, `\` or NUL.
pub fn check_filename(filename: Option<&str>) -> Result<(), Refusal> {
    if filename
        .is_some_and(|f| f.trim().is_empty() || f.len() > 255 || f.contains(['/', '\\', '\0']))
    {
        return Err(Refusal::new(
            "media.filename",
            "1..=255 characters, without / or \\",
        ));
    }
    Ok(())
}

/// A file name a transport reported, made acceptable: its last path segment, without control
/// characters, at most 255 bytes; `None` when nothing is left.
pub fn clean_filename(filename: Option<&str>) -> Option<String> {
    let name = filename?.rsplit(['/', '\\']).next().unwrap_or("");
    let name: String = name.chars().filter(|c| !c.is_control()).collect();
    let name = name.trim();
    let mut end = name.len().min(255);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let name = &name[..end];
    (!name.trim().is_empty()).then(|| name.to_string())
}

/// The refusal of `size` bytes over the cap `max_bytes`.
pub fn too_large(size: u64, max_bytes: usize) -> Refusal {
    Refusal::new(
        "media.data_base64",
        format!(
            "the media is {size} bytes; at most {max_bytes} are accepted (WAGATE_MEDIA_MAX_BYTES)"
        ),
    )
}

/// Accepts the `bytes` of media of `kind` declared as `mime` (with the file name `filename`,
/// checked as [`check_filename`]): not empty, at most `max_bytes`, and of the declared type (a
/// document of a type no signature names is taken as declared; audio and images must show a
/// known format).
pub fn accept(
    kind: MessageKind,
    mime: &str,
    bytes: Vec<u8>,
    filename: Option<String>,
    max_bytes: usize,
) -> Result<CheckedMedia, Refusal> {
    let declared = declared_type(kind, mime)?;
    check_filename(filename.as_deref())?;
    if bytes.is_empty() {
        return Err(Refusal::new("media.data_base64", "must not be empty"));
    }
    if bytes.len() > max_bytes {
        return Err(too_large(bytes.len() as u64, max_bytes));
    }
    match infer::get(&bytes).map(|t| t.mime_type()) {
        Some(sniffed) if !same_type(&declared, sniffed) => {
            return Err(Refusal::new(
                "media.mime_type",
                format!("declared {declared}, but the bytes are {sniffed}"),
            ))
        }
        Some(_) => {}
        None if kind == MessageKind::Document => {}
        None => {
            return Err(Refusal::new(
                "media.mime_type",
                format!(
                    "declared {declared}, but the bytes are not a known {} format",
                    kind.as_str()
                ),
            ))
        }
    }
    let sha256 = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    Ok(CheckedMedia {
        kind,
        info: MediaInfo {
            mime_type: declared,
            size: bytes.len() as u64,
            sha256,
            filename,
            unavailable: None,
        },
        bytes,
    })
}

/// What a transport's media came to once its download was tried.
pub enum Received {
    /// The bytes were had and accepted.
    Accepted(CheckedMedia),
    /// Only what was declared is known: a document (whose bytes no reply uses), or media whose
    /// download failed or whose bytes were not accepted ([`MediaInfo::unavailable`] says why).
    Declared(MediaInfo),
}

impl Received {
    /// Accepts `fetched` (the downloaded bytes, or why there are none) as media of `kind`
    /// declared as `mime`, of `size` bytes and hash `sha256` (hex or base64), named `filename`.
    pub fn from_download(
        kind: MessageKind,
        mime: &str,
        size: Option<u64>,
        sha256: Option<&str>,
        filename: Option<String>,
        fetched: Result<Vec<u8>, String>,
        max_bytes: usize,
    ) -> Self {
        let reason = match fetched {
            Ok(bytes) => match accept(kind, mime, bytes, filename.clone(), max_bytes) {
                Ok(checked) => return Received::Accepted(checked),
                Err(refused) => refused.message,
            },
            Err(why) => why,
        };
        Received::Declared(declared_info(mime, size, sha256, filename, Some(reason)))
    }

    /// What the events record.
    pub fn info(&self) -> &MediaInfo {
        match self {
            Received::Accepted(c) => &c.info,
            Received::Declared(info) => info,
        }
    }

    /// The accepted bytes, when they are to be kept for a reply (see
    /// [`wagate_events::chat::keeps_bytes`]).
    pub fn kept(&self) -> Option<&CheckedMedia> {
        match self {
            Received::Accepted(c) if wagate_events::chat::keeps_bytes(c.kind) => Some(c),
            _ => None,
        }
    }

    pub fn into_info(self) -> MediaInfo {
        match self {
            Received::Accepted(c) => c.info,
            Received::Declared(info) => info,
        }
    }
}

/// What the transport declared of media it did not fetch (a document, whose bytes no reply
/// uses) or could not accept: the MIME type's essence (`application/octet-stream` when it is
/// not one), the declared size and SHA-256 (hex; `""` when none was declared or it is not one),
/// the file name, and `unavailable` when the bytes were wanted but could not be had.
pub fn declared_info(
    mime: &str,
    size: Option<u64>,
    sha256: Option<&str>,
    filename: Option<String>,
    unavailable: Option<String>,
) -> MediaInfo {
    let mime_type = declared_type(MessageKind::Document, mime)
        .unwrap_or_else(|_| "application/octet-stream".to_string());
    MediaInfo {
        mime_type,
        size: size.unwrap_or(0),
        sha256: sha256.and_then(hex_digest).unwrap_or_default(),
        filename,
        unavailable,
    }
}

/// A declared SHA-256 as lowercase hex: given as hex, or as base64 (as WhatsApp and the Graph
/// API give it); `None` when it is neither.
pub fn hex_digest(declared: &str) -> Option<String> {
    use base64::Engine;
    let d = declared.trim();
    if d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(d.to_ascii_lowercase());
    }
    [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE,
    ]
    .iter()
    .find_map(|engine| engine.decode(d).ok())
    .or_else(|| {
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(d)
            .ok()
    })
    .filter(|raw| raw.len() == 32)
    .map(hex::encode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png() -> Vec<u8> {
        let mut b = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
        b.extend_from_slice(&[1; 64]);
        b
    }

    #[test]
    fn accepts_bytes_of_the_declared_type_within_the_cap() {
        let ok = accept(MessageKind::Image, "image/PNG", png(), None, 1000).expect("accepted");
        assert_eq!(ok.info.mime_type, "image/png");
        assert_eq!(ok.info.size, png().len() as u64);
        assert_eq!(ok.info.sha256.len(), 64);
        assert!(ok.info.available());
        let e = accept(MessageKind::Image, "image/jpeg", png(), None, 1000)
            .err()
            .expect("refused");
        assert_eq!(e.field, "media.mime_type");
        assert!(e.message.contains("image/png"), "{e}");
        let e = accept(MessageKind::Image, "image/png", png(), None, 10)
            .err()
            .expect("refused");
        assert!(e.message.contains("WAGATE_MEDIA_MAX_BYTES"), "{e}");
        let e = accept(MessageKind::Audio, "image/png", png(), None, 1000)
            .err()
            .expect("refused");
        assert!(e.message.contains("not a type of audio"), "{e}");
        // A document of a type no signature names is taken as declared.
        assert!(accept(MessageKind::Document, "text/csv", b"a,b".to_vec(), None, 10).is_ok());
        assert!(accept(MessageKind::Image, "image/png", b"a,b".to_vec(), None, 10).is_err());
    }

    #[test]
    fn declared_media_and_file_names() {
        assert_eq!(
            clean_filename(Some("../../etc/Rechnung März.pdf")).as_deref(),
            Some("Rechnung März.pdf")
        );
        assert_eq!(clean_filename(Some("a/")), None);
        assert_eq!(
            clean_filename(Some(&"é".repeat(200))).map(|f| f.len()),
            Some(254)
        );
        let hex = "ab".repeat(32);
        assert_eq!(
            hex_digest(&hex.to_uppercase()).as_deref(),
            Some(hex.as_str())
        );
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode([0xab; 32]);
        assert_eq!(hex_digest(&b64).as_deref(), Some(hex.as_str()));
        assert_eq!(hex_digest("x"), None);
        let info = declared_info("nonsense", None, Some("x"), None, Some("why".into()));
        assert_eq!(info.mime_type, "application/octet-stream");
        assert_eq!((info.size, info.sha256.as_str()), (0, ""));
        assert_eq!(info.unavailable.as_deref(), Some("why"));
    }
}
