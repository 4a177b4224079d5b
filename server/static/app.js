// The page: choose tasks, upload or record a clip, show per-task score bars, version, latency and the
// occlusion explanation under the waveform; live mode over the /v1/stream WebSocket protocol. Vanilla JS.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs = {}, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "style") Object.assign(e.style, v); else if (k in e) e[k] = v; else e.setAttribute(k, v);
    }
    for (const kid of kids) e.append(kid);
    return e;
  };
  const state = { tasks: [], recording: null, live: null };

  function labelColor(label) {
    let h = 0;
    for (const ch of label) h = (h * 31 + ch.charCodeAt(0)) % 360;
    return `hsl(${h}, 65%, 72%)`;
  }

  function setStatus(text, id = "status") { $(id).textContent = text; }

  function problemText(body, status) {
    if (body && body.detail) return `${body.title || status}: ${body.detail}`;
    return `HTTP ${status}`;
  }

  // ---- tasks ----------------------------------------------------------------------------------
  async function loadTasks() {
    try {
      const bb = await (await fetch("/v1/backbone")).json();
      $("backbone").textContent = `backbone: ${bb.name || ""} (${bb.kind || "?"}) ${String(bb.fingerprint || "").slice(0, 16)}`;
      if (bb.speech_trim && bb.speech_trim.available === false) {  // no VAD weights: a trim would be a 503
        const trim = $("speech-trim");
        trim.value = "off";
        for (const o of trim.options) o.disabled = o.value !== "off";
        trim.title = "this server has no speech-trim (Silero VAD) weights: clips are scored whole";
      }
    } catch (e) { $("backbone").textContent = "backbone: unavailable"; }
    const r = await fetch("/v1/tasks");
    if (!r.ok) { $("tasks").textContent = problemText(await r.json().catch(() => null), r.status); return; }
    state.tasks = (await r.json()).tasks.filter((t) => t.state !== "failed");
    const box = $("tasks");
    box.replaceChildren();
    const select = $("verbalizer-task");
    select.replaceChildren(el("option", { value: "", textContent: "choose a task" }));
    state.tasks.forEach((t, i) => {
      box.append(el("label", { title: (t.labels || []).join(", ") },
        el("input", { type: "checkbox", name: "task", value: t.task, checked: i < 2 }), " " + t.task));
      select.append(el("option", { value: t.task, textContent: t.task }));
    });
    if (!state.tasks.length) box.textContent = "no tasks are served";
    // a gate: a task with a "speech" label decides whether the other answers apply (vad:speech by default)
    const gate = $("gate");
    gate.replaceChildren(el("option", { value: "", textContent: "no gate" }));
    for (const t of state.tasks.filter((t) => (t.labels || []).includes("speech"))) {
      gate.append(el("option", { value: `${t.task}:speech`, textContent: `${t.task} says speech` }));
    }
    const vad = [...gate.options].findIndex((o) => o.value === "vad:speech");
    if (gate.options.length > 1) gate.selectedIndex = vad > 0 ? vad : 1;
  }

  function chosenTasks() {
    return [...document.querySelectorAll('#tasks input[name="task"]:checked')].map((i) => i.value);
  }

  // ---- classify --------------------------------------------------------------------------------
  // the request's speech_trim: "auto" says a recording is one (speech_trim=recording: the tasks whose package names
  // a trim for recordings are scored without the room tone a microphone records before and after the voice) and
  // sends nothing for uploaded files (each package's own setting); "on" / "off" are sent as they are
  function speechTrim(recorded) {
    const mode = $("speech-trim").value;
    if (mode === "auto") return recorded ? "recording" : null;
    return mode;
  }

  async function classify(blob, samples, rate, recorded = false) {
    const tasks = chosenTasks();
    if (!tasks.length) { setStatus("choose at least one task"); return; }
    const q = new URLSearchParams({ tasks: tasks.join(","), top_k: $("top-k").value || "3" });
    const trim = speechTrim(recorded);
    if (trim) q.set("speech_trim", trim);
    if ($("long-audio").value) q.set("long_audio", $("long-audio").value);
    if ($("gate").value) q.set("gate", $("gate").value);
    if ($("explain").checked) { q.set("explain", "true"); q.set("explain_spans", $("explain-spans").value || "16"); }
    setStatus("classifying…");
    const t0 = performance.now();
    let r;
    try {
      r = await fetch(`/v1/classify?${q}`, { method: "POST", body: blob,
        headers: { "Content-Type": blob.type && blob.type.startsWith("audio/") ? blob.type : "application/octet-stream" } });
    } catch (e) { setStatus(`request failed: ${e}`); return; }
    const roundTrip = performance.now() - t0;
    const body = await r.json().catch(() => null);
    if (!r.ok) { setStatus(problemText(body, r.status)); $("results").replaceChildren(); return; }
    setStatus("");
    showResults(body, roundTrip);
    if (!samples) {
      try { [samples, rate] = await decodeForDrawing(blob); } catch (e) { samples = null; }
    }
    drawWave(samples);
    drawStrips(body);
  }

  function showResults(body, roundTrip) {
    const box = $("results");
    box.replaceChildren();
    for (const res of body.results) {
      if (res.error) {
        box.append(el("div", { className: "task-result error", "data-task": res.task },
          el("div", { className: "head" }, el("span", { className: "name", textContent: res.task })),
          el("div", { textContent: problemText(res.error, res.error.status) })));
        continue;
      }
      const na = res.applicable === false;
      const card = el("div", { className: "task-result" + (na ? " not-applicable" : ""), "data-task": res.task,
        "data-version": res.version },
        el("div", { className: "head" },
          el("span", {}, el("span", { className: "name", textContent: res.task + ": " }),
            el("span", { className: "label", textContent: res.label })),
          el("span", { className: "version", textContent: "version " + res.version })));
      const cut = res.speech_trim;
      if (cut && cut.applied && cut.cut) {
        card.append(el("div", { className: "trimmed", textContent: `scored ${cut.start_s.toFixed(2)}–` +
          `${cut.end_s.toFixed(2)} s (room tone cut)` }));
      }
      if (na) {
        const g = body.gate;
        card.append(el("div", { className: "applies", textContent: `does not apply: ${g.task} gives ${g.label} ` +
          `${(100 * g.probability).toFixed(1)} % (under ${(100 * g.threshold).toFixed(0)} %)` }));
      }
      for (const s of res.scores) {
        const pct = (100 * s.score).toFixed(1);
        card.append(el("div", { className: "bar", "data-label": s.label },
          el("span", { textContent: s.label }),
          el("span", { className: "track" }, el("span", { className: "fill", style: { width: pct + "%", display: "block" } })),
          el("span", { textContent: pct + " %" })));
      }
      box.append(card);
    }
    const t = body.timings;
    $("timing").textContent = `${body.audio.duration_s.toFixed(2)} s of audio, ${body.audio.units} units · server ` +
      `${t.total_ms.toFixed(1)} ms (decode ${t.decode_ms.toFixed(1)}, queue ${t.queue_ms.toFixed(1)}, encode ` +
      `${t.encode_ms.toFixed(1)}, unit LM ${t.lm_ms.toFixed(1)}` +
      (t.speech_trim_ms ? `, VAD ${t.speech_trim_ms.toFixed(1)}` : "") + `) · round trip ${roundTrip.toFixed(0)} ms` +
      (body.units_cache_hit ? " · units from cache" : "");
  }

  async function decodeForDrawing(blob) {
    const ctx = new OfflineAudioContext(1, 1, 16000);
    const buf = await ctx.decodeAudioData(await blob.arrayBuffer());
    return [buf.getChannelData(0), buf.sampleRate];
  }

  function drawWave(samples) {
    $("wave-box").hidden = false;
    const c = $("wave"), g = c.getContext("2d");
    g.clearRect(0, 0, c.width, c.height);
    if (!samples || !samples.length) { g.fillStyle = "#999"; g.fillText("(this format is not drawn here)", 8, 20); return; }
    const mid = c.height / 2, per = samples.length / c.width;
    g.strokeStyle = "#3a7bd5";
    g.beginPath();
    for (let x = 0; x < c.width; x++) {
      let lo = 1, hi = -1;
      const end = Math.min(samples.length, Math.floor((x + 1) * per));
      for (let i = Math.floor(x * per); i < end; i++) { if (samples[i] < lo) lo = samples[i]; if (samples[i] > hi) hi = samples[i]; }
      if (hi < lo) continue;
      g.moveTo(x + 0.5, mid - hi * mid); g.lineTo(x + 0.5, mid - lo * mid + 1);
    }
    g.stroke();
  }

  // One strip per task under the waveform: each occluded stretch coloured by how much it moved the label
  // (green: supported it, red: spoke against it; opacity relative to the task's largest |importance|).
  function drawStrips(body) {
    const box = $("strips");
    box.replaceChildren();
    const dur = body.audio.duration_s;
    for (const res of body.results) {
      if (res.spans) box.append(windowLane(res, dur));
      const ex = res.explanation;
      if (!ex) continue;
      const top = Math.max(1e-9, ...ex.spans.map((s) => Math.abs(s.importance)));
      const strip = el("div", { className: "strip", "data-task": res.task, "data-label": ex.label });
      for (const s of ex.spans) {
        const a = Math.abs(s.importance) / top;
        strip.append(el("div", { className: "seg", "data-importance": s.importance.toFixed(4),
          title: `${s.start.toFixed(2)}–${s.end.toFixed(2)} s: ${ex.label} ${s.importance >= 0 ? "+" : ""}${s.importance.toFixed(3)} (without it ${s.score_without.toFixed(3)})`,
          style: { left: (100 * s.start / dur) + "%", width: (100 * (s.end - s.start) / dur) + "%",
            background: s.importance >= 0 ? `rgba(40,160,70,${a})` : `rgba(210,60,60,${a})` } }));
      }
      strip.append(el("span", { className: "name", textContent: `${res.task}: why "${ex.label}"` }));
      box.append(strip);
    }
  }

  // A windowed result (long audio): where each label wins, as a lane under the waveform.
  function windowLane(res, dur) {
    const lane = el("div", { className: "strip windows", "data-task": res.task, title: `${res.task}: windows` });
    res.spans.forEach((s, i) => {
      lane.append(el("div", { className: "seg", "data-label": s.label,
        textContent: i === 0 ? `${res.task}: ${s.label}` : s.label,
        title: `${s.start.toFixed(2)}–${s.end.toFixed(2)} s: ${s.label}`,
        style: { left: (100 * s.start / dur) + "%", width: (100 * (s.end - s.start) / dur) + "%",
          background: labelColor(s.label) } }));
    });
    return lane;
  }

  // ---- upload and record ------------------------------------------------------------------------
  $("file").addEventListener("change", (ev) => {
    const f = ev.target.files[0];
    if (f) classify(f, null, 0);
    ev.target.value = "";
  });

  $("record").addEventListener("click", async () => {
    const chunks = [];
    try {
      const mic = await SPAudio.openMicrophone((c) => chunks.push(c));
      state.recording = { mic, chunks };
    } catch (e) { setStatus(`microphone unavailable: ${e.message || e}`); return; }
    $("record").disabled = true; $("record-stop").disabled = false;
    setStatus("recording…");
  });

  $("record-stop").addEventListener("click", async () => {
    const rec = state.recording;
    if (!rec) return;
    state.recording = null;
    await rec.mic.stop();
    $("record").disabled = false; $("record-stop").disabled = true;
    const samples = SPAudio.concat(rec.chunks);
    classify(SPAudio.encodeWav(samples, rec.mic.rate), samples, rec.mic.rate, true);
  });

  // ---- live mode: the /v1/stream protocol (docs/api.md) -------------------------------------------
  function liveRows(ready) {
    const box = $("timeline");
    box.replaceChildren();
    for (const [task, info] of Object.entries(ready.tasks)) {
      box.append(el("div", { className: "live-row", "data-task": task, title: `version ${info.version}` },
        el("span", { className: "name", textContent: task }), el("div", { className: "track" })));
    }
  }

  function liveResult(msg) {
    const live = state.live;
    live.results.push(msg);
    live.until = Math.max(live.until, msg.end);
    const span = Math.max(live.until, 10);
    for (const row of document.querySelectorAll("#timeline .live-row")) {
      row.querySelectorAll(".seg").forEach((s) => s.remove());
      const task = row.dataset.task;
      let prev = 0;
      for (const r of live.results) {
        const t = r.tasks[task];
        if (!t) continue;
        const a = Math.max(r.start, prev);
        if (r.end <= a) continue;
        prev = r.end;
        row.querySelector(".track").append(el("div", { className: "seg", "data-label": t.label, textContent: t.label,
          title: `${r.start.toFixed(1)}–${r.end.toFixed(1)} s: ${t.label} (${(100 * (t.scores[t.label] || 0)).toFixed(0)} %)`,
          style: { left: (100 * a / span) + "%", width: (100 * (r.end - a) / span) + "%", background: labelColor(t.label) } }));
      }
    }
    setStatus(`${msg.end.toFixed(1)} s streamed`, "live-status");
  }

  function liveSummary(msg) {
    const box = $("live-summary");
    box.replaceChildren(el("p", { className: "muted", textContent: `summary of ${msg.duration.toFixed(1)} s:` }));
    for (const [task, t] of Object.entries(msg.tasks)) {
      box.append(el("div", { className: "summary", "data-task": task,
        textContent: `${task}: ${t.label} (version ${t.version})` }));
    }
  }

  async function liveStart() {
    const tasks = chosenTasks();
    if (!tasks.length) { setStatus("choose at least one task", "live-status"); return; }
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}/v1/stream?tasks=${encodeURIComponent(tasks.join(","))}`);
    ws.binaryType = "arraybuffer";
    state.live = { ws, mic: null, results: [], until: 0, ready: false };
    $("live-start").disabled = true; $("live-stop").disabled = false;
    $("live-summary").replaceChildren();
    setStatus("connecting…", "live-status");
    ws.onopen = async () => {
      try {
        const mic = await SPAudio.openMicrophone((c) => {
          if (ws.readyState === WebSocket.OPEN && state.live && state.live.ready) ws.send(SPAudio.toPCM16(c).buffer);
        });
        if (!state.live || state.live.ws !== ws) { mic.stop(); return; }
        state.live.mic = mic;
        ws.send(JSON.stringify({ type: "start", sample_rate: mic.rate, encoding: "pcm16" }));
      } catch (e) { setStatus(`microphone unavailable: ${e.message || e}`, "live-status"); ws.close(); }
    };
    ws.onmessage = (ev) => {
      const msg = JSON.parse(ev.data);
      if (msg.type === "ready") { state.live.ready = true; liveRows(msg); setStatus("listening…", "live-status"); }
      else if (msg.type === "result") liveResult(msg);
      else if (msg.type === "summary") liveSummary(msg);
      else if (msg.type === "error") setStatus(`${msg.code}: ${msg.detail}`, "live-status");
    };
    ws.onclose = (ev) => {
      if (state.live && state.live.ws === ws) liveStopped();
      if (ev.code !== 1000 && ev.code !== 1005) setStatus(`closed ${ev.code} ${ev.reason || ""}`, "live-status");
    };
  }

  function liveStopped() {
    const live = state.live;
    state.live = null;
    if (live && live.mic) live.mic.stop();
    $("live-start").disabled = false; $("live-stop").disabled = true;
  }

  $("live-start").addEventListener("click", liveStart);
  $("live-stop").addEventListener("click", () => {
    const live = state.live;
    if (!live) return;
    if (live.mic) { live.mic.stop(); live.mic = null; }
    if (live.ws.readyState === WebSocket.OPEN) live.ws.send(JSON.stringify({ type: "stop" }));
    setStatus("stopping…", "live-status");
  });

  // ---- verbalizer view ----------------------------------------------------------------------------
  $("verbalizer-task").addEventListener("change", async (ev) => {
    const box = $("verbalizer");
    box.replaceChildren();
    if (!ev.target.value) return;
    const r = await fetch(`/v1/tasks/${encodeURIComponent(ev.target.value)}/verbalizer?top_k=8`);
    const body = await r.json().catch(() => null);
    if (!r.ok) { box.textContent = problemText(body, r.status); return; }
    for (const label of body.labels) {
      box.append(el("div", { className: "verb-label", "data-label": label },
        el("strong", { textContent: label + ": " }),
        ...body.top[label].map((u) => el("code", { textContent: `${u.unit} (${u.weight >= 0 ? "+" : ""}${u.weight.toFixed(2)})` }))));
    }
  });

  loadTasks().catch((e) => { $("tasks").textContent = `cannot list tasks: ${e}`; });
})();
