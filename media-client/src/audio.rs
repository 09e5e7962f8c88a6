//! Audio: sources (sine, WAV), Opus at 48 kHz in 20 ms frames, loss
//! concealment, RFC 6464 audio levels, WAV recording and a tone-quality
//! measure for tests and the demo.

use std::path::Path;

use crate::Error;

/// Opus sample rate hush uses.
pub const SAMPLE_RATE: u32 = 48_000;

/// Samples per 20 ms mono frame.
pub const FRAME_SAMPLES: usize = 960;

/// Largest encoded Opus frame we produce.
const MAX_OPUS_FRAME: usize = 1_275;

/// A 20 ms frame of mono 48 kHz samples.
pub type Pcm = [i16; FRAME_SAMPLES];

/// Where outgoing audio comes from.
#[derive(Debug)]
pub enum AudioSource {
    /// A sine tone at this frequency (Hz), at about -12 dBFS.
    Sine {
        /// Frequency in Hz.
        hz: f64,
        /// Samples produced so far.
        t: u64,
    },
    /// Samples from a file, already mono 48 kHz; loops at the end.
    Samples {
        /// The samples.
        pcm: Vec<i16>,
        /// Read position.
        pos: usize,
    },
    /// Digital silence.
    Silence,
}

impl AudioSource {
    /// A sine source.
    pub fn sine(hz: f64) -> Self {
        Self::Sine { hz, t: 0 }
    }

    /// Reads a WAV file of any rate and channel count, mixed to mono and
    /// resampled to 48 kHz.
    pub fn wav(path: &Path) -> Result<Self, Error> {
        let wav = |source| Error::Wav {
            path: path.to_owned(),
            source,
        };
        let reader = hound::WavReader::open(path).map_err(wav)?;
        let spec = reader.spec();
        let channels = usize::from(spec.channels.max(1));
        let samples: Vec<f32> = match spec.sample_format {
            hound::SampleFormat::Float => reader.into_samples::<f32>().collect::<Result<_, _>>(),
            hound::SampleFormat::Int => {
                let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
                reader
                    .into_samples::<i32>()
                    .map(|s| s.map(|v| v as f32 * scale))
                    .collect::<Result<_, _>>()
            }
        }
        .map_err(wav)?;
        let mono: Vec<f32> = samples
            .chunks(channels)
            .map(|c| c.iter().sum::<f32>() / c.len() as f32)
            .collect();
        let pcm = resample_linear(&mono, spec.sample_rate, SAMPLE_RATE)
            .into_iter()
            .map(|v| (v.clamp(-1.0, 1.0) * 32767.0) as i16)
            .collect::<Vec<_>>();
        if pcm.is_empty() {
            return Err(Error::WavEmpty {
                path: path.to_owned(),
            });
        }
        Ok(Self::Samples { pcm, pos: 0 })
    }

    /// The next 20 ms.
    pub fn next_frame(&mut self) -> Pcm {
        let mut out = [0i16; FRAME_SAMPLES];
        match self {
            Self::Sine { hz, t } => {
                for s in out.iter_mut() {
                    let phase =
                        2.0 * std::f64::consts::PI * *hz * (*t as f64) / f64::from(SAMPLE_RATE);
                    *s = (phase.sin() * 8_000.0) as i16;
                    *t += 1;
                }
            }
            Self::Samples { pcm, pos } => {
                for s in out.iter_mut() {
                    *s = pcm[*pos];
                    *pos = (*pos + 1) % pcm.len();
                }
            }
            Self::Silence => {}
        }
        out
    }
}

/// Linear-interpolation resampler (good enough for test material).
pub fn resample_linear(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || input.is_empty() || from == 0 {
        return input.to_vec();
    }
    let out_len = (input.len() as u64 * u64::from(to) / u64::from(from)) as usize;
    (0..out_len)
        .map(|i| {
            let x = i as f64 * f64::from(from) / f64::from(to);
            let j = x.floor() as usize;
            let frac = (x - j as f64) as f32;
            let a = input[j.min(input.len() - 1)];
            let b = input[(j + 1).min(input.len() - 1)];
            a + (b - a) * frac
        })
        .collect()
}

/// Opus encoder for 48 kHz mono, 20 ms frames.
pub struct OpusEncoder(opus::Encoder);

impl core::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("OpusEncoder")
    }
}

impl OpusEncoder {
    /// A VoIP-tuned encoder.
    pub fn new() -> Result<Self, Error> {
        let enc = opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)?;
        Ok(Self(enc))
    }

    /// Encodes one 20 ms frame.
    pub fn encode(&mut self, pcm: &Pcm) -> Result<Vec<u8>, Error> {
        Ok(self.0.encode_vec(pcm, MAX_OPUS_FRAME)?)
    }
}

/// Opus decoder with packet-loss concealment.
pub struct OpusDecoder(opus::Decoder);

impl core::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("OpusDecoder")
    }
}

impl OpusDecoder {
    /// A decoder for 48 kHz mono.
    pub fn new() -> Result<Self, Error> {
        Ok(Self(opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)?))
    }

    /// Decodes one frame, or conceals a lost one when `frame` is `None`.
    pub fn decode(&mut self, frame: Option<&[u8]>) -> Result<Pcm, Error> {
        let mut out = [0i16; FRAME_SAMPLES];
        let n = self.0.decode(frame.unwrap_or(&[]), &mut out, false)?;
        if n != FRAME_SAMPLES {
            return Err(Error::OpusFrameSize {
                samples: n,
                expected: FRAME_SAMPLES,
            });
        }
        Ok(out)
    }
}

/// RFC 6464 audio level: 0 (loudest, 0 dBov) to 127 (-127 dBov or silence).
pub fn audio_level(pcm: &[i16]) -> u8 {
    if pcm.is_empty() {
        return 127;
    }
    let mean_square = pcm
        .iter()
        .map(|&s| f64::from(s) * f64::from(s))
        .sum::<f64>()
        / pcm.len() as f64;
    let rms = mean_square.sqrt() / 32768.0;
    if rms <= 0.0 {
        return 127;
    }
    let dbov = 20.0 * rms.log10();
    (-dbov).round().clamp(0.0, 127.0) as u8
}

/// Signal-to-noise ratio (dB) of `pcm` as a tone at `hz`: the tone's
/// energy (least-squares fit of a sine and cosine) against the rest.
pub fn tone_snr_db(pcm: &[i16], hz: f64) -> f64 {
    if pcm.is_empty() {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * hz / f64::from(SAMPLE_RATE);
    let (mut ss, mut sc) = (0.0, 0.0);
    for (i, &s) in pcm.iter().enumerate() {
        let x = f64::from(s);
        ss += x * (w * i as f64).sin();
        sc += x * (w * i as f64).cos();
    }
    let n = pcm.len() as f64;
    let (a, b) = (2.0 * ss / n, 2.0 * sc / n);
    let total: f64 = pcm.iter().map(|&s| f64::from(s).powi(2)).sum();
    let mut noise = 0.0;
    for (i, &s) in pcm.iter().enumerate() {
        let fit = a * (w * i as f64).sin() + b * (w * i as f64).cos();
        noise += (f64::from(s) - fit).powi(2);
    }
    let signal = (total - noise).max(0.0);
    if noise <= f64::EPSILON {
        return 99.0;
    }
    10.0 * (signal / noise).log10()
}

/// The dominant frequency (Hz) of a tone, from upward zero crossings with
/// a little hysteresis; `None` for silence.
pub fn dominant_frequency(pcm: &[i16]) -> Option<f64> {
    let threshold = 200;
    let (mut armed, mut crossings, mut first, mut last) = (false, 0u32, None, 0usize);
    for (i, &s) in pcm.iter().enumerate() {
        if s < -threshold {
            armed = true;
        } else if armed && s > threshold {
            armed = false;
            crossings += 1;
            first.get_or_insert(i);
            last = i;
        }
    }
    let first = first?;
    if crossings < 3 || last <= first {
        return None;
    }
    Some(f64::from(crossings - 1) * f64::from(SAMPLE_RATE) / (last - first) as f64)
}

/// Writes decoded audio as a 48 kHz mono 16-bit WAV file.
pub struct WavSink(
    hound::WavWriter<std::io::BufWriter<std::fs::File>>,
    std::path::PathBuf,
);

impl core::fmt::Debug for WavSink {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "WavSink({})", self.1.display())
    }
}

impl WavSink {
    /// Creates (or truncates) the file.
    pub fn create(path: &Path) -> Result<Self, Error> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        hound::WavWriter::create(path, spec)
            .map(|w| Self(w, path.to_owned()))
            .map_err(|source| Error::Wav {
                path: path.to_owned(),
                source,
            })
    }

    /// Appends samples.
    pub fn write(&mut self, pcm: &[i16]) -> Result<(), Error> {
        for &s in pcm {
            self.0.write_sample(s).map_err(|source| Error::Wav {
                path: self.1.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Finalizes the header; the file is playable afterwards.
    pub fn finish(self) -> Result<(), Error> {
        let path = self.1;
        self.0
            .finalize()
            .map_err(|source| Error::Wav { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sine_survives_opus_with_high_snr() {
        let mut src = AudioSource::sine(440.0);
        let mut enc = OpusEncoder::new().expect("encoder");
        let mut dec = OpusDecoder::new().expect("decoder");
        let mut out = Vec::new();
        for _ in 0..50 {
            let frame = enc.encode(&src.next_frame()).expect("encode");
            assert!(
                frame.len() < 400,
                "an Opus voice frame is small: {}",
                frame.len()
            );
            out.extend_from_slice(&dec.decode(Some(&frame)).expect("decode"));
        }
        // Skip the codec's start-up; the rest is a clean 440 Hz tone.
        let snr = tone_snr_db(&out[FRAME_SAMPLES * 10..], 440.0);
        assert!(snr > 15.0, "snr {snr:.1} dB");
        let hz = dominant_frequency(&out[FRAME_SAMPLES * 10..]).expect("a tone");
        assert!((hz - 440.0).abs() < 2.0, "{hz}");
        // The wrong frequency does not fit.
        assert!(tone_snr_db(&out[FRAME_SAMPLES * 10..], 1000.0) < 0.0);
    }

    #[test]
    fn lost_frames_are_concealed_not_fatal() {
        let mut enc = OpusEncoder::new().expect("encoder");
        let mut dec = OpusDecoder::new().expect("decoder");
        let mut src = AudioSource::sine(440.0);
        for _ in 0..5 {
            dec.decode(Some(&enc.encode(&src.next_frame()).expect("encode")))
                .expect("decode");
        }
        // Concealment continues the tone rather than going silent.
        let concealed = dec.decode(None).expect("plc");
        assert!(
            audio_level(&concealed) < 40,
            "level {}",
            audio_level(&concealed)
        );
        // Decoding resumes after the gap.
        let next = dec
            .decode(Some(&enc.encode(&src.next_frame()).expect("encode")))
            .expect("decode");
        assert!(audio_level(&next) < 40);
    }

    #[test]
    fn audio_levels_follow_rfc_6464() {
        assert_eq!(audio_level(&[0; 960]), 127);
        assert_eq!(audio_level(&[i16::MAX; 960]), 0);
        let sine = AudioSource::sine(440.0).next_frame();
        // 8000/32768 peak sine: about -15 dBov RMS.
        assert!(
            (14..=16).contains(&audio_level(&sine)),
            "{}",
            audio_level(&sine)
        );
    }

    #[test]
    fn wav_files_round_trip_through_resampling() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("in.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec).expect("create");
        for i in 0..16_000 {
            let v = ((2.0 * std::f64::consts::PI * 440.0 * f64::from(i) / 16_000.0).sin() * 8000.0)
                as i16;
            w.write_sample(v).expect("l");
            w.write_sample(v).expect("r");
        }
        w.finalize().expect("finalize");
        let mut src = AudioSource::wav(&path).expect("wav source");
        let pcm: Vec<i16> = (0..20).flat_map(|_| src.next_frame()).collect();
        assert!(tone_snr_db(&pcm, 440.0) > 20.0);
        let out = dir.path().join("out.wav");
        let mut sink = WavSink::create(&out).expect("sink");
        sink.write(&pcm).expect("write");
        sink.finish().expect("finish");
        let back = hound::WavReader::open(&out).expect("open");
        assert_eq!(back.spec().sample_rate, SAMPLE_RATE);
        assert_eq!(back.len() as usize, pcm.len());
    }
}
