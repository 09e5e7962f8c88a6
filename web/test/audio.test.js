// The e2e test's audio helpers (e2e/audio.js): WAV round trips and the
// dominant-frequency scan that judges what each end of a call heard.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeWav, dominantFrequency, encodeWav, fractionNear, sine, windowFrequencies } from '../e2e/audio.js';

test('a WAV file round-trips its samples and rate', () => {
  const pcm = sine(440, 0.05, 48000, 0.9);
  const wav = decodeWav(encodeWav(pcm, 48000, 1));
  assert.equal(wav.sampleRate, 48000);
  assert.equal(wav.channels, 1);
  assert.deepEqual(wav.samples, pcm);
  assert.equal(encodeWav(pcm).length, 44 + pcm.length * 2);
});

test('a stereo file yields its first channel; an unfinalized data size runs to the end', () => {
  const stereo = new Int16Array([1, -1, 2, -2, 3, -3]);
  const bytes = encodeWav(stereo, 44100, 2);
  assert.deepEqual(decodeWav(bytes).samples, new Int16Array([1, 2, 3]));
  new DataView(bytes.buffer).setUint32(40, 0, true);
  assert.deepEqual(decodeWav(bytes).samples, new Int16Array([1, 2, 3]));
  assert.throws(() => decodeWav(new Uint8Array(12)), /RIFF/);
});

test('the dominant frequency of a tone is found to a fraction of a hertz', () => {
  for (const hz of [123.4, 440, 660, 1000.3]) {
    const found = dominantFrequency(sine(hz, 1), 48000);
    assert.ok(found !== null && Math.abs(found - hz) < 0.5, `${hz} Hz found as ${found}`);
  }
  // A quieter second tone does not win, and noise below it neither.
  const mix = sine(440, 0.5, 48000, 0.3).map((s, i) => s + Math.round(Math.sin(i * 0.31) * 2000));
  const found = dominantFrequency(mix, 48000);
  assert.ok(found !== null && Math.abs(found - 440) < 1, `${found}`);
  assert.equal(dominantFrequency(new Int16Array(48000), 48000), null, 'silence');
  assert.equal(dominantFrequency(new Int16Array(10), 48000), null, 'too short');
});

test('windows of one second each get their own frequency', () => {
  const pcm = new Int16Array(48000 * 3 + 100);
  pcm.set(sine(440, 1), 0);
  pcm.set(sine(660, 1), 48000);
  const freqs = windowFrequencies(pcm, 48000, 1);
  assert.equal(freqs.length, 3, 'the 100-sample remainder is left out');
  assert.ok(Math.abs((freqs[0] ?? 0) - 440) < 0.5 && Math.abs((freqs[1] ?? 0) - 660) < 0.5, `${freqs}`);
  assert.equal(freqs[2], null);
  assert.equal(fractionNear(freqs, 440, 5), 1 / 3);
  assert.equal(fractionNear([], 440, 5), 0);
});
