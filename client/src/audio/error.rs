//! The pipeline's one error type.

use std::path::PathBuf;

/// Everything that can go wrong reading, converting, coding or writing audio.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The file could not be opened at all (missing, permissions, …).
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file opened but is not audio in any container the client reads.
    #[error(
        "{} is not a readable audio file ({reason}); supported: WAV, FLAC, MP3, Ogg Vorbis, Ogg Opus, AAC/M4A",
        path.display()
    )]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the demuxer said.
        reason: String,
    },
    /// The container was recognised but holds no audio track.
    #[error("{} has no audio track", path.display())]
    NoAudioTrack {
        /// The file.
        path: PathBuf,
    },
    /// A codec, channel layout or parameter the pipeline does not handle.
    #[error("unsupported audio: {0}")]
    Unsupported(String),
    /// The audio data is corrupt beyond what decoding can skip.
    #[error("cannot decode audio: {0}")]
    Decode(String),
    /// The resampler refused its input.
    #[error("resampling failed: {0}")]
    Resample(String),
    /// libopus returned an error.
    #[error("opus {operation} failed: {source}")]
    Opus {
        /// What was being done: "encode", "decode", …
        operation: &'static str,
        /// libopus's error.
        #[source]
        source: ::opus::Error,
    },
    /// A caller passed something the pipeline cannot use (wrong frame length, 0 channels, …).
    #[error("invalid audio argument: {0}")]
    InvalidInput(String),
    /// Reading or writing failed.
    #[error("audio I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl AudioError {
    /// Wraps a libopus error with the operation that produced it.
    pub(crate) fn opus(operation: &'static str) -> impl FnOnce(::opus::Error) -> Self {
        move |source| Self::Opus { operation, source }
    }
}

/// Checks a channel count the pipeline can carry (1 or 2).
pub(crate) fn check_channels(channels: u16) -> Result<(), AudioError> {
    match channels {
        1 | 2 => Ok(()),
        n => Err(AudioError::InvalidInput(format!(
            "{n} channels; the pipeline carries mono or stereo"
        ))),
    }
}
