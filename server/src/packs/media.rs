//! The media types the store knows, their file-name extensions and magic bytes.

use std::fmt;

/// A media type whose content the store recognises by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// `image/jpeg` (`.jpg`, `.jpeg`): starts `FF D8 FF`.
    Jpeg,
    /// `image/png` (`.png`): starts `89 50 4E 47 0D 0A 1A 0A`.
    Png,
    /// `image/webp` (`.webp`): `RIFF`, a 4-byte length, then `WEBP`.
    Webp,
    /// `video/mp4` (`.mp4`): a 4-byte box size, then `ftyp`.
    Mp4,
    /// `video/webm` (`.webm`): the EBML header `1A 45 DF A3`.
    Webm,
}

impl MediaKind {
    /// Every kind the store knows.
    pub const ALL: [MediaKind; 5] = [
        MediaKind::Jpeg,
        MediaKind::Png,
        MediaKind::Webp,
        MediaKind::Mp4,
        MediaKind::Webm,
    ];

    /// The media type's name, e.g. `"image/png"`.
    pub const fn media_type(self) -> &'static str {
        match self {
            MediaKind::Jpeg => "image/jpeg",
            MediaKind::Png => "image/png",
            MediaKind::Webp => "image/webp",
            MediaKind::Mp4 => "video/mp4",
            MediaKind::Webm => "video/webm",
        }
    }

    /// The kind a media type names, ASCII case-insensitively; `None` for any
    /// other type (parameters such as `; codecs=` included).
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        MediaKind::ALL
            .into_iter()
            .find(|kind| kind.media_type().eq_ignore_ascii_case(media_type))
    }

    /// The kind a file-name extension (without the dot) stands for, ASCII
    /// case-insensitively: `jpg`/`jpeg`, `png`, `webp`, `mp4`, `webm`.
    pub fn from_extension(extension: &str) -> Option<Self> {
        const EXTENSIONS: [(&str, MediaKind); 6] = [
            ("jpg", MediaKind::Jpeg),
            ("jpeg", MediaKind::Jpeg),
            ("png", MediaKind::Png),
            ("webp", MediaKind::Webp),
            ("mp4", MediaKind::Mp4),
            ("webm", MediaKind::Webm),
        ];
        EXTENSIONS
            .into_iter()
            .find(|(ext, _)| ext.eq_ignore_ascii_case(extension))
            .map(|(_, kind)| kind)
    }

    /// The kind a file name's extension (after its last `.`) stands for;
    /// `None` for a name without a dot or with an extension not listed in
    /// [`from_extension`](Self::from_extension).
    pub fn from_file_name(name: &str) -> Option<Self> {
        name.rsplit_once('.')
            .and_then(|(_, extension)| MediaKind::from_extension(extension))
    }

    /// How many leading bytes [`matches`](Self::matches) needs: content
    /// shorter than this is never of this kind.
    pub const fn magic_len(self) -> usize {
        match self {
            MediaKind::Jpeg => 3,
            MediaKind::Png => 8,
            MediaKind::Webp => 12,
            MediaKind::Mp4 => 8,
            MediaKind::Webm => 4,
        }
    }

    /// Whether `content` (or at least its first [`magic_len`](Self::magic_len)
    /// bytes) starts like this kind.
    pub fn matches(self, content: &[u8]) -> bool {
        match self {
            MediaKind::Jpeg => content.starts_with(&[0xFF, 0xD8, 0xFF]),
            MediaKind::Png => {
                content.starts_with(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A])
            }
            MediaKind::Webp => {
                content.starts_with(b"RIFF") && content.get(8..12) == Some(b"WEBP".as_slice())
            }
            MediaKind::Mp4 => content.get(4..8) == Some(b"ftyp".as_slice()),
            MediaKind::Webm => content.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]),
        }
    }

    /// The kind `content` starts like, if any.
    pub fn sniff(content: &[u8]) -> Option<Self> {
        MediaKind::ALL
            .into_iter()
            .find(|kind| kind.matches(content))
    }
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.media_type())
    }
}
