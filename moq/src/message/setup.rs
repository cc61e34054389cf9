//! SETUP, the only message on each side's Setup Stream (uni stream type 1).

use crate::coding::{
    decode_bytes, decode_sized, decode_varint, encode_bytes, encode_sized, encode_varint,
};
use crate::{Decode, DecodeError, Encode};

/// SETUP: the capabilities the sender supports, as `(Parameter ID, raw value)` pairs.
///
/// Wire: `Message Length (i), Parameter Count (i), { ID (i), Length (i), Value }...`, the same
/// in the draft and moq-net. Decoding rejects duplicate ids and more than
/// [`Setup::MAX_PARAMS`] parameters (moq-net's cap), and validates the value of each
/// parameter we know (a varint parameter must be exactly one varint, Path must be UTF-8),
/// so the typed getters below never see malformed values. Unknown ids are kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Setup {
    /// The parameters in wire order.
    pub params: Vec<(u64, Vec<u8>)>,
}

impl Setup {
    /// Probe parameter id: the sender's probe level as a publisher (varint).
    pub const PROBE: u64 = 0x1;
    /// Path parameter id: the request path and `?query` (UTF-8, not length-prefixed inside).
    pub const PATH: u64 = 0x2;
    /// Role parameter id: what the client intends to do (varint, client only).
    pub const ROLE: u64 = 0x3;
    /// Cost parameter id: what subscribing from the sender costs (varint).
    pub const COST: u64 = 0x4;
    /// Origin parameter id: the sender's Hop ID (varint; moq-net calls it `Hop`).
    pub const ORIGIN: u64 = 0x5;

    /// Probe level: no probing (same as omitting the parameter).
    pub const PROBE_NONE: u64 = 0;
    /// Probe level: can measure and report the estimated bitrate.
    pub const PROBE_REPORT: u64 = 1;
    /// Probe level: can also pad the connection up to a target.
    pub const PROBE_INCREASE: u64 = 2;

    /// Role: publish and/or subscribe (same as omitting the parameter; unknown values mean this too).
    pub const ROLE_BOTH: u64 = 0;
    /// Role: the client only publishes.
    pub const ROLE_PUBLISHER: u64 = 1;
    /// Role: the client only subscribes.
    pub const ROLE_SUBSCRIBER: u64 = 2;

    /// The most parameters we (and moq-net) accept.
    pub const MAX_PARAMS: usize = 64;

    /// An empty SETUP: what an endpoint with no optional capabilities sends.
    pub fn new() -> Self {
        Self::default()
    }

    /// A SETUP carrying only the Path parameter.
    pub fn with_path(path: &str) -> Self {
        Self::new().with(Self::PATH, path.as_bytes().to_vec())
    }

    /// Builder form of [`Self::set`].
    pub fn with(mut self, id: u64, value: Vec<u8>) -> Self {
        self.set(id, value);
        self
    }

    /// Builder form of [`Self::set_varint`].
    pub fn with_varint(mut self, id: u64, value: u64) -> Self {
        self.set_varint(id, value);
        self
    }

    /// Set parameter `id` to a raw value, replacing any existing one.
    pub fn set(&mut self, id: u64, value: Vec<u8>) {
        match self.params.iter_mut().find(|(k, _)| *k == id) {
            Some((_, v)) => *v = value,
            None => self.params.push((id, value)),
        }
    }

    /// Set parameter `id` to a varint value, replacing any existing one.
    pub fn set_varint(&mut self, id: u64, value: u64) {
        let mut v = Vec::with_capacity(8);
        encode_varint(value, &mut v);
        self.set(id, v);
    }

    /// The raw value of parameter `id`.
    pub fn get(&self, id: u64) -> Option<&[u8]> {
        self.params
            .iter()
            .find(|(k, _)| *k == id)
            .map(|(_, v)| v.as_slice())
    }

    /// Parameter `id` read as a single varint; `None` if absent or not exactly one varint.
    pub fn varint(&self, id: u64) -> Option<u64> {
        let mut v = self.get(id)?;
        let n = decode_varint(&mut v).ok()?;
        v.is_empty().then_some(n)
    }

    /// The Path parameter (an empty one means the server's default path, like an absent one).
    pub fn path(&self) -> Option<&str> {
        std::str::from_utf8(self.get(Self::PATH)?).ok()
    }

    /// The raw Role parameter ([`Self::ROLE_PUBLISHER`], ...); unknown values mean "both".
    pub fn role(&self) -> Option<u64> {
        self.varint(Self::ROLE)
    }

    /// The Probe parameter ([`Self::PROBE_REPORT`], ...). moq-net reads values above 2 as Increase.
    pub fn probe(&self) -> Option<u64> {
        self.varint(Self::PROBE)
    }

    /// The Cost parameter; absent means the default cost of 1.
    pub fn cost(&self) -> Option<u64> {
        self.varint(Self::COST)
    }

    /// The Origin parameter (the sender's Hop ID); 0 carries no identity, like an absent one.
    pub fn origin(&self) -> Option<u64> {
        self.varint(Self::ORIGIN)
    }
}

/// Check the value of a parameter whose format we know.
fn validate(id: u64, mut value: &[u8]) -> Result<(), DecodeError> {
    match id {
        Setup::PATH => std::str::from_utf8(value)
            .map(|_| ())
            .map_err(|_| DecodeError::Invalid("SETUP path is not UTF-8")),
        Setup::PROBE | Setup::ROLE | Setup::COST | Setup::ORIGIN => match decode_varint(&mut value)
        {
            Ok(_) if value.is_empty() => Ok(()),
            _ => Err(DecodeError::Invalid(
                "SETUP parameter is not a single varint",
            )),
        },
        _ => Ok(()),
    }
}

impl Encode for Setup {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_sized(out, |out| {
            encode_varint(self.params.len() as u64, out);
            for (id, value) in &self.params {
                encode_varint(*id, out);
                encode_bytes(value, out);
            }
        });
    }
}

impl Decode for Setup {
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        decode_sized(buf, |b| {
            let count = decode_varint(b)?;
            if count > Self::MAX_PARAMS as u64 {
                return Err(DecodeError::Invalid("too many SETUP parameters"));
            }
            let mut params: Vec<(u64, Vec<u8>)> = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let id = decode_varint(b)?;
                if params.iter().any(|(k, _)| *k == id) {
                    return Err(DecodeError::Invalid("duplicate SETUP parameter"));
                }
                let value = decode_bytes(b)?;
                validate(id, value)?;
                params.push((id, value.to_vec()));
            }
            Ok(Self { params })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::test_util::{check, check_framing};

    #[test]
    fn empty() {
        // Length 1, count 0.
        check(&Setup::new(), Some(&[0x01, 0x00]));
    }

    #[test]
    fn cost_matches_moq_net_vector() {
        // moq-net lite/setup.rs `parameter_values_use_the_version_codec`, Lite06.
        let setup = Setup::new().with_varint(Setup::COST, 100);
        check(&setup, Some(&[0x05, 0x01, 0x04, 0x02, 0x40, 0x64]));
        assert_eq!(setup.cost(), Some(100));
        check_framing::<Setup>(&setup.to_bytes(), 0);
    }

    #[test]
    fn path_and_role() {
        let setup =
            Setup::with_path("/room?jwt=x").with_varint(Setup::ROLE, Setup::ROLE_SUBSCRIBER);
        let mut wire = vec![0x11, 0x02, 0x02, 0x0b];
        wire.extend_from_slice(b"/room?jwt=x");
        wire.extend_from_slice(&[0x03, 0x01, 0x02]);
        check(&setup, Some(&wire));
        assert_eq!(setup.path(), Some("/room?jwt=x"));
        assert_eq!(setup.role(), Some(2));
        assert_eq!(setup.probe(), None);
        assert_eq!(setup.origin(), None);

        let all = Setup::new()
            .with_varint(Setup::PROBE, Setup::PROBE_REPORT)
            .with_varint(Setup::ORIGIN, 0xABCDEF)
            .with(0x99, vec![1, 2, 3]);
        check(&all, None);
        assert_eq!(all.probe(), Some(1));
        assert_eq!(all.origin(), Some(0xABCDEF));
        assert_eq!(all.get(0x99), Some(&[1u8, 2, 3][..]));
    }

    #[test]
    fn set_replaces() {
        let mut s = Setup::with_path("a");
        s.set(Setup::PATH, b"b".to_vec());
        assert_eq!(s.params.len(), 1);
        assert_eq!(s.path(), Some("b"));
    }

    #[test]
    fn rejects_malformed() {
        // Duplicate id.
        let wire = [0x05, 0x02, 0x09, 0x00, 0x09, 0x00];
        assert_eq!(
            Setup::decode(&mut &wire[..]),
            Err(DecodeError::Invalid("duplicate SETUP parameter"))
        );
        // Path not UTF-8.
        let wire = [0x04, 0x01, 0x02, 0x01, 0xFF];
        assert_eq!(
            Setup::decode(&mut &wire[..]),
            Err(DecodeError::Invalid("SETUP path is not UTF-8"))
        );
        // Role with two varints in it.
        let wire = [0x05, 0x01, 0x03, 0x02, 0x01, 0x01];
        assert_eq!(
            Setup::decode(&mut &wire[..]),
            Err(DecodeError::Invalid(
                "SETUP parameter is not a single varint"
            ))
        );
        // Role empty.
        let wire = [0x03, 0x01, 0x03, 0x00];
        assert!(matches!(
            Setup::decode(&mut &wire[..]),
            Err(DecodeError::Invalid(_))
        ));
        // 65 parameters.
        let wire = [0x02, 0x40, 0x41];
        assert_eq!(
            Setup::decode(&mut &wire[..]),
            Err(DecodeError::Invalid("too many SETUP parameters"))
        );
        // Count says 2, only one present.
        let wire = [0x03, 0x02, 0x09, 0x00];
        assert!(matches!(
            Setup::decode(&mut &wire[..]),
            Err(DecodeError::Invalid(_))
        ));
    }
}
