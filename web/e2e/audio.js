// Audio helpers of the browser end-to-end test, pure (no IO): 16-bit PCM
// WAV files written and read, sine tones, and the dominant frequency of a
// stretch of PCM (a Hann-windowed FFT finds the peak, a Goertzel scan
// around it refines it to a fraction of a hertz).

/**
 * A mono sine tone as 16-bit samples.
 * @param {number} hz frequency
 * @param {number} seconds duration
 * @param {number} [sampleRate] samples per second (48000)
 * @param {number} [amplitude] peak, as a fraction of full scale (0.5)
 * @returns {Int16Array}
 */
export function sine(hz, seconds, sampleRate = 48000, amplitude = 0.5) {
  const n = Math.round(seconds * sampleRate);
  const out = new Int16Array(n);
  const w = (2 * Math.PI * hz) / sampleRate;
  for (let i = 0; i < n; i++) {
    out[i] = Math.round(Math.sin(w * i) * amplitude * 32767);
  }
  return out;
}

/**
 * A canonical 44-byte-header PCM WAV file of interleaved 16-bit samples.
 * @param {Int16Array} samples interleaved if `channels` > 1
 * @param {number} [sampleRate] (48000)
 * @param {number} [channels] (1)
 * @returns {Uint8Array}
 */
export function encodeWav(samples, sampleRate = 48000, channels = 1) {
  const dataBytes = samples.length * 2;
  const bytes = new Uint8Array(44 + dataBytes);
  const v = new DataView(bytes.buffer);
  const ascii = (/** @type {number} */ at, /** @type {string} */ s) => {
    for (let i = 0; i < s.length; i++) v.setUint8(at + i, s.charCodeAt(i));
  };
  ascii(0, 'RIFF');
  v.setUint32(4, 36 + dataBytes, true);
  ascii(8, 'WAVE');
  ascii(12, 'fmt ');
  v.setUint32(16, 16, true);
  v.setUint16(20, 1, true); // PCM
  v.setUint16(22, channels, true);
  v.setUint32(24, sampleRate, true);
  v.setUint32(28, sampleRate * channels * 2, true);
  v.setUint16(32, channels * 2, true);
  v.setUint16(34, 16, true);
  ascii(36, 'data');
  v.setUint32(40, dataBytes, true);
  for (let i = 0; i < samples.length; i++) {
    v.setInt16(44 + i * 2, samples[i] ?? 0, true);
  }
  return bytes;
}

/**
 * @typedef {object} Wav
 * @property {number} sampleRate
 * @property {number} channels channels in the file
 * @property {Int16Array} samples the first channel only
 */

/**
 * Reads a 16-bit PCM WAV file (any chunk order; a data chunk whose size
 * was never finalized, 0 or 0xFFFFFFFF, runs to the end of the file).
 * @param {Uint8Array} bytes
 * @returns {Wav}
 */
export function decodeWav(bytes) {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const tag = (/** @type {number} */ at) =>
    String.fromCharCode(v.getUint8(at), v.getUint8(at + 1), v.getUint8(at + 2), v.getUint8(at + 3));
  if (bytes.length < 12 || tag(0) !== 'RIFF' || tag(8) !== 'WAVE') {
    throw new Error('not a RIFF/WAVE file');
  }
  /** @type {{sampleRate: number, channels: number} | null} */
  let fmt = null;
  let at = 12;
  while (at + 8 <= bytes.length) {
    const id = tag(at);
    let size = v.getUint32(at + 4, true);
    const body = at + 8;
    if (id === 'fmt ') {
      const format = v.getUint16(body, true);
      const bits = v.getUint16(body + 14, true);
      // 0xFFFE (extensible) carries PCM in its subformat; accept it.
      if ((format !== 1 && format !== 0xfffe) || bits !== 16) {
        throw new Error(`unsupported WAV: format ${format}, ${bits} bits (want 16-bit PCM)`);
      }
      fmt = { channels: v.getUint16(body + 2, true), sampleRate: v.getUint32(body + 4, true) };
    } else if (id === 'data') {
      if (fmt === null) throw new Error('WAV data chunk before its fmt chunk');
      if (size === 0 || size === 0xffffffff || body + size > bytes.length) {
        size = bytes.length - body;
      }
      const frames = Math.floor(size / (2 * fmt.channels));
      const samples = new Int16Array(frames);
      for (let i = 0; i < frames; i++) {
        samples[i] = v.getInt16(body + i * 2 * fmt.channels, true);
      }
      return { sampleRate: fmt.sampleRate, channels: fmt.channels, samples };
    }
    at = body + size + (size & 1);
  }
  throw new Error('WAV file without a data chunk');
}

/**
 * In-place iterative radix-2 FFT.
 * @param {Float64Array} re length a power of two
 * @param {Float64Array} im same length
 */
function fft(re, im) {
  const n = re.length;
  for (let i = 1, j = 0; i < n; i++) {
    let bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) {
      const tr = /** @type {number} */ (re[i]);
      re[i] = /** @type {number} */ (re[j]);
      re[j] = tr;
      const ti = /** @type {number} */ (im[i]);
      im[i] = /** @type {number} */ (im[j]);
      im[j] = ti;
    }
  }
  for (let len = 2; len <= n; len <<= 1) {
    const ang = (-2 * Math.PI) / len;
    const wr = Math.cos(ang);
    const wi = Math.sin(ang);
    const half = len >> 1;
    for (let i = 0; i < n; i += len) {
      let cr = 1;
      let ci = 0;
      for (let k = 0; k < half; k++) {
        const a = i + k;
        const b = a + half;
        const br = /** @type {number} */ (re[b]);
        const bi = /** @type {number} */ (im[b]);
        const xr = br * cr - bi * ci;
        const xi = br * ci + bi * cr;
        const ar = /** @type {number} */ (re[a]);
        const ai = /** @type {number} */ (im[a]);
        re[b] = ar - xr;
        im[b] = ai - xi;
        re[a] = ar + xr;
        im[a] = ai + xi;
        const t = cr * wr - ci * wi;
        ci = cr * wi + ci * wr;
        cr = t;
      }
    }
  }
}

/**
 * Power of `x` at `hz` (Goertzel).
 * @param {Float64Array} x
 * @param {number} hz
 * @param {number} sampleRate
 */
function goertzel(x, hz, sampleRate) {
  const coeff = 2 * Math.cos((2 * Math.PI * hz) / sampleRate);
  let s1 = 0;
  let s2 = 0;
  for (let i = 0; i < x.length; i++) {
    const s0 = /** @type {number} */ (x[i]) + coeff * s1 - s2;
    s2 = s1;
    s1 = s0;
  }
  return s1 * s1 + s2 * s2 - coeff * s1 * s2;
}

/**
 * @typedef {object} FrequencyOptions
 * @property {number} [minHz] lowest frequency considered (50)
 * @property {number} [maxHz] highest frequency considered (4000)
 * @property {number} [minRms] below this RMS (16-bit units) the stretch
 *   counts as silence (30, about -61 dBFS)
 */

/**
 * The dominant frequency of a stretch of PCM, to about 0.1 Hz; null for
 * silence or a stretch shorter than 64 samples.
 * @param {ArrayLike<number>} pcm samples (16-bit scale)
 * @param {number} sampleRate
 * @param {FrequencyOptions} [options]
 * @returns {number | null}
 */
export function dominantFrequency(pcm, sampleRate, options = {}) {
  const { minHz = 50, maxHz = 4000, minRms = 30 } = options;
  const n = pcm.length;
  if (n < 64) return null;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += /** @type {number} */ (pcm[i]);
  const mean = sum / n;
  let energy = 0;
  const x = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const s = /** @type {number} */ (pcm[i]) - mean;
    energy += s * s;
    // Hann window: a tone's leakage falls off fast, so the peak is its own.
    x[i] = s * (0.5 - 0.5 * Math.cos((2 * Math.PI * i) / (n - 1)));
  }
  if (Math.sqrt(energy / n) < minRms) return null;
  let size = 1;
  while (size < n) size <<= 1;
  const re = new Float64Array(size);
  re.set(x);
  const im = new Float64Array(size);
  fft(re, im);
  const binHz = sampleRate / size;
  const lo = Math.max(1, Math.floor(minHz / binHz));
  const hi = Math.min(size / 2 - 1, Math.ceil(maxHz / binHz));
  let best = lo;
  let bestPower = -1;
  for (let k = lo; k <= hi; k++) {
    const r = /** @type {number} */ (re[k]);
    const i = /** @type {number} */ (im[k]);
    const p = r * r + i * i;
    if (p > bestPower) {
      bestPower = p;
      best = k;
    }
  }
  // Refine between the neighbouring bins.
  const step = 0.1;
  let hz = best * binHz;
  let hzPower = -1;
  for (let f = (best - 1) * binHz; f <= (best + 1) * binHz; f += step) {
    const p = goertzel(x, f, sampleRate);
    if (p > hzPower) {
      hzPower = p;
      hz = f;
    }
  }
  return hz;
}

/**
 * The dominant frequency of each whole window of `seconds` (a last,
 * shorter remainder is left out).
 * @param {Int16Array} pcm
 * @param {number} sampleRate
 * @param {number} [seconds] window length (1)
 * @param {FrequencyOptions} [options]
 * @returns {(number | null)[]}
 */
export function windowFrequencies(pcm, sampleRate, seconds = 1, options = {}) {
  const len = Math.round(seconds * sampleRate);
  /** @type {(number | null)[]} */
  const out = [];
  for (let at = 0; at + len <= pcm.length; at += len) {
    out.push(dominantFrequency(pcm.subarray(at, at + len), sampleRate, options));
  }
  return out;
}

/**
 * The fraction of `freqs` within `tolerance` of `target` (silent
 * windows, null, count as misses); 0 for none.
 * @param {(number | null)[]} freqs
 * @param {number} target
 * @param {number} tolerance
 */
export function fractionNear(freqs, target, tolerance) {
  if (freqs.length === 0) return 0;
  const hits = freqs.filter((f) => f !== null && Math.abs(f - target) <= tolerance).length;
  return hits / freqs.length;
}
