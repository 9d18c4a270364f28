//! WhatsApp Web pieces that need no application state: the QR code's SVG rendering (for the API
//! and the dashboard). The connections themselves are in `app::whatsapp_web`; the library
//! adapter is the `wagate-waweb` crate.

use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

/// The QR code of `text` as a standalone SVG document (black on white, with the quiet zone),
/// or `None` when the text does not fit in a QR code.
pub fn qr_svg(text: &str) -> Option<String> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::L).ok()?;
    Some(
        code.render::<svg::Color<'_>>()
            .min_dimensions(264, 264)
            .dark_color(svg::Color("#000000"))
            .light_color(svg::Color("#ffffff"))
            .quiet_zone(true)
            .build(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_pairing_code_renders_as_svg() {
        let code = "2@AbCdEf0123456789+/=,NoiseKeyBase64xxxxxxxxxxxxxxxxxxxxxxxxxxxx=,IdentityKeyBase64yyyyyyyyyyyyyyyyyyyyyyyyyyyy=,AdvSecretBase64zzzzzzzzzzzzzzzzzz=";
        let svg = super::qr_svg(code).expect("fits");
        assert!(svg.contains("<svg"));
        assert!(svg.contains("</svg>"));
        assert!(!svg.contains("NoiseKey"), "the code is drawn, not written");
        assert!(super::qr_svg(&"x".repeat(5000)).is_none());
    }
}
