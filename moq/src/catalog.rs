//! The hang `catalog.json` track, as the hang crate (moq-dev/moq `rs/hang`) emits and accepts it,
//! plus the "legacy" container's frame payload.
//!
//! Each group of the `catalog.json` track holds one frame of UTF-8 JSON; every update is a new
//! group. (hang also publishes a DEFLATE-compressed copy as `catalog.json.z`; we do not.)
//! Field names are camelCase; the hang crate requires `codec`, `sampleRate` and
//! `numberOfChannels` in an audio rendition and `renditions` inside `audio`; everything else
//! is optional. Unknown fields are ignored when decoding.
//!
//! A rendition's `container` selects how each frame payload is laid out. With `legacy` (the
//! default when absent) a payload is a QUIC varint timestamp in **microseconds** followed by
//! the raw codec frame: see [`legacy_payload`] / [`split_legacy_payload`]. This prefix is
//! independent of the moq-lite FRAME timestamp delta, which hang media tracks send in the
//! track's TRACK_INFO timescale (hang pins media tracks to 1 000 000/s).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::DecodeError;
use crate::coding::{decode_varint, encode_varint};

/// The conventional track name of the catalog.
pub const CATALOG_TRACK: &str = "catalog.json";

/// Timestamp units per second of the legacy container prefix (microseconds).
pub const LEGACY_TIMESCALE: u64 = 1_000_000;

/// The root of `catalog.json`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Catalog {
    /// The video section, kept verbatim (we only relay it). Omitted when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<serde_json::Value>,
    /// The audio section. Omitted when it has no renditions.
    #[serde(default, skip_serializing_if = "Audio::is_empty")]
    pub audio: Audio,
}

/// The `audio` section: renditions keyed by track name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Audio {
    /// Track name to decoder config, sorted by name (hang uses a BTreeMap too).
    pub renditions: BTreeMap<String, AudioConfig>,
}

impl Audio {
    /// No renditions.
    pub fn is_empty(&self) -> bool {
        self.renditions.is_empty()
    }
}

/// One audio rendition: a WebCodecs `AudioDecoderConfig` plus hang's extensions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AudioConfig {
    /// A sibling broadcast publishing this track, relative to the catalog's (e.g. `./source`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcast: Option<String>,
    /// WebCodecs codec string: `opus`, `mp4a.40.2`, `flac`, `pcm`, ...
    pub codec: String,
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// Channel count (JSON `numberOfChannels`).
    pub number_of_channels: u32,
    /// Bits per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitrate: Option<u64>,
    /// Out-of-band decoder description, as a hex string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How frame payloads are framed; defaults to legacy. Always written (hang does too).
    #[serde(default)]
    pub container: Container,
    /// Maximum delay in milliseconds between a frame being ready and being flushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<u64>,
    /// Companion timeline track section, kept verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<serde_json::Value>,
}

impl AudioConfig {
    /// Opus at 48 kHz with `channels` channels in the legacy container.
    pub fn opus(channels: u32) -> Self {
        Self {
            broadcast: None,
            codec: "opus".into(),
            sample_rate: 48_000,
            number_of_channels: channels,
            bitrate: None,
            description: None,
            container: Container::Legacy,
            jitter: None,
            timeline: None,
        }
    }
}

/// The `container` of a rendition, `{"kind": ...}` in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Container {
    /// `{"kind":"legacy"}`: varint microsecond timestamp, then the codec payload.
    #[default]
    Legacy,
    /// `{"kind":"cmaf","init":"<base64>"}`: each frame is a moof+mdat fragment.
    Cmaf {
        /// The base64 init segment (ftyp+moov), kept as the string.
        init: String,
    },
    /// `{"kind":"loc"}`: Low Overhead Container.
    Loc,
    /// Any other kind, kept verbatim so a republished catalog is unchanged. Such a rendition
    /// must be ignored.
    Unknown(serde_json::Map<String, serde_json::Value>),
}

impl Serialize for Container {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Self::Unknown(map) => map.serialize(s),
            Self::Cmaf { init } => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("kind", "cmaf")?;
                m.serialize_entry("init", init)?;
                m.end()
            }
            Self::Legacy | Self::Loc => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(
                    "kind",
                    if *self == Self::Legacy {
                        "legacy"
                    } else {
                        "loc"
                    },
                )?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Container {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        match map.get("kind").and_then(|k| k.as_str()) {
            Some("legacy") => Ok(Self::Legacy),
            Some("loc") => Ok(Self::Loc),
            // As in hang, a malformed known kind is an error rather than Unknown.
            Some("cmaf") => match map.get("init").and_then(|i| i.as_str()) {
                Some(init) => Ok(Self::Cmaf {
                    init: init.to_owned(),
                }),
                None => Err(D::Error::custom("cmaf container without a string init")),
            },
            _ => Ok(Self::Unknown(map)),
        }
    }
}

impl Catalog {
    /// A catalog of Opus tracks (48 kHz, legacy container), given `(track name, channels)` pairs.
    pub fn opus<N: Into<String>>(tracks: impl IntoIterator<Item = (N, u32)>) -> Self {
        let renditions = tracks
            .into_iter()
            .map(|(name, channels)| (name.into(), AudioConfig::opus(channels)))
            .collect();
        Self {
            video: None,
            audio: Audio { renditions },
        }
    }

    /// The audio renditions, by track name.
    pub fn audio_tracks(&self) -> impl Iterator<Item = (&str, &AudioConfig)> {
        self.audio.renditions.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The JSON bytes to put in a catalog frame.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Parse a catalog frame.
    pub fn from_json(json: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }
}

/// Append a legacy-container payload: QUIC varint `timestamp_us`, then `codec`.
pub fn legacy_payload(timestamp_us: u64, codec: &[u8], out: &mut Vec<u8>) {
    encode_varint(timestamp_us, out);
    out.extend_from_slice(codec);
}

/// Split a legacy-container payload into `(timestamp in µs, codec data)`.
/// A payload too short for its varint is [`DecodeError::Short`].
pub fn split_legacy_payload(payload: &[u8]) -> Result<(u64, &[u8]), DecodeError> {
    let mut b = payload;
    let ts = decode_varint(&mut b)?;
    Ok((ts, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The audio half of hang's `root.rs` `simple` test, and its exact encoding.
    #[test]
    fn matches_hang() {
        let json = r#"{"audio":{"renditions":{"audio":{"codec":"opus","sampleRate":48000,"numberOfChannels":2,"bitrate":128000,"container":{"kind":"legacy"}}}}}"#;
        let mut expected = Catalog::opus([("audio", 2)]);
        expected.audio.renditions.get_mut("audio").unwrap().bitrate = Some(128_000);
        let parsed = Catalog::from_json(json.as_bytes()).unwrap();
        assert_eq!(parsed, expected);
        assert_eq!(String::from_utf8(parsed.to_json().unwrap()).unwrap(), json);
    }

    #[test]
    fn full_hang_catalog_with_video_and_unknown_fields() {
        let json = r#"{
            "video": {"renditions": {"video": {"codec": "avc1.64001f", "codedWidth": 1280,
                      "container": {"kind": "legacy"}}}, "flip": false},
            "audio": {"renditions": {
                "mic": {"codec": "opus", "sampleRate": 48000, "numberOfChannels": 1,
                        "jitter": 20, "futureField": [1, 2], "description": "0011ff",
                        "timeline": {"track": "mic.timeline.z", "timescale": 1000}},
                "aac": {"codec": "mp4a.40.2", "sampleRate": 44100, "numberOfChannels": 2,
                        "container": {"kind": "cmaf", "init": "AAEC"}},
                "new": {"codec": "opus", "sampleRate": 48000, "numberOfChannels": 2,
                        "container": {"kind": "future", "magic": 7}}
            }},
            "chat": {"track": "chat.md"}
        }"#;
        let cat = Catalog::from_json(json.as_bytes()).unwrap();
        let names: Vec<_> = cat.audio_tracks().map(|(n, _)| n).collect();
        assert_eq!(names, ["aac", "mic", "new"]);
        let mic = &cat.audio.renditions["mic"];
        assert_eq!(
            mic.container,
            Container::Legacy,
            "absent container is legacy"
        );
        assert_eq!((mic.number_of_channels, mic.jitter), (1, Some(20)));
        assert_eq!(mic.description.as_deref(), Some("0011ff"));
        assert_eq!(
            cat.audio.renditions["aac"].container,
            Container::Cmaf {
                init: "AAEC".into()
            }
        );
        let Container::Unknown(unknown) = &cat.audio.renditions["new"].container else {
            panic!("expected unknown container");
        };
        assert_eq!(unknown["magic"], 7);
        assert!(cat.video.is_some());

        // Re-encoding keeps video, the unknown container and the timeline; drops unknown fields.
        let again = Catalog::from_json(&cat.to_json().unwrap()).unwrap();
        assert_eq!(again, cat);
        let text = String::from_utf8(cat.to_json().unwrap()).unwrap();
        assert!(
            text.contains(r#""magic":7"#)
                && text.contains("codedWidth")
                && !text.contains("futureField")
        );
    }

    #[test]
    fn rejects_what_hang_rejects() {
        // Missing required fields.
        assert!(Catalog::from_json(br#"{"audio":{"renditions":{"a":{"codec":"opus"}}}}"#).is_err());
        assert!(Catalog::from_json(br#"{"audio":{}}"#).is_err());
        // cmaf without init.
        let bad = br#"{"audio":{"renditions":{"a":{"codec":"opus","sampleRate":1,"numberOfChannels":1,"container":{"kind":"cmaf"}}}}}"#;
        assert!(Catalog::from_json(bad).is_err());
        // Empty object is an empty catalog, and encodes back to {}.
        let empty = Catalog::from_json(b"{}").unwrap();
        assert_eq!(empty, Catalog::default());
        assert_eq!(empty.to_json().unwrap(), b"{}");
    }

    #[test]
    fn opus_helper() {
        let cat = Catalog::opus([("audio/0", 1), ("audio/1", 2)]);
        let tracks: Vec<_> = cat
            .audio_tracks()
            .map(|(n, c)| (n, c.number_of_channels))
            .collect();
        assert_eq!(tracks, [("audio/0", 1), ("audio/1", 2)]);
        assert_eq!(
            String::from_utf8(Catalog::opus([("a", 1)]).to_json().unwrap()).unwrap(),
            r#"{"audio":{"renditions":{"a":{"codec":"opus","sampleRate":48000,"numberOfChannels":1,"container":{"kind":"legacy"}}}}}"#
        );
    }

    #[test]
    fn legacy() {
        // hang `Frame::encode`: QUIC varint µs timestamp, then the payload.
        let mut out = Vec::new();
        legacy_payload(1_234_567, b"hello", &mut out);
        assert_eq!(&out[..4], &[0x80, 0x12, 0xD6, 0x87]);
        assert_eq!(split_legacy_payload(&out), Ok((1_234_567, &b"hello"[..])));
        assert_eq!(split_legacy_payload(&[0x05]), Ok((5, &[][..])));
        assert_eq!(split_legacy_payload(&[]), Err(DecodeError::Short));
        assert_eq!(split_legacy_payload(&[0x80, 0x12]), Err(DecodeError::Short));
    }
}
