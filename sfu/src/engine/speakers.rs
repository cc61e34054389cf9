//! Audio levels and active speakers.
//!
//! **Level.** Each publisher has a [`LevelMeter`]: an exponential moving average of its RFC
//! 6464 levels in -dBov (0 loudest, 127 silence). Every packet with a level moves the average
//! by `1 - exp(-20 ms / Config::level_smoothing)` of the way to the packet's level (packets
//! are taken as 20 ms frames). When no packet came for `Config::level_silence_after` (DTX,
//! loss, a stalled publisher), each further 20 ms counts as a frame of silence (127).
//!
//! **Speaking.** A publisher speaks when its smoothed level is at or below
//! `Config::speaker_threshold`. A muted publisher never speaks.
//!
//! **Events.** Every `Config::speaker_interval` (500 ms) the room ranks its publishers, loudest
//! first (ties by participant id), and takes the first `Config::active_speakers` that speak.
//! If that ordered list of participants differs from the last one reported, it is reported;
//! so events come at most once per interval, and only on change (levels alone changing do not
//! produce one).
//!
//! **Active-speaker slots.** At the same ticks each active-speaker subscriber's slots are
//! reassigned by [`assign`]: a speaker among the subscriber's top `k` (k = its slot count)
//! who is not in a slot takes an empty slot, else replaces the quietest occupant that is not
//! among those top speakers. Occupants stay otherwise (sticky: a pause does not lose the
//! slot). Slots still empty are then filled with the best-ranked publishers not shown, speaking
//! or not, so a publisher without audio levels (OBS over WHIP) is still heard. Between ticks,
//! only empty slots are filled (on publish, unmute, join).

use std::time::{Duration, Instant};

use veza_proto::{ParticipantId, TrackId};

use super::config::Config;

/// The frame length levels are counted in.
const FRAME: Duration = Duration::from_millis(20);
/// The silence level.
const SILENT: f32 = 127.0;

/// Smoothing constants derived from the config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct MeterParams {
    /// Weight kept by the old average per frame: `exp(-20 ms / time constant)`.
    keep: f32,
    silence_after: Duration,
}

impl MeterParams {
    pub(crate) fn new(config: &Config) -> Self {
        let tau = config.level_smoothing.as_secs_f64();
        MeterParams {
            keep: (-FRAME.as_secs_f64() / tau).exp() as f32,
            silence_after: config.level_silence_after,
        }
    }
}

/// The smoothed level of one publisher, in -dBov (0..=127).
#[derive(Debug, Clone)]
pub(crate) struct LevelMeter {
    smoothed: f32,
    last_packet: Option<Instant>,
    /// Silence has been applied up to here.
    decayed_to: Option<Instant>,
}

impl Default for LevelMeter {
    fn default() -> Self {
        LevelMeter {
            smoothed: SILENT,
            last_packet: None,
            decayed_to: None,
        }
    }
}

impl LevelMeter {
    /// Takes one packet's level.
    pub(crate) fn observe(&mut self, now: Instant, level: u8, p: &MeterParams) {
        self.catch_up(now, p);
        let level = f32::from(level.min(127));
        self.smoothed = level + (self.smoothed - level) * p.keep;
        self.last_packet = Some(now);
        self.decayed_to = None;
    }

    /// The smoothed level at `now`, counting silence since the last packet.
    pub(crate) fn level_at(&mut self, now: Instant, p: &MeterParams) -> f32 {
        self.catch_up(now, p);
        self.smoothed
    }

    /// Back to silence (mute).
    pub(crate) fn reset(&mut self) {
        *self = LevelMeter::default();
    }

    fn catch_up(&mut self, now: Instant, p: &MeterParams) {
        let Some(last) = self.last_packet else {
            return;
        };
        let Some(from) = self
            .decayed_to
            .or_else(|| last.checked_add(p.silence_after))
        else {
            return;
        };
        let Some(gap) = now.checked_duration_since(from) else {
            return;
        };
        let frames = (gap.as_nanos() / FRAME.as_nanos()).min(100_000) as u32;
        if frames == 0 {
            return;
        }
        // `frames` is at most 100 000, which fits an i32.
        self.smoothed = SILENT - (SILENT - self.smoothed) * p.keep.powi(frames as i32);
        self.decayed_to = from.checked_add(FRAME * frames);
    }
}

/// One publisher in a room's ranking.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Ranked {
    pub(crate) participant: ParticipantId,
    pub(crate) track: TrackId,
    /// Smoothed level, -dBov.
    pub(crate) dbov: f32,
    pub(crate) speaking: bool,
}

/// Orders a ranking loudest first, ties by participant id.
pub(crate) fn sort(ranking: &mut [Ranked]) {
    ranking.sort_by(|a, b| {
        a.dbov
            .total_cmp(&b.dbov)
            .then_with(|| a.participant.cmp(&b.participant))
    });
}

/// The level reported in events: 0.0 for 127 dBov (silence), 1.0 for 0 dBov.
pub(crate) fn report_level(dbov: f32) -> f32 {
    ((SILENT - dbov) / SILENT).clamp(0.0, 1.0)
}

/// New occupants of one subscriber's active-speaker slots (see the module doc). `current`
/// holds the slots' occupants by index; `ranking` is sorted; `exclude` is the subscriber.
/// With `full == false` only empty slots are filled.
pub(crate) fn assign(
    current: &[Option<ParticipantId>],
    ranking: &[Ranked],
    exclude: ParticipantId,
    full: bool,
) -> Vec<Option<ParticipantId>> {
    let mut out = current.to_vec();
    let candidates = || ranking.iter().filter(|r| r.participant != exclude);
    if full {
        let top: Vec<ParticipantId> = candidates()
            .filter(|r| r.speaking)
            .take(out.len())
            .map(|r| r.participant)
            .collect();
        let level = |p: Option<ParticipantId>| {
            p.and_then(|p| ranking.iter().find(|r| r.participant == p))
                .map_or(f32::INFINITY, |r| r.dbov)
        };
        for &speaker in &top {
            if out.contains(&Some(speaker)) {
                continue;
            }
            let target = out.iter().position(Option::is_none).or_else(|| {
                (0..out.len())
                    .filter(|&i| out[i].is_none_or(|p| !top.contains(&p)))
                    // The quietest occupant; on a tie, the lowest index.
                    .max_by(|&i, &j| {
                        level(out[i])
                            .total_cmp(&level(out[j]))
                            .then_with(|| j.cmp(&i))
                    })
            });
            if let Some(i) = target {
                out[i] = Some(speaker);
            }
        }
    }
    for r in candidates() {
        let Some(empty) = out.iter().position(Option::is_none) else {
            break;
        };
        if !out.contains(&Some(r.participant)) {
            out[empty] = Some(r.participant);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(n: u8) -> ParticipantId {
        format!("00000000-0000-0000-0000-{n:012}")
            .parse()
            .expect("a valid uuid")
    }

    fn tid(n: u8) -> TrackId {
        format!("10000000-0000-0000-0000-{n:012}")
            .parse()
            .expect("a valid uuid")
    }

    fn ranked(n: u8, dbov: f32) -> Ranked {
        Ranked {
            participant: pid(n),
            track: tid(n),
            dbov,
            speaking: dbov <= 60.0,
        }
    }

    #[test]
    fn meter_rises_with_speech_and_decays_in_silence() {
        let p = MeterParams::new(&Config::default());
        let t0 = Instant::now();
        let mut m = LevelMeter::default();
        assert_eq!(m.level_at(t0, &p), 127.0);
        for i in 0..50u32 {
            m.observe(t0 + FRAME * i, 30, &p);
        }
        let after_1s = m.level_at(t0 + FRAME * 49, &p);
        assert!(after_1s < 35.0, "{after_1s}");
        // Within the silence timeout nothing changes.
        let last = t0 + FRAME * 49;
        assert_eq!(m.level_at(last + Duration::from_millis(99), &p), after_1s);
        // A second of silence later it is back near 127.
        let later = m.level_at(last + Duration::from_millis(1100), &p);
        assert!(later > 120.0, "{later}");
        // Idempotent: asking again at the same time does not decay twice.
        assert_eq!(m.level_at(last + Duration::from_millis(1100), &p), later);
    }

    #[test]
    fn meter_crosses_the_threshold_in_about_300_ms() {
        let config = Config::default();
        let p = MeterParams::new(&config);
        let t0 = Instant::now();
        let mut m = LevelMeter::default();
        let mut frames = 0;
        while m.level_at(t0 + FRAME * frames, &p) > f32::from(config.speaker_threshold) {
            m.observe(t0 + FRAME * frames, 30, &p);
            frames += 1;
        }
        assert!((12..=20).contains(&frames), "{frames} frames");
    }

    #[test]
    fn sort_is_loudest_first_then_by_id() {
        let mut r = vec![
            ranked(3, 40.0),
            ranked(1, 127.0),
            ranked(2, 40.0),
            ranked(0, 127.0),
        ];
        sort(&mut r);
        let order: Vec<_> = r.iter().map(|r| r.participant).collect();
        assert_eq!(order, vec![pid(2), pid(3), pid(0), pid(1)]);
        assert_eq!(report_level(127.0), 0.0);
        assert_eq!(report_level(0.0), 1.0);
    }

    #[test]
    fn empty_slots_fill_by_rank_excluding_self() {
        let ranking = [ranked(1, 30.0), ranked(2, 50.0), ranked(3, 127.0)];
        let got = assign(&[None, None], &ranking, pid(1), false);
        assert_eq!(got, vec![Some(pid(2)), Some(pid(3))]);
    }

    #[test]
    fn a_new_speaker_replaces_the_quietest_non_speaker() {
        let ranking = [ranked(3, 30.0), ranked(1, 90.0), ranked(2, 127.0)];
        let current = [Some(pid(1)), Some(pid(2))];
        // Only filling: nothing moves.
        assert_eq!(assign(&current, &ranking, pid(9), false), current.to_vec());
        // A full pass: 3 speaks and takes 2's slot (the quietest).
        assert_eq!(
            assign(&current, &ranking, pid(9), true),
            vec![Some(pid(1)), Some(pid(3))]
        );
    }

    #[test]
    fn silent_occupants_are_not_churned() {
        // Nobody speaks: occupants stay even though 3 outranks 2 by id.
        let ranking = [ranked(3, 127.0), ranked(2, 127.0)];
        let current = [Some(pid(2))];
        assert_eq!(assign(&current, &ranking, pid(9), true), current.to_vec());
    }

    #[test]
    fn speaking_occupants_keep_their_slot() {
        let ranking = [ranked(1, 30.0), ranked(2, 35.0), ranked(3, 40.0)];
        let current = [Some(pid(2)), Some(pid(3))];
        // 1 is louder than both, takes the slot of 3 (not in the top 2).
        assert_eq!(
            assign(&current, &ranking, pid(9), true),
            vec![Some(pid(2)), Some(pid(1))]
        );
    }

    #[test]
    fn gone_occupant_is_replaced() {
        let ranking = [ranked(1, 30.0)];
        let current = [Some(pid(7))];
        assert_eq!(assign(&current, &ranking, pid(9), true), vec![Some(pid(1))]);
    }
}
