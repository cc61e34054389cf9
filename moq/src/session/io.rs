//! Reading whole messages from a QUIC receive stream with the sans-IO codec.

use web_transport_quinn::RecvStream;

use crate::MAX_MESSAGE_SIZE;
use crate::coding::DecodeError;

use super::Failure;

/// Buffers a receive stream and hands out decoded messages.
#[derive(Debug)]
pub(crate) struct Reader {
    stream: RecvStream,
    buf: Vec<u8>,
    /// Bytes of `buf` already decoded.
    used: usize,
    /// The peer finished the stream.
    fin: bool,
}

impl Reader {
    pub(crate) fn new(stream: RecvStream) -> Self {
        Self {
            stream,
            buf: Vec::with_capacity(256),
            used: 0,
            fin: false,
        }
    }

    /// Decodes the next message with `decode`, reading more bytes while it reports `Short`.
    /// `Ok(None)`: the stream ended cleanly between messages.
    pub(crate) async fn next<T>(
        &mut self,
        mut decode: impl FnMut(&mut &[u8]) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, Failure> {
        loop {
            let mut input = &self.buf[self.used..];
            if !input.is_empty() {
                let before = input.len();
                match decode(&mut input) {
                    Ok(value) => {
                        self.used += before - input.len();
                        return Ok(Some(value));
                    }
                    Err(DecodeError::Short) => {}
                    Err(err) => return Err(Failure::Protocol(err.to_string())),
                }
            }
            if self.fin {
                return if self.used == self.buf.len() {
                    Ok(None)
                } else {
                    Err(Failure::Protocol("stream ended inside a message".into()))
                };
            }
            if self.buf.len() - self.used > MAX_MESSAGE_SIZE + 16 {
                return Err(Failure::Protocol(format!(
                    "message over {MAX_MESSAGE_SIZE} bytes"
                )));
            }
            self.fill().await?;
        }
    }

    /// Reads one more chunk from the stream.
    async fn fill(&mut self) -> Result<(), Failure> {
        if self.used > 0 && self.used == self.buf.len() {
            self.buf.clear();
            self.used = 0;
        } else if self.used > 4096 {
            self.buf.drain(..self.used);
            self.used = 0;
        }
        match self.stream.read_chunk(MAX_MESSAGE_SIZE, true).await {
            Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
            Ok(None) => self.fin = true,
            Err(err) => return Err(Failure::Stream(err.to_string())),
        }
        Ok(())
    }

    /// Waits until the peer finishes or resets the stream, discarding anything it sends; for
    /// request streams whose only later input is the end.
    pub(crate) async fn closed(&mut self) {
        while !self.fin {
            if self.fill().await.is_err() {
                return;
            }
            self.buf.clear();
            self.used = 0;
        }
    }

    /// Stops the peer's sending with `code`.
    pub(crate) fn stop(&mut self, code: u32) {
        let _ = self.stream.stop(code);
    }
}
