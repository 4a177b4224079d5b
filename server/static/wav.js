// Microphone capture and WAV encoding, no dependencies. Exposes window.SPAudio.
"use strict";
(function () {
  // Float32 samples [-1, 1] -> little-endian PCM16 (Int16Array).
  function toPCM16(samples) {
    const out = new Int16Array(samples.length);
    for (let i = 0; i < samples.length; i++) {
      const s = Math.max(-1, Math.min(1, samples[i]));
      out[i] = s < 0 ? s * 0x8000 : s * 0x7fff;
    }
    return out;
  }

  // Float32 mono samples at `rate` Hz -> a WAV file (PCM16) as a Blob.
  function encodeWav(samples, rate) {
    const pcm = toPCM16(samples);
    const buf = new ArrayBuffer(44 + pcm.byteLength);
    const v = new DataView(buf);
    const text = (at, s) => { for (let i = 0; i < s.length; i++) v.setUint8(at + i, s.charCodeAt(i)); };
    text(0, "RIFF"); v.setUint32(4, 36 + pcm.byteLength, true); text(8, "WAVE");
    text(12, "fmt "); v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true);
    v.setUint32(24, rate, true); v.setUint32(28, rate * 2, true); v.setUint16(32, 2, true); v.setUint16(34, 16, true);
    text(36, "data"); v.setUint32(40, pcm.byteLength, true);
    new Int16Array(buf, 44).set(pcm);
    return new Blob([buf], { type: "audio/wav" });
  }

  // Open the microphone; onChunk(Float32Array) receives mono blocks at `rate` Hz. Returns {rate, stop()}.
  // The AudioContext is asked for 16 kHz (Chromium resamples the microphone); other browsers may keep
  // their own rate, which is reported and declared to the server.
  async function openMicrophone(onChunk) {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: false,
      noiseSuppression: false, autoGainControl: false } });
    let ctx;
    try { ctx = new AudioContext({ sampleRate: 16000 }); } catch (e) { ctx = new AudioContext(); }
    const source = ctx.createMediaStreamSource(stream);
    // ScriptProcessorNode: deprecated but available everywhere and needs no separate worklet module.
    const node = ctx.createScriptProcessor(4096, 1, 1);
    node.onaudioprocess = (ev) => onChunk(new Float32Array(ev.inputBuffer.getChannelData(0)));
    source.connect(node);
    node.connect(ctx.destination);
    if (ctx.state === "suspended") await ctx.resume();
    return {
      rate: ctx.sampleRate,
      stop() {
        node.disconnect(); source.disconnect();
        stream.getTracks().forEach((t) => t.stop());
        return ctx.close();
      },
    };
  }

  function concat(chunks) {
    const n = chunks.reduce((a, c) => a + c.length, 0);
    const out = new Float32Array(n);
    let at = 0;
    for (const c of chunks) { out.set(c, at); at += c.length; }
    return out;
  }

  window.SPAudio = { toPCM16, encodeWav, openMicrophone, concat };
})();
