//! Content negotiation and decompression: which body format a `Content-Type`
//! names, which `Content-Encoding` to undo, and undoing it within the size limit.

use std::borrow::Cow;
use std::io::Read;

/// Why a body could not be read as content: `http::error` maps each variant.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("unsupported Content-Type {0:?}; use application/json or application/x-ndjson")]
    UnsupportedType(String),
    #[error("unsupported Content-Encoding {0:?}; use gzip or zstd")]
    UnsupportedEncoding(String),
    #[error("body could not be decompressed: {0}")]
    Corrupt(String),
    #[error("could not read the body: {0}")]
    Unreadable(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Ndjson,
}

impl BodyFormat {
    /// A missing Content-Type is taken as JSON (as the seed clients expect).
    pub fn from_content_type(content_type: Option<&str>) -> Result<Self, ContentError> {
        let Some(raw) = content_type else {
            return Ok(BodyFormat::Json);
        };
        let mime = raw.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match mime.as_str() {
            "application/json" | "text/json" => Ok(BodyFormat::Json),
            m if m.starts_with("application/") && m.ends_with("+json") => Ok(BodyFormat::Json),
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines"
            | "application/jsonlines" => Ok(BodyFormat::Ndjson),
            _ => Err(ContentError::UnsupportedType(raw.to_owned())),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

impl Encoding {
    pub fn from_header(content_encoding: Option<&str>) -> Result<Self, ContentError> {
        match content_encoding.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("identity") => Ok(Encoding::Identity),
            Some("gzip") | Some("x-gzip") => Ok(Encoding::Gzip),
            Some("zstd") => Ok(Encoding::Zstd),
            Some(_) => {
                Err(ContentError::UnsupportedEncoding(content_encoding.unwrap_or_default().to_owned()))
            }
        }
    }
}

/// Undo `Content-Encoding`, refusing output past `limit` bytes (a zip bomb stops there).
pub fn decompress<'a>(
    encoding: Encoding,
    body: &'a [u8],
    limit: usize,
) -> Result<Cow<'a, [u8]>, ContentError> {
    let reader: Box<dyn Read + 'a> = match encoding {
        Encoding::Identity => return Ok(Cow::Borrowed(body)),
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(body)),
        Encoding::Zstd => Box::new(
            ruzstd::decoding::StreamingDecoder::new(body)
                .map_err(|e| ContentError::Corrupt(e.to_string()))?,
        ),
    };
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    reader.take(limit as u64 + 1).read_to_end(&mut out).map_err(|e| ContentError::Corrupt(e.to_string()))?;
    if out.len() > limit {
        return Err(ContentError::BodyTooLarge { limit });
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_negotiation() {
        assert_eq!(BodyFormat::from_content_type(None).unwrap(), BodyFormat::Json);
        let ct = Some("application/json; charset=utf-8");
        assert_eq!(BodyFormat::from_content_type(ct).unwrap(), BodyFormat::Json);
        let ct = Some("application/x-ndjson");
        assert_eq!(BodyFormat::from_content_type(ct).unwrap(), BodyFormat::Ndjson);
        assert!(BodyFormat::from_content_type(Some("text/plain")).is_err());
        assert_eq!(Encoding::from_header(Some("GZIP")).unwrap(), Encoding::Gzip);
        assert!(Encoding::from_header(Some("br")).is_err());
    }

    #[test]
    fn decompression_is_bounded() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&vec![b' '; 10_000]).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(decompress(Encoding::Gzip, &gz, 10_000).unwrap().len(), 10_000);
        assert!(matches!(decompress(Encoding::Gzip, &gz, 9_999), Err(ContentError::BodyTooLarge { .. })));
        let zst =
            ruzstd::encoding::compress_to_vec(&b"hello"[..], ruzstd::encoding::CompressionLevel::Fastest);
        assert_eq!(&*decompress(Encoding::Zstd, &zst, 100).unwrap(), b"hello");
        assert!(matches!(decompress(Encoding::Gzip, b"junk", 100), Err(ContentError::Corrupt(_))));
    }
}
