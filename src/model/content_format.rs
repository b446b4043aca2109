//! CoAP Content-Format numbers of the LwM2M payload formats.

use core::fmt;
use core::str::FromStr;

/// A payload format, identified on the wire by its CoAP Content-Format number.
///
/// ```
/// use lwm2m_fota::model::ContentFormat;
/// assert_eq!(ContentFormat::from_number(11542), Some(ContentFormat::Tlv));
/// assert_eq!(ContentFormat::from_number(1542), Some(ContentFormat::Tlv)); // legacy, input only
/// assert_eq!(ContentFormat::Tlv.number(), 11542);
/// assert_eq!("senml-cbor".parse(), Ok(ContentFormat::SenmlCbor));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
#[non_exhaustive]
pub enum ContentFormat {
    /// `text/plain;charset=utf-8` (0): one value.
    Text,
    /// `application/link-format` (40): Discover and registration payloads.
    LinkFormat,
    /// `application/octet-stream` (42): one opaque value.
    Opaque,
    /// `application/cbor` (60): one CBOR data item (LwM2M 1.1+).
    Cbor,
    /// `application/senml+json` (110, LwM2M 1.1+).
    SenmlJson,
    /// `application/senml+cbor` (112, LwM2M 1.1+).
    SenmlCbor,
    /// `application/vnd.oma.lwm2m+tlv` (11542; 1542 before registration).
    Tlv,
    /// `application/vnd.oma.lwm2m+json` (11543; 1543 before registration): the
    /// LwM2M 1.0 JSON dialect.
    Lwm2mJson,
    /// `application/vnd.oma.lwm2m+cbor` (11544, LwM2M 1.2).
    Lwm2mCbor,
}

impl ContentFormat {
    /// Every format, in Content-Format number order.
    pub const ALL: [ContentFormat; 9] = [
        ContentFormat::Text,
        ContentFormat::LinkFormat,
        ContentFormat::Opaque,
        ContentFormat::Cbor,
        ContentFormat::SenmlJson,
        ContentFormat::SenmlCbor,
        ContentFormat::Tlv,
        ContentFormat::Lwm2mJson,
        ContentFormat::Lwm2mCbor,
    ];

    /// The Content-Format number to put on the wire.
    pub const fn number(self) -> u16 {
        match self {
            ContentFormat::Text => 0,
            ContentFormat::LinkFormat => 40,
            ContentFormat::Opaque => 42,
            ContentFormat::Cbor => 60,
            ContentFormat::SenmlJson => 110,
            ContentFormat::SenmlCbor => 112,
            ContentFormat::Tlv => 11542,
            ContentFormat::Lwm2mJson => 11543,
            ContentFormat::Lwm2mCbor => 11544,
        }
    }

    /// The format a received Content-Format number names; the pre-registration
    /// numbers 1542 (TLV) and 1543 (LwM2M JSON) are accepted.
    pub const fn from_number(number: u16) -> Option<ContentFormat> {
        Some(match number {
            0 => ContentFormat::Text,
            40 => ContentFormat::LinkFormat,
            42 => ContentFormat::Opaque,
            60 => ContentFormat::Cbor,
            110 => ContentFormat::SenmlJson,
            112 => ContentFormat::SenmlCbor,
            11542 | 1542 => ContentFormat::Tlv,
            11543 | 1543 => ContentFormat::Lwm2mJson,
            11544 => ContentFormat::Lwm2mCbor,
            _ => return None,
        })
    }

    /// The short name used on command lines (`tlv`, `senml-cbor`, …).
    pub const fn name(self) -> &'static str {
        match self {
            ContentFormat::Text => "text",
            ContentFormat::LinkFormat => "link-format",
            ContentFormat::Opaque => "opaque",
            ContentFormat::Cbor => "cbor",
            ContentFormat::SenmlJson => "senml-json",
            ContentFormat::SenmlCbor => "senml-cbor",
            ContentFormat::Tlv => "tlv",
            ContentFormat::Lwm2mJson => "lwm2m-json",
            ContentFormat::Lwm2mCbor => "lwm2m-cbor",
        }
    }

    /// The media type.
    pub const fn media_type(self) -> &'static str {
        match self {
            ContentFormat::Text => "text/plain;charset=utf-8",
            ContentFormat::LinkFormat => "application/link-format",
            ContentFormat::Opaque => "application/octet-stream",
            ContentFormat::Cbor => "application/cbor",
            ContentFormat::SenmlJson => "application/senml+json",
            ContentFormat::SenmlCbor => "application/senml+cbor",
            ContentFormat::Tlv => "application/vnd.oma.lwm2m+tlv",
            ContentFormat::Lwm2mJson => "application/vnd.oma.lwm2m+json",
            ContentFormat::Lwm2mCbor => "application/vnd.oma.lwm2m+cbor",
        }
    }

    /// True for the formats that carry several records (and paths) in one payload.
    pub const fn is_multi_value(self) -> bool {
        matches!(
            self,
            ContentFormat::SenmlJson
                | ContentFormat::SenmlCbor
                | ContentFormat::Tlv
                | ContentFormat::Lwm2mJson
                | ContentFormat::Lwm2mCbor
        )
    }
}

/// A text that names no content format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown content format (expected a name such as \"tlv\" or a number such as 11542)")]
pub struct UnknownContentFormat;

impl FromStr for ContentFormat {
    type Err = UnknownContentFormat;

    /// Accepts the short name or the decimal Content-Format number.
    fn from_str(text: &str) -> Result<ContentFormat, UnknownContentFormat> {
        if let Some(format) = ContentFormat::ALL.into_iter().find(|f| f.name() == text) {
            return Ok(format);
        }
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(number) = text.parse::<u16>() {
                return ContentFormat::from_number(number).ok_or(UnknownContentFormat);
            }
        }
        Err(UnknownContentFormat)
    }
}

impl fmt::Display for ContentFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip() {
        for format in ContentFormat::ALL {
            assert_eq!(ContentFormat::from_number(format.number()), Some(format));
            assert_eq!(format.name().parse(), Ok(format));
            assert_eq!(alloc::format!("{}", format.number()).parse(), Ok(format));
        }
        assert_eq!(ContentFormat::from_number(1543), Some(ContentFormat::Lwm2mJson));
        assert_eq!(ContentFormat::from_number(41), None);
        assert_eq!("tlvx".parse::<ContentFormat>(), Err(UnknownContentFormat));
        assert_eq!("99999".parse::<ContentFormat>(), Err(UnknownContentFormat));
        assert!(ContentFormat::Tlv.is_multi_value());
        assert!(!ContentFormat::Text.is_multi_value());
    }
}
