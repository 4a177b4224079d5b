"""Training data added to a real-speech task's train (and dev) split: channel twins, TTS renditions, generated and
varied non-speech, cuts and joins (``scripts/real_speech_eval.py`` and ``scripts/real_voices_swap.py``; test is never
touched).

A file's name says what it is made from (the source clip's SHA-256, the TTS voice's index, the generator's key), never
where the corpus or the work folder lies, so two ``--work`` folders, or a corpus copied elsewhere, get byte-identical
training sets, and a rerun reuses the files. The names do not hold the seed: a file already there is reused whatever
seed made it, so another draw of the augmentation (``real_speech_eval.py --draw``) needs its own folder.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from speechprompt.training import manifest as M
from speechprompt.training import real_tasks

# hedgewars event names -> what the voices say (for the TTS renditions added to the keyword task's training set)
SPOKEN = {"byebye": "bye bye", "comeonthen": "come on then", "enemydown": "enemy down", "firepunch": "fire punch",
          "firstblood": "first blood", "illgetyou": "I'll get you", "takecover": "take cover",
          "sameteam": "same team", "watchit": "watch it", "ooff": "oof", "ow": "ow"}


def tts_split(j: int) -> str:
    """Every sixth TTS voice of a task goes to dev (the real dev speakers give a few clips only), the rest to train."""
    return "dev" if j % 6 == 5 else "train"


GENDER_TTS_LANGS = ("en", "es", "fr", "it", "nl", "pl", "ru")  # the corpus's languages with a word list (not cs)


def gender_tts(out: Path, voices: int, seed: int, phrases: int = 2) -> list[tuple[str, str, str]]:
    """TTS rows ``(path, gender, split)`` for the ``gender`` task: per language of ``GENDER_TTS_LANGS``, ``voices // 2``
    espeak-ng voices of each gender (the variant's voice-file ``gender`` line, as the suite's gender task; the suite's
    seen pool), each saying ``phrases`` phrases of 2-4 random words at an espeak pitch of 30-70 and a rate of 130-210;
    every second clip goes through a channel twin. Many voices of both genders in every language keep a voice's
    language and channel from standing in for its gender (the real train set has one Dutch fish, and she is female)."""
    from speechprompt.training import channel_aug
    from speechprompt.training.corpus import UtteranceSpec, load_words, normalise, to_16k, tts_to_file
    from speechprompt.training.suite import variant_gender, voice_pool
    from speechprompt.training.suite_text import RU_WORDS

    g, rows = variant_gender(), []
    for li, lang in enumerate(GENDER_TTS_LANGS):
        words = RU_WORDS if lang == "ru" else load_words(lang)
        pool = sorted({v for _, v, _ in voice_pool(lang, "seen", espeak_only=True)})
        for gi, gender in enumerate(("female", "male")):
            mine = [v for v in pool if g.get(v.split("+")[-1]) == gender]
            pick = [mine[i] for i in np.random.default_rng([seed, li, gi]).permutation(len(mine))[: voices // 2]]
            for j, voice in enumerate(pick):
                for k in range(phrases):
                    rng = np.random.default_rng([seed, li, gi, j, k])
                    text = " ".join(words[int(i)] for i in rng.integers(len(words), size=int(rng.integers(2, 5))))
                    rate, pitch = int(rng.integers(130, 210)), int(rng.integers(30, 70))
                    path = out / f"tts-{lang}-{gender}-{j:03d}-{k}.wav"
                    if not path.exists():
                        wav = out / f"tts-{os.getpid()}.raw.wav"
                        tts_to_file(UtteranceSpec(0, "espeak-ng", voice, lang, text, rate, pitch), str(wav))
                        y = normalise(to_16k(str(wav), 1.0), 0.7)
                        wav.unlink()
                        if k % 2:
                            key = 2 * 10**6 + 10**4 * li + 10**3 * gi + 10 * j + k
                            y = channel_aug.apply(y, channel_aug.draw(seed, key), seed, key)
                        M.write_wav(path, y, 16000)
                    rows.append((str(path), gender, tts_split(j)))
    return rows


def augment_train(task_dir: Path, aug_dir: Path, twins: int, tts_voices: int, seed: int,
                  generated_nonspeech: int = 0, cuts: int = 0, mixes: int = 0, dev_mixes: int = 0,
                  noise_mixes: int = 0, noise_variants: int = 0, pads: int = 0) -> dict:
    """Add training data to ``task_dir/manifest.csv`` (test untouched; dev gains the TTS voices of ``tts_split`` and the dev joins of ``mixes.write_joins``):
    ``twins`` channel-augmented copies (``channel_aug``: room, noise, codec, band-pass, level) of every train clip
    (drawn from, and named by, the SHA-256 of the clip's file: the same wherever the corpus and ``aug_dir`` lie), for ``keyword`` each word spoken
    by ``tts_voices`` espeak-ng/MBROLA voices of the suite's seen pool (for ``digits``: each digit word of every
    language in ``real_tasks.DIGIT_WORDS`` by ``tts_voices`` voices of that language; for ``gender``: ``gender_tts``), and for ``vad`` ``generated_nonspeech``
    ``noise`` clips from ``nonspeech.generate`` (tones, DTMF, sweeps, synthesizer music, drums, clicks, hum; every
    second one through a channel twin) and ``cuts`` random windows of every real train clip (``cuts.py``: 1-2.6 s,
    cut anywhere; a speech window in a pause is dropped), ``noise_variants`` variants of every real train sound
    (``sound_variants.vary``: faster or slower, each reversed with even odds; one too short is dropped) and the joins of
    ``mixes.write_joins``; for every task ``pads`` copies of every real train clip with room tone before and after
    (``pads.pad``: 0.2-2 s each side, the label kept). Returns the counts of each kind
    (``noise_variants`` and ``pads`` only when asked for, so earlier runs' task records are unchanged)."""
    from speechprompt.training import channel_aug, nonspeech, sound_variants
    from speechprompt.training import cuts as cut_mod
    from speechprompt.training import mixes as mix_mod
    from speechprompt.training import pads as pad_mod
    from speechprompt.training.corpus import synthesize_words
    from speechprompt.training.suite import voice_pool

    examples = M.read_manifest(task_dir / "manifest.csv")
    out = aug_dir / task_dir.name
    out.mkdir(parents=True, exist_ok=True)
    twin_rows: list[tuple[str, str, str]] = []
    cut_rows: list[tuple[str, str, str]] = []
    variant_rows: list[tuple[str, str, str]] = []
    pad_rows: list[tuple[str, str, str]] = []
    for e in [e for e in examples if e.split == "train"]:
        clip = hashlib.sha256(Path(e.path).read_bytes()).hexdigest()  # twins follow the clip's bytes, not its folder
        for t in range(twins):
            path = out / f"twin{t}-{clip[:16]}.wav"
            if not path.exists():
                key = real_tasks.text_key(f"{clip}:{t}")
                y = channel_aug.apply(M.load_audio(e.path), channel_aug.draw(seed, key), seed, key)
                M.write_wav(path, y, 16000)
            twin_rows.append((str(path), e.label, "train"))
        for t in range(cuts if task_dir.name == "vad" else 0):
            path = out / f"cut{t}-{clip[:16]}.wav"
            if not path.exists():
                key = real_tasks.text_key(f"{clip}:cut{t}")
                y = M.load_audio(e.path)
                y = cut_mod.speech_cut(y, key) if e.label == "speech" else cut_mod.random_cut(y, key)
                if y is None:  # too short to cut, or a speech window in a pause
                    continue
                M.write_wav(path, y, 16000)
            cut_rows.append((str(path), e.label, "train"))
        for t in range(noise_variants if task_dir.name == "vad" and e.label == "noise" else 0):
            path = out / f"vary{t}-{clip[:16]}.wav"
            if not path.exists():
                key = real_tasks.text_key(f"{seed}:{clip}:vary{t}")  # a draw's own
                y = sound_variants.vary(M.load_audio(e.path), key)
                if y is None:  # sped up below sound_variants.MIN_SECONDS
                    continue
                M.write_wav(path, y, 16000)
            variant_rows.append((str(path), "noise", "train"))
        for t in range(pads):
            path = out / f"pad{t}-{clip[:16]}.wav"
            if not path.exists():
                M.write_wav(path, pad_mod.pad(M.load_audio(e.path), real_tasks.text_key(f"{seed}:{clip}:pad{t}")), 16000)
            pad_rows.append((str(path), e.label, "train"))
    added = twin_rows + cut_rows + variant_rows + pad_rows
    n_own = len(added)  # made from the train clips themselves
    if task_dir.name == "keyword" and tts_voices:
        labels = sorted({e.label for e in examples})
        pool = voice_pool("en", "seen")
        pick = np.random.default_rng(seed).permutation(len(pool))[:tts_voices]
        voices = [(pool[i][0], pool[i][1]) for i in sorted(pick)]
        todo = [lab for lab in labels if not (out / f"tts-{lab}-{len(voices) - 1:03d}.wav").exists()]
        clips = synthesize_words([SPOKEN.get(lab, lab) for lab in todo], voices) if todo else {}
        for lab in labels:
            for j, (engine, voice) in enumerate(voices):
                path = out / f"tts-{lab}-{j:03d}.wav"
                if not path.exists():
                    M.write_wav(path, clips[(SPOKEN.get(lab, lab), engine, voice)], 16000)
                added.append((str(path), lab, tts_split(j)))
    if task_dir.name == "digits" and tts_voices:
        for lang, words in real_tasks.DIGIT_WORDS.items():
            pool = voice_pool(lang, "seen")
            pick = np.random.default_rng([seed, len(lang), ord(lang[0])]).permutation(len(pool))[:tts_voices]
            voices = sorted({(pool[i][0], pool[i][1]) for i in pick})
            todo = any(not (out / f"tts-{lang}-{d}-{j:03d}.wav").exists() for d in range(10) for j in range(len(voices)))
            clips = synthesize_words(list(words), voices) if todo else {}
            for d, word in enumerate(words):
                for j, (engine, voice) in enumerate(voices):
                    path = out / f"tts-{lang}-{d}-{j:03d}.wav"
                    if not path.exists():
                        M.write_wav(path, clips[(word, engine, voice)], 16000)
                    added.append((str(path), str(d), tts_split(j)))
    if task_dir.name == "gender" and tts_voices:
        added += gender_tts(out, tts_voices, seed)
    n_tts = len(added) - n_own
    if task_dir.name == "vad":
        for k in range(generated_nonspeech):
            path = out / f"gen-{k:05d}.wav"
            if not path.exists():
                _, y = nonspeech.generate(seed, k)
                if k % 2:
                    y = channel_aug.apply(y, channel_aug.draw(seed, 10**6 + k), seed, 10**6 + k)
                M.write_wav(path, y, 16000)
            added.append((str(path), "noise", "train"))
    n_gen = len(added) - n_own - n_tts
    if task_dir.name == "vad":
        added += mix_mod.write_joins(examples, out, seed, mixes, dev_mixes, noise_mixes)
    M.write_csv(task_dir / "manifest.csv", added, append=True)  # a new file, never the old one's bytes in place
    counts = {"twins": len(twin_rows), "cuts": len(cut_rows), "tts": n_tts, "generated_nonspeech": n_gen,
              "mixes": len(added) - n_own - n_tts - n_gen}
    return counts | ({"noise_variants": len(variant_rows)} if noise_variants else {}) | ({"pads": len(pad_rows)} if pads else {})
